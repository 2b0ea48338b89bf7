//! The YAML form of the config, exactly as serde reads it: no defaults resolved, no
//! cross-references checked. `check` turns it into [`super::Config`].
//!
//! Runs on: the main thread (startup, `strait check`), later the reload path; never on a
//! worker. Every field is documented here and in CONFIG.md; each struct's `FIELDS` lists
//! its keys, and tests check that the list matches serde's and that CONFIG.md names each.
//! Durations stay strings here (`"250ms"`, `"5s"`) so the check can name the field of a bad one.

use serde::de::{self, Deserializer, Visitor};
use serde::Deserialize;
use std::path::PathBuf;

/// The whole file.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    /// Worker threads, at least 1. Default: one per available core.
    #[serde(default)]
    pub workers: Option<usize>,
    /// Which monoio driver the workers run. Default: `auto`.
    #[serde(default)]
    pub driver: FileDriver,
    /// HTTP and TCP listeners; at least one.
    #[serde(default)]
    pub listeners: Vec<FileListener>,
    /// The per-request access log. Default: off.
    #[serde(default)]
    pub access_log: FileAccessLog,
    /// Client-side HTTP limits and timeouts.
    #[serde(default)]
    pub http: FileHttp,
    /// Hosts and path prefixes, each routed to an upstream.
    #[serde(default)]
    pub services: Vec<FileService>,
    /// Named sets of endpoints that services and routes send requests to.
    #[serde(default)]
    pub upstreams: Vec<FileUpstream>,
    /// Kubernetes clusters whose Services upstreams may name with `discovery:`.
    #[serde(default)]
    pub registries: Vec<FileRegistry>,
    /// What SIGTERM does: readiness off, a delay, then a bounded drain.
    #[serde(default)]
    pub shutdown: FileShutdown,
    /// The admin server: health, readiness, metrics and the debug snapshot.
    #[serde(default)]
    pub admin: FileAdmin,
    /// Where this gateway runs (for `upstreams[].locality`).
    #[serde(default)]
    pub node: FileGatewayNode,
}

impl FileConfig {
    /// The keys of this mapping, as written in the file.
    pub const FIELDS: &'static [&'static str] = &[
        "workers",
        "driver",
        "listeners",
        "access_log",
        "http",
        "services",
        "upstreams",
        "registries",
        "shutdown",
        "admin",
        "node",
    ];
}

/// `admin:`; the admin server (`/healthz`, `/readyz`, `/metrics`, `/debug/snapshot`).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileAdmin {
    /// `ip:port` to serve on. Default `127.0.0.1:9901` (localhost only). In a DaemonSet,
    /// bind where the kubelet can probe it, e.g. `0.0.0.0:9901`.
    #[serde(default)]
    pub listen: Option<String>,
    /// Serve the admin endpoints at all. Default `true`.
    #[serde(default)]
    pub enabled: Option<bool>,
    /// A Unix socket to answer on too (each pod's own: what `strait probe` asks).
    #[serde(default)]
    pub socket: Option<PathBuf>,
}

impl FileAdmin {
    /// The keys of this mapping, as written in the file.
    pub const FIELDS: &'static [&'static str] = &["listen", "enabled", "socket"];
}

/// `shutdown:`; what a graceful stop (SIGTERM) does.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileShutdown {
    /// After SIGTERM, readiness is off at once but listeners keep accepting this long, so
    /// load balancers notice before connections are refused. `0s` for none. Default `5s`.
    #[serde(default)]
    pub delay: Option<String>,
    /// After the delay, in-flight requests get this long to finish; then the process
    /// exits anyway. Default `20s`.
    #[serde(default)]
    pub timeout: Option<String>,
}

impl FileShutdown {
    /// The keys of this mapping, as written in the file.
    pub const FIELDS: &'static [&'static str] = &["delay", "timeout"];
}

/// `driver:` values.
#[derive(Debug, Clone, Copy, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FileDriver {
    /// io_uring where the kernel allows it, else the legacy epoll driver.
    #[default]
    Auto,
    /// io_uring only; a worker that cannot set it up fails to start.
    IoUring,
    /// The epoll-based driver.
    Legacy,
}

