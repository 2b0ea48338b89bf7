//! A load generator for end-to-end tests: keep-alive client connections, each on its own
//! thread, sending a steady stream of requests to an echo route through the gateway —
//! mostly `GET`, some `PUT` with a 1–4 KiB body (idempotent, so a gateway may retry
//! it) — and recording every exchange: when it was sent and answered, which backend
//! answered (`X-Backend`), or how it failed.
//!
//! Runs on: one std thread per connection, with blocking sockets and the client's
//! timeouts. The threads share a lock-protected list of samples and a counter of
//! completed requests, which the scenario reads to pace itself; they stop when told to
//! (or when the load is dropped).

use std::fmt;
use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Instant;

use super::client::{Client, Response};
use super::eventually;

/// One in this many requests is a `PUT`.
const PUT_ONE_IN: u64 = 4;
/// Smallest and largest `PUT` body.
const PUT_BODY: (u64, u64) = (1024, 4096);

/// How an exchange failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Failure {
    /// No connection to the gateway.
    Connect(io::ErrorKind),
    /// The connection was reset, or a write found it closed.
    Reset,
    /// The gateway closed the connection before a whole response.
    Eof,
    /// No response within the client's read timeout.
    Timeout,
    /// A response that breaks HTTP/1.1, or another I/O error.
    Malformed(String),
    /// A status other than 200, with the body (the gateway's reason).
    Status(u16, String),
    /// A 200 that is not the echo of this request.
    WrongEcho(String),
}

impl Failure {
    fn from_io(e: &io::Error) -> Failure {
        use io::ErrorKind::*;
        match e.kind() {
            ConnectionReset | ConnectionAborted | BrokenPipe => Failure::Reset,
            UnexpectedEof => Failure::Eof,
            WouldBlock | TimedOut => Failure::Timeout,
            _ => Failure::Malformed(e.to_string()),
        }
    }

    /// A short name for counting failures by kind.
    pub(crate) fn kind(&self) -> &'static str {
        match self {
            Failure::Connect(_) => "connect",
            Failure::Reset => "reset",
            Failure::Eof => "eof",
            Failure::Timeout => "timeout",
            Failure::Malformed(_) => "malformed",
            Failure::Status(s, _) if *s >= 500 => "5xx",
            Failure::Status(..) => "status",
            Failure::WrongEcho(_) => "wrong echo",
        }
    }
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Failure::Connect(kind) => write!(f, "connect: {kind}"),
            Failure::Status(status, body) => write!(f, "{status} {:?}", body.trim()),
            Failure::Malformed(what) | Failure::WrongEcho(what) => {
                write!(f, "{}: {what}", self.kind())
            }
            _ => f.write_str(self.kind()),
        }
    }
}

/// One exchange.
#[derive(Debug, Clone)]
pub(crate) struct Sample {
    /// Which connection (thread) sent it.
    pub(crate) conn: usize,
    pub(crate) method: &'static str,
    /// Just before the request's first byte was written.
    pub(crate) sent: Instant,
    /// Just after the whole response was read, or the failure seen.
    pub(crate) received: Instant,
    /// `X-Backend` of the response, if a response came with one.
    pub(crate) backend: Option<String>,
    pub(crate) failure: Option<Failure>,
}

/// What the threads share.
struct Shared {
    stop: AtomicBool,
    completed: AtomicU64,
    /// Every exchange, in the order they completed.
    samples: Mutex<Vec<Sample>>,
}

/// A running load; dropping it stops the threads.
pub(crate) struct Load {
    shared: Arc<Shared>,
    threads: Vec<JoinHandle<()>>,
}

impl Load {
    /// Starts `connections` keep-alive connections to `gateway` sending requests for
    /// `path` on `host` (an echo route). `seed` picks methods and body sizes.
    pub(crate) fn start(
        gateway: SocketAddr,
        host: &str,
        path: &str,
        connections: usize,
        seed: u64,
    ) -> Load {
        let shared = Arc::new(Shared {
            stop: AtomicBool::new(false),
            completed: AtomicU64::new(0),
            samples: Mutex::new(Vec::new()),
        });
        let threads = (0..connections)
            .map(|conn| {
                let shared = shared.clone();
                let target = Target {
                    gateway,
                    host: host.to_owned(),
                    path: path.to_owned(),
                };
                let rng = Rng::new(seed ^ (conn as u64 + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15));
                std::thread::spawn(move || run(conn, &target, rng, &shared))
            })
            .collect();
        Load { shared, threads }
    }

    /// Requests completed so far (answered or failed).
    pub(crate) fn completed(&self) -> u64 {
        self.shared.completed.load(Ordering::SeqCst)
    }

