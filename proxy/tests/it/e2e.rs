//! Kubernetes discovery end to end: the fake API server (real list/watch protocol) and
//! the real kube watcher feed an in-process gateway in front of echo "pods" on
//! 127.0.0.x; requests go through the data plane.
//!
//! Runs on: the test threads; the API server, discovery and workers on their own.

use std::net::SocketAddr;

use strait::echo::EchoServer;
use strait_fake_apiserver::{FakeApiServer, Kind, Options};

use crate::support::kube::{seed_config, service, slice};
use crate::support::{eventually, get, Client, Harness};

const HTTPBIN: &str = include_str!("../../../discovery/fake-apiserver/tests/fixtures/httpbin.yaml");

/// Pods on `ips`, all on one port (an EndpointSlice has one port list): the first picks
/// a free port, the others take the same one on their own address.
fn pods(ips: &[&str]) -> Vec<EchoServer> {
    let first = EchoServer::start(format!("{}:0", ips[0]).parse().unwrap()).unwrap();
    let port = first.addr().port();
    let mut pods = vec![first];
    for ip in &ips[1..] {
        pods.push(EchoServer::start(SocketAddr::new(ip.parse().unwrap(), port)).unwrap());
    }
    pods
}

/// The backend that answered `GET /v1/anything`, on a new connection.
fn backend(h: &Harness) -> (u16, String) {
    let r = h.get("sd.httpbin.org", "/v1/anything");
    let backend = if r.status == 200 {
        r.json()["backend"].as_str().unwrap_or("").to_owned()
    } else {
        r.text()
    };
    (r.status, backend)
}

#[test]
fn the_seed_example_reaches_the_three_httpbin_pods_in_turn() {
    // The seed: Service httpbin in namespace apisix, pods on 127.0.0.2-4:8080, Service
    // port 80 -> targetPort 8080.
    let _held = crate::support::SEED_PODS
        .lock()
        .unwrap_or_else(|e| e.into_inner());
    let api = FakeApiServer::start(Options::default());
    api.apply_yaml(HTTPBIN);
    let _pods: Vec<EchoServer> = ["127.0.0.2", "127.0.0.3", "127.0.0.4"]
        .iter()
        .map(|ip| EchoServer::start(format!("{ip}:8080").parse().unwrap()).unwrap())
        .collect();
    let h = Harness::with_addrs(&seed_config(&api, true), &[]);
    eventually("the registry to sync", || h_ready(&h).then_some(()));
    let answered: Vec<String> = (0..3)
        .map(|_| backend(&h))
        .map(|(s, b)| {
            assert_eq!(s, 200, "{b}");
            b
        })
        .collect();
    let mut sorted = answered.clone();
    sorted.sort();
    assert_eq!(
        sorted,
        ["127.0.0.2:8080", "127.0.0.3:8080", "127.0.0.4:8080"],
        "three requests, three pods"
    );
    // The route strips the prefix: the pod sees /anything.
    let r = h.get("sd.httpbin.org", "/v1/anything");
    assert_eq!(r.json()["url"], "http://sd.httpbin.org/anything");
}

fn config_warnings(template: &str) -> Vec<String> {
    crate::support::harness::config(&crate::support::harness::render(template, &[])).warnings()
}

fn h_ready(h: &Harness) -> bool {
    // Readiness is a control-side flag; the gateway exposes it.
    h.gateway_ref().ready()
}

#[test]
fn until_the_first_sync_the_upstream_answers_503_and_the_gateway_is_not_ready() {
    let api = FakeApiServer::start(Options::default());
    api.apply_yaml(HTTPBIN);
    // A wrong token: the first list never completes.
    let yaml = seed_config(&api, true).replace(&api.token(), "wrong-token");
    let h = Harness::with_addrs(&yaml, &[]);
    let r = h.get("sd.httpbin.org", "/v1/anything");
    assert_eq!(r.status, 503);
    assert!(
        r.text().contains("discovery has not synced yet"),
        "{}",
        r.text()
    );
    assert!(!h.gateway_ref().ready());
}

