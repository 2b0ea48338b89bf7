//! Listening and threads: an [`EchoServer`] binds a TCP address or a Unix socket path,
//! runs one acceptor thread, and one thread per connection, which reads requests and
//! answers them (`handle.rs`) until the client closes, an error ends it, or the server
//! stops.
//!
//! Runs on: plain std threads. Stop sets a flag, shuts the listening socket down (a
//! blocked `accept` wakes on Linux), connects once as a fallback, joins the acceptor, and
//! shuts every live connection down.

use std::io::{self, Read, Write};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, Shutdown, SocketAddr, TcpListener, TcpStream};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Weak};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use socket2::{Domain, Protocol, SockRef, Socket, Type};
use tracing::{debug, warn};

use super::conn::{Conn, ConnError};
use super::handle::{handle, Reply};
use crate::worker::listen::{bind_unix, UnixBinding};

/// How long a closing connection drains the client after its half-close.
const LINGER: Duration = Duration::from_secs(2);
/// Most bytes drained after the half-close.
const LINGER_BYTES: usize = 1024 * 1024;
/// listen(2) backlog: room for ~100 clients connecting at once.
const LISTEN_BACKLOG: i32 = 1024;

/// A running echo backend. Stops (listener closed, connections shut down) on drop or
/// [`EchoServer::stop`].
pub struct EchoServer {
    listening: Listening,
    /// Stop flag, counters and backend name, shared with every thread of this server.
    shared: Arc<Shared>,
    /// Joined on stop so that the listening socket is closed when stop returns.
    acceptor: Option<JoinHandle<()>>,
}

/// The listening socket, shared with the acceptor so stop can shut it down.
enum Listening {
    /// The bound address (the real port when started with port 0).
    Tcp(Arc<TcpListener>, SocketAddr),
    /// Dropping the binding removes the socket file.
    Unix(Arc<UnixListener>, Arc<UnixBinding>),
}

/// What every thread of one server shares.
pub(super) struct Shared {
    /// Set once by stop; the acceptor and connection threads check it between steps.
    pub(super) stop: AtomicBool,
    /// Connections accepted (not counting the wake-up connection made by stop).
    connections_accepted: AtomicU64,
    /// Responses started, including 4xx/5xx replies to bad requests.
    pub(super) requests_served: AtomicU64,
    /// The bound address as text (`ip:port` or `unix:/path`): the `X-Backend` header and
    /// the JSON `backend` field.
    pub(super) backend: String,
}

impl Shared {
    fn new(backend: String) -> Arc<Shared> {
        Arc::new(Shared {
            stop: AtomicBool::new(false),
            connections_accepted: AtomicU64::new(0),
            requests_served: AtomicU64::new(0),
            backend,
        })
    }
}

impl EchoServer {
    /// Binds `addr` (port 0 picks a free port) and starts the acceptor thread.
    pub fn start(addr: SocketAddr) -> io::Result<EchoServer> {
        let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
        socket.set_reuse_address(true)?;
        socket.bind(&addr.into())?;
        socket.listen(LISTEN_BACKLOG)?;
        let listener: TcpListener = socket.into();
        let addr = listener.local_addr()?;
        let listener = Arc::new(listener);
        let shared = Shared::new(addr.to_string());
        let acceptor = spawn_acceptor(listener.clone(), shared.clone())?;
        Ok(EchoServer {
            listening: Listening::Tcp(listener, addr),
            shared,
            acceptor: Some(acceptor),
        })
    }

    /// Binds a Unix socket at `path` as a gateway listener binds one (a socket file
    /// already there is replaced, anything else refused) and starts the acceptor thread.
    /// The file is removed when the server stops.
    pub fn start_unix(path: &Path) -> io::Result<EchoServer> {
        let (listener, binding) = bind_unix(path, None)?;
        listener.set_nonblocking(false)?;
        let listener = Arc::new(listener);
        let shared = Shared::new(format!("unix:{}", path.display()));
        let acceptor = spawn_acceptor(listener.clone(), shared.clone())?;
        Ok(EchoServer {
            listening: Listening::Unix(listener, binding),
            shared,
            acceptor: Some(acceptor),
        })
    }

    /// Starts on `listen`: `ip:port`, or `unix:/path` (what `strait echo --listen` takes).
    pub fn start_at(listen: &str) -> io::Result<EchoServer> {
        match listen.strip_prefix("unix:") {
            Some(path) => EchoServer::start_unix(Path::new(path)),
            None => match listen.parse() {
                Ok(addr) => EchoServer::start(addr),
                Err(_) => Err(io::Error::new(
                    io::ErrorKind::InvalidInput,
                    format!("{listen:?} is not ip:port or unix:/path"),
                )),
            },
        }
    }

