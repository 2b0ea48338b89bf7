//! Configuration: the YAML file form ([`file`](mod@file)) and its checked form ([`Config`]).
//!
//! Runs on: the main thread (startup, `strait check`) and, later, the reload path.
//! Never on a worker. A file that fails to check is refused whole with a [`ConfigError`]
//! naming the field path and the line.

use std::net::SocketAddr;
use std::num::NonZeroUsize;
use std::path::{Path, PathBuf};
use std::time::Duration;

use strait_discovery::Spec;

mod check;
pub mod file;
mod lines;

/// The checked configuration.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    /// Worker threads; `None` = one per available core.
    pub workers: Option<NonZeroUsize>,
    pub driver: Driver,
    pub listeners: Vec<ListenerConfig>,
    pub access_log: AccessLogConfig,
    pub http: HttpConfig,
    pub shutdown: ShutdownConfig,
    /// The admin server.
    pub admin: AdminConfig,
    /// Services, routes and upstreams, for the table builder.
    pub spec: Spec,
}

/// Which monoio driver a worker runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Driver {
    /// io_uring where the kernel allows it, else the legacy epoll driver.
    #[default]
    Auto,
    IoUring,
    Legacy,
}

/// One listener: a TCP address every worker binds with SO_REUSEPORT, or a Unix socket
/// every worker accepts on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListenerConfig {
    pub name: String,
    pub addr: ListenAddr,
    /// The socket file's mode (Unix listeners); `None` leaves it to the umask.
    pub mode: Option<u32>,
    pub protocol: Protocol,
    /// TLS termination (`tls:`); `None`: plain text.
    pub tls: Option<ListenerTls>,
    /// Peers whose `X-Forwarded-For` is believed (`trusted_proxies`).
    pub trusted_proxies: Vec<crate::real_ip::Cidr>,
    /// Connections start with a PROXY protocol header.
    pub proxy_protocol: bool,
}

/// A listener's `tls:` settings. The certificates themselves are loaded by `tls::load`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListenerTls {
    /// In config order: the first is the default for a client with no or an unknown SNI.
    pub certificates: Vec<Certificate>,
    pub min_version: TlsVersion,
    /// From accept to the end of the handshake; longer is cut.
    pub handshake_timeout: std::time::Duration,
    /// Refuse a client with no SNI or an unknown name instead of serving the default.
    pub sni_strict: bool,
    /// Require a client certificate signed by one of these CAs (mTLS).
    pub client_ca_file: Option<PathBuf>,
    /// Handshakes in progress per worker; more new connections are closed at once.
    pub max_handshakes: usize,
    /// ALPN offers `h2` (an `http` listener with `http.http2.enabled`).
    pub h2: bool,
}

impl ListenerTls {
    /// `handshake_timeout` when the file gives none (nginx's `ssl_handshake_timeout`).
    pub const DEFAULT_HANDSHAKE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);
    /// `max_handshakes` when the file gives none.
    pub const DEFAULT_MAX_HANDSHAKES: usize = 1024;
}

/// One certificate of a TLS listener: where it comes from, and the names it serves when
/// not its own.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Certificate {
    pub source: CertSource,
    pub names: Option<Vec<String>>,
}

/// Where a listener's certificate comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CertSource {
    /// PEM files, re-read when they change.
    Files {
        cert_file: PathBuf,
        key_file: PathBuf,
    },
    /// A `kubernetes.io/tls` Secret (`tls.crt`, `tls.key`), watched in its registry.
    Secret(strait_discovery::spec::SecretRef),
}

impl Certificate {
    /// The PEM files, for a file certificate.
    pub fn files(&self) -> Option<(&PathBuf, &PathBuf)> {
        match &self.source {
            CertSource::Files {
                cert_file,
                key_file,
            } => Some((cert_file, key_file)),
            CertSource::Secret(_) => None,
        }
    }
}

/// The lowest TLS version a listener accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum TlsVersion {
    #[default]
    V1_2,
    V1_3,
}

/// Where a listener listens.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum ListenAddr {
    /// `ip:port` (port 0: any free port, the same for every worker).
    Inet(SocketAddr),
    /// `unix:/path`: a Unix domain stream socket at this path.
    Unix(PathBuf),
}

/// `0.0.0.0:8080`, `[::]:8080` or `unix:/run/strait/http.sock`, as written in the config.
impl std::fmt::Display for ListenAddr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ListenAddr::Inet(a) => a.fmt(f),
            ListenAddr::Unix(p) => write!(f, "unix:{}", p.display()),
        }
    }
}

/// What a listener does with its connections.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum Protocol {
    /// HTTP/1.1, routed by the services.
    #[default]
    Http,
    /// Plain TCP to one upstream.
    Tcp(TcpConfig),
}