#[test]
fn scaling_readiness_and_an_unreachable_api_server_are_followed_by_the_data_plane() {
    let api = FakeApiServer::start(Options::default());
    let pods = pods(&["127.0.0.21", "127.0.0.22", "127.0.0.23"]);
    let port = pods[0].addr().port();
    api.apply_yaml(&service(port));
    api.apply_yaml(&slice(
        port,
        &[
            ("127.0.0.21", true, true, false),
            ("127.0.0.22", true, true, false),
        ],
    ));
    let h = Harness::with_addrs(&seed_config(&api, true), &[]);
    let pod = |ip: &str| format!("{ip}:{port}");
    let seen = |n: usize| {
        let mut v: Vec<String> = (0..n).map(|_| backend(&h).1).collect();
        v.sort();
        v.dedup();
        v
    };
    eventually("two pods", || {
        (seen(4) == [pod("127.0.0.21"), pod("127.0.0.22")]).then_some(())
    });
    // Scale up.
    api.apply_yaml(&slice(
        port,
        &[
            ("127.0.0.21", true, true, false),
            ("127.0.0.22", true, true, false),
            ("127.0.0.23", true, true, false),
        ],
    ));
    eventually("three pods", || (seen(6).len() == 3).then_some(()));
    // One pod turns not ready, another terminates: only the ready one takes traffic.
    api.apply_yaml(&slice(
        port,
        &[
            ("127.0.0.21", false, false, false),
            ("127.0.0.22", false, true, true),
            ("127.0.0.23", true, true, false),
        ],
    ));
    eventually("one ready pod", || {
        (seen(6) == [pod("127.0.0.23")]).then_some(())
    });
    // The last ready one goes: the terminating-but-serving pod takes over.
    api.apply_yaml(&slice(port, &[("127.0.0.22", false, true, true)]));
    eventually("the serving pod", || {
        (seen(3) == [pod("127.0.0.22")]).then_some(())
    });
    // Back to two; then the API server goes away: traffic keeps flowing.
    api.apply_yaml(&slice(
        port,
        &[
            ("127.0.0.21", true, true, false),
            ("127.0.0.23", true, true, false),
        ],
    ));
    eventually("two pods again", || {
        (seen(4) == [pod("127.0.0.21"), pod("127.0.0.23")]).then_some(())
    });
    api.stop();
    for _ in 0..10 {
        let (status, b) = backend(&h);
        assert_eq!(status, 200, "{b}");
    }
    // No endpoints at all → 503.
    api.restart();
    api.delete(Kind::EndpointSlice, "apisix", "httpbin-abc12");
    eventually("503 without endpoints", || {
        let r = h.get("sd.httpbin.org", "/v1/anything");
        (r.status == 503 && r.text().contains("no endpoints")).then_some(())
    });
}

#[test]
fn a_registry_disabled_by_reload_turns_its_upstreams_to_503() {
    let api = FakeApiServer::start(Options::default());
    let pods = pods(&["127.0.0.31"]);
    let port = pods[0].addr().port();
    api.apply_yaml(&service(port));
    api.apply_yaml(&slice(port, &[("127.0.0.31", true, true, false)]));
    let mut h = Harness::with_addrs(&seed_config(&api, true), &[]);
    eventually("synced", || (backend(&h).0 == 200).then_some(()));
    // A client connection kept open across the reload is not dropped.
    let mut kept = Client::connect(h.addr);
    assert_eq!(
        kept.request(&get("sd.httpbin.org", "/v1/anything")).status,
        200
    );
    h.reload(&seed_config(&api, false));
    let r = kept.request(&get("sd.httpbin.org", "/v1/anything"));
    assert_eq!(r.status, 503);
    assert!(r.text().contains("registry is disabled"), "{}", r.text());
    assert!(
        h.gateway_ref().ready(),
        "a disabled registry does not hold readiness back"
    );
    // Removed from the config altogether: still 503, as in the seed product.
    let mut yaml = seed_config(&api, true);
    let start = yaml.find("registries:").unwrap();
    let end = yaml.find("upstreams:").unwrap();
    yaml.replace_range(start..end, "");
    assert!(!config_warnings(&yaml).is_empty());
    h.reload(&yaml);
    let r = kept.request(&get("sd.httpbin.org", "/v1/anything"));
    assert_eq!(r.status, 503);
    assert!(r.text().contains("not configured"), "{}", r.text());
}

