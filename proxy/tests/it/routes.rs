//! Routes that real traffic needs (issue 17), through the data plane: path, header and
//! query matches in their documented order, weighted and sticky backends, header edits,
//! rewrites, redirects, direct responses, request ids, the real client address from
//! `trusted_proxies` and the PROXY protocol (in and out), and local rate limits.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpStream};

use crate::support::{eventually, Client, Harness, RawBackend, IO_TIMEOUT};

const MATCHES: &str = "
services:
  - name: shop
    hosts: [shop.test]
    upstream: main
    routes:
      - {name: health, path: /api/health, path_match: exact, upstream: other}
      - {name: items, path: '/api/items/[0-9]+', path_match: regex, upstream: other}
      - name: canary
        path: /api
        headers: [{name: X-Canary, value: 'true'}]
        upstream: canary
      - name: tenant
        path: /api
        headers: [{name: X-Tenant, regex: 't[0-9]+'}]
        upstream: other
      - name: debug
        path: /api
        headers: [{name: X-Debug, present: true}]
        query: [{name: trace, present: true}]
        upstream: canary
      - name: v2
        path: /api
        query: [{name: version, value: '2'}]
        upstream: other
      - {name: api, path: /api}
upstreams:
  - {name: main, nodes: [{address: '{b0}'}]}
  - {name: other, nodes: [{address: '{b1}'}]}
  - {name: canary, nodes: [{address: '{b2}'}]}
";

#[test]
fn exact_regex_prefix_header_and_query_matches_pick_in_the_documented_order() {
    let h = Harness::start(&["127.0.22.2", "127.0.22.3", "127.0.22.4"], MATCHES);
    let mut c = h.client();
    let cases: [(&str, &str, usize); 12] = [
        ("/api/health", "", 1),
        // Exact is the whole path; below it, the prefix route.
        ("/api/health/deep", "", 0),
        ("/api/items/42", "", 1),
        // Anchored: no partial regex match.
        ("/api/items/42x", "", 0),
        ("/api/x", "X-Canary: true\r\n", 2),
        ("/api/x", "X-Canary: false\r\n", 0),
        ("/api/x", "X-Tenant: t17\r\n", 1),
        ("/api/x", "X-Tenant: t17b\r\n", 0),
        // Both conditions of `debug` must hold.
        ("/api/x?trace", "X-Debug: 1\r\n", 2),
        ("/api/x", "X-Debug: 1\r\n", 0),
        ("/api/x?a=1&version=2", "", 1),
        ("/api/x?version=3", "", 0),
    ];
    for (path, headers, backend) in cases {
        let resp = c.request(&format!(
            "GET {path} HTTP/1.1\r\nHost: shop.test\r\n{headers}\r\n"
        ));
        assert_eq!(resp.status, 200, "{path} {headers}: {}", resp.text());
        assert_eq!(
            resp.backend(),
            h.backend_name(backend),
            "{path} with {headers:?}"
        );
    }
}

const FILTERS: &str = "
services:
  - name: shop
    hosts: [shop.test]
    upstream: main
    routes:
      - name: edits
        path: /edit
        request_headers: {set: {X-Env: prod}, add: {X-Via: strait}, remove: [X-Debug]}
        response_headers: {set: {X-Frame-Options: DENY}, remove: [Server]}
      - {name: prefix, path: /old-api, rewrite: {prefix: /new}}
      - {name: full, path: /legacy, rewrite: {path: /anything/modern}}
      - {name: https, path: /login, redirect: {scheme: https, status: 301}}
      - {name: moved, path: /old, redirect: {host: new.test, port: 8443, prefix: /new, status: 308}}
      - name: maintenance
        path: /admin
        direct_response: {status: 503, body: 'back soon', content_type: text/html}
upstreams:
  - {name: main, nodes: [{address: '{b0}'}]}
";