impl FileDriver {
    /// The values, as written in the file.
    pub const VARIANTS: &'static [&'static str] = &["auto", "io_uring", "legacy"];
}

/// One item of `listeners:`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileListener {
    /// Unique among listeners; names the listener in logs.
    pub name: String,
    /// `ip:port` to bind, e.g. `0.0.0.0:80` or `[::]:80`, or `unix:/path` for a Unix
    /// domain socket. Unique among listeners.
    pub address: String,
    /// Unix socket listeners only: the socket file's mode, in octal (`"0660"`). Default:
    /// as the process umask leaves it.
    #[serde(default)]
    pub mode: Option<String>,
    /// `http` (routed by services) or `tcp` (every connection goes to `upstream`).
    /// Default `http`.
    #[serde(default)]
    pub protocol: FileProtocol,
    /// The upstream every connection of a `tcp` listener is proxied to. Required for
    /// `tcp`, refused for `http`.
    #[serde(default)]
    pub upstream: Option<String>,
    /// `tcp` only: a connection with no byte moving either way for this long is closed.
    /// Default `1h`.
    #[serde(default)]
    pub idle_timeout: Option<String>,
    /// `tcp` only: how long a connection to an endpoint that left the upstream may go
    /// on; `0s` never cuts it. Default `5m`.
    #[serde(default)]
    pub drain_timeout: Option<String>,
    /// Terminate TLS (HTTPS on `http`, TLS-wrapped TCP on `tcp`). Default: plain text.
    #[serde(default)]
    pub tls: Option<FileListenerTls>,
    /// `tcp` only, without `tls`: SNI passthrough, the ClientHello's server name picks
    /// the upstream (`upstream` is then the default, optional).
    #[serde(default)]
    pub sni_routes: Option<Vec<FileSniRoute>>,
    /// Peers (CIDRs or addresses) whose `X-Forwarded-For` is believed: the client's
    /// address is taken from it. Default: none.
    #[serde(default)]
    pub trusted_proxies: Vec<String>,
    /// Every connection starts with a PROXY protocol header (v1 or v2), which gives the
    /// client's address. Default `false`.
    #[serde(default)]
    pub proxy_protocol: bool,
}

/// One item of `listeners[].sni_routes:`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileSniRoute {
    /// Server names: exact, or `*.example.com` for one label.
    pub names: Vec<String>,
    /// Where a connection with one of these names goes.
    pub upstream: String,
}

impl FileSniRoute {
    /// The keys of this mapping, as written in the file.
    pub const FIELDS: &'static [&'static str] = &["names", "upstream"];
}

impl FileListener {
    /// The keys of this mapping, as written in the file.
    pub const FIELDS: &'static [&'static str] = &[
        "name",
        "address",
        "mode",
        "protocol",
        "upstream",
        "idle_timeout",
        "drain_timeout",
        "tls",
        "sni_routes",
        "trusted_proxies",
        "proxy_protocol",
    ];
}

/// `listeners[].protocol:` values.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FileProtocol {
    /// HTTP/1.1, routed by `services`.
    #[default]
    Http,
    /// Plain TCP: bytes copied both ways to the listener's `upstream`.
    Tcp,
}

impl FileProtocol {
    /// The values, as written in the file.
    pub const VARIANTS: &'static [&'static str] = &["http", "tcp"];
}

/// `access_log:`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileAccessLog {
    /// Write one line per request. Default: `false`.
    #[serde(default)]
    pub enabled: bool,
    /// File to append to. Default: standard output.
    #[serde(default)]
    pub path: Option<PathBuf>,
    /// `strait` (default), `apisix` or `json`.
    #[serde(default)]
    pub format: FileLogFormat,
}

impl FileAccessLog {
    /// The keys of this mapping, as written in the file.
    pub const FIELDS: &'static [&'static str] = &["enabled", "path", "format"];
}

/// `access_log.format:` values.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FileLogFormat {
    #[default]
    Strait,
    Apisix,
    Json,
}

impl FileLogFormat {
    /// The values, as written in the file.
    pub const VARIANTS: &'static [&'static str] = &["strait", "apisix", "json"];
}