/// `/readyz`'s status and body.
fn readyz(h: &Harness) -> (u16, String) {
    let admin = h.gateway_ref().admin_addr().expect("the admin server runs");
    let r = Client::connect(admin).request("GET /readyz HTTP/1.1\r\nHost: admin\r\n\r\n");
    (r.status, r.text())
}

#[test]
fn with_the_seeds_rbac_services_refused_routes_come_from_the_endpoints_alone() {
    // The seed grants list/watch on endpoints only: every Services request gets 403.
    let api = FakeApiServer::start(Options {
        forbidden: vec![Kind::Service],
        ..Options::default()
    });
    let pods = pods(&["127.0.24.2", "127.0.24.3"]);
    let port = pods[0].addr().port();
    api.apply_yaml(&service(port));
    api.apply_yaml(&format!(
        "apiVersion: v1\nkind: Endpoints\nmetadata: {{name: httpbin, namespace: apisix}}\nsubsets:\n\
         - addresses: [{{ip: 127.0.24.2}}, {{ip: 127.0.24.3}}]\n  ports: [{{name: http, port: {port}}}]\n"
    ));
    let yaml = seed_config(&api, true).replace(
        "    enabled: true\n",
        "    enabled: true\n    resource: endpoints\n",
    );
    let h = Harness::with_addrs(&yaml, &[]);
    // Service port 80 is unknown without the Service: the Endpoints' single port is used.
    eventually("both pods through the Endpoints alone", || {
        let mut seen: Vec<String> = (0..4)
            .map(|_| backend(&h))
            .filter(|(s, _)| *s == 200)
            .map(|(_, b)| b)
            .collect();
        seen.sort();
        seen.dedup();
        (seen.len() == 2).then_some(())
    });
    let (status, body) = readyz(&h);
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("services is forbidden (403)"), "{body}");
    // Once the permission is granted, the Service is read and the reason goes.
    api.allow(Kind::Service);
    eventually("readyz without the degraded reason", || {
        let (status, body) = readyz(&h);
        (status == 200 && body == "ready\n").then_some(())
    });
    assert_eq!(backend(&h).0, 200);
}

/// The seed's config with its registry connection replaced by `connection` (YAML lines
/// of the registry item, indented by four spaces).
fn seed_with_connection(api: &FakeApiServer, connection: &str) -> String {
    let yaml = seed_config(api, true);
    let server = format!("    server: {}\n    token: {}\n", api.url(), api.token());
    assert!(yaml.contains(&server), "{yaml}");
    yaml.replace(&server, connection)
}

#[test]
fn a_kubeconfig_context_is_used_over_tls_instead_of_the_current_one() {
    let api = FakeApiServer::start(Options::default().tls());
    let pods = pods(&["127.0.24.11"]);
    api.apply_yaml(&service(pods[0].addr().port()));
    api.apply_yaml(&slice(
        pods[0].addr().port(),
        &[("127.0.24.11", true, true, false)],
    ));
    // The current context points at nothing; the one the registry names is the server's.
    let kubeconfig = api
        .kubeconfig()
        .replace("current-context: fake\n", "current-context: broken\n")
        .replace(
            "contexts:\n",
            "contexts:\n- name: broken\n  context:\n    cluster: dead\n    user: fake\n",
        )
        .replace(
            "users:\n",
            "- name: dead\n  cluster:\n    server: https://127.0.0.1:1\nusers:\n",
        );
    let path = crate::process::temp_file("kubeconfig-context.yaml", &kubeconfig);
    let connection = format!("    kubeconfig: '{}'\n    context: fake\n", path.display());
    let h = Harness::with_addrs(&seed_with_connection(&api, &connection), &[]);
    eventually("routed through the named context", || {
        (backend(&h).0 == 200).then_some(())
    });
    assert_eq!(backend(&h).1, pods[0].addr().to_string());
}