#[test]
fn header_edits_rewrites_redirects_and_direct_responses() {
    let h = Harness::start(&["127.0.22.5"], FILTERS);
    let mut c = h.client();
    let resp = c.request(
        "GET /edit HTTP/1.1\r\nHost: shop.test\r\nX-Env: dev\r\nX-Via: client\r\nX-Debug: 1\r\n\r\n",
    );
    assert_eq!(resp.status, 200);
    let seen = &resp.json()["headers"];
    assert_eq!(seen["X-Env"], "prod", "{seen}");
    assert_eq!(seen["X-Via"], "client, strait", "{seen}");
    assert!(seen.get("X-Debug").is_none(), "{seen}");
    assert_eq!(resp.header("x-frame-options"), Some("DENY"));
    assert_eq!(resp.header("server"), None);

    let resp = c.request("GET /old-api/x?q=1 HTTP/1.1\r\nHost: shop.test\r\n\r\n");
    assert_eq!(resp.json()["url"], "http://shop.test/new/x?q=1");
    let resp = c.request("GET /legacy/y?q=2 HTTP/1.1\r\nHost: shop.test\r\n\r\n");
    assert_eq!(resp.json()["url"], "http://shop.test/anything/modern?q=2");

    let resp = c.request("GET /login?next=/a HTTP/1.1\r\nHost: shop.test:8080\r\n\r\n");
    assert_eq!(resp.status, 301);
    assert_eq!(
        resp.header("location"),
        Some("https://shop.test/login?next=/a")
    );
    assert!(resp.body.is_empty());
    let resp = c.request("POST /old/cart HTTP/1.1\r\nHost: shop.test\r\nContent-Length: 0\r\n\r\n");
    assert_eq!(resp.status, 308);
    assert_eq!(
        resp.header("location"),
        Some("http://new.test:8443/new/cart")
    );

    let resp = c.request("GET /admin/users HTTP/1.1\r\nHost: shop.test\r\n\r\n");
    assert_eq!(resp.status, 503);
    assert_eq!(resp.text(), "back soon");
    assert_eq!(resp.header("content-type"), Some("text/html"));
    // Answered without the upstream; the connection stays usable.
    assert_eq!(h.backends[0].requests_served(), 3);
    let resp = c.request("GET /edit HTTP/1.1\r\nHost: shop.test\r\n\r\n");
    assert_eq!(resp.status, 200);
}

const SPLIT: &str = "
services:
  - name: shop
    hosts: [shop.test]
    routes:
      - name: split
        path: /
        backends: [{upstream: v1, weight: 90}, {upstream: v2, weight: 10}]
      - name: sticky
        path: /sticky
        backends: [{upstream: v1, weight: 50}, {upstream: v2, weight: 50}]
        hash: {key: header, name: X-User}
upstreams:
  - {name: v1, nodes: [{address: '{b0}'}]}
  - {name: v2, nodes: [{address: '{b1}'}]}
";

#[test]
fn weighted_backends_split_by_weight_and_a_hash_key_sticks_to_one() {
    let h = Harness::start(&["127.0.22.6", "127.0.22.7"], SPLIT);
    let (v1, v2) = (h.backend_name(0), h.backend_name(1));
    let mut c = h.client();
    let mut counts: HashMap<String, usize> = HashMap::new();
    for _ in 0..1000 {
        let resp = c.request("GET /anything HTTP/1.1\r\nHost: shop.test\r\n\r\n");
        *counts.entry(resp.backend()).or_default() += 1;
    }
    // Smooth weighted round-robin on one worker: 900/100; tolerance ±3% of the total.
    let on_v2 = counts.get(&v2).copied().unwrap_or(0);
    assert!(
        (70..=130).contains(&on_v2),
        "v2 took {on_v2} of 1000: {counts:?}"
    );
    assert_eq!(counts.get(&v1).copied().unwrap_or(0) + on_v2, 1000);

    let mut users_on = HashMap::<String, usize>::new();
    for user in 0..40 {
        let mut seen = None;
        for _ in 0..5 {
            let resp = c.request(&format!(
                "GET /sticky HTTP/1.1\r\nHost: shop.test\r\nX-User: u{user}\r\n\r\n"
            ));
            let b = resp.backend();
            assert!(seen.as_ref().is_none_or(|s| *s == b), "user {user} moved");
            seen = Some(b);
        }
        *users_on.entry(seen.unwrap()).or_default() += 1;
    }
    // Both variants get users (50/50 weights over 40 users).
    assert_eq!(users_on.len(), 2, "{users_on:?}");
}

