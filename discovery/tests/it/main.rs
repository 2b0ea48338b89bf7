//! Discovery against the fake API server: the real kube client and watcher, the real
//! discovery thread and publisher, and stand-in workers that swap snapshots and ack them.
//!
//! Every wait is a condition with a deadline; nothing sleeps to synchronise.
#![allow(clippy::unwrap_used)]

use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use strait_discovery::spec::*;
use strait_discovery::{
    publish, DiscoveryHandle, EndpointState, RegistryStatus, Snapshot, TableBuilder, Update,
    UpstreamStatus,
};
use strait_fake_apiserver::{FakeApiServer, Kind, Options, Verb};

const WAIT: Duration = Duration::from_secs(20);
const HTTPBIN: &str = include_str!("../../fake-apiserver/tests/fixtures/httpbin.yaml");

/// What the stand-in workers have seen.
#[derive(Default)]
struct Seen {
    snapshots: Mutex<Vec<Arc<Snapshot>>>,
    changed: Condvar,
}

/// A gateway without data plane: discovery + N stand-in workers.
struct Rig {
    discovery: Option<DiscoveryHandle>,
    seen: Arc<Seen>,
    publisher: strait_discovery::Publisher,
    workers: Vec<std::thread::JoinHandle<()>>,
}

impl Rig {
    fn start(spec: Spec, workers: usize) -> Rig {
        let mut builder = TableBuilder::try_new(spec).unwrap();
        let (publisher, subscribers, acks) = publish::channel(workers).unwrap();
        publisher.publish(builder.snapshot(Instant::now()));
        let seen = Arc::new(Seen::default());
        let threads = subscribers
            .into_iter()
            .enumerate()
            .map(|(i, sub)| {
                let seen = seen.clone();
                std::thread::spawn(move || {
                    while let Some(Update::Snapshot(s)) = sub.recv() {
                        sub.ack(&s);
                        if i == 0 {
                            seen.snapshots.lock().unwrap().push(s);
                            seen.changed.notify_all();
                        }
                    }
                })
            })
            .collect();
        let discovery = strait_discovery::spawn(builder, publisher.clone(), acks).unwrap();
        Rig {
            discovery: Some(discovery),
            seen,
            publisher,
            workers: threads,
        }
    }

    fn discovery(&self) -> &DiscoveryHandle {
        self.discovery.as_ref().unwrap()
    }

    /// Waits until the latest snapshot satisfies `cond`; returns it.
    fn wait(&self, what: &str, cond: impl Fn(&Snapshot) -> bool) -> Arc<Snapshot> {
        let deadline = Instant::now() + WAIT;
        let mut seen = self.seen.snapshots.lock().unwrap();
        loop {
            if let Some(last) = seen.last() {
                if cond(last) {
                    return last.clone();
                }
            }
            let left = deadline.saturating_duration_since(Instant::now());
            assert!(!left.is_zero(), "timed out waiting for: {what}");
            seen = self.seen.changed.wait_timeout(seen, left).unwrap().0;
        }
    }

    fn all_seen(&self) -> Vec<Arc<Snapshot>> {
        self.seen.snapshots.lock().unwrap().clone()
    }
}

impl Drop for Rig {
    fn drop(&mut self) {
        if let Some(d) = self.discovery.take() {
            d.stop();
        }
        self.publisher.send(Update::Shutdown);
        for w in self.workers.drain(..) {
            let _ = w.join();
        }
    }
}

fn registry(name: &str, api: &FakeApiServer) -> RegistrySpec {
    RegistrySpec {
        name: name.into(),
        enabled: true,
        connection: Connection::Explicit {
            server: api.url(),
            credentials: Credentials {
                token: Some(api.token()),
                ..Default::default()
            },
            ca_file: None,
            insecure_skip_tls_verify: false,
        },
        namespaces: Some("^apisix$".into()),
        label_selector: None,
        resource: Resource::EndpointSlices,
    }
}

fn discovered(
    name: &str,
    registry: &str,
    namespace: &str,
    service: &str,
    port: ServicePort,
) -> UpstreamSpec {
    UpstreamSpec {
        name: name.into(),
        source: UpstreamSource::Discovery(DiscoveryRef {
            registry: registry.into(),
            namespace: namespace.into(),
            service: service.into(),
            port,
        }),
        settings: UpstreamSettings::default(),
    }
}

/// A rig with one upstream `u` = `apisix/httpbin:80` in `registry`.
fn httpbin_rig(registry: RegistrySpec, workers: usize) -> Rig {
    let upstream = discovered(
        "u",
        &registry.name,
        "apisix",
        "httpbin",
        ServicePort::Number(80),
    );
    Rig::start(spec(vec![registry], vec![upstream]), workers)
}

