//! The built-in httpbin-like echo backend: `strait demo` runs three of them (127.0.0.2:8080,
//! 127.0.0.3:8080, 127.0.0.4:8080) and the integration tests use it as a real upstream.
//!
//! Runs on: plain std threads, never a worker core. Each [`EchoServer`] has one acceptor thread
//! and one thread per accepted connection. It must not be used on the data plane, must not
//! buffer a large body (memory per connection is bounded: a 64 KiB read buffer plus at most
//! 64 KiB of captured body), must not sleep-poll, and must not panic on network input. No
//! `unsafe`.
//!
//! Endpoints (any method; a HEAD request gets the headers a GET would get, without the body):
//!
//! - `/status/{code}`: that status (200..=599) with an empty body; 204 and 304 carry no
//!   `Content-Length`.
//! - `/bytes/{n}`: `n` bytes of [`pattern_bytes`] data with `Content-Length`, written 64 KiB
//!   at a time (any `n`, never allocated whole).
//! - `/stream-bytes/{n}`: the same data with `Transfer-Encoding: chunked`, chunks of 16 KiB
//!   (or `?chunk_size=N`, 1..=16384).
//! - `/close-delimited/{n}`: the same data with no length and no chunking,
//!   `Connection: close`, then a close.
//! - `/delay/{ms}`: reads the request, waits `ms` (at most 60 000), answers like `/anything`.
//! - `/echo`: 200 with the request body streamed back as it arrives (read a piece, write a
//!   piece), chunked. A client must read while it uploads, or both sides' buffers fill.
//! - anything else: 200 `application/json` like httpbin's `/anything`: `args` (a string, or a
//!   list for a repeated name), `data` (the body, UTF-8 lossy), `json` (the body parsed, or
//!   null), `headers` (names as sent; repeats joined with ", "), `method`, `origin` (client
//!   IP), `url` (`http://<Host><target>`), `backend` and `body_length`. A body over 64 KiB is
//!   read in pieces and only counted: `data` is then `""`.
//!
//! Every response carries `X-Backend: <bound addr>`, `Date` and `Server: strait-demo`, plus
//! `Content-Length` except for chunked, close-delimited, 204 and 304 responses. An HTTP/1.0
//! client gets close-delimited bodies instead of chunked ones.
//!
//! Protocol: HTTP/1.1 and 1.0 keep-alive rules (`Connection: close` / `keep-alive`),
//! pipelining, `Expect: 100-continue`, request bodies framed by `Content-Length` or chunked
//! (extensions and trailers accepted and ignored). Malformed framing or heads get 400, a head
//! over 64 KiB or 100 headers gets 431, a transfer coding other than chunked gets 501; each
//! is followed by a close. A request without `Host` is served (`url` then uses the backend
//! address). After the last response the server half-closes and drains the client for up to
//! 2 s, so an unread pipelined request cannot turn the close into a reset.
//!
//! Counters: [`EchoServer::connections_accepted`] counts at accept, before the connection is
//! served; [`EchoServer::requests_served`] counts each response before it is written. A client
//! that has read a response therefore always sees it counted.
//!
//! Stop ([`EchoServer::stop`] or drop): set a flag, `shutdown(2)` the listening socket (which
//! wakes a blocked `accept` on Linux), connect to it once as a portable fallback, join the
//! acceptor (the listener is closed and the port free when stop returns), and shut down every
//! live connection so blocked connection threads see EOF and exit.

use std::io::{self, Read, Write};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Weak};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant, SystemTime};

use serde_json::{Map, Value};
use socket2::{Domain, Protocol, SockRef, Socket, Type};
use tracing::{debug, warn};

/// Read buffer per connection; also the largest request head accepted.
const READ_BUF: usize = 64 * 1024;
/// Most request headers accepted (more → 431).
const MAX_HEADERS: usize = 100;
/// Bodies up to this size are put in the `/anything` JSON; larger ones are only counted.
const CAPTURE_LIMIT: usize = 64 * 1024;
/// Write size for generated data.
const WRITE_CHUNK: usize = 64 * 1024;
/// Default (and largest) chunk size for `/stream-bytes`.
const STREAM_CHUNK: usize = 16 * 1024;
/// Longest `/delay`.
const MAX_DELAY_MS: u64 = 60_000;
/// Longest chunk-size or trailer line in a chunked request body.
const MAX_CHUNK_LINE: usize = 4096;
/// Most trailer bytes in a chunked request body.
const MAX_TRAILERS: usize = 16 * 1024;
/// How long a closing connection drains the client after its half-close.
const LINGER: Duration = Duration::from_secs(2);
/// Most bytes drained after the half-close.
const LINGER_BYTES: usize = 1024 * 1024;
/// listen(2) backlog: room for ~100 clients connecting at once.
const LISTEN_BACKLOG: i32 = 1024;
const CONTINUE: &[u8] = b"HTTP/1.1 100 Continue\r\n\r\n";