#[test]
fn request_ids_are_generated_or_passed_through_returned_and_logged() {
    let path = crate::draining::access_log("request-id");
    let template = format!(
        "{}services:\n  - {{name: s, upstream: u}}\nupstreams:\n  - {{name: u, nodes: [{{address: '{{b0}}'}}]}}\n",
        crate::draining::access_log_block(&path)
    );
    let h = Harness::start(&["127.0.22.8"], &template);
    let mut c = h.client();
    let trace = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
    let resp = c.request(&format!(
        "GET /anything HTTP/1.1\r\nHost: x.test\r\ntraceparent: {trace}\r\n\r\n"
    ));
    let id = resp
        .header("x-request-id")
        .expect("a generated id")
        .to_owned();
    assert_eq!(id.len(), 36, "{id}");
    assert_eq!(&id[14..15], "4", "a version 4 UUID: {id}");
    let seen = &resp.json()["headers"];
    assert_eq!(seen["X-Request-Id"], id.as_str());
    assert_eq!(seen["traceparent"], trace, "{seen}");

    let resp = c.request("GET /anything HTTP/1.1\r\nHost: x.test\r\nX-Request-Id: abc-123\r\n\r\n");
    assert_eq!(resp.header("x-request-id"), Some("abc-123"));
    assert_eq!(resp.json()["headers"]["X-Request-Id"], "abc-123");
    // One that would not stay one log field is replaced, upstream too.
    let resp = c.request("GET /anything HTTP/1.1\r\nHost: x.test\r\nX-Request-Id: a \"b\"\r\n\r\n");
    let fresh = resp.header("x-request-id").unwrap().to_owned();
    assert_eq!(fresh.len(), 36, "{fresh}");
    assert_eq!(resp.json()["headers"]["X-Request-Id"], fresh.as_str());

    let lines = crate::draining::log_lines(&path, 3);
    assert!(lines[0].ends_with(&format!(" {id}")), "{}", lines[0]);
    assert!(lines[1].ends_with(" abc-123"), "{}", lines[1]);
}

const EDGE: &str = "
listeners:
  - {name: http, address: '127.0.0.1:0', trusted_proxies: [127.0.0.1/32]}
  - {name: edge, address: '127.0.22.20:0', trusted_proxies: [10.0.0.0/8]}
  - {name: proxied, address: '127.0.22.21:0', proxy_protocol: true}
services:
  - {name: s, upstream: u}
upstreams:
  - {name: u, nodes: [{address: '{b0}'}]}
";

/// What the upstream saw as `X-Forwarded-For` for a GET sent on `c`.
fn forwarded_for(c: &mut Client, extra: &str) -> String {
    let resp = c.request(&format!(
        "GET /anything HTTP/1.1\r\nHost: x.test\r\n{extra}\r\n"
    ));
    assert_eq!(resp.status, 200, "{}", resp.text());
    resp.json()["headers"]["X-Forwarded-For"]
        .as_str()
        .unwrap_or_default()
        .to_owned()
}

#[test]
fn x_forwarded_for_is_appended_from_trusted_peers_and_replaced_from_others() {
    let h = Harness::start(&["127.0.22.9"], EDGE);
    let spoof = "X-Forwarded-For: 203.0.113.9\r\n";
    let mut trusted = h.client();
    let peer = trusted.local_addr().ip();
    assert_eq!(
        forwarded_for(&mut trusted, spoof),
        format!("203.0.113.9, {peer}")
    );
    let edge = h.gateway_ref().listen_addr("edge").unwrap();
    let mut untrusted = Client::connect(edge);
    let peer = untrusted.local_addr().ip();
    assert_eq!(forwarded_for(&mut untrusted, spoof), peer.to_string());
}

