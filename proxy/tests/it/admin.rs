//! The admin server of an in-process gateway: `/healthz`, `/readyz` (registries synced,
//! not stopping), `/metrics` (requests by route and status class, durations, upstream
//! failures, retries and ejections, pool and endpoint gauges, propagation, registries)
//! and `/debug/snapshot`, read the way a kubelet probe or Prometheus would.

use std::net::SocketAddr;

use serde_json::Value;
use strait::Gateway;
use strait_discovery::EndpointState;
use strait_fake_apiserver::{FakeApiServer, Options};

use crate::support::client::Response;
use crate::support::dead_addr;
use crate::support::harness::endpoint;
use crate::support::kube::{seed_config, service, slice};
use crate::support::{eventually, get, Client, Harness};

fn admin(g: &Gateway, path: &str) -> Response {
    let addr: SocketAddr = g.admin_addr().expect("the admin server runs");
    Client::connect(addr).request(&get("admin", path))
}

/// The value of the sample `name{labels}` (exact text) in a `/metrics` answer.
fn sample(metrics: &str, series: &str) -> Option<f64> {
    metrics.lines().find_map(|l| {
        let (s, v) = l.rsplit_once(' ')?;
        (s == series).then(|| v.parse().ok())?
    })
}

const ROUTES: &str = "
services:
  - name: shop
    hosts: [shop.test]
    upstream: a
    routes:
      - {name: cart, path: /cart, methods: [GET]}
      - {name: pay, path: /pay, upstream: b}
upstreams:
  - {name: a, nodes: [{address: '{b0}'}]}
  - name: b
    nodes: [{address: '{b1}'}, {address: '{b2}'}]
    passive_health: {consecutive_failures: 1}
";

#[test]
fn healthz_and_readyz_answer_200_on_a_static_config() {
    let h = Harness::start(&["127.0.14.2", "127.0.14.3", "127.0.14.3"], ROUTES);
    let g = h.gateway_ref();
    let r = admin(g, "/healthz");
    assert_eq!((r.status, r.text().as_str()), (200, "ok\n"));
    let r = admin(g, "/readyz");
    assert_eq!((r.status, r.text().as_str()), (200, "ready\n"));
    assert_eq!(admin(g, "/nothing").status, 404);
    let mut c = Client::connect(g.admin_addr().unwrap());
    let r = c.request("POST /metrics HTTP/1.1\r\nHost: admin\r\nContent-Length: 0\r\n\r\n");
    assert_eq!(r.status, 405);
    assert_eq!(r.header("allow"), Some("GET, HEAD"));
    // Heads are read as the workers read them: garbage and oversized heads are refused
    // with the reason, a bare LF too.
    for (raw, status, reason) in [
        (
            "GET /healthz HTTP/1.1\r\nBad Header\r\n\r\n".to_owned(),
            400,
            "invalid header name\n",
        ),
        (
            "GET /healthz HTTP/1.1\nHost: a\r\n\r\n".to_owned(),
            400,
            "bare LF in the request head\n",
        ),
        (
            format!("GET /healthz HTTP/1.1\r\nX: {}\r\n\r\n", "a".repeat(9000)),
            431,
            "request head too large\n",
        ),
    ] {
        let r = Client::connect(g.admin_addr().unwrap()).request(&raw);
        assert_eq!((r.status, r.text().as_str()), (status, reason), "{raw:.40}");
        assert_eq!(r.reason, strait::http::reply::reason_phrase(status));
    }
}

