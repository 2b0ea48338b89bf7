//! The checked description of what to route: services, routes and upstreams.
//!
//! Built from the YAML config by the proxy's `config` module (which owns field paths,
//! line numbers and error messages) and consumed by [`crate::build`]. Plain data: no
//! runtime types, `Send + Sync`, cheap to compare so a reload can tell what changed.

use std::path::PathBuf;
use std::time::Duration;

use crate::addr::EndpointAddr;

mod route;
pub use route::*;

/// Everything the table builder and the registries need from the config.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Spec {
    pub services: Vec<ServiceSpec>,
    pub upstreams: Vec<UpstreamSpec>,
    /// Kubernetes clusters to discover endpoints in.
    pub registries: Vec<RegistrySpec>,
    /// The `kubernetes.io/tls` Secrets TLS listeners take certificates from, each watched
    /// in its registry (sorted, no duplicates).
    pub tls_secrets: Vec<SecretRef>,
    /// This gateway's node and zone, for `locality`.
    pub node: GatewayNode,
}

/// A Secret in a registry's cluster: `listeners[].tls.certificates[].secret`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct SecretRef {
    pub registry: String,
    pub namespace: String,
    pub name: String,
}

impl std::fmt::Display for SecretRef {
    /// `secret local/apisix/httpbin-tls`, as logs, errors and metrics name it.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "secret {}/{}/{}",
            self.registry, self.namespace, self.name
        )
    }
}

/// One Kubernetes cluster to watch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RegistrySpec {
    pub name: String,
    /// Disabled: its upstreams answer 503 and nothing is watched.
    pub enabled: bool,
    pub connection: Connection,
    /// Only namespaces whose name matches this regular expression (anchored by the
    /// writer, e.g. `^apisix$`); `None`: every namespace.
    pub namespaces: Option<String>,
    /// A Kubernetes label selector applied to the watched objects.
    pub label_selector: Option<String>,
    pub resource: Resource,
}

/// How to reach and authenticate to an API server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Connection {
    /// The pod's service account: `KUBERNETES_SERVICE_HOST`/`_PORT`, the token file
    /// (re-read as it rotates) and the cluster CA.
    InCluster,
    /// An explicit server.
    Explicit {
        /// `https://host:port` (or `http://` for tests).
        server: String,
        credentials: Credentials,
        /// PEM bundle to verify the server with; `None`: the system roots.
        ca_file: Option<PathBuf>,
        /// Skip server certificate verification (never the default).
        insecure_skip_tls_verify: bool,
    },
    /// A kubeconfig file, for running outside a cluster.
    Kubeconfig {
        path: PathBuf,
        context: Option<String>,
    },
}

/// Client credentials for [`Connection::Explicit`].
#[derive(Clone, PartialEq, Eq, Default)]
pub struct Credentials {
    /// A bearer token (kept out of logs).
    pub token: Option<String>,
    /// A file holding the bearer token, re-read as it changes.
    pub token_file: Option<PathBuf>,
    /// Client certificate and key (PEM files).
    pub client_cert: Option<PathBuf>,
    pub client_key: Option<PathBuf>,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credentials")
            .field("token", &self.token.as_ref().map(|_| "<redacted>"))
            .field("token_file", &self.token_file)
            .field("client_cert", &self.client_cert)
            .field("client_key", &self.client_key)
            .finish()
    }
}

/// Which endpoint objects a registry watches.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Resource {
    /// `discovery.k8s.io/v1` EndpointSlices (default).
    #[default]
    EndpointSlices,
    /// core/v1 Endpoints (deprecated from Kubernetes 1.33).
    Endpoints,
}

/// A set of hosts and a path prefix served by one upstream, optionally split into routes.
#[derive(Debug, Clone, PartialEq)]
pub struct ServiceSpec {
    pub name: String,
    /// Exact names (`api.example.com`) and `*.suffix` wildcards, lower-case.
    /// Empty: the service answers for any host that no other service names.
    pub hosts: Vec<String>,
    /// Starts with `/`; `/` when the config gives none.
    pub path_prefix: String,
    /// The upstream of routes that name none (and of the service when it has no routes).
    pub upstream: Option<String>,
    /// Empty: one implicit route covering the whole `path_prefix`, any method.
    pub routes: Vec<RouteSpec>,
}

/// A named set of endpoints plus how to talk to them.
#[derive(Debug, Clone, PartialEq)]
pub struct UpstreamSpec {
    pub name: String,
    pub source: UpstreamSource,
    pub settings: UpstreamSettings,
}

