//! One Kubernetes cluster: a kube client built from the registry's connection settings,
//! and two watchers (EndpointSlices or Endpoints, and Services) that reduce objects and
//! send them to the controller; and [`watch_secret`], one TLS Secret's watcher (scoped to
//! its namespace and name) reporting to the gateway's control loop; and [`node_zone`],
//! which reads this gateway's zone from its Node once.
//!
//! Runs on: the discovery thread's tokio runtime. kube's watcher does the protocol work:
//! list then watch with bookmarks, relist on 410 Gone, resume with jittered exponential
//! backoff (0.8 s doubling to 30 s, each wait jittered to 50–100 % of its step) after errors. Tokens never reach a log line.

use std::path::Path;

use futures::{FutureExt, StreamExt};
use k8s_openapi::api::core::v1::{Endpoints, Node, Secret, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::runtime::watcher::{self, Event};
use kube::runtime::WatchStreamExt;
use kube::{Api, Client};
use regex::Regex;
use tokio::sync::mpsc::UnboundedSender;

use super::{Msg, WatchError, WatchEvent};
use crate::spec::{Connection, Credentials, RegistrySpec, Resource, SecretRef};
use crate::state::{Kind, Object};
use crate::tls::{SecretChange, SecretData, SecretEvent};

/// Why a registry could not start.
#[derive(Debug)]
pub struct ConnectError(pub String);

impl std::fmt::Display for ConnectError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// Builds the kube client configuration for a registry.
pub async fn client_config(spec: &RegistrySpec) -> Result<kube::Config, ConnectError> {
    let err = |what: &str, e: &dyn std::fmt::Display| {
        ConnectError(format!("registry {:?}: {what}: {e}", spec.name))
    };
    match &spec.connection {
        Connection::InCluster => {
            let (server, dir) = in_cluster().map_err(|e| err("in-cluster config", &e))?;
            let credentials = Credentials {
                token_file: Some(dir.join("token")),
                ..Credentials::default()
            };
            explicit_config(&server, &credentials, Some(&dir.join("ca.crt")), false)
                .map_err(|(what, e)| err(what, &e))
        }
        Connection::Kubeconfig { path, context } => {
            let file =
                kube::config::Kubeconfig::read_from(path).map_err(|e| err("kubeconfig", &e))?;
            let options = kube::config::KubeConfigOptions {
                context: context.clone(),
                ..Default::default()
            };
            kube::Config::from_custom_kubeconfig(file, &options)
                .await
                .map_err(|e| err("kubeconfig", &e))
        }
        Connection::Explicit {
            server,
            credentials,
            ca_file,
            insecure_skip_tls_verify,
        } => explicit_config(
            server,
            credentials,
            ca_file.as_deref(),
            *insecure_skip_tls_verify,
        )
        .map_err(|(what, e)| err(what, &e)),
    }
}

/// Where the pod's service account says the API server is: `https://` +
/// `KUBERNETES_SERVICE_HOST`:`KUBERNETES_SERVICE_PORT`, and the directory holding its
/// `token` and `ca.crt` (the standard `/var/run/secrets/kubernetes.io/serviceaccount`, or
/// `STRAIT_SERVICE_ACCOUNT_DIR` when set).
fn in_cluster() -> Result<(String, std::path::PathBuf), String> {
    let var = |name: &str| {
        std::env::var(name)
            .ok()
            .filter(|v| !v.is_empty())
            .ok_or_else(|| format!("{name} is not set (not running in a pod?)"))
    };
    let host = var("KUBERNETES_SERVICE_HOST")?;
    let port = var("KUBERNETES_SERVICE_PORT")?;
    let host = if host.contains(':') && !host.starts_with('[') {
        format!("[{host}]")
    } else {
        host
    };
    let dir = std::env::var_os("STRAIT_SERVICE_ACCOUNT_DIR")
        .filter(|d| !d.is_empty())
        .map_or_else(
            || std::path::PathBuf::from("/var/run/secrets/kubernetes.io/serviceaccount"),
            std::path::PathBuf::from,
        );
    Ok((format!("https://{host}:{port}"), dir))
}

/// A client config for `server` with `credentials` and the CA in `ca_file`; `Err` names
/// the setting at fault.
fn explicit_config(
    server: &str,
    credentials: &Credentials,
    ca_file: Option<&Path>,
    insecure_skip_tls_verify: bool,
) -> Result<kube::Config, (&'static str, String)> {
    let uri: http::Uri = server
        .parse()
        .map_err(|e: http::uri::InvalidUri| ("server", e.to_string()))?;
    let mut config = kube::Config::new(uri);
    config.accept_invalid_certs = insecure_skip_tls_verify;
    if let Some(ca) = ca_file {
        config.root_cert = Some(read_pem_certs(ca).map_err(|e| ("ca_file", e))?);
        config.root_cert_file = Some(ca.to_path_buf());
    }
    config.auth_info.token = credentials.token.clone().map(secrecy::SecretString::from);
    let path = |p: &Option<std::path::PathBuf>| p.as_ref().map(|p| p.display().to_string());
    config.auth_info.token_file = path(&credentials.token_file);
    config.auth_info.client_certificate = path(&credentials.client_cert);
    config.auth_info.client_key = path(&credentials.client_key);
    Ok(config)
}

/// DER certificates of a PEM bundle.
fn read_pem_certs(path: &Path) -> Result<Vec<Vec<u8>>, String> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::CertificateDer;
    let certs: Vec<Vec<u8>> = CertificateDer::pem_file_iter(path)
        .map_err(|e| e.to_string())?
        .map(|c| c.map(|c| c.to_vec()).map_err(|e| e.to_string()))
        .collect::<Result<_, _>>()?;
    if certs.is_empty() {
        return Err("no PEM certificate found".into());
    }
    Ok(certs)
}