#[test]
fn metrics_count_requests_by_route_and_status_class_with_durations() {
    let h = Harness::start(&["127.0.14.4", "127.0.14.5", "127.0.14.5"], ROUTES);
    for _ in 0..3 {
        assert_eq!(h.get("shop.test", "/cart/1").status, 200);
    }
    let mut c = h.client();
    assert_eq!(c.request(&get("shop.test", "/pay")).status, 200);
    // A 405 on a route, a 404 nowhere, a malformed request.
    let post = "POST /cart HTTP/1.1\r\nHost: shop.test\r\nContent-Length: 0\r\n\r\n";
    assert_eq!(h.client().request(post).status, 405);
    assert_eq!(h.get("nowhere.test", "/").status, 404);
    assert_eq!(h.client().request("GET / HTTP/1.1\r\n\r\n").status, 400);
    // A request is counted once its response is written: the client may read it first.
    eventually("the last requests to be counted", || {
        let m = admin(h.gateway_ref(), "/metrics").text();
        let total = |series: &str| sample(&m, series).unwrap_or(0.0);
        (total(r#"strait_requests_total{service="",route="",code="4xx"}"#) == 3.0
            && total(r#"strait_requests_total{service="shop",route="pay",code="2xx"}"#) == 1.0
            && total(r#"strait_requests_total{service="shop",route="cart",code="2xx"}"#) == 3.0)
            .then_some(())
    });
    let m = admin(h.gateway_ref(), "/metrics");
    assert_eq!(m.status, 200);
    assert!(m
        .header("content-type")
        .unwrap()
        .starts_with("text/plain; version=0.0.4"));
    let m = m.text();
    let n = |series: &str| sample(&m, series).unwrap_or_else(|| panic!("no {series} in\n{m}"));
    assert_eq!(
        n(r#"strait_requests_total{service="shop",route="cart",code="2xx"}"#),
        3.0
    );
    assert_eq!(
        n(r#"strait_requests_total{service="shop",route="pay",code="2xx"}"#),
        1.0
    );
    assert_eq!(
        n(r#"strait_requests_total{service="",route="",code="4xx"}"#),
        3.0,
        "the 405, the 404 and the 400"
    );
    assert_eq!(
        n(r#"strait_request_duration_seconds_count{service="shop",route="cart"}"#),
        3.0
    );
    assert_eq!(
        n(r#"strait_request_duration_seconds_bucket{service="shop",route="cart",le="+Inf"}"#),
        3.0
    );
    assert!(n(r#"strait_request_duration_seconds_sum{service="shop",route="cart"}"#) > 0.0);
    assert_eq!(
        n(r#"strait_upstream_endpoints{upstream="a",state="ready"}"#),
        1.0
    );
    // The connection that asked for /pay is still open; the upstream ones are pooled.
    // (Closed client connections and returns to the pool are counted as the worker
    // gets to them: wait for it.)
    eventually("the connection gauges to settle", || {
        let m = admin(h.gateway_ref(), "/metrics").text();
        let g = |series: &str| sample(&m, series);
        (g("strait_client_connections") == Some(1.0)
            && g(r#"strait_upstream_connections{state="idle"}"#) == Some(2.0)
            && g(r#"strait_upstream_connections{state="active"}"#) == Some(0.0))
        .then_some(())
    });
    assert!(n("strait_snapshot_version") >= 1.0);
    assert!(n("strait_propagation_seconds_count") >= 1.0);
    assert_eq!(n("strait_ready"), 1.0);
    drop(c);
}

#[test]
fn metrics_count_connect_failures_retries_and_ejections() {
    // `b` is a dead endpoint and a live one.
    let live = crate::support::echo("127.0.14.7");
    let h = Harness::with_addrs(ROUTES, &[live.addr(), dead_addr("127.0.14.6"), live.addr()]);
    for _ in 0..4 {
        assert_eq!(h.get("shop.test", "/pay").status, 200);
    }
    let m = admin(h.gateway_ref(), "/metrics").text();
    let n = |series: &str| sample(&m, series).unwrap_or_else(|| panic!("no {series} in\n{m}"));
    assert!(n(r#"strait_upstream_connect_failures_total{upstream="b"}"#) >= 1.0);
    assert!(n(r#"strait_upstream_retries_total{upstream="b"}"#) >= 1.0);
    assert_eq!(n(r#"strait_upstream_ejections_total{upstream="b"}"#), 1.0);
    assert_eq!(
        n(r#"strait_upstream_connect_failures_total{upstream="a"}"#),
        0.0
    );
}

#[test]
fn readyz_is_503_from_the_start_of_a_graceful_stop() {
    let mut h = Harness::start(
        &["127.0.14.9"],
        "
shutdown: {delay: 30s}
services:
  - {name: s, upstream: a}
upstreams:
  - {name: a, nodes: [{address: '{b0}'}]}
",
    );
    assert_eq!(admin(h.gateway_ref(), "/readyz").status, 200);
    h.gateway().begin_shutdown();
    let r = admin(h.gateway_ref(), "/readyz");
    assert_eq!(r.status, 503);
    assert!(r.text().contains("stopping"), "{}", r.text());
    // Alive all the same, and still serving during the delay.
    assert_eq!(admin(h.gateway_ref(), "/healthz").status, 200);
    assert_eq!(h.get("any.test", "/").status, 200);
    let m = admin(h.gateway_ref(), "/metrics").text();
    assert_eq!(sample(&m, "strait_ready"), Some(0.0));
}

#[test]
fn readyz_waits_for_the_registry_and_the_snapshot_shows_discovered_endpoints() {
    let api = FakeApiServer::start(Options::default());
    let pod = crate::support::echo("127.0.14.10");
    let port = pod.addr().port();
    // A wrong token first: the registry never lists.
    let bad = seed_config(&api, true).replace(&api.token(), "wrong-token");
    let mut h = Harness::with_addrs(&bad, &[]);
    let r = admin(h.gateway_ref(), "/readyz");
    assert_eq!(r.status, 503);
    assert!(r.text().contains("my-k8s-cluster"), "{}", r.text());
    let m = admin(h.gateway_ref(), "/metrics").text();
    assert_eq!(
        sample(&m, r#"strait_registry_synced{registry="my-k8s-cluster"}"#),
        Some(0.0)
    );
    // The right token, by reload: the registry restarts, lists and turns ready.
    api.apply_yaml(&service(port));
    api.apply_yaml(&slice(
        port,
        &[
            ("127.0.14.10", true, true, false),
            ("127.0.14.11", false, true, true),
        ],
    ));
    h.reload(&seed_config(&api, true));
    eventually("/readyz to answer 200", || {
        (admin(h.gateway_ref(), "/readyz").status == 200).then_some(())
    });
    let snap: Value = admin(h.gateway_ref(), "/debug/snapshot").json();
    let up = &snap["upstreams"][0];
    assert_eq!(up["name"], "httpbin");
    assert_eq!(up["status"], "ready");
    let states: Vec<(String, String)> = up["endpoints"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            (
                e["address"].as_str().unwrap().to_owned(),
                e["state"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    assert!(
        states.contains(&(format!("127.0.14.10:{port}"), "ready".into())),
        "{states:?}"
    );
    assert!(
        states.contains(&(format!("127.0.14.11:{port}"), "terminating".into())),
        "{states:?}"
    );
    let reg = &snap["registries"]["my-k8s-cluster"];
    assert_eq!(reg["synced"], true);
    assert_eq!(reg["watch"], "watching");
    assert!(reg["last_sync"]["age_seconds"].as_f64().unwrap() >= 0.0);
    assert_eq!(snap["services"][0]["hosts"][0], "sd.httpbin.org");
    assert_eq!(snap["services"][0]["routes"][0]["path"], "/anything");
    assert_eq!(snap["version"], admin_version(h.gateway_ref()));
    let m = admin(h.gateway_ref(), "/metrics").text();
    assert_eq!(
        sample(
            &m,
            r#"strait_upstream_endpoints{upstream="httpbin",state="terminating"}"#
        ),
        Some(1.0)
    );
    assert!(sample(
        &m,
        r#"strait_registry_last_sync_age_seconds{registry="my-k8s-cluster"}"#
    )
    .is_some());
    assert_eq!(
        sample(&m, r#"strait_config_reloads_total{result="ok"}"#),
        Some(1.0)
    );
    assert_eq!(h.get("sd.httpbin.org", "/v1/anything").status, 200);
}

fn admin_version(g: &Gateway) -> u64 {
    g.status().version().0
}

#[test]
fn an_endpoint_change_shows_in_the_snapshot_and_the_gauges() {
    let mut h = Harness::start(&["127.0.14.12", "127.0.14.13", "127.0.14.13"], ROUTES);
    let a = h.addrs[0];
    let mut terminating = endpoint(h.addrs[1]);
    terminating.state = EndpointState::Terminating;
    h.gateway()
        .set_endpoints("a", vec![endpoint(a), terminating])
        .unwrap();
    let m = admin(h.gateway_ref(), "/metrics").text();
    assert_eq!(
        sample(
            &m,
            r#"strait_upstream_endpoints{upstream="a",state="ready"}"#
        ),
        Some(1.0)
    );
    assert_eq!(
        sample(
            &m,
            r#"strait_upstream_endpoints{upstream="a",state="terminating"}"#
        ),
        Some(1.0)
    );
    let snap: Value = admin(h.gateway_ref(), "/debug/snapshot").json();
    assert_eq!(snap["upstreams"][0]["endpoints"][1]["state"], "terminating");
}