fn spec(registries: Vec<RegistrySpec>, upstreams: Vec<UpstreamSpec>) -> Spec {
    Spec {
        services: Vec::new(),
        upstreams,
        registries,
        tls_secrets: Vec::new(),
        node: Default::default(),
    }
}

/// Ready endpoint addresses of upstream `name`.
fn ready(s: &Snapshot, name: &str) -> Vec<String> {
    let u = s.upstream(name).unwrap();
    let mut v: Vec<String> = u
        .endpoints
        .iter()
        .filter(|e| e.state == EndpointState::Ready)
        .map(|e| e.addr.to_string())
        .collect();
    v.sort();
    v
}

fn synced(s: &Snapshot, name: &str) -> bool {
    s.upstream(name).unwrap().status == UpstreamStatus::Ready
}

const THREE: [&str; 3] = ["127.0.0.2:8080", "127.0.0.3:8080", "127.0.0.4:8080"];

fn slice_yaml(name: &str, ns: &str, service: &str, eps: &[(&str, bool, bool, bool)]) -> String {
    let mut y = format!(
        "apiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata:\n  name: {name}\n  namespace: {ns}\n  labels:\n    kubernetes.io/service-name: {service}\naddressType: IPv4\nports:\n- {{name: http, port: 8080, protocol: TCP}}\nendpoints:\n"
    );
    for (ip, r, s, t) in eps {
        y.push_str(&format!(
            "- addresses: [{ip}]\n  conditions: {{ready: {r}, serving: {s}, terminating: {t}}}\n"
        ));
    }
    y
}

#[test]
fn the_seed_service_is_discovered_through_its_service_port() {
    let api = FakeApiServer::start(Options::default());
    api.apply_yaml(HTTPBIN);
    let rig = Rig::start(
        spec(
            vec![registry("my-k8s-cluster", &api)],
            vec![discovered(
                "httpbin",
                "my-k8s-cluster",
                "apisix",
                "httpbin",
                ServicePort::Number(80),
            )],
        ),
        2,
    );
    // Before the first list completes the upstream says so.
    rig.wait("the first snapshot", |_| true);
    assert!(matches!(
        rig.all_seen()[0].upstream("httpbin").unwrap().status,
        UpstreamStatus::NotSynced { .. }
    ));
    let s = rig.wait("three pods", |s| {
        synced(s, "httpbin") && ready(s, "httpbin").len() == 3
    });
    assert_eq!(ready(&s, "httpbin"), THREE);
    // Every worker swapped in the view (only then is the gateway ready), and the latency
    // was measured.
    assert!(rig.discovery().wait_applied(s.version, WAIT));
    assert!(rig.discovery().status().ready());
    assert!(!rig.discovery().status().propagation_samples().is_empty());
    // By port name too.
    drop(rig);
    let rig = Rig::start(
        spec(
            vec![registry("k", &api)],
            vec![discovered(
                "by-name",
                "k",
                "apisix",
                "httpbin",
                ServicePort::Name("http".into()),
            )],
        ),
        1,
    );
    let s = rig.wait("by name", |s| ready(s, "by-name").len() == 3);
    assert_eq!(ready(&s, "by-name"), THREE);
}

#[test]
fn scaling_and_readiness_changes_are_followed() {
    let api = FakeApiServer::start(Options::default());
    api.apply_yaml(HTTPBIN);
    let rig = httpbin_rig(registry("k", &api), 2);
    rig.wait("synced", |s| ready(s, "u").len() == 3);
    // Scale up to four.
    api.apply_yaml(&slice_yaml(
        "httpbin-abc12",
        "apisix",
        "httpbin",
        &[
            ("127.0.0.2", true, true, false),
            ("127.0.0.3", true, true, false),
            ("127.0.0.4", true, true, false),
            ("127.0.0.5", true, true, false),
        ],
    ));
    rig.wait("four pods", |s| ready(s, "u").len() == 4);
    // One pod turns not ready; another terminates while serving.
    api.apply_yaml(&slice_yaml(
        "httpbin-abc12",
        "apisix",
        "httpbin",
        &[
            ("127.0.0.2", true, true, false),
            ("127.0.0.3", false, false, false),
            ("127.0.0.4", false, true, true),
            ("127.0.0.5", true, true, false),
        ],
    ));
    let s = rig.wait("two ready", |s| {
        ready(s, "u") == ["127.0.0.2:8080", "127.0.0.5:8080"]
    });
    let u = s.upstream("u").unwrap();
    assert_eq!(u.schedule.len(), 2);
    assert_eq!(u.fallback.len(), 1, "the terminating pod is kept aside");
    // A second slice of the same Service merges in; then the first slice goes away.
    api.apply_yaml(&slice_yaml(
        "httpbin-xyz99",
        "apisix",
        "httpbin",
        &[("127.0.0.6", true, true, false)],
    ));
    rig.wait("merged", |s| ready(s, "u").len() == 3);
    api.delete(Kind::EndpointSlice, "apisix", "httpbin-abc12");
    let s = rig.wait("scaled down", |s| ready(s, "u") == ["127.0.0.6:8080"]);
    assert!(synced(&s, "u"));
}