#[test]
fn several_x_forwarded_for_fields_from_a_trusted_peer_become_one_list_in_order() {
    let (backend, heads) = crate::forwarding::capturing_backend("127.0.3.26");
    let trusted = format!(
        "listeners:\n  - {{name: http, address: '127.0.0.1:0', trusted_proxies: [127.0.0.1]}}\n{}",
        "services:\n  - {name: s, upstream: u}\nupstreams:\n  - {name: u, nodes: [{address: '{b0}'}]}\n"
    );
    let h = Harness::with_addrs(&trusted, &[backend.addr()]);
    let resp = h.client().request(
        "GET / HTTP/1.1\r\nHost: fw.test\r\nX-Forwarded-For: 10.0.0.1\r\n\
         X-Forwarded-For: 10.0.0.2\r\n\r\n",
    );
    assert_eq!(resp.status, 200);
    let head = heads.recv_timeout(IO_TIMEOUT).unwrap();
    assert_eq!(
        crate::forwarding::fields(&head, "x-forwarded-for"),
        ["10.0.0.1, 10.0.0.2, 127.0.0.1"],
        "upstream head:\n{head}"
    );
}

/// A v2 PROXY header for TCP over IPv4.
fn proxy_v2(src: SocketAddr, dst: SocketAddr) -> Vec<u8> {
    let (SocketAddr::V4(s), SocketAddr::V4(d)) = (src, dst) else {
        panic!("IPv4 only here");
    };
    let mut out = b"\r\n\r\n\0\r\nQUIT\n".to_vec();
    out.extend_from_slice(&[0x21, 0x11, 0, 12]);
    out.extend_from_slice(&s.ip().octets());
    out.extend_from_slice(&d.ip().octets());
    out.extend_from_slice(&s.port().to_be_bytes());
    out.extend_from_slice(&d.port().to_be_bytes());
    out
}

#[test]
fn a_proxy_protocol_listener_takes_the_client_from_v1_and_v2_headers() {
    let h = Harness::start(&["127.0.22.10"], EDGE);
    let at = h.gateway_ref().listen_addr("proxied").unwrap();
    let mut v1 = Client::connect(at);
    v1.send(b"PROXY TCP4 198.51.100.7 127.0.0.1 5555 80\r\n");
    assert_eq!(forwarded_for(&mut v1, ""), "198.51.100.7");
    // The header holds for every request of the connection.
    assert_eq!(forwarded_for(&mut v1, ""), "198.51.100.7");
    let mut v2 = Client::connect(at);
    let header = proxy_v2(
        "198.51.100.8:4444".parse().unwrap(),
        "127.0.0.1:80".parse().unwrap(),
    );
    v2.send(&header);
    assert_eq!(forwarded_for(&mut v2, ""), "198.51.100.8");
    // No header: closed without an answer.
    let mut bare = Client::connect(at);
    bare.send(b"GET / HTTP/1.1\r\nHost: x.test\r\n\r\n");
    let rest = bare.read_to_close();
    assert!(rest.is_empty(), "{}", String::from_utf8_lossy(&rest));
}

/// A backend that reads the PROXY v1 line a connection starts with and answers an HTTP
/// request (or, with `tcp`, just the line) with it.
fn proxy_reader(ip: &str, tcp: bool) -> RawBackend {
    RawBackend::start(ip, move |stream, _| {
        let mut reader = BufReader::new(stream.try_clone().unwrap());
        let mut first = Vec::new();
        if reader.read_until(b'\n', &mut first).is_err() {
            return;
        }
        let seen = String::from_utf8_lossy(&first).trim_end().to_owned();
        let mut out = stream;
        if tcp {
            let _ = out.write_all(format!("{seen}\n").as_bytes());
            return;
        }
        let mut line = String::new();
        while reader.read_line(&mut line).is_ok_and(|n| n > 0) {
            if line == "\r\n" {
                break;
            }
            line.clear();
        }
        let _ = out.write_all(
            format!(
                "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{seen}",
                seen.len()
            )
            .as_bytes(),
        );
    })
}