/// `http:`; every key is optional, defaults are in [`super::HttpConfig::default`].
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileHttp {
    /// Time allowed for a complete request head once its first byte arrived. Default `60s`.
    #[serde(default)]
    pub client_header_timeout: Option<String>,
    /// Time allowed between two reads of a request body. Default `60s`.
    #[serde(default)]
    pub client_body_timeout: Option<String>,
    /// Time allowed for a whole request body, from its request head. Default `300s`.
    #[serde(default)]
    pub client_body_total_timeout: Option<String>,
    /// Time an idle keep-alive client connection is kept open. Default `75s`.
    #[serde(default)]
    pub keepalive_timeout: Option<String>,
    /// Largest request line (method, target, version) in bytes; longer gets 414. Default 8192.
    #[serde(default)]
    pub max_request_line_bytes: Option<usize>,
    /// Largest request head (request line + headers) in bytes; larger gets 431. Default 32768.
    #[serde(default)]
    pub max_request_head_bytes: Option<usize>,
    /// Most header fields in a request head (at most 128); more gets 431. Default 100.
    #[serde(default)]
    pub max_headers: Option<usize>,
    /// An upgraded connection (WebSocket) with no byte moving either way for this long
    /// is closed. Default `300s`.
    #[serde(default)]
    pub tunnel_idle_timeout: Option<String>,
    /// Open client connections per worker; at the limit the worker stops accepting
    /// until one closes. Default 16384.
    #[serde(default)]
    pub max_connections_per_worker: Option<usize>,
    /// Largest request body in bytes; larger gets 413. 0: no limit. Default 1048576 (1 MiB).
    #[serde(default)]
    pub max_request_body_bytes: Option<u64>,
    /// HTTP/2 from clients and its limits.
    #[serde(default)]
    pub http2: FileHttp2,
    /// The request id header: generated when absent, passed upstream, returned.
    #[serde(default)]
    pub request_id: FileRequestId,
}

/// `http.http2:`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileHttp2 {
    #[serde(default)]
    pub enabled: Option<bool>,
    #[serde(default)]
    pub max_concurrent_streams: Option<u32>,
    #[serde(default)]
    pub max_header_list_size: Option<u32>,
    #[serde(default)]
    pub initial_stream_window: Option<u32>,
    #[serde(default)]
    pub initial_connection_window: Option<u32>,
    #[serde(default)]
    pub max_send_buffer: Option<usize>,
    #[serde(default)]
    pub max_pending_resets: Option<usize>,
    #[serde(default)]
    pub max_local_resets: Option<usize>,
    #[serde(default)]
    pub stream_idle_timeout: Option<String>,
    #[serde(default)]
    pub max_control_frames: Option<u32>,
}

impl FileHttp2 {
    /// The keys of this mapping, as written in the file.
    pub const FIELDS: &'static [&'static str] = &[
        "enabled",
        "max_concurrent_streams",
        "max_header_list_size",
        "initial_stream_window",
        "initial_connection_window",
        "max_send_buffer",
        "max_pending_resets",
        "max_local_resets",
        "stream_idle_timeout",
        "max_control_frames",
    ];
}

impl FileHttp {
    /// The keys of this mapping, as written in the file.
    pub const FIELDS: &'static [&'static str] = &[
        "client_header_timeout",
        "client_body_timeout",
        "client_body_total_timeout",
        "keepalive_timeout",
        "max_request_line_bytes",
        "max_request_head_bytes",
        "max_headers",
        "tunnel_idle_timeout",
        "max_connections_per_worker",
        "max_request_body_bytes",
        "http2",
        "request_id",
    ];
}

/// One item of `services:`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileService {
    /// Unique among services; names the service in logs.
    pub name: String,
    /// Host names (`api.example.com`) and `*.suffix` wildcards, any case. Empty: any host
    /// that no other service names.
    #[serde(default)]
    pub hosts: Vec<String>,
    /// Path prefix the service answers under; starts with `/`. Default `/`.
    #[serde(default)]
    pub path_prefix: Option<String>,
    /// Upstream for the service, and for each route that names none.
    #[serde(default)]
    pub upstream: Option<String>,
    /// Routes inside the service. Empty: the whole prefix goes to `upstream`, any method.
    #[serde(default)]
    pub routes: Vec<FileRoute>,
}

