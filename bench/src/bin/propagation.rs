//! Question: how long from a watch event reaching the discovery thread to every worker
//! routing with the snapshot that contains it, on an idle gateway?
//!
//! Inputs: a fake API server with one Service (3 endpoints) and a gateway with `WORKERS`
//! workers (default 2) watching it. `EVENTS` times (default 500) one EndpointSlice is
//! modified (its endpoint set alternates); after each change the bench waits until every
//! worker has swapped in a newer snapshot. The gateway measures each propagation itself
//! (snapshot origin = the event batch's arrival in the discovery thread; end = the last
//! worker's swap), and this prints p50, p90, p99 and max of those samples.
//!
//! Run: `cargo run --release -p strait-bench --bin propagation` (issue 3, item 9).

use std::time::{Duration, Instant};

use strait::config::Config;
use strait::Gateway;
use strait_fake_apiserver::{FakeApiServer, Options};

fn slice(third: bool) -> String {
    let mut y = String::from(
        "apiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata:\n  name: web-1\n  namespace: prod\n  labels:\n    kubernetes.io/service-name: web\naddressType: IPv4\nports:\n- {name: http, port: 8080, protocol: TCP}\nendpoints:\n",
    );
    let ips: &[&str] = if third {
        &["10.0.0.1", "10.0.0.2", "10.0.0.3"]
    } else {
        &["10.0.0.1", "10.0.0.2"]
    };
    for ip in ips {
        y.push_str(&format!(
            "- addresses: [{ip}]\n  conditions: {{ready: true}}\n"
        ));
    }
    y
}

fn main() {
    let events: usize = std::env::var("EVENTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(500);
    let workers: usize = std::env::var("WORKERS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(2);
    let api = FakeApiServer::start(Options::default());
    api.apply_yaml(
        "apiVersion: v1\nkind: Service\nmetadata: {name: web, namespace: prod}\nspec:\n  ports:\n  - {name: http, port: 80, targetPort: 8080}\n",
    );
    api.apply_yaml(&slice(true));
    let yaml = format!(
        "workers: {workers}\nlisteners: [{{name: http, address: '127.0.0.1:0'}}]\n\
         registries:\n  - {{name: k, server: '{}', token: '{}'}}\n\
         upstreams:\n  - {{name: web, discovery: {{registry: k, namespace: prod, service: web, port: 80}}}}\n\
         services:\n  - {{name: web, upstream: web}}\n",
        api.url(),
        api.token()
    );
    let mut config = Config::from_yaml(&yaml).unwrap_or_else(|e| panic!("{e}"));
    config.admin.listen = None;
    let gateway = Gateway::start(config).unwrap_or_else(|e| panic!("{e}"));
    let status = gateway.status().clone();
    let deadline = Instant::now() + Duration::from_secs(30);
    while !status.ready() {
        assert!(Instant::now() < deadline, "the registry did not sync");
        status.wait_registries(Duration::from_millis(100), |r| r.values().all(|r| r.synced));
    }
    let skip = status.propagation_samples().len();
    for i in 0..events {
        let before = status.version();
        api.apply_yaml(&slice(i % 2 == 1));
        // The change is published as a newer version, then every worker swaps it in.
        let deadline = Instant::now() + Duration::from_secs(10);
        let version = loop {
            let v = status.version();
            if v > before {
                break v;
            }
            assert!(Instant::now() < deadline, "event {i} was not published");
            std::thread::yield_now();
        };
        assert!(
            status.wait_applied(version, Duration::from_secs(10)),
            "event {i} did not reach every worker"
        );
    }
    let mut samples: Vec<Duration> = status.propagation_samples().split_off(skip);
    samples.sort();
    let pct = |p: f64| samples[((samples.len() as f64 * p) as usize).min(samples.len() - 1)];
    println!(
        "propagation over {} events, {workers} workers: p50 {:?}  p90 {:?}  p99 {:?}  max {:?}",
        samples.len(),
        pct(0.50),
        pct(0.90),
        pct(0.99),
        samples[samples.len() - 1]
    );
    gateway.shutdown();
}
