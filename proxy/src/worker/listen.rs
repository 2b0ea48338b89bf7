//! Listeners: binding them, accepting on them, and closing them without resetting what
//! they queued.
//!
//! - TCP (`ip:port`): bound once per worker with SO_REUSEPORT, so the kernel spreads new
//!   connections over the workers and a new process can bind beside this one.
//! - Unix (`unix:/path`): one socket, bound by the gateway and shared by every worker
//!   (each accepts on its own descriptor of it). A socket file already at the path (left
//!   by a crashed process, or one still running that the new one replaces) is removed
//!   first, as nginx and Envoy do; anything else at the path is refused. The file gets
//!   the configured mode, and is removed when the listener closes, unless another
//!   process bound the path meanwhile.
//!
//! The accept loop (`accept_loop`) is written once over a `Listening` trait; each connection
//! becomes a task serving it by its listener's protocol (`Serve`), monomorphised per
//! stream type so no read pays a dispatch.
//!
//! Runs on: the gateway's thread (binding) and the worker (accepting). At
//! `http.max_connections_per_worker` open connections an accept loop pauses until one
//! closes (new connections wait in the kernel's queue).

use std::io;
use std::net::SocketAddr;
use std::os::fd::AsRawFd;
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

use monoio::net::{TcpListener, TcpStream, UnixListener, UnixStream};

use super::{proxied, DriverKind, Open, Worker};
use crate::config::{ListenerTls, Protocol};
use crate::real_ip::Cidr;
use crate::transport::{ClientAddr, Transport};
use crate::{http1, tcp, tls};

/// How long an accept in flight gets to end after its listener was shut down (it ends
/// at once; the bound is a safety net).
const ACCEPT_SETTLE: Duration = Duration::from_secs(1);
/// The listen(2) backlog of every listener.
const BACKLOG: i32 = 4096;

/// One listener's socket for one worker, with its name and protocol.
#[derive(Debug)]
pub struct BoundListener {
    pub name: String,
    pub protocol: Protocol,
    /// TLS termination (an HTTPS listener).
    pub tls: Option<ListenerTls>,
    /// Peers whose `X-Forwarded-For` is believed.
    pub trusted_proxies: Vec<Cidr>,
    /// Connections start with a PROXY protocol header.
    pub proxy_protocol: bool,
    pub socket: BoundSocket,
}

/// A bound, listening socket not yet handed to a runtime.
#[derive(Debug)]
pub enum BoundSocket {
    /// This worker's own SO_REUSEPORT socket.
    Tcp(std::net::TcpListener),
    /// This worker's descriptor of the listener's one Unix socket.
    Unix(std::os::unix::net::UnixListener, Arc<UnixBinding>),
}

/// Binds `addr` once per worker with SO_REUSEPORT. Port 0 is resolved by the first bind
/// and reused for the others, so all workers share one port.
pub fn bind_reuseport(addr: SocketAddr, count: usize) -> io::Result<Vec<std::net::TcpListener>> {
    use socket2::{Domain, Protocol, Socket, Type};
    let mut out = Vec::with_capacity(count);
    let mut addr = addr;
    for _ in 0..count {
        let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
        socket.set_reuse_address(true)?;
        socket.set_reuse_port(true)?;
        socket.set_nodelay(true)?;
        socket.set_nonblocking(true)?;
        socket.bind(&addr.into())?;
        socket.listen(BACKLOG)?;
        let listener: std::net::TcpListener = socket.into();
        addr = listener.local_addr()?;
        out.push(listener);
    }
    Ok(out)
}

/// A Unix socket file this process bound: which file it is, so that it is removed only
/// while it is still this process's. The file goes at a graceful stop, at
/// `Gateway::shutdown`, and when the last holder drops it (a start that failed after
/// binding it).
#[derive(Debug)]
pub struct UnixBinding {
    path: PathBuf,
    /// Device and inode of the socket file right after the bind.
    id: (u64, u64),
}

impl UnixBinding {
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Removes the socket file, unless it is gone or another process bound the path
    /// since (then it is that process's). Idempotent.
    pub fn unlink_if_ours(&self) {
        if let Ok(m) = std::fs::symlink_metadata(&self.path) {
            if (m.dev(), m.ino()) == self.id {
                let _ = std::fs::remove_file(&self.path);
            }
        }
    }
}

impl Drop for UnixBinding {
    fn drop(&mut self) {
        self.unlink_if_ours();
    }
}