/// Runs a registry until its task is aborted: builds the client (retrying with backoff
/// while it cannot, e.g. a token file not mounted yet), then runs both watchers. When the
/// API server refuses the credentials (401), the client is rebuilt after a backoff so a
/// rotated token file is read again at once rather than at kube's next refresh.
pub async fn run(spec: RegistrySpec, generation: u64, tx: UnboundedSender<Msg>) {
    let mut delay = Backoff::new(&spec.name);
    loop {
        let client = match client_config(&spec).await.and_then(|config| {
            Client::try_from(config)
                .map_err(|e| ConnectError(format!("registry {:?}: client: {e}", spec.name)))
        }) {
            Ok(client) => client,
            Err(e) => {
                let event = WatchEvent::Error(WatchError {
                    code: None,
                    message: e.0,
                });
                let msg = Msg {
                    registry: spec.name.clone(),
                    generation,
                    kind: Kind::Endpoints,
                    event,
                };
                if tx.send(msg).is_err() {
                    return;
                }
                delay.wait().await;
                continue;
            }
        };
        if !watch_all(&spec, client, generation, &tx).await {
            return; // the controller is gone
        }
        // Unauthorized: rebuild the client after a backoff.
        delay.wait().await;
    }
}

/// Watches one Secret (`metadata.name` field selector in its namespace: the RBAC a
/// Role can grant on one name) until its task is aborted or the receiver is gone, and
/// sends what it sees: its contents once listed and at each change, `Missing` when it
/// does not exist or is deleted, and failures. Builds the client again after a 401, as
/// [`run`] does.
pub async fn watch_secret(
    spec: RegistrySpec,
    secret: SecretRef,
    tx: crossbeam_channel::Sender<SecretEvent>,
) {
    let send = |change| {
        tx.send(SecretEvent {
            secret: secret.clone(),
            change,
        })
        .is_ok()
    };
    let mut delay = Backoff::new(&spec.name);
    loop {
        let client = client_config(&spec).await.and_then(|config| {
            Client::try_from(config)
                .map_err(|e| ConnectError(format!("registry {:?}: client: {e}", spec.name)))
        });
        let client = match client {
            Ok(c) => c,
            Err(e) => {
                if !send(SecretChange::Failed {
                    code: None,
                    message: e.0,
                }) {
                    return;
                }
                delay.wait().await;
                continue;
            }
        };
        let api = Api::<Secret>::namespaced(client, &secret.namespace);
        let config = watcher::Config::default().fields(&format!("metadata.name={}", secret.name));
        let mut stream = watcher::watcher(api, config).default_backoff().boxed();
        let mut listed = None;
        while let Some(item) = stream.next().await {
            let change = match item {
                Ok(Event::Init) => {
                    listed = None;
                    continue;
                }
                Ok(Event::InitApply(s)) => {
                    listed = Some(SecretData::from_secret(&s));
                    continue;
                }
                Ok(Event::InitDone) => match listed.take() {
                    Some(data) => SecretChange::Applied(data),
                    None => SecretChange::Missing,
                },
                Ok(Event::Apply(s)) => SecretChange::Applied(SecretData::from_secret(&s)),
                Ok(Event::Delete(_)) => SecretChange::Missing,
                Err(e) => {
                    let e = classify(&e);
                    SecretChange::Failed {
                        code: e.code,
                        message: e.message,
                    }
                }
            };
            let unauthorized = matches!(
                &change,
                SecretChange::Failed {
                    code: Some(401),
                    ..
                }
            );
            if !send(change) {
                return;
            }
            if unauthorized {
                break;
            }
        }
        delay.wait().await;
    }
}

