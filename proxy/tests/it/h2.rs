//! HTTP/2 from clients with real clients: curl with prior knowledge (h2c) and over TLS
//! (ALPN `h2`), each stream routed like an HTTP/1.1 request to an HTTP/1.1 upstream; gRPC
//! (Python grpcio, C-core) through strait to h2c gRPC servers, every call kind with its
//! trailers, strait's own errors as gRPC statuses; a graceful stop sending GOAWAY and
//! letting a call in flight finish; a rolling update of gRPC pods; long streams and the
//! stream idle timeout; an HTTP/1.1 client to an h2c upstream.
//!
//! Runs on: the test threads; the gateway in process, peers as processes.

use std::net::SocketAddr;
use std::process::Command;

use serde_json::Value;

use crate::support::grpc::{self, free_port, GrpcServer};
use crate::support::{eventually, metric, Harness};
use crate::tls::{certs, temp_dir};

/// curl's `-w '%{http_version} %{http_code}'` line, then the body.
fn curl(args: &[&str]) -> (String, String) {
    let out = Command::new("curl")
        .args([
            "-s",
            "--max-time",
            "10",
            "-w",
            "\n%{http_version} %{http_code}",
        ])
        .args(args)
        .output()
        .expect("curl runs");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (body, status) = text.rsplit_once('\n').unwrap_or(("", &text));
    (status.to_string(), body.to_string())
}

#[test]
fn curl_over_h2c_and_h2_gets_each_stream_routed_like_an_http1_request() {
    let dir = temp_dir("h2-curl");
    let site = certs(&dir, "a", &["a.test"]);
    let template = format!(
        "listeners:
  - {{name: http, address: '127.0.16.1:0'}}
  - name: https
    address: 127.0.16.3:0
    tls:
      certificates: [{{cert_file: '{}', key_file: '{}'}}]
services:
  - name: s
    hosts: [a.test]
    path_prefix: /v1
    routes:
      - {{name: any, path: /anything, strip_prefix: true, methods: [GET, POST]}}
    upstream: u
upstreams:
  - {{name: u, nodes: [{{address: '{{b0}}'}}]}}
",
        site.cert_file.display(),
        site.key_file.display()
    );
    let h = Harness::start(&["127.0.16.2"], &template);
    let http = format!("http://{}", h.addr);
    let https = h.gateway_ref().listen_addr("https").unwrap();
    let admin = h.gateway_ref().admin_addr().unwrap();

    let (status, body) = curl(&[
        "--http2-prior-knowledge",
        "-H",
        "Host: a.test",
        &format!("{http}/v1/anything?q=1"),
    ]);
    assert_eq!(status, "2 200", "{body}");
    let json: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(json["url"], "http://a.test/anything?q=1", "prefix stripped");
    assert_eq!(json["headers"]["X-Forwarded-Proto"], "http");

    // A body of unknown length (curl streams stdin) reaches the HTTP/1.1 upstream chunked.
    let (status, body) = curl(&[
        "--http2-prior-knowledge",
        "-H",
        "Host: a.test",
        "--data-binary",
        "hello over h2",
        &format!("{http}/v1/anything"),
    ]);
    assert_eq!(status, "2 200");
    let json: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(json["data"], "hello over h2");
    assert_eq!(json["method"], "POST");

    // Routing answers are the HTTP/1.1 engine's.
    let (status, _) = curl(&[
        "--http2-prior-knowledge",
        "-H",
        "Host: b.test",
        &format!("{http}/"),
    ]);
    assert_eq!(status, "2 404");
    let (status, _) = curl(&[
        "--http2-prior-knowledge",
        "-X",
        "DELETE",
        "-H",
        "Host: a.test",
        &format!("{http}/v1/anything"),
    ]);
    assert_eq!(status, "2 405");

    // Over TLS, ALPN picks h2; a client that offers only http/1.1 still gets it.
    let resolve = format!("a.test:{}:127.0.16.3", https.port());
    let url = format!("https://a.test:{}/v1/anything", https.port());
    let ca = site.ca_file.display().to_string();
    let (status, body) = curl(&["--http2", "--cacert", &ca, "--resolve", &resolve, &url]);
    assert_eq!(status, "2 200", "{body}");
    let json: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(json["headers"]["X-Forwarded-Proto"], "https");
    let (status, _) = curl(&["--http1.1", "--cacert", &ca, "--resolve", &resolve, &url]);
    assert_eq!(status, "1.1 200");

    // Many streams on one connection: h2load, 10 at once.
    let out = Command::new("h2load")
        .args([
            "-n",
            "200",
            "-c",
            "2",
            "-m",
            "10",
            "-H",
            ":authority: a.test",
        ])
        .arg(format!("{http}/v1/anything"))
        .output()
        .expect("h2load runs");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("200 succeeded, 0 failed"), "{text}");
    assert!(metric(admin, "strait_http2_streams_total") >= 205);
}