/// Binds a Unix stream socket at `path` (see the module doc for what may already be
/// there), sets the file's `mode` when given, and listens.
pub fn bind_unix(
    path: &Path,
    mode: Option<u32>,
) -> io::Result<(std::os::unix::net::UnixListener, Arc<UnixBinding>)> {
    use socket2::{Domain, SockAddr, Socket, Type};
    match std::fs::symlink_metadata(path) {
        Ok(m) if m.file_type().is_socket() => std::fs::remove_file(path)?,
        Ok(_) => {
            return Err(io::Error::new(
                io::ErrorKind::AlreadyExists,
                "the path exists and is not a socket",
            ))
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    let socket = Socket::new(Domain::UNIX, Type::STREAM, None)?;
    socket.set_nonblocking(true)?;
    socket.bind(&SockAddr::unix(path)?)?;
    let bound = (|| {
        if let Some(mode) = mode {
            std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))?;
        }
        socket.listen(BACKLOG)?;
        let m = std::fs::symlink_metadata(path)?;
        Ok((m.dev(), m.ino()))
    })();
    match bound {
        Ok(id) => Ok((
            socket.into(),
            Arc::new(UnixBinding {
                path: path.to_owned(),
                id,
            }),
        )),
        Err(e) => {
            let _ = std::fs::remove_file(path);
            Err(e)
        }
    }
}

/// Starts the accept loop of one listener on `worker`.
pub(super) fn start(l: BoundListener, worker: &Rc<Worker>) -> io::Result<()> {
    let kind = match (l.protocol, l.tls) {
        (Protocol::Http, None) => Kind::Http,
        (Protocol::Http, Some(settings)) => {
            Kind::Https(Rc::new(tls::Terminator::new(l.name, settings)))
        }
        (Protocol::Tcp(config), None) => Kind::Tcp(Rc::new(tcp::Listener::new(l.name, config))),
        (Protocol::Tcp(config), Some(settings)) => Kind::TcpTls(
            Rc::new(tcp::Listener::new(l.name.clone(), config)),
            Rc::new(tls::Terminator::new(l.name, settings)),
        ),
    };
    let serve = Serve {
        kind,
        trusted: l.trusted_proxies.into(),
        proxy_protocol: l.proxy_protocol,
    };
    match l.socket {
        BoundSocket::Tcp(socket) => {
            // A second descriptor of the same socket, to accept what is queued at close.
            let queued = socket.try_clone()?;
            let listener = TcpListener::from_std(socket)?;
            worker.listener_opened();
            monoio::spawn(accept_loop(
                TcpListening { listener, queued },
                serve,
                worker.clone(),
            ));
        }
        BoundSocket::Unix(socket, binding) => {
            let queued = socket.try_clone()?;
            let listener = UnixListener::from_std(socket)?;
            worker.listener_opened();
            monoio::spawn(accept_loop(
                UnixListening {
                    listener,
                    queued,
                    binding,
                },
                serve,
                worker.clone(),
            ));
        }
    }
    Ok(())
}

/// What an accept loop does with the connections it accepts.
#[derive(Debug)]
struct Serve {
    kind: Kind,
    /// The listener's `trusted_proxies`, shared by its connections.
    trusted: Rc<[Cidr]>,
    /// Each connection starts with a PROXY protocol header, read before anything else.
    proxy_protocol: bool,
}

/// How a listener's connections are served.
#[derive(Debug, Clone)]
enum Kind {
    /// HTTP/1.1 exchanges ([`http1::serve`]).
    Http,
    /// A TLS handshake, then HTTP/1.1 over it ([`tls::accept`]).
    Https(Rc<tls::Terminator>),
    /// Copied to the listener's upstream ([`tcp::serve`]).
    Tcp(Rc<tcp::Listener>),
    /// A TLS handshake, then the plaintext copied to the listener's upstream.
    TcpTls(Rc<tcp::Listener>, Rc<tls::Terminator>),
}