/// Where an upstream's endpoints come from.
#[derive(Debug, Clone, PartialEq)]
pub enum UpstreamSource {
    /// A fixed list from the config.
    Static(Vec<NodeSpec>),
    /// A Kubernetes Service found through a registry (filled in by discovery).
    Discovery(DiscoveryRef),
}

/// A static endpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NodeSpec {
    pub addr: EndpointAddr,
    /// 0 takes the node out of rotation.
    pub weight: u32,
}

/// `namespace/service:port` in registry `registry`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct DiscoveryRef {
    pub registry: String,
    pub namespace: String,
    pub service: String,
    /// The Service port, by number or by name.
    pub port: ServicePort,
}

/// A Kubernetes Service port reference.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum ServicePort {
    Number(u16),
    Name(String),
}

/// How the proxy talks to an upstream's endpoints.
#[derive(Debug, Clone, PartialEq)]
pub struct UpstreamSettings {
    /// TCP connect, per attempt.
    pub connect_timeout: Duration,
    /// From the last request byte written to the complete response head.
    pub response_header_timeout: Duration,
    /// Between two reads of a response body.
    pub read_timeout: Duration,
    /// For each write to an endpoint (the request head, each piece of a request body,
    /// tunnelled bytes): how long it may stay blocked on a full send buffer.
    pub write_timeout: Duration,
    /// Extra endpoints tried after a failed attempt; `None` = endpoints − 1, capped.
    pub retries: Option<u32>,
    /// Request bodies up to this size are held whole before forwarding, so that a
    /// request whose attempt failed can be replayed on another endpoint; larger bodies
    /// stream and are not retried once their first byte was sent. 0 holds none.
    pub retry_body_bytes: usize,
    pub pass_host: PassHost,
    pub pool: PoolSettings,
    pub health: PassiveHealth,
    /// TLS to the endpoints (`upstreams[].tls`); `None`: plain text.
    pub tls: Option<std::sync::Arc<crate::tls::UpstreamTls>>,
    /// The protocol spoken to the endpoints.
    pub protocol: UpstreamProtocol,
    /// How an endpoint is picked for a request.
    pub balance: Balance,
    /// Ejection on consecutive 5xx answers and gateway errors (off unless configured).
    pub outlier: Outlier,
    /// Active health checks, run once per gateway on the discovery thread.
    pub health_check: Option<HealthCheck>,
    /// Same-node / same-zone preference.
    pub locality: Locality,
    /// The PROXY protocol header sent on each new connection to an endpoint.
    pub proxy_protocol: Option<ProxyVersion>,
}

/// A PROXY protocol version.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProxyVersion {
    V1,
    V2,
}

/// `upstreams[].balance` (with `hash` for `consistent_hash`).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum Balance {
    /// Smooth weighted round-robin (nginx's).
    #[default]
    RoundRobin,
    /// Power of two choices over each worker's own in-flight requests, weighted.
    LeastRequest,
    /// A weighted random endpoint.
    Random,
    /// Maglev over the endpoints' addresses: a key goes to the same endpoint on every
    /// worker and every gateway replica.
    ConsistentHash(HashKey),
}

/// What a request is hashed by for `consistent_hash`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HashKey {
    /// A request header's value (name lowercase).
    Header(String),
    /// A cookie's value.
    Cookie(String),
    /// The client's IP address.
    SourceIp,
    /// The request path (normalised, without the query).
    Path,
}

/// `upstreams[].outlier`: passive ejection on what responses say.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outlier {
    /// Consecutive 5xx responses that eject an endpoint; 0: off.
    pub consecutive_5xx: u32,
    /// Consecutive gateway errors (response timeouts, resets, closed connections) that
    /// eject an endpoint; 0: off.
    pub consecutive_gateway_errors: u32,
    /// The first such ejection's length (doubling as for `passive_health`, up to its
    /// `max_ejection`).
    pub base_ejection: Duration,
}

impl Default for Outlier {
    fn default() -> Self {
        Self {
            consecutive_5xx: 0,
            consecutive_gateway_errors: 0,
            base_ejection: Duration::from_secs(30),
        }
    }
}

/// `upstreams[].protocol`: what strait speaks to an upstream's endpoints.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum UpstreamProtocol {
    /// HTTP/1.1 (HTTP/2 client streams are translated).
    #[default]
    Http1,
    /// HTTP/2 over TLS (ALPN `h2`); needs `tls:`.
    H2,
    /// HTTP/2 in plain text, prior knowledge.
    H2c,
}