    /// The three backends of `strait demo`: 127.0.0.2, .3 and .4, port 8080.
    pub fn start_demo_backends() -> io::Result<Vec<EchoServer>> {
        (2..=4)
            .map(|i| EchoServer::start(SocketAddr::from(([127, 0, 0, i], 8080))))
            .collect()
    }

    /// The bound TCP address (the real port when started with port 0); `0.0.0.0:0` for a
    /// server on a Unix socket, which has none (see [`EchoServer::name`]).
    pub fn addr(&self) -> SocketAddr {
        match &self.listening {
            Listening::Tcp(_, addr) => *addr,
            Listening::Unix(..) => SocketAddr::from(([0, 0, 0, 0], 0)),
        }
    }

    /// Where it listens, as its answers name it: `ip:port` or `unix:/path`.
    pub fn name(&self) -> &str {
        &self.shared.backend
    }

    /// Connections accepted so far (tests check keep-alive reuse with it).
    pub fn connections_accepted(&self) -> u64 {
        self.shared.connections_accepted.load(Ordering::Relaxed)
    }

    /// Responses started so far (counted before the response is written).
    pub fn requests_served(&self) -> u64 {
        self.shared.requests_served.load(Ordering::Relaxed)
    }

    /// Stops the server: the port is free (the socket file gone) when this returns.
    pub fn stop(self) {
        drop(self);
    }
}

impl Drop for EchoServer {
    fn drop(&mut self) {
        let Some(acceptor) = self.acceptor.take() else {
            return;
        };
        self.shared.stop.store(true, Ordering::SeqCst);
        // Linux: shutdown(2) on a listening socket makes a blocked accept fail at once.
        // Portable fallback: a connection wakes accept, which then sees the flag. Refused
        // at once when the shutdown already worked.
        let shut = match &self.listening {
            Listening::Tcp(l, addr) => {
                let shut = SockRef::from(&**l).shutdown(Shutdown::Both);
                let _ = TcpStream::connect_timeout(&wake_addr(*addr), Duration::from_secs(1));
                shut
            }
            Listening::Unix(l, binding) => {
                let shut = SockRef::from(&**l).shutdown(Shutdown::Both);
                let _ = UnixStream::connect(binding.path());
                shut
            }
        };
        if let Err(error) = shut {
            debug!(backend = %self.shared.backend, %error, "listener shutdown failed; relying on self-connect");
        }
        if acceptor.join().is_err() {
            warn!(backend = %self.shared.backend, "echo acceptor thread panicked");
        }
    }
}

/// Where stop connects to wake the acceptor: the bound address, or loopback if unspecified.
fn wake_addr(addr: SocketAddr) -> SocketAddr {
    let ip = match addr.ip() {
        IpAddr::V4(ip) if ip.is_unspecified() => IpAddr::V4(Ipv4Addr::LOCALHOST),
        IpAddr::V6(ip) if ip.is_unspecified() => IpAddr::V6(Ipv6Addr::LOCALHOST),
        ip => ip,
    };
    SocketAddr::new(ip, addr.port())
}

/// A listening socket the acceptor takes connections from.
trait Accept: Send + Sync + 'static {
    type Stream: Stream;
    /// A new connection and the client's origin (its IP, or `unix:`).
    fn accept_one(&self) -> io::Result<(Self::Stream, String)>;
}

/// A connected socket, read and written through a shared reference (the acceptor keeps
/// a weak one to shut it down at stop).
pub(super) trait Stream: Send + Sync + 'static {
    fn read_some(&self, buf: &mut [u8]) -> io::Result<usize>;
    fn write_all_of(&self, data: &[u8]) -> io::Result<()>;
    fn shutdown(&self, how: Shutdown) -> io::Result<()>;
    fn set_read_timeout(&self, timeout: Option<Duration>) -> io::Result<()>;
}

impl Accept for TcpListener {
    type Stream = TcpStream;

    fn accept_one(&self) -> io::Result<(TcpStream, String)> {
        let (stream, peer) = self.accept()?;
        if let Err(error) = stream.set_nodelay(true) {
            debug!(%peer, %error, "set TCP_NODELAY failed");
        }
        Ok((stream, peer.ip().to_string()))
    }
}

impl Accept for UnixListener {
    type Stream = UnixStream;

    fn accept_one(&self) -> io::Result<(UnixStream, String)> {
        let (stream, _) = self.accept()?;
        Ok((stream, "unix:".to_owned()))
    }
}