    /// Waits until `n` more requests have completed (a pace, not a sleep); fails the
    /// test if the load stalls.
    pub(crate) fn advance(&self, n: u64) {
        let target = self.completed() + n;
        eventually(&format!("{n} more requests"), || {
            (self.completed() >= target).then_some(())
        });
    }

    /// Runs `f` over the samples so far, in completion order.
    pub(crate) fn with_samples<T>(&self, f: impl FnOnce(&[Sample]) -> T) -> T {
        f(&self.shared.samples.lock().unwrap())
    }

    /// Stops the load and returns every sample, in the order they were sent.
    pub(crate) fn stop(mut self) -> Vec<Sample> {
        self.join();
        let mut samples = std::mem::take(&mut *self.shared.samples.lock().unwrap());
        samples.sort_by_key(|s| s.sent);
        samples
    }

    fn join(&mut self) {
        self.shared.stop.store(true, Ordering::SeqCst);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

impl Drop for Load {
    fn drop(&mut self) {
        self.join();
    }
}

/// Where the requests go.
struct Target {
    gateway: SocketAddr,
    host: String,
    path: String,
}

/// One connection's loop: a request, its sample, the next; a new connection after a
/// failure or a `Connection: close`.
fn run(conn: usize, target: &Target, mut rng: Rng, shared: &Shared) {
    let mut client = None;
    while !shared.stop.load(Ordering::SeqCst) {
        let put = rng.below(PUT_ONE_IN) == 0;
        let len = if put {
            PUT_BODY.0 + rng.below(PUT_BODY.1 - PUT_BODY.0 + 1)
        } else {
            0
        };
        let method = if put { "PUT" } else { "GET" };
        let request = request(target, method, len);
        let sent = Instant::now();
        let result = exchange(&mut client, target.gateway, &request);
        let received = Instant::now();
        let (backend, failure) = match result {
            Ok(resp) => (
                resp.header("x-backend").map(str::to_owned),
                check(&resp, method, len).err(),
            ),
            Err(failure) => (None, Some(failure)),
        };
        shared.samples.lock().unwrap().push(Sample {
            conn,
            method,
            sent,
            received,
            backend,
            failure,
        });
        shared.completed.fetch_add(1, Ordering::SeqCst);
    }
}

fn request(target: &Target, method: &str, len: u64) -> Vec<u8> {
    let mut r = format!(
        "{method} {} HTTP/1.1\r\nHost: {}\r\n",
        target.path, target.host
    );
    if len > 0 {
        r.push_str(&format!("Content-Length: {len}\r\n"));
    }
    r.push_str("\r\n");
    let mut r = r.into_bytes();
    r.extend((0..len).map(|i| b'a' + (i % 26) as u8));
    r
}

/// Sends `request` on the kept connection (connecting first if there is none) and reads
/// the response; the connection is dropped after a failure or a close.
fn exchange(
    client: &mut Option<Client>,
    gateway: SocketAddr,
    request: &[u8],
) -> Result<Response, Failure> {
    let c = match client {
        Some(c) => c,
        None => {
            client.insert(Client::try_connect(gateway).map_err(|e| Failure::Connect(e.kind()))?)
        }
    };
    match c.try_send(request).and_then(|()| c.try_response(false)) {
        Ok(resp) => {
            if resp.connection_has("close") {
                *client = None;
            }
            Ok(resp)
        }
        Err(e) => {
            *client = None;
            Err(Failure::from_io(&e))
        }
    }
}

/// What a user checks of an answer: 200, from a backend, echoing this request.
fn check(resp: &Response, method: &str, len: u64) -> Result<(), Failure> {
    if resp.status != 200 {
        return Err(Failure::Status(resp.status, resp.text()));
    }
    let backend = resp
        .header("x-backend")
        .ok_or_else(|| Failure::WrongEcho("no X-Backend".into()))?;
    let json: serde_json::Value = serde_json::from_slice(&resp.body)
        .map_err(|e| Failure::WrongEcho(format!("not JSON: {e}")))?;
    let (m, l, b) = (&json["method"], &json["body_length"], &json["backend"]);
    if *m != method || *l != len || *b != backend {
        return Err(Failure::WrongEcho(format!(
            "sent {method} with {len} bytes, {backend} echoed {m} with {l} bytes from {b}"
        )));
    }
    Ok(())
}

/// xorshift64*: a small deterministic generator, seeded by the test.
struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Rng {
        Rng(seed | 1)
    }

    /// A number in `0..n`.
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D) % n
    }
}