// === impl EchoServer ===

/// A running echo backend. Stops (listener closed, connections shut down) on drop or
/// [`EchoServer::stop`].
pub struct EchoServer {
    /// The bound address (the real port when started with port 0); also the `X-Backend` value.
    addr: SocketAddr,
    /// Shared with the acceptor so stop can shutdown(2) it and wake a blocked `accept`.
    listener: Arc<TcpListener>,
    /// Stop flag, counters and backend name, shared with every thread of this server.
    shared: Arc<Shared>,
    /// Joined on stop so that the listening socket is closed when stop returns.
    acceptor: Option<JoinHandle<()>>,
}

struct Shared {
    /// Set once by stop; the acceptor and connection threads check it between steps.
    stop: AtomicBool,
    /// Connections accepted (not counting the wake-up connection made by stop).
    connections_accepted: AtomicU64,
    /// Responses started, including 4xx/5xx replies to bad requests.
    requests_served: AtomicU64,
    /// `addr` as text: the `X-Backend` header and the JSON `backend` field.
    backend: String,
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
        let shared = Arc::new(Shared {
            stop: AtomicBool::new(false),
            connections_accepted: AtomicU64::new(0),
            requests_served: AtomicU64::new(0),
            backend: addr.to_string(),
        });
        let acceptor = thread::Builder::new().name("demo-accept".into()).spawn({
            let listener = Arc::clone(&listener);
            let shared = Arc::clone(&shared);
            move || accept_loop(&listener, &shared)
        })?;
        Ok(EchoServer {
            addr,
            listener,
            shared,
            acceptor: Some(acceptor),
        })
    }

    /// The bound address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// TCP connections accepted so far (tests check keep-alive reuse with it).
    pub fn connections_accepted(&self) -> u64 {
        self.shared.connections_accepted.load(Ordering::Relaxed)
    }

    /// Responses started so far (counted before the response is written).
    pub fn requests_served(&self) -> u64 {
        self.shared.requests_served.load(Ordering::Relaxed)
    }

    /// Stops the server: the port is free when this returns.
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
        if let Err(error) = SockRef::from(&*self.listener).shutdown(Shutdown::Both) {
            debug!(addr = %self.addr, %error, "listener shutdown failed; relying on self-connect");
        }
        // Portable fallback: a connection wakes accept, which then sees the flag. Refused at
        // once when the shutdown above already worked.
        let _ = TcpStream::connect_timeout(&wake_addr(self.addr), Duration::from_secs(1));
        if acceptor.join().is_err() {
            warn!(addr = %self.addr, "demo acceptor thread panicked");
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

fn accept_loop(listener: &TcpListener, shared: &Arc<Shared>) {
    // Weak handles to live connections, so stop can shut them down without keeping closed
    // sockets open (a connection thread owns the only strong handle).
    let mut live: Vec<Weak<TcpStream>> = Vec::new();
    loop {
        let accepted = listener.accept();
        if shared.stop.load(Ordering::SeqCst) {
            break;
        }
        let (stream, peer) = match accepted {
            Ok(pair) => pair,
            Err(e) if matches!(e.kind(), io::ErrorKind::Interrupted) => continue,
            Err(e) if matches!(e.kind(), io::ErrorKind::ConnectionAborted) => continue,
            Err(error) => {
                // e.g. EMFILE: back off briefly instead of spinning.
                warn!(backend = %shared.backend, %error, "demo accept failed");
                thread::park_timeout(Duration::from_millis(100));
                continue;
            }
        };
        shared.connections_accepted.fetch_add(1, Ordering::Relaxed);
        if let Err(error) = stream.set_nodelay(true) {
            debug!(%peer, %error, "set TCP_NODELAY failed");
        }
        let stream = Arc::new(stream);
        live.retain(|conn| conn.strong_count() > 0);
        live.push(Arc::downgrade(&stream));
        let conn_shared = Arc::clone(shared);
        let spawned = thread::Builder::new()
            .name("demo-conn".into())
            .spawn(move || serve_connection(&stream, peer, &conn_shared));
        if let Err(error) = spawned {
            // The closure, and with it the stream, is dropped: the client sees a close.
            warn!(backend = %shared.backend, %peer, %error, "demo connection thread spawn failed");
        }
    }
    for conn in live {
        if let Some(stream) = conn.upgrade() {
            let _ = stream.shutdown(Shutdown::Both);
        }
    }
}

// === connection ===

/// Why a connection stops being served.
enum ConnError {
    /// Socket error or EOF mid-request: close without a reply.
    Io(io::Error),
    /// Bad input before the response started: reply with this status and reason, then close.
    Reject(u16, &'static str),
}

impl From<io::Error> for ConnError {
    fn from(e: io::Error) -> Self {
        ConnError::Io(e)
    }
}

/// After the response head is out, a bad body can only end the connection.
fn after_head(e: ConnError) -> ConnError {
    match e {
        ConnError::Reject(_, reason) => {
            ConnError::Io(io::Error::new(io::ErrorKind::InvalidData, reason))
        }
        io => io,
    }
}

fn unexpected_eof() -> ConnError {
    ConnError::Io(io::ErrorKind::UnexpectedEof.into())
}

fn serve_connection(stream: &TcpStream, peer: SocketAddr, shared: &Shared) {
    let mut conn = Conn {
        stream,
        buf: vec![0; READ_BUF],
        start: 0,
        end: 0,
    };
    loop {
        if shared.stop.load(Ordering::SeqCst) {
            return;
        }
        let outcome = match read_head(&mut conn) {
            Ok(None) => return, // clean close between requests
            Ok(Some(req)) => handle(&mut conn, &req, peer, shared),
            Err(e) => Err(e),
        };
        match outcome {
            Ok(true) => continue,
            Ok(false) => break,
            Err(ConnError::Io(error)) => {
                debug!(%peer, %error, "demo connection ended");
                return;
            }
            Err(ConnError::Reject(status, reason)) => {
                debug!(%peer, status, reason, "demo rejected request");
                shared.requests_served.fetch_add(1, Ordering::Relaxed);
                let reply = Reply::new(status, false, 1, &shared.backend);
                if send_body(
                    &mut conn,
                    reply,
                    Some("text/plain"),
                    format!("{reason}\n").as_bytes(),
                    false,
                )
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
fn linger_close(mut stream: &TcpStream) {
    let _ = stream.shutdown(Shutdown::Write);
    let deadline = Instant::now() + LINGER;
    let mut sink = [0u8; 4096];
    let mut drained = 0;
    while drained < LINGER_BYTES {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() || stream.set_read_timeout(Some(left)).is_err() {
            break;
        }
        match stream.read(&mut sink) {
            Ok(0) | Err(_) => break,
            Ok(n) => drained += n,
        }
    }
}

/// One connection's socket and read buffer (`buf[start..end]` is read but not consumed).
struct Conn<'a> {
    stream: &'a TcpStream,
    buf: Vec<u8>,
    start: usize,
    end: usize,
}

impl Conn<'_> {
    fn buffered(&self) -> &[u8] {
        &self.buf[self.start..self.end]
    }

    fn consume(&mut self, n: usize) {
        self.start += n;
        if self.start == self.end {
            self.start = 0;
            self.end = 0;
        }
    }

    /// Reads more from the socket; `Ok(0)` at EOF.
    fn fill(&mut self) -> io::Result<usize> {
        if self.end == self.buf.len() {
            if self.start == 0 {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    "read buffer full",
                ));
            }
            self.buf.copy_within(self.start..self.end, 0);
            self.end -= self.start;
            self.start = 0;
        }
        loop {
            match self.stream.read(&mut self.buf[self.end..]) {
                Ok(n) => {
                    self.end += n;
                    return Ok(n);
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            }
        }
    }

    /// Buffers at least one byte; EOF is an error (we are inside a request).
    fn fill_some(&mut self) -> Result<(), ConnError> {
        if self.start == self.end && self.fill()? == 0 {
            return Err(unexpected_eof());
        }
        Ok(())
    }

    /// Copies up to `limit` body bytes into `out`.
    fn copy_body(&mut self, out: &mut [u8], limit: u64) -> Result<usize, ConnError> {
        self.fill_some()?;
        let avail = self.buffered();
        let n = avail
            .len()
            .min(out.len())
            .min(usize::try_from(limit).unwrap_or(usize::MAX));
        out[..n].copy_from_slice(&avail[..n]);
        self.consume(n);
        Ok(n)
    }

    /// Reads one CRLF-terminated line of at most `max` bytes (without the CRLF).
    fn read_line(&mut self, max: usize) -> Result<Vec<u8>, ConnError> {
        loop {
            let avail = self.buffered();
            let window = &avail[..avail.len().min(max + 2)];
            if let Some(lf) = window.iter().position(|&b| b == b'\n') {
                if lf == 0 || window[lf - 1] != b'\r' {
                    return Err(ConnError::Reject(400, "bare LF in chunked body"));
                }
                let line = window[..lf - 1].to_vec();
                self.consume(lf + 1);
                return Ok(line);
            }
            if window.len() >= max + 2 {
                return Err(ConnError::Reject(400, "chunked body line too long"));
            }
            if self.fill()? == 0 {
                return Err(unexpected_eof());
            }
        }
    }

    fn write_all(&mut self, data: &[u8]) -> io::Result<()> {
        let mut stream = self.stream;
        stream.write_all(data)
    }
}

// === request head ===

struct Request {
    method: String,
    /// The request-target as sent.
    target: String,
    /// 0 for HTTP/1.0, 1 for HTTP/1.1.
    minor: u8,
    /// Names as sent, values as bytes.
    headers: Vec<(String, Vec<u8>)>,
}

/// How the request body is framed.
enum BodyKind {
    Empty,
    Length(u64),
    Chunked,
}

fn read_head(conn: &mut Conn<'_>) -> Result<Option<Request>, ConnError> {
    loop {
        if !conn.buffered().is_empty() {
            let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
            let mut parsed = httparse::Request::new(&mut headers);
            match parsed.parse(conn.buffered()) {
                Ok(httparse::Status::Complete(len)) => {
                    let req = Request::from_parsed(&parsed)?;
                    conn.consume(len);
                    return Ok(Some(req));
                }
                Ok(httparse::Status::Partial) => {}
                Err(httparse::Error::TooManyHeaders) => {
                    return Err(ConnError::Reject(431, "too many request headers"))
                }
                Err(_) => return Err(ConnError::Reject(400, "malformed request head")),
            }
            if conn.buffered().len() >= READ_BUF {
                return Err(ConnError::Reject(431, "request head too large"));
            }
        }
        if conn.fill()? == 0 {
            return if conn.buffered().is_empty() {
                Ok(None)
            } else {
                Err(unexpected_eof())
            };
        }
    }
}

impl Request {
    fn from_parsed(parsed: &httparse::Request<'_, '_>) -> Result<Request, ConnError> {
        let (Some(method), Some(target), Some(minor)) =
            (parsed.method, parsed.path, parsed.version)
        else {
            return Err(ConnError::Reject(400, "incomplete request line"));
        };
        Ok(Request {
            method: method.to_owned(),
            target: target.to_owned(),
            minor,
            headers: parsed
                .headers
                .iter()
                .map(|h| (h.name.to_owned(), h.value.to_vec()))
                .collect(),
        })
    }

    fn values<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a [u8]> + 'a {
        self.headers
            .iter()
            .filter(move |(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_slice())
    }

    /// Comma-separated tokens of every `name` header, trimmed and lowercased.
    fn tokens(&self, name: &str) -> Vec<String> {
        self.values(name)
            .flat_map(|v| v.split(|&b| b == b','))
            .map(|t| String::from_utf8_lossy(t).trim().to_ascii_lowercase())
            .filter(|t| !t.is_empty())
            .collect()
    }

    fn wants_keep_alive(&self) -> bool {
        let connection = self.tokens("connection");
        if connection.iter().any(|t| t == "close") {
            false
        } else if self.minor == 0 {
            connection.iter().any(|t| t == "keep-alive")
        } else {
            true
        }
    }

    fn expects_continue(&self) -> bool {
        self.minor >= 1 && self.tokens("expect").iter().any(|t| t == "100-continue")
    }

    /// The body framing, and whether it forces a close (Transfer-Encoding in HTTP/1.0).
    fn body_kind(&self) -> Result<(BodyKind, bool), ConnError> {
        let codings = self.tokens("transfer-encoding");
        let has_te = self.values("transfer-encoding").next().is_some();
        let has_cl = self.values("content-length").next().is_some();
        if has_te && has_cl {
            return Err(ConnError::Reject(
                400,
                "both Transfer-Encoding and Content-Length",
            ));
        }
        if has_te {
            return match codings.last().map(String::as_str) {
                Some("chunked") if codings.len() == 1 => Ok((BodyKind::Chunked, self.minor == 0)),
                Some("chunked") => Err(ConnError::Reject(501, "unsupported transfer coding")),
                _ => Err(ConnError::Reject(
                    400,
                    "Transfer-Encoding must end in chunked",
                )),
            };
        }
        let mut length = None;
        for value in self.values("content-length") {
            for item in value.split(|&b| b == b',') {
                let item = std::str::from_utf8(item).unwrap_or("x").trim();
                let Some(n) = parse_decimal(item) else {
                    return Err(ConnError::Reject(400, "invalid Content-Length"));
                };
                if length.is_some_and(|l| l != n) {
                    return Err(ConnError::Reject(400, "conflicting Content-Length"));
                }
                length = Some(n);
            }
        }
        Ok(match length {
            None | Some(0) => (BodyKind::Empty, false),
            Some(n) => (BodyKind::Length(n), false),
        })
    }

    /// The Host header (more than one is a 400).
    fn host(&self) -> Result<Option<String>, ConnError> {
        let mut hosts = self.values("host");
        let host = hosts
            .next()
            .map(|h| String::from_utf8_lossy(h).trim().to_owned());
        if hosts.next().is_some() {
            return Err(ConnError::Reject(400, "more than one Host header"));
        }
        Ok(host)
    }

    fn path_and_query(&self) -> (&str, &str) {
        self.target.split_once('?').unwrap_or((&self.target, ""))
    }
}

/// ASCII digits only (no sign, no spaces), no overflow.
fn parse_decimal(s: &str) -> Option<u64> {
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse().ok()
}

// === request body ===

enum BodyState {
    Done,
    Length(u64),
    ChunkSize,
    ChunkData(u64),
    ChunkEnd,
    Trailers(usize),
}

/// Reads one request body, de-chunking, from the connection buffer and socket.
struct BodyReader {
    state: BodyState,
}

/// A body read to its end: its length, and its bytes if it fit [`CAPTURE_LIMIT`].
struct Captured {
    length: u64,
    data: Option<Vec<u8>>,
}

impl BodyReader {
    fn new(kind: BodyKind) -> BodyReader {
        let state = match kind {
            BodyKind::Empty => BodyState::Done,
            BodyKind::Length(n) => BodyState::Length(n),
            BodyKind::Chunked => BodyState::ChunkSize,
        };
        BodyReader { state }
    }

    fn is_done(&self) -> bool {
        matches!(self.state, BodyState::Done)
    }

    /// Reads body bytes into `out` (non-empty); `Ok(0)` at the end of the body.
    fn read(&mut self, conn: &mut Conn<'_>, out: &mut [u8]) -> Result<usize, ConnError> {
        debug_assert!(!out.is_empty());
        loop {
            match self.state {
                BodyState::Done | BodyState::Length(0) => {
                    self.state = BodyState::Done;
                    return Ok(0);
                }
                BodyState::Length(left) => {
                    let n = conn.copy_body(out, left)?;
                    self.state = BodyState::Length(left - n as u64);
                    return Ok(n);
                }
                BodyState::ChunkSize => {
                    let size = parse_chunk_size(&conn.read_line(MAX_CHUNK_LINE)?)?;
                    self.state = if size == 0 {
                        BodyState::Trailers(0)
                    } else {
                        BodyState::ChunkData(size)
                    };
                }
                BodyState::ChunkData(left) => {
                    let n = conn.copy_body(out, left)?;
                    self.state = if n as u64 == left {
                        BodyState::ChunkEnd
                    } else {
                        BodyState::ChunkData(left - n as u64)
                    };
                    return Ok(n);
                }
                BodyState::ChunkEnd => {
                    if !conn.read_line(0)?.is_empty() {
                        return Err(ConnError::Reject(400, "chunk data not followed by CRLF"));
                    }
                    self.state = BodyState::ChunkSize;
                }
                BodyState::Trailers(seen) => {
                    let line = conn.read_line(MAX_CHUNK_LINE)?;
                    if line.is_empty() {
                        self.state = BodyState::Done;
                        return Ok(0);
                    }
                    if !line.contains(&b':') || seen + line.len() > MAX_TRAILERS {
                        return Err(ConnError::Reject(400, "malformed trailers"));
                    }
                    self.state = BodyState::Trailers(seen + line.len());
                }
            }
        }
    }

    /// Reads the rest of the body, keeping it only if `capture` and it fits the limit.
    fn drain(&mut self, conn: &mut Conn<'_>, capture: bool) -> Result<Captured, ConnError> {
        let mut piece = [0u8; 16 * 1024];
        let mut length = 0u64;
        let mut data = capture.then(Vec::new);
        loop {
            let n = self.read(conn, &mut piece)?;
            if n == 0 {
                return Ok(Captured { length, data });
            }
            length += n as u64;
            if let Some(kept) = &mut data {
                if kept.len() + n > CAPTURE_LIMIT {
                    data = None;
                } else {
                    kept.extend_from_slice(&piece[..n]);
                }
            }
        }
    }
}

/// `1*HEXDIG [ BWS ";" chunk-ext ]`.
fn parse_chunk_size(line: &[u8]) -> Result<u64, ConnError> {
    let bad = ConnError::Reject(400, "invalid chunk size");
    let digits = line.iter().take_while(|b| b.is_ascii_hexdigit()).count();
    if digits == 0 || digits > 16 {
        return Err(bad);
    }
    let rest = line[digits..].trim_ascii_start();
    if !(rest.is_empty() || rest.starts_with(b";")) {
        return Err(bad);
    }
    let hex = std::str::from_utf8(&line[..digits])
        .map_err(|_| ConnError::Reject(400, "invalid chunk size"))?;
    u64::from_str_radix(hex, 16).map_err(|_| bad)
}

// === routes ===

enum Route {
    Anything,
    Status(u16),
    Bytes(u64),
    StreamBytes(u64, usize),
    CloseDelimited(u64),
    Delay(u64),
    Echo,
    BadParam(&'static str),
}

impl Route {
    fn parse(path: &str, query: &str) -> Route {
        let number = |rest: &str, what| parse_decimal(rest).ok_or(what);
        let route = if path == "/echo" {
            Ok(Route::Echo)
        } else if let Some(rest) = path.strip_prefix("/status/") {
            match parse_decimal(rest) {
                Some(code @ 200..=599) => Ok(Route::Status(code as u16)),
                _ => Err("invalid status code"),
            }
        } else if let Some(rest) = path.strip_prefix("/bytes/") {
            number(rest, "invalid byte count").map(Route::Bytes)
        } else if let Some(rest) = path.strip_prefix("/stream-bytes/") {
            let chunk = match parse_args(query).get("chunk_size") {
                None => Ok(STREAM_CHUNK),
                Some(Value::String(s)) => match parse_decimal(s) {
                    Some(n @ 1..=16384) => Ok(n as usize),
                    _ => Err("chunk_size must be 1..=16384"),
                },
                Some(_) => Err("chunk_size must be given once"),
            };
            chunk.and_then(|c| number(rest, "invalid byte count").map(|n| Route::StreamBytes(n, c)))
        } else if let Some(rest) = path.strip_prefix("/close-delimited/") {
            number(rest, "invalid byte count").map(Route::CloseDelimited)
        } else if let Some(rest) = path.strip_prefix("/delay/") {
            number(rest, "invalid delay").map(|ms| Route::Delay(ms.min(MAX_DELAY_MS)))
        } else {
            Ok(Route::Anything)
        };
        route.unwrap_or_else(Route::BadParam)
    }
}

/// Serves one parsed request; `Ok(true)` keeps the connection for the next one.
fn handle(
    conn: &mut Conn<'_>,
    req: &Request,
    peer: SocketAddr,
    shared: &Shared,
) -> Result<bool, ConnError> {
    let (kind, framing_forces_close) = req.body_kind()?;
    let host = req.host()?;
    let mut body = BodyReader::new(kind);
    if req.expects_continue() && !body.is_done() {
        conn.write_all(CONTINUE)?;
    }
    let keep_alive =
        req.wants_keep_alive() && !framing_forces_close && !shared.stop.load(Ordering::SeqCst);
    let head_only = req.method == "HEAD";
    let (path, query) = req.path_and_query();
    let route = Route::parse(path, query);
    let reply = Reply::new(200, keep_alive, req.minor, &shared.backend);
    if let Route::Echo = route {
        shared.requests_served.fetch_add(1, Ordering::Relaxed);
        return echo(conn, &mut body, reply, head_only);
    }
    let captured = body.drain(conn, matches!(route, Route::Anything | Route::Delay(_)))?;
    if let Route::Delay(ms) = route {
        wait_until(Instant::now() + Duration::from_millis(ms), &shared.stop);
    }
    shared.requests_served.fetch_add(1, Ordering::Relaxed);
    match route {
        Route::Anything | Route::Delay(_) => {
            let json = anything_json(req, host.as_deref(), peer, &shared.backend, &captured);
            let mut text = serde_json::to_vec_pretty(&json)
                .map_err(|_| ConnError::Reject(500, "JSON encoding failed"))?;
            text.push(b'\n');
            send_body(conn, reply, Some("application/json"), &text, head_only)
        }
        Route::Status(code) => {
            let mut reply = Reply {
                status: code,
                ..reply
            };
            if code == 204 || code == 304 {
                reply.framing = Framing::NoBody;
            }
            send_body(conn, reply, None, b"", head_only)
        }
        Route::Bytes(n) => send_pattern(
            conn,
            Reply {
                framing: Framing::Length(n),
                ..reply
            },
            n,
            WRITE_CHUNK,
            head_only,
        ),
        Route::StreamBytes(n, chunk) => send_pattern(
            conn,
            Reply {
                framing: Framing::Chunked,
                ..reply
            },
            n,
            chunk,
            head_only,
        ),
        Route::CloseDelimited(n) => send_pattern(
            conn,
            Reply {
                framing: Framing::Close,
                ..reply
            },
            n,
            WRITE_CHUNK,
            head_only,
        ),
        Route::BadParam(reason) => {
            let reply = Reply {
                status: 400,
                ..reply
            };
            send_body(
                conn,
                reply,
                Some("text/plain"),
                format!("{reason}\n").as_bytes(),
                head_only,
            )
        }
        Route::Echo => Ok(false), // served above
    }
}

/// Waits without polling; returns early if the server stops.
fn wait_until(deadline: Instant, stop: &AtomicBool) {
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() || stop.load(Ordering::SeqCst) {
            return;
        }
        thread::park_timeout(left);
    }
}

fn anything_json(
    req: &Request,
    host: Option<&str>,
    peer: SocketAddr,
    backend: &str,
    body: &Captured,
) -> Value {
    let mut headers = Map::new();
    for (name, value) in &req.headers {
        let value = String::from_utf8_lossy(value).into_owned();
        let same = headers
            .keys()
            .find(|k| k.eq_ignore_ascii_case(name))
            .cloned();
        match same.and_then(|k| headers.get_mut(&k)) {
            Some(Value::String(joined)) => {
                joined.push_str(", ");
                joined.push_str(&value);
            }
            _ => {
                headers.insert(name.clone(), Value::String(value));
            }
        }
    }
    let (_, query) = req.path_and_query();
    let url = if req.target.starts_with('/') {
        format!("http://{}{}", host.unwrap_or(backend), req.target)
    } else {
        req.target.clone() // absolute-form (or `*`)
    };
    let data = body.data.as_deref().unwrap_or_default();
    let json = if data.is_empty() {
        Value::Null
    } else {
        serde_json::from_slice(data).unwrap_or(Value::Null)
    };
    let mut out = Map::new();
    out.insert("args".into(), Value::Object(parse_args(query)));
    out.insert(
        "data".into(),
        String::from_utf8_lossy(data).into_owned().into(),
    );
    out.insert("json".into(), json);
    out.insert("headers".into(), Value::Object(headers));
    out.insert("method".into(), req.method.clone().into());
    out.insert("origin".into(), peer.ip().to_string().into());
    out.insert("url".into(), url.into());
    out.insert("backend".into(), backend.into());
    out.insert("body_length".into(), body.length.into());
    Value::Object(out)
}

/// Query string → httpbin-style args: a string per name, a list when a name repeats.
fn parse_args(query: &str) -> Map<String, Value> {
    let mut args = Map::new();
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
        let value = Value::String(percent_decode(value));
        match args.get_mut(&percent_decode(name)) {
            Some(Value::Array(items)) => items.push(value),
            Some(first) => *first = Value::Array(vec![first.take(), value]),
            None => {
                args.insert(percent_decode(name), value);
            }
        }
    }
    args
}

/// `application/x-www-form-urlencoded` decoding: `+` is a space, bad `%` escapes stay as is.
fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = |at: usize| bytes.get(at).and_then(|&b| (b as char).to_digit(16));
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' => match (hex(i + 1), hex(i + 2)) {
                (Some(hi), Some(lo)) => {
                    out.push((hi * 16 + lo) as u8);
                    i += 2;
                }
                _ => out.push(b'%'),
            },
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

// === responses ===

#[derive(Clone, Copy, PartialEq)]
enum Framing {
    Length(u64),
    Chunked,
    /// No length: the body ends at the close.
    Close,
    /// 204/304: no body and no Content-Length.
    NoBody,
}

#[derive(Clone, Copy)]
struct Reply<'a> {
    status: u16,
    framing: Framing,
    keep_alive: bool,
    /// The request's HTTP minor version (1.0 clients get no chunking).
    minor: u8,
    backend: &'a str,
}