impl Serve {
    /// Counts the connection on `worker` and spawns its task; with `proxy_protocol`, the
    /// task reads the PROXY header first and serves the client it names.
    fn spawn<S: Transport + Peek>(&self, stream: S, peer: ClientAddr, worker: &Rc<Worker>) {
        let open = Open::new(worker.clone(), self.trusted.clone());
        if !self.proxy_protocol {
            self.kind.spawn(stream, peer, open);
            return;
        }
        let kind = self.kind.clone();
        monoio::spawn(async move {
            let timeout = open.worker().http.client_header_timeout;
            let id = open.worker().id;
            match proxied::read_header(&stream, peer, timeout).await {
                Ok(client) => kind.serve(stream, client, open).await,
                Err(e) => tracing::debug!(worker = id, %peer, "PROXY header refused: {e}"),
            }
        });
    }
}

impl Kind {
    /// Spawns the connection's task (one future type per kind: none pays for another's).
    fn spawn<S: Transport>(&self, stream: S, peer: ClientAddr, open: Open) {
        match self {
            Kind::Http => {
                monoio::spawn(http1::serve(stream, peer, open, None));
            }
            Kind::Https(t) => {
                monoio::spawn(tls::accept(stream, peer, open, t.clone()));
            }
            Kind::Tcp(l) => {
                monoio::spawn(tcp::serve(stream, peer, open, l.clone()));
            }
            Kind::TcpTls(l, t) => {
                let l = l.clone();
                monoio::spawn(tls::accept_then(
                    stream,
                    peer,
                    open,
                    t.clone(),
                    move |s, p, o, _| tcp::serve(s, p, o, l),
                ));
            }
        }
    }

    /// Serves the connection in the current task.
    async fn serve<S: Transport>(self, stream: S, peer: ClientAddr, open: Open) {
        match self {
            Kind::Http => http1::serve(stream, peer, open, None).await,
            Kind::Https(t) => tls::accept(stream, peer, open, t).await,
            Kind::Tcp(l) => tcp::serve(stream, peer, open, l).await,
            Kind::TcpTls(l, t) => {
                tls::accept_then(stream, peer, open, t, move |s, p, o, _| {
                    tcp::serve(s, p, o, l)
                })
                .await;
            }
        }
    }
}

/// A stream whose bytes can be looked at before they are read (the PROXY header).
pub(super) trait Peek: AsRawFd {
    /// Waits until the socket has bytes to read (or an error or EOF).
    async fn wait_readable(&self) -> io::Result<()>;
}

impl Peek for TcpStream {
    async fn wait_readable(&self) -> io::Result<()> {
        self.readable(false).await
    }
}

impl Peek for UnixStream {
    async fn wait_readable(&self) -> io::Result<()> {
        self.readable(false).await
    }
}

/// A listening socket as an accept loop drives it.
trait Listening: 'static {
    type Stream: Transport + Peek;

    /// The next connection (the runtime's accept).
    async fn accept(&self) -> io::Result<(Self::Stream, ClientAddr)>;

    /// A connection the kernel completed and nobody accepted yet, without waiting.
    fn accept_queued(&self) -> Option<(Self::Stream, ClientAddr)>;

    /// Stops new clients finding the socket, where that can be done without refusing the
    /// ones already queued (a Unix socket's file); nothing to do for TCP.
    fn close_door(&self) {}

    /// Stops the socket taking connections and wakes an accept in flight.
    fn shut(&self) -> io::Result<()>;
}

struct TcpListening {
    listener: TcpListener,
    /// The same socket, for the non-blocking accepts of [`Listening::accept_queued`].
    queued: std::net::TcpListener,
}

impl Listening for TcpListening {
    type Stream = TcpStream;

    async fn accept(&self) -> io::Result<(TcpStream, ClientAddr)> {
        let (stream, peer) = self.listener.accept().await?;
        Ok((stream, peer.into()))
    }

    fn accept_queued(&self) -> Option<(TcpStream, ClientAddr)> {
        queued(
            || self.queued.accept().map(|(s, peer)| (s, peer.into())),
            |s| {
                s.set_nonblocking(true)
                    .and_then(|()| TcpStream::from_std(s))
            },
        )
    }

    /// Shutting a listening TCP socket down takes it out of the SO_REUSEPORT group: new
    /// connections go to the other listeners on the port, or are refused.
    fn shut(&self) -> io::Result<()> {
        socket2::SockRef::from(&self.queued).shutdown(std::net::Shutdown::Read)
    }
}

struct UnixListening {
    listener: UnixListener,
    queued: std::os::unix::net::UnixListener,
    binding: Arc<UnixBinding>,
}

impl Listening for UnixListening {
    type Stream = UnixStream;