/// The label a Node carries its zone in.
pub const ZONE_LABEL: &str = "topology.kubernetes.io/zone";

/// Reads Node `node`'s zone label (`None`: the Node has none) and sends it, retrying with
/// backoff until the API server answers (a 403 means the ClusterRole lacks `get` on
/// `nodes`; it is logged once).
pub async fn node_zone(spec: RegistrySpec, node: String, tx: UnboundedSender<Option<String>>) {
    let mut delay = Backoff::new(&spec.name);
    let mut logged = false;
    loop {
        let client = client_config(&spec).await.and_then(|config| {
            Client::try_from(config)
                .map_err(|e| ConnectError(format!("registry {:?}: client: {e}", spec.name)))
        });
        let answer = match client {
            Ok(c) => Api::<Node>::all(c)
                .get(&node)
                .await
                .map_err(|e| ConnectError(e.to_string())),
            Err(e) => Err(e),
        };
        match answer {
            Ok(n) => {
                let zone = n.metadata.labels.and_then(|l| l.get(ZONE_LABEL).cloned());
                let _ = tx.send(zone);
                return;
            }
            Err(e) if !logged => {
                logged = true;
                tracing::warn!(registry = %spec.name, %node, error = %e.0, "cannot read this gateway's Node for its zone (needs get on nodes, or set node.zone); zone preference waits, retrying");
            }
            Err(_) => {}
        }
        delay.wait().await;
    }
}

const BACKOFF_START: std::time::Duration = std::time::Duration::from_millis(800);
const BACKOFF_MAX: std::time::Duration = std::time::Duration::from_secs(30);

/// Exponential backoff between attempts that failed (no client yet, 401, a Node not
/// readable): steps of 0.8 s doubling to 30 s, each wait a random 50–100 % of its step,
/// so that gateways refused at once (a rotated token on every node) do not all retry in
/// step against the API server.
struct Backoff {
    step: std::time::Duration,
    rng: u64,
}

impl Backoff {
    /// Seeded from `name`, the process and the time: replicas draw differently.
    fn new(name: &str) -> Backoff {
        use std::hash::{Hash, Hasher};
        let mut h = std::collections::hash_map::DefaultHasher::new();
        (name, std::process::id(), std::time::SystemTime::now()).hash(&mut h);
        Backoff {
            step: BACKOFF_START,
            rng: h.finish() | 1,
        }
    }

    /// The next wait: half the step plus a random share of the other half.
    fn next(&mut self) -> std::time::Duration {
        let half = self.step / 2;
        let wait = half + crate::check::jitter(&mut self.rng, half);
        self.step = (self.step * 2).min(BACKOFF_MAX);
        wait
    }

    async fn wait(&mut self) {
        tokio::time::sleep(self.next()).await;
    }
}