impl<'a> Reply<'a> {
    fn new(status: u16, keep_alive: bool, minor: u8, backend: &'a str) -> Reply<'a> {
        Reply {
            status,
            framing: Framing::Length(0),
            keep_alive,
            minor,
            backend,
        }
    }

    /// Encodes the head, first downgrading chunked to close-delimited for HTTP/1.0.
    fn encode(&mut self, content_type: Option<&str>) -> Vec<u8> {
        if self.framing == Framing::Chunked && self.minor == 0 {
            self.framing = Framing::Close;
        }
        if self.framing == Framing::Close {
            self.keep_alive = false;
        }
        let mut head = format!(
            "HTTP/1.1 {} {}\r\nDate: {}\r\nServer: strait-demo\r\nX-Backend: {}\r\n",
            self.status,
            reason(self.status),
            httpdate::fmt_http_date(SystemTime::now()),
            self.backend,
        );
        if let Some(content_type) = content_type {
            head.push_str(&format!("Content-Type: {content_type}\r\n"));
        }
        match self.framing {
            Framing::Length(n) => head.push_str(&format!("Content-Length: {n}\r\n")),
            Framing::Chunked => head.push_str("Transfer-Encoding: chunked\r\n"),
            Framing::Close | Framing::NoBody => {}
        }
        if !self.keep_alive {
            head.push_str("Connection: close\r\n");
        } else if self.minor == 0 {
            head.push_str("Connection: keep-alive\r\n");
        }
        head.push_str("\r\n");
        head.into_bytes()
    }
}

fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        201 => "Created",
        202 => "Accepted",
        204 => "No Content",
        206 => "Partial Content",
        301 => "Moved Permanently",
        302 => "Found",
        304 => "Not Modified",
        307 => "Temporary Redirect",
        308 => "Permanent Redirect",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        408 => "Request Timeout",
        413 => "Content Too Large",
        418 => "I'm a teapot",
        429 => "Too Many Requests",
        431 => "Request Header Fields Too Large",
        500 => "Internal Server Error",
        501 => "Not Implemented",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        504 => "Gateway Timeout",
        _ => "Unknown",
    }
}