#[test]
fn the_in_cluster_service_account_is_read_from_its_environment_and_files() {
    // A pod's view: KUBERNETES_SERVICE_HOST/_PORT, and the token and CA files (in a
    // directory of the test's own instead of /var/run/secrets/kubernetes.io/serviceaccount).
    let api = FakeApiServer::start(Options::default().tls());
    let pods = pods(&["127.0.24.12"]);
    api.apply_yaml(&service(pods[0].addr().port()));
    api.apply_yaml(&slice(
        pods[0].addr().port(),
        &[("127.0.24.12", true, true, false)],
    ));
    let dir = std::path::PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("it-{}-serviceaccount", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("token"), api.token()).unwrap();
    std::fs::write(dir.join("ca.crt"), api.ca_pem().unwrap()).unwrap();
    // No server, no credentials: in-cluster.
    let yaml = seed_with_connection(&api, "");
    let config = crate::process::temp_file(
        "in-cluster.yaml",
        &format!(
            "{}admin: {{listen: '127.0.0.1:0'}}\nlisteners: [{{name: http, address: '127.0.0.1:0'}}]\n{yaml}",
            crate::support::driver_line()
        ),
    );
    let child = crate::support::child::ChildProcess::spawn(
        crate::support::child::strait()
            .args([
                "run",
                "--config",
                config.to_str().unwrap(),
                "--workers",
                "1",
            ])
            .env("KUBERNETES_SERVICE_HOST", api.addr().ip().to_string())
            .env("KUBERNETES_SERVICE_PORT", api.addr().port().to_string())
            .env("STRAIT_SERVICE_ACCOUNT_DIR", &dir)
            .stderr(std::process::Stdio::null()),
    );
    let rest = child.line_after("strait listening on ");
    let addr: SocketAddr = rest.split_whitespace().next().unwrap().parse().unwrap();
    let answer = || {
        let r = Client::connect(addr).request(&get("sd.httpbin.org", "/v1/anything"));
        (r.status == 200).then(|| r.json()["backend"].as_str().unwrap_or("").to_owned())
    };
    let served_by = eventually("routed through the in-cluster connection", answer);
    assert_eq!(served_by, pods[0].addr().to_string());
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn a_kubeconfig_with_a_client_certificate_authenticates_without_a_token() {
    let api = FakeApiServer::start(Options::default().tls());
    let pods = pods(&["127.0.24.13"]);
    api.apply_yaml(&service(pods[0].addr().port()));
    api.apply_yaml(&slice(
        pods[0].addr().port(),
        &[("127.0.24.13", true, true, false)],
    ));
    let (cert, key) = api
        .client_identity()
        .expect("a TLS server's client identity");
    let cert = crate::process::temp_file("client.crt", &cert);
    let key = crate::process::temp_file("client.key", &key);
    // The fake's kubeconfig, its token replaced by the client certificate and key files.
    let kubeconfig = api.kubeconfig().replace(
        &format!("    token: {}\n", api.token()),
        &format!(
            "    client-certificate: '{}'\n    client-key: '{}'\n",
            cert.display(),
            key.display()
        ),
    );
    assert!(!kubeconfig.contains(&api.token()));
    let path = crate::process::temp_file("kubeconfig-cert.yaml", &kubeconfig);
    let connection = format!("    kubeconfig: '{}'\n", path.display());
    let h = Harness::with_addrs(&seed_with_connection(&api, &connection), &[]);
    eventually("routed with the client certificate", || {
        (backend(&h).0 == 200).then_some(())
    });
    assert_eq!(backend(&h).1, pods[0].addr().to_string());
}
