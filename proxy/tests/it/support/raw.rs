//! Hand-written backends on `std::net::TcpListener` for behaviours the echo server does not
//! have: closing a keep-alive connection right after answering, never answering, sending
//! a malformed response, holding one answer until the test releases it, a full accept
//! queue.
//!
//! Runs on: one acceptor thread per backend plus one thread per accepted connection
//! running the test's handler. The handler's reads have timeouts, so its thread ends
//! even if the proxy keeps the connection open.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::mpsc::{self, Receiver, Sender};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use super::SETTLE;

use socket2::{Domain, Protocol, Socket, Type};

/// How long a handler waits for the proxy's next bytes.
const HANDLER_READ_TIMEOUT: Duration = Duration::from_secs(20);

type Handler = dyn Fn(TcpStream, usize) + Send + Sync + 'static;

/// A backend that runs `handler(stream, n)` for its `n`-th accepted connection (from 0).
pub(crate) struct RawBackend {
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
    accepted: Arc<AtomicUsize>,
    acceptor: Option<JoinHandle<()>>,
}

impl RawBackend {
    pub(crate) fn start(
        ip: &str,
        handler: impl Fn(TcpStream, usize) + Send + Sync + 'static,
    ) -> Self {
        Self::start_at(format!("{ip}:0").parse().unwrap(), handler)
    }

    /// As [`RawBackend::start`], on `addr` (a given port: pods of one Service share it).
    pub(crate) fn start_at(
        addr: SocketAddr,
        handler: impl Fn(TcpStream, usize) + Send + Sync + 'static,
    ) -> Self {
        let listener = TcpListener::bind(addr).unwrap_or_else(|e| panic!("backend on {addr}: {e}"));
        let addr = listener.local_addr().unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let accepted = Arc::new(AtomicUsize::new(0));
        let handler: Arc<Handler> = Arc::new(handler);
        let acceptor = {
            let (stop, accepted) = (stop.clone(), accepted.clone());
            std::thread::spawn(move || {
                for stream in listener.incoming() {
                    if stop.load(Ordering::SeqCst) {
                        break;
                    }
                    let Ok(stream) = stream else { continue };
                    stream.set_read_timeout(Some(HANDLER_READ_TIMEOUT)).unwrap();
                    stream
                        .set_write_timeout(Some(HANDLER_READ_TIMEOUT))
                        .unwrap();
                    let n = accepted.fetch_add(1, Ordering::SeqCst);
                    let handler = handler.clone();
                    std::thread::spawn(move || handler(stream, n));
                }
            })
        };
        RawBackend {
            addr,
            stop,
            accepted,
            acceptor: Some(acceptor),
        }
    }

    pub(crate) fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Connections accepted so far.
    pub(crate) fn accepted(&self) -> usize {
        self.accepted.load(Ordering::SeqCst)
    }
}

impl Drop for RawBackend {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // Wake the blocked accept; the acceptor sees the flag and returns.
        let _ = TcpStream::connect_timeout(&self.addr, Duration::from_secs(2));
        if let Some(acceptor) = self.acceptor.take() {
            let _ = acceptor.join();
        }
    }
}

/// A backend answering each request at once with a keep-alive `200` saying `ok`, except
/// `GET /hold`: that one is reported on `held` and answered (`held`) only when `release`
/// receives. The number of each connection the proxy closes is sent on `closed`.
pub(crate) struct GatedBackend {
    pub(crate) backend: RawBackend,
    held: Receiver<()>,
    /// Answers the `/hold` request waiting (or the next one).
    pub(crate) release: Sender<()>,
    pub(crate) closed: Receiver<usize>,
}