/// std's two stream sockets have the same inherent methods, not a trait that names them.
macro_rules! impl_stream {
    ($($t:ty),*) => {$(
        impl Stream for $t {
            fn read_some(&self, buf: &mut [u8]) -> io::Result<usize> {
                (&*self).read(buf)
            }
            fn write_all_of(&self, data: &[u8]) -> io::Result<()> {
                (&*self).write_all(data)
            }
            fn shutdown(&self, how: Shutdown) -> io::Result<()> {
                <$t>::shutdown(self, how)
            }
            fn set_read_timeout(&self, timeout: Option<Duration>) -> io::Result<()> {
                <$t>::set_read_timeout(self, timeout)
            }
        }
    )*};
}

impl_stream!(TcpStream, UnixStream);

fn spawn_acceptor<L: Accept>(listener: Arc<L>, shared: Arc<Shared>) -> io::Result<JoinHandle<()>> {
    thread::Builder::new()
        .name("echo-accept".into())
        .spawn(move || accept_loop(&*listener, &shared))
}

fn accept_loop<L: Accept>(listener: &L, shared: &Arc<Shared>) {
    // Weak handles to live connections, so stop can shut them down without keeping closed
    // sockets open (a connection thread owns the only strong handle).
    let mut live: Vec<Weak<L::Stream>> = Vec::new();
    loop {
        let accepted = listener.accept_one();
        if shared.stop.load(Ordering::SeqCst) {
            break;
        }
        let (stream, origin) = match accepted {
            Ok(pair) => pair,
            Err(e) if matches!(e.kind(), io::ErrorKind::Interrupted) => continue,
            Err(e) if matches!(e.kind(), io::ErrorKind::ConnectionAborted) => continue,
            Err(error) => {
                // e.g. EMFILE: back off briefly instead of spinning.
                warn!(backend = %shared.backend, %error, "echo accept failed");
                thread::park_timeout(Duration::from_millis(100));
                continue;
            }
        };
        shared.connections_accepted.fetch_add(1, Ordering::Relaxed);
        let stream = Arc::new(stream);
        live.retain(|conn| conn.strong_count() > 0);
        live.push(Arc::downgrade(&stream));
        let conn_shared = Arc::clone(shared);
        let spawned = thread::Builder::new()
            .name("echo-conn".into())
            .spawn(move || serve_connection(&*stream, &origin, &conn_shared));
        if let Err(error) = spawned {
            // The closure, and with it the stream, is dropped: the client sees a close.
            warn!(backend = %shared.backend, %error, "echo connection thread spawn failed");
        }
    }
    for conn in live {
        if let Some(stream) = conn.upgrade() {
            let _ = stream.shutdown(Shutdown::Both);
        }
    }
}

fn serve_connection<S: Stream>(stream: &S, origin: &str, shared: &Shared) {
    let mut conn = Conn::new(stream);
    loop {
        if shared.stop.load(Ordering::SeqCst) {
            return;
        }
        let outcome = match conn.read_head() {
            Ok(None) => return, // clean close between requests
            Ok(Some(req)) => handle(&mut conn, &req, origin, shared),
            Err(e) => Err(e),
        };
        match outcome {
            Ok(true) => continue,
            Ok(false) => break,
            Err(ConnError::Io(error)) => {
                debug!(origin, %error, "echo connection ended");
                return;
            }
            Err(ConnError::Reject(status, reason)) => {
                debug!(origin, status, reason, "echo rejected request");
                shared.requests_served.fetch_add(1, Ordering::Relaxed);
                let reply = Reply::new(status, false, 1, &shared.backend);
                let body = format!("{reason}\n");
                if reply
                    .send_body(&mut conn, Some("text/plain"), body.as_bytes(), false)
                    .is_err()
                {
                    return;
                }
                break;
            }
        }
    }
    linger_close(stream);
}

/// Half-close, then read (and discard) until the client closes or [`LINGER`] passes, so the
/// close does not become a reset that destroys the response in flight.
fn linger_close<S: Stream>(stream: &S) {
    let _ = stream.shutdown(Shutdown::Write);
    let deadline = Instant::now() + LINGER;
    let mut sink = [0u8; 4096];
    let mut drained = 0;
    while drained < LINGER_BYTES {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() || stream.set_read_timeout(Some(left)).is_err() {
            break;
        }
        match stream.read_some(&mut sink) {
            Ok(0) | Err(_) => break,
            Ok(n) => drained += n,
        }
    }
}
