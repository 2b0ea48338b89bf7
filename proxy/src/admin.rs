//! The admin server: `/healthz`, `/readyz`, `/metrics` and `/debug/snapshot` on their own
//! address (CONFIG.md, "admin").
//!
//! Runs on: its own threads, off the workers: one accept thread, and one short-lived
//! thread per connection (at most [`MAX_CONNECTIONS`] at once), so that a slow client
//! cannot hold up a probe. Reads only control-side state and the workers' single-writer
//! counters; never writes anything a worker reads.

// Control side only: no worker ever takes these locks.
#![allow(clippy::disallowed_types)]

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::unix::fs::MetadataExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use serde_json::{json, Value};
use strait_discovery::{Publisher, Spec, Status, UpstreamStatus};

use crate::http::head::{self, HeadLimits, HeadReader};
use crate::http::reply::reason_phrase;
use crate::http::HeadError;
use crate::metrics::{self, WorkerMetrics};

/// Admin connections served at once; more are closed unanswered.
pub const MAX_CONNECTIONS: usize = 32;

/// Largest request head read.
const MAX_HEAD: usize = 8 * 1024;

/// What a request head is held to: small, as only probes and scrapers call.
const LIMITS: HeadLimits = HeadLimits {
    max_line: MAX_HEAD,
    max_head: MAX_HEAD,
    max_headers: 64,
};

/// How long a connection may take to send its request and read the answer.
const IO_TIMEOUT: Duration = Duration::from_secs(5);

/// What the admin endpoints read: shared by the gateway (which updates it) and the
/// admin threads.
#[derive(Debug)]
pub struct AdminState {
    pub workers: Vec<Arc<WorkerMetrics>>,
    pub status: Arc<Status>,
    pub publisher: Publisher,
    /// The spec in force (services, routes, upstreams, registries), for `/debug/snapshot`.
    pub spec: Mutex<Spec>,
    /// A graceful stop began: `/readyz` answers 503 from then on.
    pub stopping: AtomicBool,
    pub reloads_ok: AtomicU64,
    pub reloads_refused: AtomicU64,
    /// The certificates in force, for the expiry gauge.
    pub tls: Mutex<Option<Arc<strait_discovery::tls::TlsSnapshot>>>,
    /// TLS Secrets not read yet (not ready until each has been), and those whose latest
    /// version is refused, with why.
    pub secrets: Mutex<SecretsState>,
    /// Set to stop the accept thread.
    closed: AtomicBool,
}

/// What the admin server knows of the TLS Secrets.
#[derive(Debug, Clone, Default)]
pub struct SecretsState {
    pub pending: Vec<String>,
    /// `(secret, why)`.
    pub rejected: Vec<(String, String)>,
}

impl AdminState {
    pub fn new(
        workers: Vec<Arc<WorkerMetrics>>,
        status: Arc<Status>,
        publisher: Publisher,
        spec: Spec,
    ) -> AdminState {
        AdminState {
            workers,
            status,
            publisher,
            spec: Mutex::new(spec),
            stopping: AtomicBool::new(false),
            reloads_ok: AtomicU64::new(0),
            reloads_refused: AtomicU64::new(0),
            tls: Mutex::new(None),
            secrets: Mutex::new(SecretsState::default()),
            closed: AtomicBool::new(false),
        }
    }

    /// Ready for traffic: every enabled registry synced and applied, every TLS Secret
    /// read, and not stopping.
    pub fn ready(&self) -> bool {
        !self.stopping.load(Ordering::SeqCst)
            && self.status.ready()
            && self.secrets_state().pending.is_empty()
    }

    /// Records what is known of the TLS Secrets.
    pub fn set_secrets(&self, secrets: &crate::tls::Secrets) {
        *self.secrets.lock().unwrap_or_else(|e| e.into_inner()) = SecretsState {
            pending: secrets.pending(),
            rejected: secrets.rejected(),
        };
    }