impl FileService {
    /// The keys of this mapping, as written in the file.
    pub const FIELDS: &'static [&'static str] =
        &["name", "hosts", "path_prefix", "upstream", "routes"];
}

/// One item of `upstreams:`. Exactly one of `nodes` and `discovery`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileUpstream {
    /// Unique among upstreams; what services and routes refer to.
    pub name: String,
    /// A fixed list of endpoints.
    #[serde(default)]
    pub nodes: Option<Vec<FileNode>>,
    /// A Kubernetes Service whose endpoints a registry provides.
    #[serde(default)]
    pub discovery: Option<FileDiscovery>,
    /// Per-attempt timeouts.
    #[serde(default)]
    pub timeouts: FileTimeouts,
    /// Extra endpoints tried after a failed attempt (see CONFIG.md for which failures are
    /// retried). Default: endpoints − 1, at most 4.
    #[serde(default)]
    pub retries: Option<u32>,
    /// Request bodies up to this many bytes are held so a failed attempt can be replayed;
    /// larger ones stream and are not retried once sent. 0 holds none. Default 65536.
    #[serde(default)]
    pub retry_body_bytes: Option<usize>,
    /// What the `Host` header sent upstream says. Default `pass`.
    #[serde(default)]
    pub pass_host: FilePassHost,
    /// The `Host` sent upstream; required with `pass_host: rewrite`, refused otherwise.
    #[serde(default)]
    pub upstream_host: Option<String>,
    /// The per-worker pool of idle upstream connections.
    #[serde(default)]
    pub keepalive: FileKeepalive,
    /// Ejecting endpoints that keep refusing connections, per worker.
    #[serde(default)]
    pub passive_health: FilePassiveHealth,
    /// TLS to the endpoints. Default: plain text.
    #[serde(default)]
    pub tls: Option<FileUpstreamTls>,
    /// What strait speaks to the endpoints: `http1` (default), `h2` (over `tls:`) or `h2c`.
    #[serde(default)]
    pub protocol: FileUpstreamProtocol,
    /// How an endpoint is picked. Default `round_robin`.
    #[serde(default)]
    pub balance: FileBalance,
    /// What `consistent_hash` hashes.
    #[serde(default)]
    pub hash: Option<FileHash>,
    /// Ejection on consecutive 5xx and gateway errors. Default: off.
    #[serde(default)]
    pub outlier: Option<FileOutlier>,
    /// Active health checks. Default: off.
    #[serde(default)]
    pub health_check: Option<FileHealthCheck>,
    /// Same-node / same-zone preference. Default: none.
    #[serde(default)]
    pub locality: Option<FileLocality>,
    /// Send a PROXY protocol header (`v1` or `v2`) on each new connection to an
    /// endpoint. Default: none.
    #[serde(default)]
    pub proxy_protocol: Option<FileProxyProtocol>,
}

/// `upstreams[].protocol:` values.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FileUpstreamProtocol {
    #[default]
    Http1,
    H2,
    H2c,
}

impl FileUpstreamProtocol {
    /// The values, as written in the file.
    pub const VARIANTS: &'static [&'static str] = &["http1", "h2", "h2c"];
}

impl FileUpstream {
    /// The keys of this mapping, as written in the file.
    pub const FIELDS: &'static [&'static str] = &[
        "name",
        "nodes",
        "discovery",
        "timeouts",
        "retries",
        "retry_body_bytes",
        "pass_host",
        "upstream_host",
        "keepalive",
        "passive_health",
        "tls",
        "protocol",
        "balance",
        "hash",
        "outlier",
        "health_check",
        "locality",
        "proxy_protocol",
    ];
}

/// One item of `upstreams[].nodes:`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileNode {
    /// `ip:port` of the endpoint (no host names), or `unix:/path` for a Unix domain socket.
    pub address: String,
    /// Share of requests, 0..=10000; 0 takes the node out of rotation. Default 1.
    #[serde(default)]
    pub weight: Option<u32>,
}

impl FileNode {
    /// The keys of this mapping, as written in the file.
    pub const FIELDS: &'static [&'static str] = &["address", "weight"];
}

