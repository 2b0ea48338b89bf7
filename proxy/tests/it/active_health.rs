//! Active health checks through the data plane, with pods discovered through the fake API
//! server: an endpoint whose check starts failing leaves the rotation only after
//! `unhealthy` failed checks and comes back after `healthy` passes; when every endpoint
//! fails, all are used (panic mode) and the metric says so; a TCP check takes out an
//! endpoint that refuses connections. What `/metrics` and `/debug/snapshot` show of it.
//!
//! Runs on: the test threads; the gateway in process, backends on threads, the checks on
//! the gateway's discovery thread.

use std::io::{BufReader, Write};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU16, AtomicUsize, Ordering};
use std::sync::Arc;

use serde_json::Value;
use strait_fake_apiserver::{FakeApiServer, Options};

use crate::support::raw::{read_head, RawBackend};
use crate::support::{eventually, get, metric, Client, Harness};

/// A pod whose `/healthz` answers `health` (shared, so the test can flip it) and whose
/// other paths answer 200 with its name; counts the checks it received.
pub(crate) struct Pod {
    pub(crate) backend: RawBackend,
    pub(crate) health: Arc<AtomicU16>,
    pub(crate) checks: Arc<AtomicUsize>,
}

impl Pod {
    pub(crate) fn start(addr: SocketAddr, name: &'static str) -> Pod {
        let health = Arc::new(AtomicU16::new(200));
        let checks = Arc::new(AtomicUsize::new(0));
        let (h, c) = (health.clone(), checks.clone());
        let backend = RawBackend::start_at(addr, move |stream, _| {
            let mut reader = BufReader::new(stream.try_clone().unwrap());
            let mut out = stream;
            while let Some(head) = read_head(&mut reader) {
                let (status, body) = if head.starts_with("GET /healthz ") {
                    assert!(head.contains("User-Agent: strait-health-check"), "{head}");
                    c.fetch_add(1, Ordering::SeqCst);
                    (h.load(Ordering::SeqCst), "health")
                } else {
                    (200, name)
                };
                let resp = format!(
                    "HTTP/1.1 {status} X\r\nContent-Length: {}\r\n\r\n{body}",
                    body.len()
                );
                if out.write_all(resp.as_bytes()).is_err() {
                    return;
                }
            }
        });
        Pod {
            backend,
            health,
            checks,
        }
    }

    pub(crate) fn set_health(&self, status: u16) {
        self.health.store(status, Ordering::SeqCst);
    }

    pub(crate) fn checks(&self) -> usize {
        self.checks.load(Ordering::SeqCst)
    }
}

/// Service `web` in `apisix` and its EndpointSlice with the `ips` on `port`, ready.
fn objects(api: &FakeApiServer, port: u16, ips: &[&str]) {
    api.apply_yaml(&format!("apiVersion: v1\nkind: Service\nmetadata: {{name: web, namespace: apisix}}\nspec:\n  ports:\n  - {{name: http, port: 80, targetPort: {port}}}\n"));
    let mut y = format!("apiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata:\n  name: web-1\n  namespace: apisix\n  labels:\n    kubernetes.io/service-name: web\naddressType: IPv4\nports:\n- {{name: http, port: {port}, protocol: TCP}}\nendpoints:\n");
    for ip in ips {
        y.push_str(&format!(
            "- addresses: [{ip}]\n  conditions: {{ready: true}}\n"
        ));
    }
    api.apply_yaml(&y);
}

fn config(api: &FakeApiServer, listen: &str, upstream_extra: &str) -> String {
    format!(
        "listeners:\n  - {{name: http, address: '{listen}:0'}}\nregistries:\n  - {{name: k, server: {url}, token: {token}}}\nservices:\n  - {{name: s, upstream: web}}\nupstreams:\n  - name: web\n    discovery: {{registry: k, namespace: apisix, service: web, port: 80}}\n    {upstream_extra}\n",
        url = api.url(),
        token = api.token(),
    )
}

/// Which pods answer `n` requests on one keep-alive connection.
fn answers(addr: SocketAddr, n: usize) -> Vec<String> {
    let mut c = Client::connect(addr);
    (0..n)
        .map(|_| c.request(&get("a.test", "/")).text())
        .collect()
}

fn check_metric(admin: SocketAddr, endpoint: SocketAddr, result: &str) -> bool {
    let m = Client::connect(admin)
        .request(&get("admin", "/metrics"))
        .text();
    m.contains(&format!(
        "strait_upstream_endpoint_check{{upstream=\"web\",endpoint=\"{endpoint}\",result=\"{result}\"}} 1"
    ))
}