#[test]
fn the_proxy_protocol_is_sent_to_http_and_tcp_upstreams() {
    let http_up = proxy_reader("127.0.22.11", false);
    let tcp_up = proxy_reader("127.0.22.12", true);
    let template = "
listeners:
  - {name: http, address: '127.0.0.1:0'}
  - {name: tcp, address: '127.0.22.22:0', protocol: tcp, upstream: t}
services:
  - {name: s, upstream: u}
upstreams:
  - {name: u, nodes: [{address: '{b0}'}], proxy_protocol: v1}
  - {name: t, nodes: [{address: '{b1}'}], proxy_protocol: v1}
";
    let h = Harness::with_addrs(template, &[http_up.addr(), tcp_up.addr()]);
    let mut c = h.client();
    let client = c.local_addr();
    let resp = c.request("GET / HTTP/1.1\r\nHost: x.test\r\n\r\n");
    let want = format!(
        "PROXY TCP4 {} {} {} {}",
        client.ip(),
        http_up.addr().ip(),
        client.port(),
        http_up.addr().port()
    );
    assert_eq!(resp.text(), want);

    let tcp_at = h.gateway_ref().listen_addr("tcp").unwrap();
    let mut s = TcpStream::connect(tcp_at).unwrap();
    s.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
    let local = s.local_addr().unwrap();
    let mut line = String::new();
    BufReader::new(&mut s).read_line(&mut line).unwrap();
    assert_eq!(
        line.trim_end(),
        format!(
            "PROXY TCP4 {} {} {} {}",
            local.ip(),
            tcp_up.addr().ip(),
            local.port(),
            tcp_up.addr().port()
        )
    );
}

const LIMITED: &str = "
services:
  - name: s
    upstream: u
    routes:
      - {name: ip, path: /ip, rate_limit: {rate: 2/s, burst: 2}}
      - {name: key, path: /key, rate_limit: {rate: 1/m, burst: 1, key: header, header: X-Api-Key}}
upstreams:
  - {name: u, nodes: [{address: '{b0}'}]}
";

#[test]
fn a_rate_limit_answers_429_with_retry_after_and_recovers() {
    let h = Harness::start(&["127.0.22.13"], LIMITED);
    let mut c = h.client();
    let get = |c: &mut Client, path: &str, key: &str| {
        c.request(&format!(
            "GET {path} HTTP/1.1\r\nHost: x.test\r\nX-Api-Key: {key}\r\n\r\n"
        ))
    };
    // Per key: one request a minute.
    assert_eq!(get(&mut c, "/key", "a").status, 200);
    let refused = get(&mut c, "/key", "a");
    assert_eq!(refused.status, 429);
    let wait: u64 = refused.header("retry-after").unwrap().parse().unwrap();
    assert!((50..=60).contains(&wait), "Retry-After: {wait}");
    assert_eq!(
        get(&mut c, "/key", "b").status,
        200,
        "another key has its own bucket"
    );

    // By client address: a burst of 2, then 429 until a token is back (0.5 s).
    let statuses: Vec<u16> = (0..4).map(|_| get(&mut c, "/ip", "-").status).collect();
    assert_eq!(
        statuses.iter().filter(|s| **s == 200).count(),
        2,
        "{statuses:?}"
    );
    assert_eq!(*statuses.last().unwrap(), 429, "{statuses:?}");
    eventually("a token back on /ip", || {
        (get(&mut c, "/ip", "-").status == 200).then_some(())
    });
    assert_eq!(h.backends[0].requests_served() as usize, 2 + 2 + 1);
}

