//! Test support: kube clients for a fake server, typed fixtures, deadline waits (no sleeps as
//! synchronisation), watcher event helpers, and a raw HTTP/1.1 client for wire-level checks.

pub(crate) mod raw;

use std::future::Future;
use std::time::Duration;

use futures::{Stream, StreamExt};
use k8s_openapi::api::discovery::v1::{Endpoint, EndpointConditions, EndpointPort, EndpointSlice};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::runtime::watcher;
use kube::ResourceExt;
use strait_fake_apiserver::FakeApiServer;

/// How long any single wait may take before the test fails.
pub(crate) const DEADLINE: Duration = Duration::from_secs(20);

/// A kube client for `fake` presenting `token` (trusting the fake's CA with TLS).
pub(crate) fn client_with_token(fake: &FakeApiServer, token: &str) -> kube::Client {
    let mut config = kube::Config::new(fake.url().parse().expect("url parses"));
    config.auth_info.token = Some(token.to_string().into());
    if let Some(ca) = fake.ca_der() {
        config.root_cert = Some(vec![ca]);
    }
    kube::Client::try_from(config).expect("kube client builds")
}

/// A kube client with the fake's current token.
pub(crate) fn client(fake: &FakeApiServer) -> kube::Client {
    client_with_token(fake, &fake.token())
}

/// An EndpointSlice of Service `service` with ready endpoints on port 8080.
pub(crate) fn slice(namespace: &str, name: &str, service: &str, ips: &[&str]) -> EndpointSlice {
    EndpointSlice {
        metadata: ObjectMeta {
            name: Some(name.to_string()),
            namespace: Some(namespace.to_string()),
            labels: Some(
                [(
                    "kubernetes.io/service-name".to_string(),
                    service.to_string(),
                )]
                .into(),
            ),
            ..ObjectMeta::default()
        },
        address_type: "IPv4".to_string(),
        endpoints: ips
            .iter()
            .map(|ip| Endpoint {
                addresses: vec![ip.to_string()],
                conditions: Some(EndpointConditions {
                    ready: Some(true),
                    ..EndpointConditions::default()
                }),
                ..Endpoint::default()
            })
            .collect(),
        ports: Some(vec![EndpointPort {
            name: Some("http".to_string()),
            port: Some(8080),
            protocol: Some("TCP".to_string()),
            ..EndpointPort::default()
        }]),
    }
}

/// Polls `condition` every 10 ms on the test's runtime until it holds; panics after
/// [`DEADLINE`] naming `what`.
pub(crate) async fn eventually(what: &str, mut condition: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + DEADLINE;
    while !condition() {
        if tokio::time::Instant::now() >= deadline {
            panic!("timed out waiting for: {what}");
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Awaits `fut` with the [`DEADLINE`]; panics naming `what` on timeout.
pub(crate) async fn within<T>(what: &str, fut: impl Future<Output = T>) -> T {
    tokio::time::timeout(DEADLINE, fut)
        .await
        .unwrap_or_else(|_| panic!("timed out waiting for: {what}"))
}

/// A watcher event as a short string: `Init`, `InitApply(name)`, `InitDone`, `Apply(name)`,
/// `Delete(name)`.
pub(crate) fn describe(event: &watcher::Event<EndpointSlice>) -> String {
    match event {
        watcher::Event::Init => "Init".to_string(),
        watcher::Event::InitApply(o) => format!("InitApply({})", o.name_any()),
        watcher::Event::InitDone => "InitDone".to_string(),
        watcher::Event::Apply(o) => format!("Apply({})", o.name_any()),
        watcher::Event::Delete(o) => format!("Delete({})", o.name_any()),
    }
}

/// A watcher driven on its own task (a watcher only makes requests while polled), its items
/// forwarded here; errors met between events are kept in `errors` (as their Display).
pub(crate) struct Events {
    rx: tokio::sync::mpsc::UnboundedReceiver<watcher::Result<watcher::Event<EndpointSlice>>>,
    pub(crate) errors: Vec<String>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Events {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Events {
    /// Spawns `stream` on the test's runtime.
    pub(crate) fn spawn<S>(stream: S) -> Events
    where
        S: Stream<Item = watcher::Result<watcher::Event<EndpointSlice>>> + Send + 'static,
    {
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        let task = tokio::spawn(async move {
            let mut stream = std::pin::pin!(stream);
            while let Some(item) = stream.next().await {
                if tx.send(item).is_err() {
                    return;
                }
            }
        });
        Events {
            rx,
            errors: Vec::new(),
            task,
        }
    }

    /// The next item, error or not.
    pub(crate) async fn next_item(&mut self) -> watcher::Result<watcher::Event<EndpointSlice>> {
        within("the next watcher item", self.rx.recv())
            .await
            .expect("watcher stream ended")
    }

    /// The next `Ok` event; errors on the way go to `errors`.
    pub(crate) async fn next(&mut self) -> watcher::Event<EndpointSlice> {
        loop {
            match self.next_item().await {
                Ok(event) => return event,
                Err(e) => self.errors.push(e.to_string()),
            }
        }
    }

    /// Asserts the next `expected.len()` events (described with [`describe`]).
    pub(crate) async fn expect(&mut self, expected: &[&str]) {
        let mut seen = Vec::new();
        for _ in expected {
            seen.push(describe(&self.next().await));
        }
        assert_eq!(
            seen, expected,
            "watcher events (errors on the way: {:?})",
            self.errors
        );
    }

    /// Reads events until one described as `wanted`; returns everything seen before it.
    pub(crate) async fn until(&mut self, wanted: &str) -> Vec<String> {
        let mut seen = Vec::new();
        loop {
            let d = describe(&self.next().await);
            if d == wanted {
                return seen;
            }
            seen.push(d);
        }
    }
}

/// A scratch directory under cargo's per-test-target tmpdir, per process; removed on drop.
pub(crate) struct Scratch(std::path::PathBuf);

impl std::ops::Deref for Scratch {
    type Target = std::path::Path;
    fn deref(&self) -> &std::path::Path {
        &self.0
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

pub(crate) fn scratch_dir(name: &str) -> Scratch {
    let dir = std::path::Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join("fake-apiserver")
        .join(format!("{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("scratch dir");
    Scratch(dir)
}