    async fn accept(&self) -> io::Result<(UnixStream, ClientAddr)> {
        let (stream, _) = self.listener.accept().await?;
        Ok((stream, ClientAddr::Unix))
    }

    fn accept_queued(&self) -> Option<(UnixStream, ClientAddr)> {
        queued(
            || self.queued.accept().map(|(s, _)| (s, ClientAddr::Unix)),
            |s| {
                s.set_nonblocking(true)
                    .and_then(|()| UnixStream::from_std(s))
            },
        )
    }

    /// The socket file goes (while it is still this process's): no new client finds it.
    fn close_door(&self) {
        self.binding.unlink_if_ours();
    }

    /// The socket, shared by every worker, is shut down: connects to it are refused and
    /// every worker's accept in flight ends.
    fn shut(&self) -> io::Result<()> {
        socket2::SockRef::from(&self.queued).shutdown(std::net::Shutdown::Read)
    }
}

/// The next connection a non-blocking `accept` finds queued, handed to the runtime with
/// `adopt`; one that cannot be adopted is closed and the next one taken.
fn queued<S, T>(
    accept: impl Fn() -> io::Result<(S, ClientAddr)>,
    adopt: impl Fn(S) -> io::Result<T>,
) -> Option<(T, ClientAddr)> {
    loop {
        let (stream, peer) = accept().ok()?;
        if let Ok(stream) = adopt(stream) {
            return Some((stream, peer));
        }
    }
}

async fn accept_loop<L: Listening>(listener: L, serve: Serve, worker: Rc<Worker>) {
    let mut taken = 0;
    loop {
        // At `http.max_connections_per_worker`, accepting pauses (new connections wait
        // in the listener's queue) until a connection closes or a graceful stop begins.
        if worker.connections() >= worker.http.max_connections_per_worker {
            tracing::debug!(
                worker = worker.id,
                "connection limit reached: accepting paused"
            );
            monoio::select! {
                _ = worker.slot_free() => {}
                _ = worker.draining.wait() => {}
            }
        }
        // The accept stays in flight across the drain signal. Dropping it would cancel an
        // io_uring accept that may already hold a new connection (monoio discards the
        // result of a dropped op, so that connection would be neither served nor
        // closed), and the op would keep the listening socket open until its
        // cancellation lands.
        let mut accept = std::pin::pin!(listener.accept());
        let accepted = monoio::select! {
            r = &mut accept => r,
            _ = worker.draining.wait() => {
                taken += stop_listening(&listener, &serve, &worker);
                // On io_uring the accept in flight ends now, with a connection it took
                // before the listener stopped, or an error. On the legacy driver an
                // accept takes a connection only in the poll that completes it, so one
                // still pending holds none and is dropped (an epoll wait on a Unix
                // listener is not woken by its shutdown).
                if worker.driver == DriverKind::IoUring {
                    if let Ok(Ok((stream, peer))) =
                        monoio::time::timeout(ACCEPT_SETTLE, accept).await
                    {
                        serve.spawn(stream, peer, &worker);
                        taken += 1;
                    }
                }
                break;
            }
        };
        match accepted {
            Ok((stream, peer)) => serve.spawn(stream, peer, &worker),
            // A Unix socket shared by the workers was shut down by another worker's
            // graceful stop, which this one is about to see too.
            Err(e) if e.raw_os_error() == Some(libc::EINVAL) => {
                worker.draining.wait().await;
                taken += stop_listening(&listener, &serve, &worker);
                break;
            }
            Err(e) => {
                // Out of descriptors or similar: back off briefly instead of spinning.
                tracing::warn!(worker = worker.id, error = %e, "accept failed");
                monoio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
    drop(listener);
    tracing::debug!(worker = worker.id, taken, "listener closed");
    worker.listener_closed();
}

/// Stops a listener at a graceful stop: takes the connections the kernel completed but
/// nobody accepted yet (closing the socket would reset them) and serves them, then shuts
/// the socket down. Returns how many connections it took.
fn stop_listening<L: Listening>(listener: &L, serve: &Serve, worker: &Rc<Worker>) -> usize {
    let mut taken = 0;
    listener.close_door();
    while let Some((stream, peer)) = listener.accept_queued() {
        serve.spawn(stream, peer, worker);
        taken += 1;
    }
    if let Err(e) = listener.shut() {
        tracing::warn!(worker = worker.id, error = %e, "cannot shut the listener down");
    }
    taken
}