#[test]
fn namespaces_outside_the_pattern_are_ignored() {
    let api = FakeApiServer::start(Options::default());
    api.apply_yaml(HTTPBIN);
    api.apply_yaml(
        &HTTPBIN
            .replace("namespace: apisix", "namespace: other")
            .replace("name: apisix", "name: other"),
    );
    let rig = Rig::start(
        spec(
            vec![registry("k", &api)],
            vec![
                discovered("in", "k", "apisix", "httpbin", ServicePort::Number(80)),
                discovered("out", "k", "other", "httpbin", ServicePort::Number(80)),
            ],
        ),
        1,
    );
    let s = rig.wait("synced", |s| ready(s, "in").len() == 3);
    assert!(ready(&s, "out").is_empty());
    assert!(
        synced(&s, "out"),
        "synced, but the namespace is not watched: no endpoints"
    );
    // A change there does not produce endpoints either.
    api.apply_yaml(&slice_yaml(
        "x",
        "other",
        "httpbin",
        &[("127.0.0.9", true, true, false)],
    ));
    api.apply_yaml(&slice_yaml(
        "y",
        "apisix",
        "httpbin",
        &[("127.0.0.8", true, true, false)],
    ));
    let s = rig.wait("apisix change", |s| ready(s, "in").len() == 4);
    assert!(ready(&s, "out").is_empty());
}

#[test]
fn a_change_made_while_the_watch_is_down_applies_after_the_reconnect() {
    let api = FakeApiServer::start(Options::default());
    api.apply_yaml(HTTPBIN);
    let rig = httpbin_rig(registry("k", &api), 1);
    rig.wait("synced", |s| ready(s, "u").len() == 3);
    assert!(api.wait_for(WAIT, |a| a.watch_count() >= 2));
    api.stop();
    api.apply_yaml(&slice_yaml(
        "httpbin-abc12",
        "apisix",
        "httpbin",
        &[("127.0.0.2", true, true, false)],
    ));
    // The API server is gone: the last known endpoints stay.
    assert_eq!(ready(&rig.all_seen().last().unwrap().clone(), "u").len(), 3);
    api.restart();
    rig.wait("change after reconnect", |s| {
        ready(s, "u") == ["127.0.0.2:8080"]
    });
}

#[test]
fn gone_410_relists_without_publishing_an_empty_table() {
    let api = FakeApiServer::start(Options::default());
    api.apply_yaml(HTTPBIN);
    let rig = httpbin_rig(registry("k", &api), 1);
    let first = rig.wait("synced", |s| ready(s, "u").len() == 3);
    assert!(api.wait_for(WAIT, |a| a.watch_count() >= 2));
    let lists_before = api.count(Verb::List, Kind::EndpointSlice);
    api.apply_yaml(&slice_yaml(
        "httpbin-abc12",
        "apisix",
        "httpbin",
        &[
            ("127.0.0.2", true, true, false),
            ("127.0.0.7", true, true, false),
        ],
    ));
    api.expire_watches();
    rig.wait("relisted state", |s| {
        ready(s, "u") == ["127.0.0.2:8080", "127.0.0.7:8080"]
    });
    assert!(
        api.wait_for(WAIT, |a| a.count(Verb::List, Kind::EndpointSlice)
            > lists_before),
        "a relist happened"
    );
    for s in rig.all_seen().iter().filter(|s| s.version >= first.version) {
        assert!(
            !ready(s, "u").is_empty(),
            "{} published an empty endpoint set",
            s.version
        );
        assert!(synced(s, "u"));
    }
}