impl UpstreamProtocol {
    /// HTTP/2 of either kind.
    pub fn is_h2(self) -> bool {
        !matches!(self, UpstreamProtocol::Http1)
    }
}

impl Default for UpstreamSettings {
    fn default() -> Self {
        Self {
            connect_timeout: Duration::from_secs(5),
            response_header_timeout: Duration::from_secs(60),
            read_timeout: Duration::from_secs(60),
            write_timeout: Duration::from_secs(60),
            retries: None,
            retry_body_bytes: 64 * 1024,
            pass_host: PassHost::Pass,
            pool: PoolSettings::default(),
            health: PassiveHealth::default(),
            tls: None,
            protocol: UpstreamProtocol::Http1,
            balance: Balance::RoundRobin,
            outlier: Outlier::default(),
            health_check: None,
            locality: Locality::default(),
            proxy_protocol: None,
        }
    }
}

/// `upstreams[].health_check`: an active check of every endpoint, once per gateway.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HealthCheck {
    pub kind: CheckKind,
    /// Between two checks of one endpoint.
    pub interval: Duration,
    /// For one check: connect, and for HTTP the response's status line.
    pub timeout: Duration,
    /// Each wait is `interval` plus a random share of this, so checks spread out.
    pub jitter: Duration,
    /// Consecutive passes that bring a failing endpoint back.
    pub healthy: u32,
    /// Consecutive failures that take an endpoint out.
    pub unhealthy: u32,
}

/// What one check does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CheckKind {
    /// Connect, and close.
    Tcp,
    /// `GET path` over HTTP/1.1; passes when the status is in one of `statuses`.
    Http {
        path: String,
        /// The `Host` header; `None`: the endpoint's `ip:port`.
        host: Option<String>,
        /// Inclusive ranges of passing statuses.
        statuses: Vec<(u16, u16)>,
    },
}

/// `upstreams[].locality`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Locality {
    pub prefer: Prefer,
    /// A tier (this node, this zone) is used only when it has at least this many endpoints
    /// to pick from; otherwise the next one.
    pub min_ready: u32,
}

impl Default for Locality {
    fn default() -> Self {
        Self {
            prefer: Prefer::None,
            min_ready: 1,
        }
    }
}

/// Which endpoints an upstream prefers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Prefer {
    /// Every endpoint alike.
    #[default]
    None,
    /// This node's, then this zone's, then any.
    Node,
    /// This zone's, then any.
    Zone,
}

/// Where this gateway runs: `node:` in the config.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct GatewayNode {
    /// The Kubernetes node name (`NODE_NAME` from the downward API when not configured).
    pub name: Option<String>,
    /// The zone; when `None` and `name` is known, read from the Node's
    /// `topology.kubernetes.io/zone` label in `zone_from`.
    pub zone: Option<String>,
    /// The registry whose cluster the Node is looked up in.
    pub zone_from: Option<String>,
}

/// What the `Host` header sent upstream says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PassHost {
    /// The client's Host, unchanged.
    Pass,
    /// The endpoint's `ip:port`.
    Node,
    /// A fixed value.
    Rewrite(String),
}

/// Per-worker keep-alive pool for one upstream's endpoints.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PoolSettings {
    /// Idle connections kept per endpoint per worker; 0 disables pooling.
    pub max_idle_per_endpoint: usize,
    /// An idle pooled connection older than this is closed, not reused.
    pub idle_timeout: Duration,
    /// A connection is closed after this many requests; 0 = unlimited.
    pub max_requests_per_connection: u32,
}

impl Default for PoolSettings {
    fn default() -> Self {
        Self {
            max_idle_per_endpoint: 64,
            idle_timeout: Duration::from_secs(30),
            max_requests_per_connection: 1000,
        }
    }
}

/// Passive health checking, per worker: endpoints that keep refusing connections leave
/// that worker's rotation for a while.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PassiveHealth {
    /// Consecutive connect failures that eject an endpoint; 0 turns ejection off.
    pub consecutive_failures: u32,
    /// The first ejection's length; each ejection in a row doubles it.
    pub base_ejection: Duration,
    /// The longest ejection.
    pub max_ejection: Duration,
    /// At most this share of an upstream's endpoints is ejected at once (at least one
    /// may be, and never all of them: the panic threshold).
    pub max_ejected_percent: u8,
}

impl Default for PassiveHealth {
    fn default() -> Self {
        Self {
            consecutive_failures: 3,
            base_ejection: Duration::from_secs(5),
            max_ejection: Duration::from_secs(120),
            max_ejected_percent: 50,
        }
    }
}