/// One item of `registries:`: a Kubernetes cluster to watch.
///
/// Connection: `kubeconfig` (+ `context`), or `server` with `token` / `token_file` /
/// `client_cert` + `client_key` and `ca_file`, or nothing of these: in-cluster (the pod's
/// service account, `KUBERNETES_SERVICE_HOST`/`_PORT`).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileRegistry {
    /// Name that `upstreams[].discovery.registry` refers to.
    pub name: String,
    /// Watch this cluster. Default: true. When false its upstreams answer 503.
    #[serde(default)]
    pub enabled: Option<bool>,
    /// API server URL, e.g. `https://10.0.0.1:6443`. Default: in-cluster.
    #[serde(default)]
    pub server: Option<String>,
    /// Bearer token. Prefer `token_file`.
    #[serde(default)]
    pub token: Option<String>,
    /// File holding the bearer token; re-read as it rotates.
    #[serde(default)]
    pub token_file: Option<PathBuf>,
    /// PEM CA bundle to verify the API server with. Default: system roots.
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
    /// Skip API server certificate verification. Default: false.
    #[serde(default)]
    pub insecure_skip_tls_verify: Option<bool>,
    /// PEM client certificate.
    #[serde(default)]
    pub client_cert: Option<PathBuf>,
    /// PEM client key.
    #[serde(default)]
    pub client_key: Option<PathBuf>,
    /// A kubeconfig file (for running outside a cluster).
    #[serde(default)]
    pub kubeconfig: Option<PathBuf>,
    /// Context in `kubeconfig`. Default: its current context.
    #[serde(default)]
    pub context: Option<String>,
    /// Regular expression namespace names must match. Default: every namespace.
    #[serde(default)]
    pub namespaces: Option<String>,
    /// Kubernetes label selector for the watched objects.
    #[serde(default)]
    pub label_selector: Option<String>,
    /// `endpointslices` (default) or `endpoints`.
    #[serde(default)]
    pub resource: FileResource,
}

impl FileRegistry {
    /// The keys of this mapping, as written in the file.
    pub const FIELDS: &'static [&'static str] = &[
        "name",
        "enabled",
        "server",
        "token",
        "token_file",
        "ca_file",
        "insecure_skip_tls_verify",
        "client_cert",
        "client_key",
        "kubeconfig",
        "context",
        "namespaces",
        "label_selector",
        "resource",
    ];
}

/// `resource:` values.
#[derive(Debug, Clone, Copy, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FileResource {
    /// `discovery.k8s.io/v1` EndpointSlices.
    #[default]
    Endpointslices,
    /// core/v1 Endpoints (deprecated from Kubernetes 1.33).
    Endpoints,
}

impl FileResource {
    /// The values, as written in the file.
    pub const VARIANTS: &'static [&'static str] = &["endpointslices", "endpoints"];
}

/// `upstreams[].discovery:`: `namespace/service:port` found through `registry`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileDiscovery {
    /// Name of the registry to ask.
    pub registry: String,
    /// Kubernetes namespace of the Service.
    pub namespace: String,
    /// Kubernetes Service name.
    pub service: String,
    /// Service port, by number or by name.
    pub port: FilePort,
}

impl FileDiscovery {
    /// The keys of this mapping, as written in the file.
    pub const FIELDS: &'static [&'static str] = &["registry", "namespace", "service", "port"];
}

/// A Service port: a number (`8080`, also `"8080"`) or a name (`http`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FilePort {
    /// A port number.
    Number(u16),
    /// A port name.
    Name(String),
}

impl<'de> Deserialize<'de> for FilePort {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct PortVisitor;

        impl Visitor<'_> for PortVisitor {
            type Value = FilePort;

            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a port number (1-65535) or a port name")
            }

            fn visit_u64<E: de::Error>(self, v: u64) -> Result<FilePort, E> {
                match u16::try_from(v) {
                    Ok(n) if n > 0 => Ok(FilePort::Number(n)),
                    _ => Err(E::invalid_value(de::Unexpected::Unsigned(v), &self)),
                }
            }

            fn visit_i64<E: de::Error>(self, v: i64) -> Result<FilePort, E> {
                match u64::try_from(v) {
                    Ok(v) => self.visit_u64(v),
                    Err(_) => Err(E::invalid_value(de::Unexpected::Signed(v), &self)),
                }
            }

            fn visit_str<E: de::Error>(self, v: &str) -> Result<FilePort, E> {
                if v.is_empty() {
                    return Err(E::invalid_value(de::Unexpected::Str(v), &self));
                }
                match v.parse::<u64>() {
                    Ok(n) => self.visit_u64(n),
                    Err(_) => Ok(FilePort::Name(v.to_owned())),
                }
            }
        }

        deserializer.deserialize_any(PortVisitor)
    }
}