/// curl over h2c (prior knowledge) with `args`: the status line, response headers and
/// body, as `curl -i` prints them.
fn curl_h2c(args: &[&str]) -> String {
    let out = std::process::Command::new("curl")
        .args(["-s", "-i", "--max-time", "10", "--http2-prior-knowledge"])
        .args(args)
        .output()
        .expect("curl runs");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn http2_streams_take_the_same_routes_filters_and_answers() {
    let template = "
services:
  - name: shop
    hosts: [shop.test]
    upstream: main
    routes:
      - name: canary
        path: /api
        headers: [{name: X-Canary, value: 'true'}]
        upstream: canary
        response_headers: {set: {X-Variant: canary}}
      - {name: api, path: /api, request_headers: {set: {X-Env: prod}}}
      - {name: https, path: /login, redirect: {scheme: https, status: 308}}
upstreams:
  - {name: main, nodes: [{address: '{b0}'}]}
  - {name: canary, nodes: [{address: '{b1}'}]}
";
    let h = Harness::start(&["127.0.22.14", "127.0.22.15"], template);
    let url = |path: &str| format!("http://{}{path}", h.addr);
    let host = "Host: shop.test";
    let out = curl_h2c(&["-H", host, "-H", "X-Canary: true", &url("/api/x")]);
    assert!(out.starts_with("HTTP/2 200"), "{out}");
    assert!(out.contains("x-variant: canary"), "{out}");
    assert!(out.contains(&h.backend_name(1)), "{out}");
    let rid = out
        .lines()
        .find_map(|l| l.strip_prefix("x-request-id: "))
        .expect("a request id")
        .trim();
    // Returned to the client and seen by the upstream (in the echoed headers).
    assert_eq!(out.matches(rid).count(), 2, "{out}");
    let out = curl_h2c(&["-H", host, &url("/api/x")]);
    assert!(out.contains("\"X-Env\""), "{out}");
    assert!(out.contains(&h.backend_name(0)), "{out}");
    let out = curl_h2c(&["-H", host, &url("/login?a=1")]);
    assert!(out.starts_with("HTTP/2 308"), "{out}");
    assert!(
        out.contains("location: https://shop.test/login?a=1"),
        "{out}"
    );
}

#[test]
fn grpc_calls_split_over_weighted_backends_and_are_rate_limited_with_a_grpc_status() {
    use crate::support::grpc::{self, free_port, GrpcServer};
    let ip = "127.0.22.16";
    let a: SocketAddr = format!("{ip}:{}", free_port(ip)).parse().unwrap();
    let ip_b = "127.0.22.17";
    let b: SocketAddr = format!("{ip_b}:{}", free_port(ip_b)).parse().unwrap();
    let _pod_a = GrpcServer::start(a, "pod-a");
    let _pod_b = GrpcServer::start(b, "pod-b");
    let template = "
services:
  - name: g
    hosts: [grpc.test]
    routes:
      - name: split
        path: /
        backends: [{upstream: a, weight: 1}, {upstream: b, weight: 1}]
      - name: limited
        path: /test.Echo/Slow
        upstream: a
        rate_limit: {rate: 1/m, burst: 1}
upstreams:
  - {name: a, protocol: h2c, nodes: [{address: '{b0}'}]}
  - {name: b, protocol: h2c, nodes: [{address: '{b1}'}]}
";
    let h = Harness::with_addrs(template, &[a, b]);
    let mut served = HashMap::<String, usize>::new();
    for _ in 0..4 {
        let out = grpc::client(
            h.addr,
            "grpc.test",
            &["call", "--method", "/test.Echo/Unary", "--payload", "hi"],
        );
        assert_eq!(out["ok"], true, "{out}");
        let by = out["response"].as_str().unwrap().split(':').next().unwrap();
        *served.entry(by.to_owned()).or_default() += 1;
    }
    assert_eq!(served.get("pod-a"), Some(&2), "{served:?}");
    assert_eq!(served.get("pod-b"), Some(&2), "{served:?}");
    let slow = ["call", "--method", "/test.Echo/Slow", "--payload", "0"];
    let first = grpc::client(h.addr, "grpc.test", &slow);
    assert_eq!(first["ok"], true, "{first}");
    let limited = grpc::client(h.addr, "grpc.test", &slow);
    assert_eq!(limited["ok"], false, "{limited}");
    assert_eq!(limited["code"], "UNAVAILABLE", "{limited}");
}