#[test]
fn an_unreachable_api_server_keeps_the_last_endpoints() {
    let api = FakeApiServer::start(Options::default());
    api.apply_yaml(HTTPBIN);
    let rig = httpbin_rig(registry("k", &api), 1);
    let s = rig.wait("synced", |s| ready(s, "u").len() == 3);
    api.stop();
    // The watchers notice and retry; the registry records the error.
    assert!(rig
        .discovery()
        .status()
        .wait_registries(WAIT, |r| r.get("k").is_some_and(|r| r.last_error.is_some())));
    let last = rig.all_seen().last().unwrap().clone();
    assert_eq!(ready(&last, "u"), THREE);
    assert!(last.version >= s.version);
    // Readiness follows the workers' acks of the synced table (recorded on the ack
    // collector thread), then stays while the API server is away.
    assert!(rig.discovery().wait_applied(s.version, WAIT));
    assert!(
        rig.discovery().status().ready(),
        "readiness stays: the first sync happened"
    );
}

#[test]
fn two_registries_run_at_once_and_a_disabled_one_answers_unavailable() {
    let a = FakeApiServer::start(Options::default());
    let b = FakeApiServer::start(Options::default());
    a.apply_yaml(HTTPBIN);
    b.apply_yaml(&HTTPBIN.replace("127.0.0.", "127.0.1."));
    let mut off = registry("off", &a);
    off.enabled = false;
    let rig = Rig::start(
        spec(
            vec![registry("a", &a), registry("b", &b), off],
            vec![
                discovered("ua", "a", "apisix", "httpbin", ServicePort::Number(80)),
                discovered("ub", "b", "apisix", "httpbin", ServicePort::Number(80)),
                discovered("uoff", "off", "apisix", "httpbin", ServicePort::Number(80)),
            ],
        ),
        2,
    );
    let s = rig.wait("both synced", |s| {
        ready(s, "ua").len() == 3 && ready(s, "ub").len() == 3
    });
    assert_eq!(
        ready(&s, "ub"),
        ["127.0.1.2:8080", "127.0.1.3:8080", "127.0.1.4:8080"]
    );
    assert!(matches!(
        s.upstream("uoff").unwrap().status,
        UpstreamStatus::RegistryDisabled { .. }
    ));
    assert!(rig.discovery().wait_applied(s.version, WAIT));
    assert!(
        rig.discovery().status().ready(),
        "a disabled registry does not hold readiness back"
    );
    // Disabling `b` by reload makes its upstream unavailable; `a` keeps its state.
    let mut b_off = registry("b", &b);
    b_off.enabled = false;
    let reloaded = spec(
        vec![registry("a", &a), b_off],
        vec![
            discovered("ua", "a", "apisix", "httpbin", ServicePort::Number(80)),
            discovered("ub", "b", "apisix", "httpbin", ServicePort::Number(80)),
        ],
    );
    let version = rig
        .discovery()
        .reload(TableBuilder::try_new(reloaded).unwrap())
        .unwrap();
    assert!(rig.discovery().wait_applied(version, WAIT));
    let s = rig.wait("b disabled", |s| {
        matches!(
            s.upstream("ub").unwrap().status,
            UpstreamStatus::RegistryDisabled { .. }
        )
    });
    assert_eq!(
        ready(&s, "ua").len(),
        3,
        "registry a was kept, not restarted"
    );
}

#[test]
fn endpoints_resource_uses_addresses_and_not_ready_addresses() {
    let api = FakeApiServer::start(Options::default());
    api.apply_yaml(HTTPBIN);
    let mut r = registry("k", &api);
    r.resource = Resource::Endpoints;
    let rig = httpbin_rig(r, 1);
    rig.wait("synced", |s| ready(s, "u").len() == 3);
    api.apply_yaml(
        "apiVersion: v1\nkind: Endpoints\nmetadata: {name: httpbin, namespace: apisix}\nsubsets:\n- addresses: [{ip: 127.0.0.2}]\n  notReadyAddresses: [{ip: 127.0.0.3}]\n  ports: [{name: http, port: 8080}]\n",
    );
    let s = rig.wait("one ready", |s| ready(s, "u") == ["127.0.0.2:8080"]);
    assert_eq!(s.upstream("u").unwrap().endpoints.len(), 2);
}