    fn secrets_state(&self) -> SecretsState {
        self.secrets
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// What registries work around (a permission they lack), for `/readyz`'s answer.
    fn degraded(&self) -> Vec<String> {
        self.status
            .registries()
            .into_iter()
            .filter_map(|(name, r)| Some(format!("registry {name}: {}", r.degraded?)))
            .collect()
    }

    /// Why `/readyz` answers 503, or `None` when ready.
    fn not_ready_because(&self) -> Option<String> {
        if self.stopping.load(Ordering::SeqCst) {
            return Some("stopping: a graceful stop has begun".into());
        }
        let pending = self.secrets_state().pending;
        if self.status.ready() {
            if pending.is_empty() {
                return None;
            }
            return Some(format!("TLS Secrets not read yet: {}", pending.join(", ")));
        }
        let waiting: Vec<String> = self
            .status
            .registries()
            .into_iter()
            .filter(|(_, r)| r.enabled && !r.synced)
            .map(|(name, _)| name)
            .collect();
        Some(if waiting.is_empty() {
            "the workers have not all swapped in the synced routing table yet".into()
        } else {
            format!("registries not synced yet: {}", waiting.join(", "))
        })
    }

    /// The `/metrics` text.
    pub fn metrics(&self) -> String {
        metrics::render(
            &self.workers,
            &metrics::Control {
                status: &self.status,
                snapshot: self.publisher.last(),
                ready: self.ready(),
                reloads_ok: self.reloads_ok.load(Ordering::Relaxed),
                reloads_failed: self.reloads_refused.load(Ordering::Relaxed),
                tls: self.tls.lock().unwrap_or_else(|e| e.into_inner()).clone(),
                secrets_refused: self.secrets_state().rejected,
            },
        )
    }

    /// The `/debug/snapshot` document.
    pub fn snapshot_json(&self) -> Value {
        let snapshot = self.publisher.last();
        let spec = self.spec.lock().unwrap_or_else(|e| e.into_inner());
        let services: Vec<Value> = spec
            .services
            .iter()
            .map(|s| {
                let routes: Vec<Value> = s
                    .routes
                    .iter()
                    .map(|r| {
                        json!({
                            "name": r.name,
                            "path": r.path,
                            "strip_prefix": r.strip_prefix,
                            "methods": if r.methods.is_any() {
                                Vec::new()
                            } else {
                                r.methods.names().collect::<Vec<_>>()
                            },
                            "upstream": r.upstream.as_ref().or(s.upstream.as_ref()),
                            "max_body_bytes": r.max_body_bytes,
                            "stream_idle_timeout": r.stream_idle_timeout.map(|d| format!("{d:?}")),
                        })
                    })
                    .collect();
                json!({
                    "name": s.name,
                    "hosts": s.hosts,
                    "path_prefix": s.path_prefix,
                    "upstream": s.upstream,
                    "routes": routes,
                })
            })
            .collect();
        drop(spec);
        let upstreams: Vec<Value> = snapshot
            .iter()
            .flat_map(|s| s.upstreams.iter())
            .map(|u| {
                let (status, registry) = match &u.status {
                    UpstreamStatus::Ready => ("ready", None),
                    UpstreamStatus::NotSynced { registry } => ("not_synced", Some(registry)),
                    UpstreamStatus::RegistryDisabled { registry } => {
                        ("registry_disabled", Some(registry))
                    }
                };
                let endpoints: Vec<Value> = u
                    .endpoints
                    .iter()
                    .enumerate()
                    .map(|(i, e)| {
                        let place = &u.places[i];
                        json!({
                            "address": e.addr.to_string(),
                            "weight": e.weight,
                            "state": metrics::state_name(e.state),
                            "picked": u.members.contains(&(i as u32)),
                            "check": u.checks[i].name(),
                            "locality": u.tiers[i].name(),
                            "node": place.node.as_deref(),
                            "zone": place.zone.as_deref(),
                            "for_zones": place.for_zones.iter().map(|z| &**z).collect::<Vec<_>>(),
                        })
                    })
                    .collect();
                json!({
                    "name": &*u.name,
                    "status": status,
                    "registry": registry.map(|r| &**r),
                    "picks_from": u.tier.name(),
                    "panic": u.panic,
                    "endpoints": endpoints,
                })
            })
            .collect();
        let now = SystemTime::now();
        let registries: serde_json::Map<String, Value> = self
            .status
            .registries()
            .into_iter()
            .map(|(name, r)| {
                let last_sync = r.last_sync.map(|t| {
                    json!({
                        "at": httpdate::fmt_http_date(t),
                        "age_seconds": now.duration_since(t).unwrap_or_default().as_secs_f64(),
                    })
                });
                let watch = match (r.enabled, r.synced, &r.last_error) {
                    (false, _, _) => "disabled",
                    (true, true, None) => "watching",
                    (true, true, Some(_)) => "reconnecting",
                    (true, false, _) => "listing",
                };
                (
                    name,
                    json!({
                        "enabled": r.enabled,
                        "synced": r.synced,
                        "watch": watch,
                        "last_sync": last_sync,
                        "last_error": r.last_error,
                        "relists": r.relists,
                    }),
                )
            })
            .collect();
        json!({
            "version": snapshot.as_ref().map_or(0, |s| s.version.0),
            "node": {
                "name": snapshot.as_ref().and_then(|s| s.node.as_deref()),
                "zone": snapshot.as_ref().and_then(|s| s.zone.as_deref()),
            },
            "ready": self.ready(),
            "stopping": self.stopping.load(Ordering::SeqCst),
            "services": services,
            "upstreams": upstreams,
            "registries": registries,
        })
    }
}

/// `GET path` on the admin Unix socket at `socket` (what `strait probe` does): the status
/// and the body.
pub fn probe(socket: &std::path::Path, path: &str) -> io::Result<(u16, String)> {
    let mut stream = UnixStream::connect(socket)?;
    stream.bound(IO_TIMEOUT)?;
    stream.write_all(
        format!("GET {path} HTTP/1.1\r\nHost: admin\r\nConnection: close\r\n\r\n").as_bytes(),
    )?;
    let mut answer = Vec::new();
    stream.read_to_end(&mut answer)?;
    let text = String::from_utf8_lossy(&answer);
    let bad = || io::Error::new(io::ErrorKind::InvalidData, "not an HTTP answer");
    let (head, body) = text.split_once("\r\n\r\n").ok_or_else(bad)?;
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(bad)?;
    Ok((status, body.to_owned()))
}

/// A running admin server: its TCP listener and, with `admin.socket`, its Unix socket.
#[derive(Debug)]
pub struct AdminServer {
    addr: SocketAddr,
    state: Arc<AdminState>,
    /// Descriptors of the listening sockets, to shut them down (which wakes their accept
    /// threads) at the end. Connecting to the address would not do: with `SO_REUSEPORT`
    /// the connection may land on another process's admin socket.
    listening: Vec<socket2::Socket>,
    /// The Unix socket's path, removed at the end while it is still this process's.
    socket_path: Option<(std::path::PathBuf, (u64, u64))>,
    threads: Vec<std::thread::JoinHandle<()>>,
}

impl AdminServer {
    /// Starts serving on `listener` (bound early, so that a taken address fails the
    /// start before any worker runs) and on `socket` (a Unix socket bound at `path`).
    pub fn start(
        listener: TcpListener,
        socket: Option<(UnixListener, std::path::PathBuf)>,
        state: Arc<AdminState>,
    ) -> io::Result<AdminServer> {
        let addr = listener.local_addr()?;
        let mut listening = vec![socket2::Socket::from(std::os::fd::OwnedFd::from(
            listener.try_clone()?,
        ))];
        let mut threads = Vec::new();
        let s = state.clone();
        threads.push(
            std::thread::Builder::new()
                .name("strait-admin".into())
                .spawn(move || accept_loop(listener.incoming(), &s))?,
        );
        tracing::info!(%addr, "admin server listening");
        let mut socket_path = None;
        if let Some((unix, path)) = socket {
            listening.push(socket2::Socket::from(std::os::fd::OwnedFd::from(
                unix.try_clone()?,
            )));
            let id = std::fs::metadata(&path).map(|m| (m.dev(), m.ino()))?;
            tracing::info!(path = %path.display(), "admin server listening on its Unix socket");
            socket_path = Some((path, id));
            let s = state.clone();
            threads.push(
                std::thread::Builder::new()
                    .name("strait-admin-unix".into())
                    .spawn(move || accept_loop(unix.incoming(), &s))?,
            );
        }
        Ok(AdminServer {
            addr,
            state,
            listening,
            socket_path,
            threads,
        })
    }