/// A `tcp` listener's settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TcpConfig {
    /// The upstream every connection goes to (by name: indices change across reloads);
    /// with `sni_routes`, the one a ClientHello no route names goes to (`None`: closed).
    pub upstream: Option<String>,
    /// SNI passthrough: the ClientHello's server name picks the upstream; the TLS bytes
    /// go through untouched. Empty: no look at the bytes.
    pub sni_routes: Vec<SniRoute>,
    /// A connection with no byte moving either way for this long is closed; also the
    /// bound on one blocked write.
    pub idle_timeout: Duration,
    /// How long a connection to an endpoint that left the table may go on; `None`: it is
    /// never cut for that.
    pub drain_timeout: Option<Duration>,
}

/// One `sni_routes` entry: names (exact, or `*.` and one label) and their upstream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SniRoute {
    pub names: Vec<String>,
    pub upstream: String,
}

impl TcpConfig {
    /// `idle_timeout` when the file gives none: an hour, as Envoy's tcp_proxy and the
    /// usual HAProxy `timeout tunnel`.
    pub const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(3600);
    /// `drain_timeout` when the file gives none.
    pub const DEFAULT_DRAIN_TIMEOUT: Duration = Duration::from_secs(300);
}

/// The per-request access log.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct AccessLogConfig {
    pub enabled: bool,
    /// `None`: standard output.
    pub path: Option<PathBuf>,
    pub format: crate::access_log::Format,
}

/// Client-side HTTP settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpConfig {
    /// Time allowed for a complete request head once its first byte arrived.
    pub client_header_timeout: Duration,
    /// Time an idle keep-alive client connection is kept open.
    pub keepalive_timeout: Duration,
    /// Between two reads of a request body from the client.
    pub client_body_timeout: Duration,
    /// For a whole request body, from its head on (a body trickled a byte at a time is
    /// cut too).
    pub client_body_total_timeout: Duration,
    /// Largest request line accepted; longer → 414.
    pub max_request_line_bytes: usize,
    /// Largest request head (request line + headers) accepted; larger → 431.
    pub max_request_head_bytes: usize,
    /// Most header fields in a request head (≤ `http::head::MAX_HEADERS`); more → 431.
    pub max_headers: usize,
    /// An upgraded connection with no byte moving either way for this long is closed.
    pub tunnel_idle_timeout: Duration,
    /// Open client connections per worker; at the limit the worker stops accepting.
    pub max_connections_per_worker: usize,
    /// Largest request body accepted; larger → 413. 0: no limit.
    pub max_request_body_bytes: u64,
    /// HTTP/2 from clients.
    pub http2: Http2Config,
    /// `http.request_id`.
    pub request_id: RequestIdConfig,
}

/// `http.request_id`: a request id generated when the client sent none, passed upstream,
/// returned to the client and logged.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestIdConfig {
    pub enabled: bool,
    /// The header's name as configured (`X-Request-Id`).
    pub header: String,
}

impl Default for RequestIdConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            header: "X-Request-Id".to_owned(),
        }
    }
}

/// `http.http2`: HTTP/2 from clients (ALPN `h2` on TLS listeners, h2c with prior
/// knowledge on plain-text ones) and its limits, each a defence against a known flood.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Http2Config {
    /// Offer and accept HTTP/2 at all.
    pub enabled: bool,
    /// Streams a client may have open at once on one connection (SETTINGS).
    pub max_concurrent_streams: u32,
    /// Largest decoded header list (names + values + 32 per field) of a request.
    pub max_header_list_size: u32,
    /// Flow-control window per stream: what a client may send unread.
    pub initial_stream_window: u32,
    /// Flow-control window per connection.
    pub initial_connection_window: u32,
    /// Bytes buffered per stream toward a slow client before waiting for its window.
    pub max_send_buffer: usize,
    /// Streams a client may reset before strait accepts them (rapid reset,
    /// CVE-2023-44487): more closes the connection with GOAWAY.
    pub max_pending_resets: usize,
    /// Streams strait resets for a client's protocol errors before it closes the
    /// connection with GOAWAY.
    pub max_local_resets: usize,
    /// A stream with no frame either way for this long is reset (long gRPC streams stay
    /// up while they move; the HTTP read timeouts do not apply to them).
    pub stream_idle_timeout: Duration,
    /// SETTINGS, PING, PRIORITY, empty and unknown frames a client may send per second;
    /// more closes the connection with GOAWAY.
    pub max_control_frames: u32,
}