/// A small body: head and body in one write.
fn send_body(
    conn: &mut Conn<'_>,
    mut reply: Reply<'_>,
    content_type: Option<&str>,
    body: &[u8],
    head_only: bool,
) -> Result<bool, ConnError> {
    if reply.framing != Framing::NoBody {
        reply.framing = Framing::Length(body.len() as u64);
    }
    let mut out = reply.encode(content_type);
    if !head_only && reply.framing != Framing::NoBody {
        out.extend_from_slice(body);
    }
    conn.write_all(&out)?;
    Ok(reply.keep_alive)
}

/// `n` bytes of [`pattern_bytes`], framed as `reply.framing` says, in pieces of `chunk`.
fn send_pattern(
    conn: &mut Conn<'_>,
    mut reply: Reply<'_>,
    n: u64,
    chunk: usize,
    head_only: bool,
) -> Result<bool, ConnError> {
    let mut out = reply.encode(Some("application/octet-stream"));
    let chunked = reply.framing == Framing::Chunked;
    let mut offset = 0u64;
    while !head_only && offset < n {
        let take = usize::try_from(n - offset).unwrap_or(usize::MAX).min(chunk);
        if chunked {
            out.extend_from_slice(format!("{take:x}\r\n").as_bytes());
        }
        let at = out.len();
        out.resize(at + take, 0);
        pattern_bytes(offset, &mut out[at..]);
        if chunked {
            out.extend_from_slice(b"\r\n");
        }
        offset += take as u64;
        if out.len() >= WRITE_CHUNK {
            conn.write_all(&out)?;
            out.clear();
        }
    }
    if chunked && !head_only {
        out.extend_from_slice(b"0\r\n\r\n");
    }
    if !out.is_empty() {
        conn.write_all(&out)?;
    }
    Ok(reply.keep_alive)
}