impl GatedBackend {
    pub(crate) fn start(ip: &str) -> GatedBackend {
        let (held_tx, held) = mpsc::channel();
        let (release, release_rx) = mpsc::channel::<()>();
        let (closed_tx, closed) = mpsc::channel();
        let held_tx = Mutex::new(held_tx);
        let release_rx = Mutex::new(release_rx);
        let closed_tx = Mutex::new(closed_tx);
        let backend = RawBackend::start(ip, move |stream, n| {
            let mut reader = BufReader::new(stream.try_clone().unwrap());
            let mut stream = stream;
            while let Some(head) = read_head(&mut reader) {
                let body = if head.starts_with("GET /hold ") {
                    let _ = held_tx.lock().unwrap().send(());
                    // Answered when released, or when the test is over.
                    let _ = release_rx.lock().unwrap().recv_timeout(SETTLE);
                    "held"
                } else {
                    "ok"
                };
                let _ = stream.write_all(
                    format!(
                        "HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n{body}",
                        body.len()
                    )
                    .as_bytes(),
                );
            }
            let _ = closed_tx.lock().unwrap().send(n);
        });
        GatedBackend {
            backend,
            held,
            release,
            closed,
        }
    }

    /// Waits until a `/hold` request arrived.
    pub(crate) fn wait_held(&self) {
        self.held
            .recv_timeout(SETTLE)
            .expect("the /hold request reaches the backend");
    }
}

/// Reads one request head (no body expected) and returns it, or `None` at EOF, a reset
/// or a timeout before a complete head.
pub(crate) fn read_head(reader: &mut BufReader<TcpStream>) -> Option<String> {
    let mut head = String::new();
    loop {
        let mut line = String::new();
        match reader.read_line(&mut line) {
            Ok(0) | Err(_) => return None,
            Ok(_) => {}
        }
        head.push_str(&line);
        if line == "\r\n" {
            return Some(head);
        }
    }
}

/// An address on `ip` where nothing listens: a port bound and released at once. Give
/// each test its own `ip`, so no other test can bind that port in between.
pub(crate) fn dead_addr(ip: &str) -> SocketAddr {
    let listener = TcpListener::bind(format!("{ip}:0")).unwrap();
    let addr = listener.local_addr().unwrap();
    drop(listener);
    addr
}

/// A listener whose accept queue is full: it never accepts, and connections are made to
/// it until a new one cannot complete, so the kernel drops further SYNs and a connect to
/// it hangs until the connector's timeout. `None` if the queue could not be filled
/// (then a connect timeout cannot be produced reliably here).
pub(crate) struct FullBacklog {
    pub(crate) addr: SocketAddr,
    _listener: Socket,
    _queued: Vec<Socket>,
}

impl FullBacklog {
    pub(crate) fn start(ip: &str) -> Option<FullBacklog> {
        let addr: SocketAddr = format!("{ip}:0").parse().unwrap();
        let listener = Socket::new(Domain::IPV4, Type::STREAM, Some(Protocol::TCP)).unwrap();
        listener.bind(&addr.into()).unwrap();
        listener.listen(0).unwrap();
        let addr = listener.local_addr().unwrap().as_socket().unwrap();
        let mut queued = Vec::new();
        for _ in 0..16 {
            let s = Socket::new(Domain::IPV4, Type::STREAM, Some(Protocol::TCP)).unwrap();
            match s.connect_timeout(&addr.into(), Duration::from_millis(300)) {
                Ok(()) => queued.push(s),
                Err(e) if e.kind() == std::io::ErrorKind::TimedOut => {
                    return Some(FullBacklog {
                        addr,
                        _listener: listener,
                        _queued: queued,
                    });
                }
                Err(_) => return None,
            }
        }
        None
    }
}

/// A tunnel's far end: echoes what `from` reads to `to` until EOF, then writes `bye` and
/// half-closes `to`; then waits until the proxy closes the connection and tells `closed`.
pub(crate) fn echo_then_bye(from: &mut impl Read, to: &mut TcpStream, closed: &Mutex<Sender<()>>) {
    let mut buf = [0u8; 64 * 1024];
    loop {
        match from.read(&mut buf) {
            Ok(0) => {
                let _ = to.write_all(b"bye");
                let _ = to.shutdown(std::net::Shutdown::Write);
                break;
            }
            Ok(n) => {
                if to.write_all(&buf[..n]).is_err() {
                    break;
                }
            }
            Err(_) => break,
        }
    }
    // Wait for the proxy's close of this connection.
    let _ = from.read(&mut buf);
    let _ = closed.lock().unwrap().send(());
}