fn grpc_config(ip: &str, extra: &str) -> String {
    format!(
        "listeners:
  - {{name: http, address: '{ip}:0'}}
services:
  - {{name: g, hosts: [grpc.test], upstream: g}}
  - {{name: slow, hosts: [slow.test], upstream: slow}}
  - {{name: gone, hosts: [gone.test], upstream: gone}}
upstreams:
  - {{name: g, protocol: h2c, nodes: [{{address: '{{b0}}'}}]}}
  - {{name: slow, protocol: h2c, nodes: [{{address: '{{b0}}'}}], timeouts: {{response_header: 300ms}}}}
  - {{name: gone, protocol: h2c, nodes: [{{address: '{{b1}}'}}]}}
{extra}"
    )
}

#[test]
fn grpc_calls_of_every_kind_pass_with_trailers_and_strait_answers_grpc_statuses() {
    let ip = "127.0.16.11";
    let pod: SocketAddr = format!("{ip}:{}", free_port(ip)).parse().unwrap();
    let _server = GrpcServer::start(pod, "pod-a");
    let gone: SocketAddr = format!("127.0.16.12:{}", free_port("127.0.16.12"))
        .parse()
        .unwrap();
    let h = Harness::with_addrs(&grpc_config("127.0.16.10", ""), &[pod, gone]);

    let out = grpc::client(h.addr, "grpc.test", &["client"]);
    assert_eq!(out["unary"]["response"], "pod-a:hello");
    assert_eq!(out["unary"]["trailers"]["x-served-by"], "pod-a");
    let streamed: Vec<&str> = out["server_stream"]["responses"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    assert_eq!(
        streamed,
        ["pod-a:0", "pod-a:1", "pod-a:2", "pod-a:3", "pod-a:4"]
    );
    assert_eq!(out["server_stream"]["trailers"]["x-count"], "5");
    assert_eq!(out["client_stream"], "pod-a:a|b|c");
    assert_eq!(out["bidi"], serde_json::json!(["pod-a:x", "pod-a:y"]));
    // The server's own error, status and trailers, passed through.
    assert_eq!(out["fail"]["code"], "INVALID_ARGUMENT");
    assert_eq!(out["fail"]["details"], "failing as asked");
    assert_eq!(out["fail"]["trailers"]["x-why"], "asked");
    assert_eq!(out["unknown"]["code"], "UNIMPLEMENTED");

    // strait's own answers are gRPC statuses, not HTML.
    let call = |authority: &str, method: &str, payload: &str| {
        grpc::client(
            h.addr,
            authority,
            &["call", "--method", method, "--payload", payload],
        )
    };
    let no_route = call("nowhere.test", "/test.Echo/Unary", "x");
    assert_eq!(no_route["code"], "UNIMPLEMENTED", "{no_route}");
    let down = call("gone.test", "/test.Echo/Unary", "x");
    assert_eq!(down["code"], "UNAVAILABLE", "{down}");
    let late = call("slow.test", "/test.Echo/Slow", "2");
    assert_eq!(late["code"], "DEADLINE_EXCEEDED", "{late}");
    let fine = call("slow.test", "/test.Echo/Slow", "0.01");
    assert_eq!(fine["response"], "pod-a", "{fine}");
}

#[test]
fn a_graceful_stop_lets_a_grpc_call_in_flight_finish() {
    let ip = "127.0.16.21";
    let pod: SocketAddr = format!("{ip}:{}", free_port(ip)).parse().unwrap();
    let _server = GrpcServer::start(pod, "pod-a");
    let mut h = Harness::with_addrs(
        &grpc_config("127.0.16.20", "shutdown: {delay: 0s, timeout: 20s}\n"),
        &[pod, pod],
    );
    let admin = h.gateway_ref().admin_addr().unwrap();
    let before = metric(admin, "strait_http2_streams_total");
    let mut slow = grpc::spawn_client(
        h.addr,
        "grpc.test",
        &["call", "--method", "/test.Echo/Slow", "--payload", "1.5"],
    );
    eventually("the call to be in flight", || {
        (metric(admin, "strait_http2_streams_total") > before).then_some(())
    });
    // An idle HTTP/2 connection is told to go away (GOAWAY, NO_ERROR).
    let mut idle = crate::support::h2raw::RawH2::connect(h.addr, &[]);
    idle.ack_settings();
    h.gateway().begin_shutdown();
    assert_eq!(idle.goaway(std::time::Duration::from_secs(5)), Some(0));
    let line = slow.line_after("{");
    let out: Value = serde_json::from_str(&format!("{{{line}")).unwrap();
    assert_eq!(out["ok"], true, "the call in flight finished: {out}");
    assert_eq!(out["response"], "pod-a");
    slow.wait_exit();
}

/// Service `httpbin` in `apisix` behind a registry of `api`, as an h2c upstream.
fn discovered_grpc(api: &strait_fake_apiserver::FakeApiServer) -> String {
    format!(
        "workers: 2
listeners:
  - {{name: http, address: '127.0.16.30:0'}}
registries:
  - {{name: k, server: '{}', token: '{}', namespaces: ^apisix$}}
services:
  - {{name: g, hosts: [grpc.test], upstream: g}}
upstreams:
  - {{name: g, protocol: h2c, discovery: {{registry: k, namespace: apisix, service: httpbin, port: 80}}}}
",
        api.url(),
        api.token()
    )
}

#[test]
fn a_rolling_update_of_grpc_pods_under_multiplexed_calls_fails_no_call() {
    use crate::support::kube::{service, slice};
    let port = free_port("127.0.16.31");
    let ips = |range: std::ops::Range<u8>| -> Vec<String> {
        range.map(|i| format!("127.0.16.{}", 31 + i)).collect()
    };
    let (old, new) = (ips(0..3), ips(3..6));
    let pod =
        |ip: &str, name: &str| GrpcServer::start(format!("{ip}:{port}").parse().unwrap(), name);
    let mut pods: Vec<GrpcServer> = old.iter().map(|ip| pod(ip, ip)).collect();
    let api =
        strait_fake_apiserver::FakeApiServer::start(strait_fake_apiserver::Options::default());
    api.apply_yaml(&service(port));
    // Each endpoint: (ip, ready, serving, terminating).
    let mut eps: Vec<(String, bool, bool, bool)> = old
        .iter()
        .map(|ip| (ip.clone(), true, true, false))
        .collect();
    let publish = |eps: &[(String, bool, bool, bool)]| {
        let view: Vec<(&str, bool, bool, bool)> = eps
            .iter()
            .map(|(ip, r, s, t)| (ip.as_str(), *r, *s, *t))
            .collect();
        api.apply_yaml(&slice(port, &view));
    };
    publish(&eps);
    let h = Harness::with_addrs(&discovered_grpc(&api), &[]);
    eventually("the registry to sync", || {
        h.gateway_ref().ready().then_some(())
    });
    let admin = h.gateway_ref().admin_addr().unwrap();
    let streams = || metric(admin, "strait_http2_streams_total");
    // Steps are paced by the load: so many more calls went through.
    let progress = |n: u64| {
        let from = streams();
        eventually("calls to keep flowing", || {
            (streams() >= from + n).then_some(())
        });
    };
    let load = grpc::spawn_client(
        h.addr,
        "grpc.test",
        &["load", "--seconds", "60", "--channels", "2"],
    );
    load.line_after("started");
    progress(100);
    for i in 0..3 {
        // maxSurge 1: the new pod starts, joins not ready, turns ready.
        pods.push(pod(&new[i], &new[i]));
        eps.push((new[i].clone(), false, false, false));
        publish(&eps);
        eps.last_mut().unwrap().1 = true;
        eps.last_mut().unwrap().2 = true;
        publish(&eps);
        progress(50);
        // The old pod terminates: out of rotation, then a graceful stop (GOAWAY, its
        // calls in flight finish), then it leaves the slice.
        eps[0] = (old[i].clone(), false, true, true);
        publish(&eps);
        progress(30);
        pods[0].terminate();
        pods.remove(0);
        eps.remove(0);
        publish(&eps);
        progress(50);
    }
    progress(100);
    load.signal("USR1");
    let line = load.line_after("{");
    let stats: Value = serde_json::from_str(&format!("{{{line}")).unwrap();
    eprintln!("grpc load: {stats}");
    assert_eq!(stats["failed"], 0, "{stats}");
    assert!(stats["ok"].as_u64().unwrap() > 500, "{stats}");
    for ip in &new {
        assert!(
            stats["servers"][ip].as_u64().unwrap_or(0) > 0,
            "{ip} served: {stats}"
        );
    }
}

#[test]
fn an_http1_client_reaches_an_h2c_upstream_and_streams_share_its_connection() {
    // The upstream speaks h2c: a second gateway (HTTP/2 with prior knowledge) in front of
    // an echo backend.
    let back = Harness::start(
        &["127.0.16.51"],
        "listeners:\n  - {name: http, address: '127.0.16.52:0'}\nservices:\n  - {name: s, upstream: u}\nupstreams:\n  - {name: u, nodes: [{address: '{b0}'}]}\n",
    );
    let back_admin = back.gateway_ref().admin_addr().unwrap();
    let front = Harness::with_addrs(
        "listeners:\n  - {name: http, address: '127.0.16.53:0'}\nservices:\n  - {name: s, upstream: h}\nupstreams:\n  - {name: h, protocol: h2c, nodes: [{address: '{b0}'}]}\n",
        &[back.addr],
    );
    let url = format!("http://{}/anything", front.addr);
    let (status, body) = curl(&["--http1.1", "-H", "Host: a.test", &url]);
    assert_eq!(status, "1.1 200", "{body}");
    let json: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(json["url"], "http://a.test/anything");
    // A chunked request body is read whole and sent as DATA.
    let (status, body) = curl(&[
        "--http1.1",
        "-H",
        "Host: a.test",
        "-H",
        "Transfer-Encoding: chunked",
        "--data-binary",
        "chunked over h1 then h2c",
        &url,
    ]);
    assert_eq!(status, "1.1 200", "{body}");
    let json: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(json["data"], "chunked over h1 then h2c");
    assert_eq!(metric(back_admin, "strait_http2_streams_total"), 2);
    // Ten keep-alive requests, one HTTP/2 connection upstream.
    for _ in 0..10 {
        assert_eq!(front.get("a.test", "/get").status, 200);
    }
    assert_eq!(metric(back_admin, "strait_http2_connections"), 1);
    assert_eq!(metric(back_admin, "strait_http2_streams_total"), 12);
    // The endpoint leaves the table: its idle HTTP/2 connection closes.
    let mut front = front;
    front.set_endpoints("h", &[]);
    eventually("the upstream HTTP/2 connection to close", || {
        (metric(back_admin, "strait_http2_connections") == 0).then_some(())
    });
}

#[test]
fn a_grpc_stream_outlives_the_read_timeout_and_an_idle_one_ends_deadline_exceeded() {
    let ip = "127.0.16.61";
    let pod: SocketAddr = format!("{ip}:{}", free_port(ip)).parse().unwrap();
    let _server = GrpcServer::start(pod, "pod-a");
    let h = Harness::with_addrs(
        "listeners:\n  - {name: http, address: '127.0.16.60:0'}\nhttp:\n  http2: {stream_idle_timeout: 700ms}\nservices:\n  - {name: g, hosts: [grpc.test], upstream: g}\n  - {name: long, hosts: [long.test], upstream: g, routes: [{name: all, path: /, stream_idle_timeout: 3s}]}\nupstreams:\n  - {name: g, protocol: h2c, nodes: [{address: '{b0}'}], timeouts: {read: 200ms}}\n",
        &[pod],
    );
    let stream_on = |authority: &str, payload: &str| {
        grpc::client(
            h.addr,
            authority,
            &[
                "stream",
                "--method",
                "/test.Echo/SlowStream",
                "--payload",
                payload,
            ],
        )
    };
    let stream = |payload: &str| stream_on("grpc.test", payload);
    // Gaps longer than the upstream read timeout, shorter than the stream idle timeout.
    let long = stream("3,0.35");
    assert_eq!(long["ok"], true, "{long}");
    assert_eq!(
        long["responses"],
        serde_json::json!(["pod-a:0", "pod-a:1", "pod-a:2"])
    );
    // A gap past the stream idle timeout: what came is delivered, then DEADLINE_EXCEEDED.
    let idle = stream("2,1.5");
    assert_eq!(idle["responses"], serde_json::json!(["pod-a:0"]), "{idle}");
    assert_eq!(idle["code"], "DEADLINE_EXCEEDED", "{idle}");
    // A route with its own, longer stream idle timeout keeps the same stream.
    let kept = stream_on("long.test", "2,1.5");
    assert_eq!(
        kept["responses"],
        serde_json::json!(["pod-a:0", "pod-a:1"]),
        "{kept}"
    );
}

#[test]
fn streams_to_an_h2c_upstream_respect_its_max_concurrent_streams_with_more_connections() {
    // The upstream (a second gateway) allows one stream per connection.
    let back = Harness::start(
        &["127.0.16.71"],
        "listeners:\n  - {name: http, address: '127.0.16.72:0'}\nhttp:\n  http2: {max_concurrent_streams: 1}\nservices:\n  - {name: s, upstream: u}\nupstreams:\n  - {name: u, nodes: [{address: '{b0}'}]}\n",
    );
    let back_admin = back.gateway_ref().admin_addr().unwrap();
    let front = Harness::with_addrs(
        "listeners:\n  - {name: http, address: '127.0.16.73:0'}\nservices:\n  - {name: s, upstream: h}\nupstreams:\n  - {name: h, protocol: h2c, nodes: [{address: '{b0}'}]}\n",
        &[back.addr],
    );
    // 10 streams at once on one client connection, 200 requests.
    let out = Command::new("h2load")
        .args(["-n", "200", "-c", "1", "-m", "10"])
        .arg(format!("http://{}/delay/5", front.addr))
        .output()
        .expect("h2load runs");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("200 succeeded, 0 failed"), "{text}");
    assert_eq!(metric(back_admin, "strait_http2_streams_total"), 200);
    let conns = metric(back_admin, "strait_http2_connections");
    assert!(
        conns >= 2,
        "a new upstream connection when one is full: {conns}"
    );
}
