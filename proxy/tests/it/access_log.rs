//! The access log's formats (`access_log.format`): the seed's APISIX line, ending with the
//! upstream URL and counting the body bytes, and JSON lines with both byte counts.

use serde_json::Value;

use crate::draining::{access_log, access_log_block, log_lines};
use crate::support::Harness;

/// A service like the seed's: `/v1` stripped before the upstream.
fn seed(path: &std::path::Path, format: &str) -> String {
    format!(
        "{}  format: {format}\nservices:\n  - name: sd\n    hosts: [sd.httpbin.org]\n    path_prefix: /v1\n    \
         upstream: httpbin\n    routes:\n      - {{name: anything, path: /anything, strip_prefix: true}}\n\
         upstreams:\n  - {{name: httpbin, nodes: [{{address: '{{b0}}'}}]}}\n",
        access_log_block(path)
    )
}

#[test]
fn the_apisix_format_ends_with_the_upstream_url_and_counts_the_body() {
    let path = access_log("format-apisix");
    let h = Harness::start(&["127.0.23.2"], &seed(&path, "apisix"));
    let resp = h.client().request(
        "GET /v1/anything HTTP/1.1\r\nHost: sd.httpbin.org\r\nUser-Agent: curl/7.86.0\r\n\r\n",
    );
    assert_eq!(resp.status, 200);
    let body = resp.body.len();
    let line = log_lines(&path, 1).remove(0);
    let upstream = h.backends[0].addr().to_string();
    let want = format!("sd.httpbin.org \"GET /v1/anything HTTP/1.1\" 200 {body} ");
    assert!(line.starts_with("127.0.0.1 - - ["), "{line}");
    assert!(line.contains(&want), "{line}\nwanted {want}");
    assert!(
        line.contains(&format!("\"-\" \"curl/7.86.0\" {upstream} 200 ")),
        "{line}"
    );
    assert!(
        line.ends_with(" \"http://sd.httpbin.org/anything\""),
        "{line}"
    );
}

#[test]
fn json_lines_name_every_field_with_both_byte_counts() {
    let path = access_log("format-json");
    let h = Harness::start(&["127.0.23.3"], &seed(&path, "json"));
    let mut c = h.client();
    let resp = c.request("GET /v1/anything?q=\"x\" HTTP/1.1\r\nHost: sd.httpbin.org\r\n\r\n");
    assert_eq!(resp.status, 200);
    let miss = c.request("GET /elsewhere HTTP/1.1\r\nHost: sd.httpbin.org\r\n\r\n");
    assert_eq!(miss.status, 404);
    let lines = log_lines(&path, 2);
    let first: Value = serde_json::from_str(&lines[0]).expect("a JSON line");
    assert_eq!(first["status"], 200);
    assert_eq!(first["method"], "GET");
    assert_eq!(first["uri"], "/v1/anything?q=\"x\"");
    assert_eq!(first["protocol"], "HTTP/1.1");
    assert_eq!(first["body_bytes_sent"], resp.body.len());
    assert!(
        first["bytes_sent"].as_u64().unwrap() > resp.body.len() as u64,
        "{first}"
    );
    assert_eq!(
        first["upstream_url"],
        "http://sd.httpbin.org/anything?q=\"x\""
    );
    assert_eq!(first["upstream_addr"], h.backends[0].addr().to_string());
    assert_eq!(first["remote_addr"], "127.0.0.1");
    assert_eq!(first["request_id"].as_str().map(str::len), Some(36));
    assert!(first["time"].as_str().unwrap().ends_with('Z'), "{first}");
    assert_eq!(first["tls_version"], Value::Null);
    let second: Value = serde_json::from_str(&lines[1]).expect("a JSON line");
    assert_eq!(second["status"], 404);
    assert_eq!(second["upstream_url"], Value::Null);
    assert_eq!(second["upstream_addr"], Value::Null);
    assert_eq!(
        second["body_bytes_sent"],
        miss.body.len(),
        "the proxy's own answer counts its body too"
    );
}