/// `upstreams[].timeouts:`; each a duration such as `250ms`, `5s`, `1m`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileTimeouts {
    /// TCP connect, per attempt. Default `5s`.
    #[serde(default)]
    pub connect: Option<String>,
    /// From the last request byte written to the complete response head. Default `60s`.
    #[serde(default)]
    pub response_header: Option<String>,
    /// Between two reads of a response body. Default `60s`.
    #[serde(default)]
    pub read: Option<String>,
    /// For each write to the endpoint (request head and body, tunnelled bytes). Default `60s`.
    #[serde(default)]
    pub write: Option<String>,
}

impl FileTimeouts {
    /// The keys of this mapping, as written in the file.
    pub const FIELDS: &'static [&'static str] = &["connect", "response_header", "read", "write"];
}

/// `pass_host:` values.
#[derive(Debug, Clone, Copy, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FilePassHost {
    /// The client's `Host`, unchanged.
    #[default]
    Pass,
    /// The endpoint's `ip:port`.
    Node,
    /// The upstream's `upstream_host`.
    Rewrite,
}

impl FilePassHost {
    /// The values, as written in the file.
    pub const VARIANTS: &'static [&'static str] = &["pass", "node", "rewrite"];
}

/// `upstreams[].keepalive:`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileKeepalive {
    /// Idle connections kept per endpoint per worker; 0 disables pooling. Default 64.
    #[serde(default)]
    pub max_idle: Option<usize>,
    /// An idle pooled connection older than this is closed. Default `30s`.
    #[serde(default)]
    pub idle_timeout: Option<String>,
    /// Requests per upstream connection before it is closed; 0 = unlimited. Default 1000.
    #[serde(default)]
    pub max_requests: Option<u32>,
}

impl FileKeepalive {
    /// The keys of this mapping, as written in the file.
    pub const FIELDS: &'static [&'static str] = &["max_idle", "idle_timeout", "max_requests"];
}

/// `upstreams[].passive_health:`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FilePassiveHealth {
    /// Consecutive connect failures (refused, reset, timed out) that eject an endpoint
    /// from a worker's rotation; 0 turns ejection off. Default 3.
    #[serde(default)]
    pub consecutive_failures: Option<u32>,
    /// The first ejection's length; each further ejection in a row doubles it. Default `5s`.
    #[serde(default)]
    pub base_ejection: Option<String>,
    /// The longest ejection. Default `2m`.
    #[serde(default)]
    pub max_ejection: Option<String>,
    /// At most this share of the upstream's endpoints is ejected at once; one may always
    /// be, the last never is. Default 50.
    #[serde(default)]
    pub max_ejected_percent: Option<u8>,
}

impl FilePassiveHealth {
    /// The keys of this mapping, as written in the file.
    pub const FIELDS: &'static [&'static str] = &[
        "consecutive_failures",
        "base_ejection",
        "max_ejection",
        "max_ejected_percent",
    ];
}

mod balance;
pub use balance::{
    FileBalance, FileCheckType, FileGatewayNode, FileHash, FileHashKey, FileHealthCheck,
    FileLocality, FileOutlier, FilePrefer, FileStatus,
};
mod route;
pub use route::{
    FileBackend, FileDirectResponse, FileHeaderEdits, FilePathMatch, FileProxyProtocol,
    FileRateKey, FileRateLimit, FileRedirect, FileRequestId, FileRewrite, FileRoute,
    FileValueMatch,
};
mod tls;
pub use tls::{FileCertificate, FileListenerTls, FileSecretRef, FileUpstreamTls};

#[cfg(test)]
mod tests;