/// `/echo`: the head first, then each piece of the request body as it arrives.
fn echo(
    conn: &mut Conn<'_>,
    body: &mut BodyReader,
    mut reply: Reply<'_>,
    head_only: bool,
) -> Result<bool, ConnError> {
    reply.framing = Framing::Chunked;
    let head = reply.encode(Some("application/octet-stream"));
    conn.write_all(&head)?;
    let chunked = reply.framing == Framing::Chunked;
    let mut piece = vec![0u8; READ_BUF];
    let mut out = Vec::with_capacity(READ_BUF + 32);
    loop {
        let n = body.read(conn, &mut piece).map_err(after_head)?;
        if n == 0 {
            break;
        }
        if head_only {
            continue;
        }
        out.clear();
        if chunked {
            out.extend_from_slice(format!("{n:x}\r\n").as_bytes());
        }
        out.extend_from_slice(&piece[..n]);
        if chunked {
            out.extend_from_slice(b"\r\n");
        }
        conn.write_all(&out)?;
    }
    if chunked && !head_only {
        conn.write_all(b"0\r\n\r\n")?;
    }
    Ok(reply.keep_alive)
}

// === pattern data ===

/// SplitMix64's increment.
const GOLDEN_GAMMA: u64 = 0x9E37_79B9_7F4A_7C15;
/// Seed of the generator behind [`pattern_bytes`].
pub const PATTERN_SEED: u64 = 42;