impl Default for Http2Config {
    fn default() -> Self {
        Self {
            enabled: true,
            max_concurrent_streams: 128,
            max_header_list_size: 32 * 1024,
            initial_stream_window: 256 * 1024,
            initial_connection_window: 1024 * 1024,
            max_send_buffer: 256 * 1024,
            max_pending_resets: 20,
            max_local_resets: 1024,
            stream_idle_timeout: Duration::from_secs(300),
            max_control_frames: 1000,
        }
    }
}

impl Default for HttpConfig {
    fn default() -> Self {
        Self {
            client_header_timeout: Duration::from_secs(60),
            keepalive_timeout: Duration::from_secs(75),
            client_body_timeout: Duration::from_secs(60),
            client_body_total_timeout: Duration::from_secs(300),
            max_request_line_bytes: 8 * 1024,
            max_request_head_bytes: 32 * 1024,
            max_headers: 100,
            tunnel_idle_timeout: Duration::from_secs(300),
            max_connections_per_worker: 16384,
            max_request_body_bytes: 1024 * 1024,
            http2: Http2Config::default(),
            request_id: RequestIdConfig::default(),
        }
    }
}

/// What a graceful stop does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ShutdownConfig {
    /// From the signal to closing the listeners; readiness is off meanwhile.
    pub delay: Duration,
    /// From closing the listeners to exiting, in-flight requests or not.
    pub timeout: Duration,
}

impl Default for ShutdownConfig {
    fn default() -> Self {
        Self {
            delay: Duration::from_secs(5),
            timeout: Duration::from_secs(20),
        }
    }
}

/// The admin server (health, readiness, metrics, debug snapshot).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AdminConfig {
    /// Where it listens; `None` when disabled.
    pub listen: Option<SocketAddr>,
    /// A Unix socket it also answers on (`admin.socket`), for `strait probe`.
    pub socket: Option<PathBuf>,
}

impl AdminConfig {
    /// The default address: localhost only.
    pub const DEFAULT_LISTEN: SocketAddr = SocketAddr::V4(std::net::SocketAddrV4::new(
        std::net::Ipv4Addr::LOCALHOST,
        9901,
    ));
}

impl Default for AdminConfig {
    fn default() -> Self {
        Self {
            listen: Some(Self::DEFAULT_LISTEN),
            socket: None,
        }
    }
}

/// A refused config: where and what.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    /// The file, when loaded from one.
    pub file: Option<PathBuf>,
    /// Dotted field path, e.g. `services[0].routes[1].upstream`; empty for the document.
    pub field: String,
    /// 1-based line of the field, when known.
    pub line: Option<usize>,
    pub message: String,
}

impl std::fmt::Display for ConfigError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if let Some(file) = &self.file {
            write!(f, "{}:", file.display())?;
        }
        if let Some(line) = self.line {
            write!(f, "line {line}: ")?;
        } else if self.file.is_some() {
            f.write_str(" ")?;
        }
        if !self.field.is_empty() {
            write!(f, "{}: ", self.field)?;
        }
        f.write_str(&self.message)
    }
}

impl std::error::Error for ConfigError {}

impl Config {
    /// Reads and checks a config file.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|e| ConfigError {
            file: Some(path.to_owned()),
            field: String::new(),
            line: None,
            message: format!("cannot read: {e}"),
        })?;
        Config::from_yaml(&text).map_err(|mut e| {
            e.file = Some(path.to_owned());
            e
        })
    }

    /// Applies `--workers N` over the file's `workers:` (N must be at least 1).
    pub fn override_workers(&mut self, workers: Option<usize>) -> Result<(), ConfigError> {
        if let Some(n) = workers {
            self.workers = Some(NonZeroUsize::new(n).ok_or_else(|| ConfigError {
                file: None,
                field: "--workers".into(),
                line: None,
                message: "must be at least 1".into(),
            })?);
        }
        Ok(())
    }

    /// What is accepted but probably not meant: upstreams naming a registry that is not
    /// configured (they answer 503 until it is).
    pub fn warnings(&self) -> Vec<String> {
        let known: std::collections::HashSet<&str> = self
            .spec
            .registries
            .iter()
            .map(|r| r.name.as_str())
            .collect();
        self.spec
            .upstreams
            .iter()
            .filter_map(|u| match &u.source {
                strait_discovery::spec::UpstreamSource::Discovery(d)
                    if !known.contains(d.registry.as_str()) =>
                {
                    Some(format!(
                        "upstream {:?}: registry {:?} is not configured; the upstream answers 503 until it is",
                        u.name, d.registry
                    ))
                }
                _ => None,
            })
            .collect()
    }

    /// Parses and checks YAML text.
    pub fn from_yaml(text: &str) -> Result<Config, ConfigError> {
        check::from_yaml(text)
    }
}