#[test]
fn a_refused_token_is_reported_and_a_rotated_token_file_recovers() {
    let api = FakeApiServer::start(Options::default());
    api.apply_yaml(HTTPBIN);
    let dir = std::env::temp_dir().join(format!("strait-token-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let token_file = dir.join("token");
    std::fs::write(&token_file, "wrong").unwrap();
    let mut r = registry("k", &api);
    if let Connection::Explicit { credentials, .. } = &mut r.connection {
        credentials.token = None;
        credentials.token_file = Some(token_file.clone());
    }
    let rig = httpbin_rig(r, 1);
    let refused = |r: &RegistryStatus| {
        r.last_error
            .as_deref()
            .is_some_and(|e| e.contains("401") || e.contains("Unauthorized"))
    };
    assert!(rig
        .discovery()
        .status()
        .wait_registries(WAIT, |r| r.get("k").is_some_and(refused)));
    assert!(!rig.discovery().status().ready());
    let s = rig.all_seen().last().unwrap().clone();
    assert!(matches!(
        s.upstream("u").unwrap().status,
        UpstreamStatus::NotSynced { .. }
    ));
    // The token rotates: the registry rebuilds its client, re-reading the file, and syncs.
    std::fs::write(&token_file, api.token()).unwrap();
    rig.wait("synced with the new token", |s| ready(s, "u").len() == 3);
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn tls_is_verified_against_the_configured_ca_and_refused_without_it() {
    let api = FakeApiServer::start(Options::default().tls());
    api.apply_yaml(HTTPBIN);
    let dir = std::env::temp_dir().join(format!("strait-ca-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let ca = dir.join("ca.pem");
    std::fs::write(&ca, api.ca_pem().unwrap()).unwrap();
    let with_ca = |name: &str, ca_file: Option<std::path::PathBuf>| {
        let mut r = registry(name, &api);
        if let Connection::Explicit { ca_file: f, .. } = &mut r.connection {
            *f = ca_file;
        }
        r
    };
    let rig = Rig::start(
        spec(
            vec![
                with_ca("trusted", Some(ca.clone())),
                with_ca("untrusted", None),
            ],
            vec![
                discovered("t", "trusted", "apisix", "httpbin", ServicePort::Number(80)),
                discovered(
                    "u",
                    "untrusted",
                    "apisix",
                    "httpbin",
                    ServicePort::Number(80),
                ),
            ],
        ),
        1,
    );
    rig.wait("the trusted registry synced", |s| ready(s, "t").len() == 3);
    assert!(rig.discovery().status().wait_registries(WAIT, |r| r
        .get("untrusted")
        .is_some_and(|r| r.last_error.is_some())));
    let s = rig.all_seen().last().unwrap().clone();
    assert!(
        matches!(
            s.upstream("u").unwrap().status,
            UpstreamStatus::NotSynced { .. }
        ),
        "an API server whose certificate is not trusted is never used"
    );
    std::fs::remove_dir_all(&dir).ok();
}

/// A Service, labelled `team: {team}`, with one EndpointSlice (labelled alike, as the
/// EndpointSlice controller copies a Service's labels) holding endpoint `ip:8080`.
fn labelled_service(name: &str, team: &str, ip: &str) -> String {
    format!(
        "apiVersion: v1\nkind: Service\nmetadata: {{name: {name}, namespace: apisix, labels: {{team: {team}}}}}\n\
         spec:\n  ports:\n  - {{name: http, port: 80, targetPort: 8080}}\n---\n\
         apiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata:\n  name: {name}-1\n  namespace: apisix\n  \
         labels: {{kubernetes.io/service-name: {name}, team: {team}}}\naddressType: IPv4\n\
         ports:\n- {{name: http, port: 8080, protocol: TCP}}\nendpoints:\n\
         - addresses: [{ip}]\n  conditions: {{ready: true, serving: true, terminating: false}}\n"
    )
}

#[test]
fn a_label_selector_routes_the_services_inside_it_and_not_the_others() {
    let api = FakeApiServer::start(Options::default());
    api.apply_yaml(&labelled_service("shop", "shop", "127.0.0.5"));
    api.apply_yaml(&labelled_service("other", "other", "127.0.0.6"));
    let mut r = registry("k", &api);
    r.label_selector = Some("team=shop".into());
    let inside = discovered("in", "k", "apisix", "shop", ServicePort::Number(80));
    let outside = discovered("out", "k", "apisix", "other", ServicePort::Number(80));
    let rig = Rig::start(spec(vec![r], vec![inside, outside]), 1);
    let s = rig.wait("the selected Service", |s| {
        ready(s, "in") == ["127.0.0.5:8080"]
    });
    // Synced, but the Service outside the selector was never seen: no endpoints.
    assert!(synced(&s, "out"));
    assert!(ready(&s, "out").is_empty(), "{:?}", ready(&s, "out"));
    // Relabelled into the selector, it is routed.
    api.apply_yaml(&labelled_service("other", "shop", "127.0.0.6"));
    rig.wait("the relabelled Service", |s| {
        ready(s, "out") == ["127.0.0.6:8080"]
    });
}