/// Runs both watchers until one is refused with 401 (`true`) or the controller is gone
/// (`false`).
async fn watch_all(
    spec: &RegistrySpec,
    client: Client,
    generation: u64,
    tx: &UnboundedSender<Msg>,
) -> bool {
    // The pattern was checked when the config loaded.
    let filter = spec.namespaces.as_deref().and_then(|p| Regex::new(p).ok());
    let mut config = watcher::Config::default();
    if let Some(sel) = &spec.label_selector {
        config = config.labels(sel);
    }
    let task = |kind| Watch {
        registry: spec.name.clone(),
        generation,
        kind,
        filter: filter.clone(),
        tx: tx.clone(),
    };
    let services = task(Kind::Services).run(
        Api::<Service>::all(client.clone()),
        config.clone(),
        Object::from_service,
    );
    let endpoints = match spec.resource {
        Resource::EndpointSlices => FutureExt::boxed(task(Kind::Endpoints).run(
            Api::<EndpointSlice>::all(client),
            config,
            Object::from_slice,
        )),
        Resource::Endpoints => FutureExt::boxed(task(Kind::Endpoints).run(
            Api::<Endpoints>::all(client),
            config,
            Object::from_endpoints,
        )),
    };
    let (end, _) = futures::future::select(endpoints, FutureExt::boxed(services))
        .await
        .factor_first();
    end == WatchEnd::Unauthorized
}

/// Why a watcher returned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum WatchEnd {
    Unauthorized,
    ControllerGone,
}

struct Watch {
    registry: String,
    generation: u64,
    kind: Kind,
    filter: Option<Regex>,
    tx: UnboundedSender<Msg>,
}

impl Watch {
    async fn run<K>(
        self,
        api: Api<K>,
        config: watcher::Config,
        reduce: fn(&K) -> Option<Object>,
    ) -> WatchEnd
    where
        K: kube::Resource + Clone + std::fmt::Debug + serde::de::DeserializeOwned + Send + 'static,
    {
        let keep = |obj: &K| -> Option<Object> {
            let ns = obj.meta().namespace.as_deref().unwrap_or("");
            if self.filter.as_ref().is_some_and(|re| !re.is_match(ns)) {
                return None;
            }
            reduce(obj)
        };
        let mut stream = watcher::watcher(api, config).default_backoff().boxed();
        while let Some(item) = stream.next().await {
            let event = match item {
                Ok(Event::Init) => WatchEvent::Init,
                Ok(Event::InitApply(obj)) => match keep(&obj) {
                    Some(o) => WatchEvent::InitApply(o),
                    None => continue,
                },
                Ok(Event::InitDone) => WatchEvent::InitDone,
                Ok(Event::Apply(obj)) => match keep(&obj) {
                    Some(o) => WatchEvent::Apply(o),
                    None => continue,
                },
                Ok(Event::Delete(obj)) => match keep(&obj) {
                    Some(o) => WatchEvent::Delete(o),
                    None => continue,
                },
                Err(e) => WatchEvent::Error(classify(&e)),
            };
            let unauthorized = matches!(&event, WatchEvent::Error(e) if e.code == Some(401));
            let msg = Msg {
                registry: self.registry.clone(),
                generation: self.generation,
                kind: self.kind,
                event,
            };
            if self.tx.send(msg).is_err() {
                return WatchEnd::ControllerGone;
            }
            if unauthorized {
                return WatchEnd::Unauthorized;
            }
        }
        WatchEnd::ControllerGone
    }
}

fn classify(e: &watcher::Error) -> WatchError {
    let code = match e {
        watcher::Error::InitialListFailed(kube::Error::Api(s))
        | watcher::Error::WatchStartFailed(kube::Error::Api(s))
        | watcher::Error::WatchFailed(kube::Error::Api(s)) => Some(s.code),
        watcher::Error::WatchError(s) => Some(s.code),
        _ => None,
    };
    WatchError {
        code,
        message: e.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_waits_are_jittered_within_their_doubling_steps() {
        let mut a = Backoff::new("a");
        let mut b = Backoff::new("b");
        let mut step = BACKOFF_START;
        let mut differ = false;
        for _ in 0..8 {
            let (x, y) = (a.next(), b.next());
            for w in [x, y] {
                assert!(
                    w >= step / 2 && w <= step,
                    "{w:?} outside {step:?}/2..={step:?}"
                );
            }
            differ |= x != y;
            step = (step * 2).min(BACKOFF_MAX);
        }
        assert!(differ, "two registries drew the same waits");
        assert_eq!(step, BACKOFF_MAX);
    }
}