    /// The bound address (port 0 resolved).
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }
}

impl Drop for AdminServer {
    fn drop(&mut self) {
        self.state.closed.store(true, Ordering::SeqCst);
        // The socket file goes first, while it is still ours (a newer process may have
        // bound the path since).
        if let Some((path, id)) = &self.socket_path {
            let ours = std::fs::metadata(path).is_ok_and(|m| (m.dev(), m.ino()) == *id);
            if ours {
                let _ = std::fs::remove_file(path);
            }
        }
        // Wakes the accept threads (their accept fails), which see `closed` and return.
        for l in &self.listening {
            let _ = l.shutdown(std::net::Shutdown::Read);
        }
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

fn accept_loop<S: Read + Write + Timeouts + Send + 'static>(
    incoming: impl Iterator<Item = io::Result<S>>,
    state: &Arc<AdminState>,
) {
    let busy = Arc::new(AtomicUsize::new(0));
    for conn in incoming {
        if state.closed.load(Ordering::SeqCst) {
            return;
        }
        let Ok(stream) = conn else {
            // Out of descriptors or similar: back off instead of spinning.
            std::thread::park_timeout(Duration::from_millis(50));
            continue;
        };
        if busy.fetch_add(1, Ordering::SeqCst) >= MAX_CONNECTIONS {
            busy.fetch_sub(1, Ordering::SeqCst);
            continue; // dropped: closed unanswered
        }
        let (state, busy) = (state.clone(), busy.clone());
        let spawned = std::thread::Builder::new()
            .name("strait-admin-conn".into())
            .spawn(move || {
                let _ = serve(stream, &state);
                busy.fetch_sub(1, Ordering::SeqCst);
            });
        if spawned.is_err() {
            tracing::warn!("admin: cannot start a connection thread");
        }
    }
}

/// A stream whose reads and writes can be bounded.
trait Timeouts {
    fn bound(&self, timeout: Duration) -> io::Result<()>;
}

impl Timeouts for TcpStream {
    fn bound(&self, timeout: Duration) -> io::Result<()> {
        self.set_read_timeout(Some(timeout))?;
        self.set_write_timeout(Some(timeout))
    }
}

impl Timeouts for UnixStream {
    fn bound(&self, timeout: Duration) -> io::Result<()> {
        self.set_read_timeout(Some(timeout))?;
        self.set_write_timeout(Some(timeout))
    }
}

/// Answers one request and closes.
fn serve<S: Read + Write + Timeouts>(mut stream: S, state: &AdminState) -> io::Result<()> {
    stream.bound(IO_TIMEOUT)?;
    // The head is read and parsed as the workers read theirs.
    let mut buf = vec![0u8; MAX_HEAD];
    let mut len = 0;
    let mut reader = HeadReader::default();
    loop {
        let n = stream.read(&mut buf[len..])?;
        if n == 0 {
            return Ok(());
        }
        len += n;
        match reader.poll(&mut buf[..len], &LIMITS) {
            Ok(true) => break,
            Ok(false) => {}
            Err(e) => return refuse(&mut stream, e),
        }
    }
    let mut headers = head::header_buf();
    let (method, path) = match head::reader::parse_complete(&buf[..len], &mut headers, &LIMITS) {
        Ok(req) => (req.method.to_owned(), req.target.to_owned()),
        Err(e) => return refuse(&mut stream, e),
    };
    let head_only = method == "HEAD";
    if method != "GET" && !head_only {
        return respond(
            &mut stream,
            405,
            "text/plain",
            b"method not allowed: GET or HEAD\n",
            false,
        );
    }
    let path = path.split('?').next().unwrap_or_default();
    match path {
        "/healthz" => respond(&mut stream, 200, "text/plain", b"ok\n", head_only),
        "/readyz" => match state.not_ready_because() {
            None => {
                let degraded = state.degraded();
                let body = if degraded.is_empty() {
                    "ready\n".to_owned()
                } else {
                    format!("ready, degraded: {}\n", degraded.join("; "))
                };
                respond(&mut stream, 200, "text/plain", body.as_bytes(), head_only)
            }
            Some(why) => respond(
                &mut stream,
                503,
                "text/plain",
                format!("not ready: {why}\n").as_bytes(),
                head_only,
            ),
        },
        "/metrics" => {
            let text = state.metrics();
            respond(
                &mut stream,
                200,
                "text/plain; version=0.0.4; charset=utf-8",
                text.as_bytes(),
                head_only,
            )
        }
        "/debug/snapshot" => {
            let mut body = serde_json::to_vec_pretty(&state.snapshot_json())
                .unwrap_or_else(|_| b"{}".to_vec());
            body.push(b'\n');
            respond(&mut stream, 200, "application/json", &body, head_only)
        }
        _ => respond(
            &mut stream,
            404,
            "text/plain",
            b"not found: /healthz, /readyz, /metrics, /debug/snapshot\n",
            head_only,
        ),
    }
}

/// Answers a head the reader or parser refused (400, 414, 431…) with its reason.
fn refuse(stream: &mut impl Write, e: HeadError) -> io::Result<()> {
    let body = format!("{}\n", e.reason);
    respond(stream, e.status, "text/plain", body.as_bytes(), false)
}

fn respond(
    stream: &mut impl Write,
    status: u16,
    content_type: &str,
    body: &[u8],
    head_only: bool,
) -> io::Result<()> {
    let reason = reason_phrase(status);
    let mut out = format!(
        "HTTP/1.1 {status} {reason}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nCache-Control: no-store\r\nConnection: close\r\n",
        body.len()
    );
    if status == 405 {
        out.push_str("Allow: GET, HEAD\r\n");
    }
    out.push_str("\r\n");
    let mut bytes = out.into_bytes();
    if !head_only {
        bytes.extend_from_slice(body);
    }
    stream.write_all(&bytes)?;
    stream.flush()
}