#[test]
fn a_failing_check_takes_an_endpoint_out_after_its_threshold_and_back_after_passes() {
    let api = FakeApiServer::start(Options::default());
    let a = Pod::start("127.0.19.1:0".parse().unwrap(), "a");
    let port = a.backend.addr().port();
    let b_addr: SocketAddr = format!("127.0.19.2:{port}").parse().unwrap();
    let b = Pod::start(b_addr, "b");
    objects(&api, port, &["127.0.19.1", "127.0.19.2"]);
    let h = Harness::with_addrs(
        &config(
            &api,
            "127.0.19.3",
            "health_check: {path: /healthz, interval: 50ms, timeout: 500ms, jitter: 0s, healthy: 2, unhealthy: 3}",
        ),
        &[],
    );
    let admin = h.gateway_ref().admin_addr().unwrap();
    eventually("both endpoints passing", || {
        (check_metric(admin, a.backend.addr(), "passing") && check_metric(admin, b_addr, "passing"))
            .then_some(())
    });
    let both = answers(h.addr, 20);
    assert!(both.iter().any(|n| n == "a") && both.iter().any(|n| n == "b"));

    // Up → down: b's check fails; b leaves after three failed checks, not before.
    let before = b.checks();
    b.set_health(503);
    eventually("b failing", || {
        check_metric(admin, b_addr, "failing").then_some(())
    });
    assert!(
        b.checks() - before >= 3,
        "out after {} failed checks",
        b.checks() - before
    );
    assert!(answers(h.addr, 20).iter().all(|n| n == "a"));
    let snap: Value = Client::connect(admin)
        .request(&get("admin", "/debug/snapshot"))
        .json();
    let eps = snap["upstreams"][0]["endpoints"]
        .as_array()
        .unwrap()
        .clone();
    let of = |addr: SocketAddr| {
        eps.iter()
            .find(|e| e["address"] == addr.to_string())
            .unwrap()
            .clone()
    };
    assert_eq!(of(b_addr)["check"], "failing");
    assert_eq!(of(b_addr)["picked"], false);
    assert_eq!(of(a.backend.addr())["check"], "passing");
    assert_eq!(metric(admin, "strait_upstream_panic{upstream=\"web\"}"), 0);

    // Down → up: two passes bring it back.
    let before = b.checks();
    b.set_health(200);
    eventually("b passing", || {
        check_metric(admin, b_addr, "passing").then_some(())
    });
    assert!(
        b.checks() - before >= 2,
        "back after {} passes",
        b.checks() - before
    );
    eventually("b answering again", || {
        answers(h.addr, 10).iter().any(|n| n == "b").then_some(())
    });

    // Every endpoint failing: panic mode, all of them serve.
    a.set_health(500);
    b.set_health(500);
    eventually("panic mode", || {
        (metric(admin, "strait_upstream_panic{upstream=\"web\"}") == 1).then_some(())
    });
    let all = answers(h.addr, 20);
    assert!(
        all.iter().any(|n| n == "a") && all.iter().any(|n| n == "b"),
        "{all:?}"
    );
    a.set_health(200);
    eventually("panic over", || {
        (metric(admin, "strait_upstream_panic{upstream=\"web\"}") == 0).then_some(())
    });
    assert!(answers(h.addr, 20).iter().all(|n| n == "a"));
}

#[test]
fn a_tcp_check_takes_out_an_endpoint_that_refuses_connections() {
    let good = crate::support::echo("127.0.19.11");
    let dead = crate::support::dead_addr("127.0.19.12");
    let h = Harness::with_addrs(
        "listeners:\n  - {name: http, address: '127.0.19.13:0'}\nservices:\n  - {name: s, upstream: u}\nupstreams:\n  - {name: u, health_check: {type: tcp, interval: 50ms, unhealthy: 2}, passive_health: {consecutive_failures: 0}, nodes: [{address: '{b0}'}, {address: '{b1}'}]}\n",
        &[good.addr(), dead],
    );
    let admin = h.gateway_ref().admin_addr().unwrap();
    eventually("the dead endpoint failing its check", || {
        let m = Client::connect(admin)
            .request(&get("admin", "/metrics"))
            .text();
        m.contains(&format!(
            "strait_upstream_endpoint_check{{upstream=\"u\",endpoint=\"{dead}\",result=\"failing\"}} 1"
        ))
        .then_some(())
    });
    // Passive ejection is off: only the check keeps requests away from it, so no
    // request needs a retry.
    let failures_before = metric(
        admin,
        "strait_upstream_connect_failures_total{upstream=\"u\"}",
    );
    for _ in 0..10 {
        assert_eq!(h.get("a.test", "/").status, 200);
    }
    assert_eq!(
        metric(
            admin,
            "strait_upstream_connect_failures_total{upstream=\"u\"}"
        ),
        failures_before
    );
}