/// Word `k` of the pattern: the `k`-th output (from 0) of SplitMix64 seeded with
/// [`PATTERN_SEED`].
fn pattern_word(k: u64) -> u64 {
    let mut z = PATTERN_SEED.wrapping_add(k.wrapping_add(1).wrapping_mul(GOLDEN_GAMMA));
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// Fills `out` with the deterministic data that `/bytes`, `/stream-bytes` and
/// `/close-delimited` serve, starting at byte `offset` of the stream.
///
/// Byte `i` depends only on `i`: it is byte `i % 8` (little-endian) of the `i / 8`-th output of
/// SplitMix64 seeded with [`PATTERN_SEED`], so any window can be produced independently.
pub fn pattern_bytes(offset: u64, out: &mut [u8]) {
    let skip = (offset % 8) as usize;
    let lead = if skip == 0 {
        0
    } else {
        (8 - skip).min(out.len())
    };
    let (head, rest) = out.split_at_mut(lead);
    if lead > 0 {
        head.copy_from_slice(&pattern_word(offset / 8).to_le_bytes()[skip..skip + lead]);
    }
    let mut k = offset.wrapping_add(lead as u64) / 8;
    let mut words = rest.chunks_exact_mut(8);
    for word in &mut words {
        word.copy_from_slice(&pattern_word(k).to_le_bytes());
        k = k.wrapping_add(1);
    }
    let tail = words.into_remainder();
    if !tail.is_empty() {
        let n = tail.len();
        tail.copy_from_slice(&pattern_word(k).to_le_bytes()[..n]);
    }
}

/// Whether `data` equals the pattern starting at `offset` (for checking streamed bodies
/// piece by piece without holding them).
pub fn pattern_matches(offset: u64, data: &[u8]) -> bool {
    let mut expected = [0u8; 4096];
    let mut at = offset;
    data.chunks(expected.len()).all(|piece| {
        let want = &mut expected[..piece.len()];
        pattern_bytes(at, want);
        at = at.wrapping_add(piece.len() as u64);
        want == piece
    })
}

#[cfg(test)]
mod tests;
