//! The life of a request, top-down.
//!
//! A client connection ([`serve`]) loops over exchanges: read and parse a request head in
//! the connection's buffer → route it with the worker's current view → pick an endpoint
//! (round-robin, skipping ones already tried) → take a pooled upstream connection or
//! connect → write the rewritten head (plus any body bytes already read, in one write) →
//! stream the rest of the request body → read the response head (forwarding 1xx) → write
//! the client head and stream the body → return the upstream connection to the pool.
//!
//! Runs on: a worker, one task per client connection. Touches only worker-local state
//! (`Rc`, `Cell`, `RefCell`); no lock, no shared atomic, no cross-thread channel. Every
//! read and write has a deadline. Bodies are streamed through reused buffers, never
//! held whole.

use std::borrow::Cow;
use std::cell::RefCell;
use std::io;
use std::net::SocketAddr;
use std::rc::Rc;
use std::time::{Duration, Instant};

use monoio::buf::{IoBuf, IoBufMut};
use monoio::io::{AsyncReadRent, AsyncWriteRentExt};
use monoio::net::TcpStream;
use strait_discovery::route::{RouteEntry, RouteMatch};
use strait_discovery::spec::PassHost;
use strait_discovery::UpstreamStatus;

use crate::access_log::{AccessLog, Record};
use crate::config::HttpConfig;
use crate::error::{ErrorKind, ProxyError, Retry, Side};
use crate::http::chunked::ChunkedDecoder;
use crate::http::head::{self, ClientFraming, HostHeader};
use crate::http::reply::{write_reply, Reply};
use crate::http::{is_idempotent, BodyKind, HeadError};
use crate::upstream::{Pool, Table, UpstreamConn, View};

/// Size of a body-streaming read.
const READ_CHUNK: usize = 64 * 1024;
/// A body segment up to this size rides in the same write as its head.
const COALESCE: usize = 16 * 1024;
/// Largest upstream response head accepted.
const MAX_RESPONSE_HEAD: usize = 64 * 1024;
/// Buffers kept for reuse per worker.
const MAX_POOLED_BUFFERS: usize = 64;

/// Everything a worker's connections share. One per worker, behind an `Rc`.
#[derive(Debug)]
pub struct Worker {
    pub id: usize,
    pub table: Table,
    pub pool: Pool,
    pub http: HttpConfig,
    pub access: Option<AccessLog>,
    /// Spare 64 KiB buffers for response streaming.
    bufs: RefCell<Vec<Vec<u8>>>,
}

impl Worker {
    pub fn new(id: usize, table: Table, http: HttpConfig, access: Option<AccessLog>) -> Worker {
        Worker {
            id,
            table,
            pool: Pool::default(),
            http,
            access,
            bufs: RefCell::new(Vec::new()),
        }
    }

    fn take_buf(&self) -> Vec<u8> {
        self.bufs
            .borrow_mut()
            .pop()
            .unwrap_or_else(|| Vec::with_capacity(READ_CHUNK))
    }

    fn give_buf(&self, mut buf: Vec<u8>) {
        if buf.capacity() >= READ_CHUNK {
            buf.clear();
            let mut bufs = self.bufs.borrow_mut();
            if bufs.len() < MAX_POOLED_BUFFERS {
                bufs.push(buf);
            }
        }
    }
}

/// One client connection's state, reused across its requests.
struct Client {
    stream: TcpStream,
    peer: SocketAddr,
    /// Request bytes read and not yet consumed (head, body, pipelined requests).
    buf: Vec<u8>,
    /// The upstream request head (kept intact for retries) and the proxy's own replies.
    out: Vec<u8>,
    /// Response heads for the client.
    cout: Vec<u8>,
    record: Record,
}

/// What to do with the client connection after an exchange.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Next {
    KeepAlive,
    Close,
}

/// Serves one client connection until it closes, errs or times out.
pub async fn serve(stream: TcpStream, peer: SocketAddr, w: Rc<Worker>) {
    let _ = stream.set_nodelay(true);
    let mut c = Client {
        stream,
        peer,
        buf: Vec::with_capacity(4096),
        out: Vec::with_capacity(1024),
        cout: Vec::with_capacity(1024),
        record: Record::default(),
    };
    let mut first = true;
    while exchange(&mut c, &w, first).await == Next::KeepAlive {
        first = false;
    }
}

/// What a parsed request asks for, owned (the head's borrow of the buffer has ended).
struct Prepared<'v> {
    head_len: usize,
    minor: u8,
    head_only: bool,
    idempotent: bool,
    body: BodyKind,
    client_close: bool,
    expect_continue: bool,
    action: Action<'v>,
}

enum Action<'v> {
    Reply {
        status: u16,
        body: &'static str,
        allow: Option<String>,
    },
    Forward {
        route: &'v RouteEntry,
        head_base: usize,
        host_per_endpoint: bool,
    },
}

async fn exchange(c: &mut Client, w: &Worker, first: bool) -> Next {
    let limit = w.http.max_headers.min(head::MAX_HEADERS);
    // Idle keep-alive wait for the first byte; from the first byte on, the header timeout.
    let mut deadline: Option<Instant> = None;
    let mut scanned = 0;
    loop {
        if !c.buf.is_empty() {
            if head_complete(&c.buf, scanned) {
                break;
            }
            scanned = c.buf.len();
            // Incomplete: parse anyway so that garbage is refused before the head ends.
            if let Err(e) = check_partial_head(&c.buf, limit) {
                return reply_error(c, w, e, Instant::now()).await;
            }
            if c.buf.len() >= w.http.max_request_head_bytes {
                return reply_error(
                    c,
                    w,
                    HeadError::new(431, "request head too large"),
                    Instant::now(),
                )
                .await;
            }
        }
        let until = match deadline {
            Some(d) => d,
            None if c.buf.is_empty() && !first => Instant::now() + w.http.keepalive_timeout,
            None => {
                let d = Instant::now() + w.http.client_header_timeout;
                deadline = Some(d);
                d
            }
        };
        if c.buf.capacity() - c.buf.len() < 1024 {
            let grow = c.buf.capacity().max(4096);
            c.buf.reserve(grow);
        }
        let (res, buf) = read_more(&mut c.stream, std::mem::take(&mut c.buf), until).await;
        c.buf = buf;
        match res {
            Ok(0) => return Next::Close,
            Ok(_) => {
                if deadline.is_none() {
                    deadline = Some(Instant::now() + w.http.client_header_timeout);
                }
            }
            Err(e) if e.kind() == io::ErrorKind::TimedOut && deadline.is_some() => {
                return reply_error(
                    c,
                    w,
                    HeadError::new(408, "request head timed out"),
                    Instant::now(),
                )
                .await;
            }
            Err(_) => return Next::Close,
        }
    }
    // The table is read only now that the request is here, so a connection that sat idle
    // through a reload routes with the current one.
    let view = w.table.view();
    let logging = w.access.is_some();
    let p = match parse_and_prepare(
        &c.buf,
        limit,
        c.peer,
        &view,
        &mut c.out,
        &mut c.record,
        logging,
    ) {
        Ok(p) => p,
        Err(e) => return reply_error(c, w, e, Instant::now()).await,
    };
    let started = Instant::now();
    match p.action {
        Action::Reply { status, body, .. } => {
            // A request body we will not read makes the connection unusable.
            let consumed = p.body.is_empty().then_some(p.head_len);
            finish_with_status(c, w, &p, status, body, started, consumed).await
        }
        Action::Forward {
            route,
            head_base,
            host_per_endpoint,
        } => {
            forward(
                c,
                w,
                &view,
                &p,
                route,
                head_base,
                host_per_endpoint,
                started,
            )
            .await
        }
    }
}

/// Parses a head that is not complete yet, for its errors only.
fn check_partial_head(buf: &[u8], limit: usize) -> Result<(), HeadError> {
    let mut hb = head::header_buf();
    head::parse_request(buf, &mut hb[..limit]).map(|_| ())
}

/// Parses the complete head at the start of `buf` and prepares the exchange. Synchronous,
/// so the header array stays on this stack frame, out of the connection's future.
fn parse_and_prepare<'v>(
    buf: &[u8],
    limit: usize,
    peer: SocketAddr,
    view: &'v View,
    out: &mut Vec<u8>,
    record: &mut Record,
    logging: bool,
) -> Result<Prepared<'v>, HeadError> {
    let mut hb = head::header_buf();
    match head::parse_request(buf, &mut hb[..limit])? {
        Some(req) => prepare(&req, peer, view, out, record, logging),
        None => Err(HeadError::new(400, "malformed head")),
    }
}

/// True when `buf` holds a whole head: a blank line (CRLF CRLF, or bare LFs, which the
/// parser also accepts) after the first line. `from`: bytes already scanned. Leading
/// empty lines before the request line are skipped, as RFC 9112 §2.2 allows.
fn head_complete(buf: &[u8], from: usize) -> bool {
    let lead = buf
        .iter()
        .take_while(|b| **b == b'\r' || **b == b'\n')
        .count();
    let mut i = from.saturating_sub(3).max(lead);
    while let Some(pos) = buf[i..].iter().position(|b| *b == b'\n') {
        let j = i + pos;
        match (buf.get(j + 1), buf.get(j + 2)) {
            (Some(b'\n'), _) | (Some(b'\r'), Some(b'\n')) => return true,
            _ => i = j + 1,
        }
    }
    false
}

/// Validates the head, routes it and writes the upstream head's common part into `out`.
fn prepare<'v>(
    req: &head::Request<'_, '_>,
    peer: SocketAddr,
    view: &'v View,
    out: &mut Vec<u8>,
    record: &mut Record,
    logging: bool,
) -> Result<Prepared<'v>, HeadError> {
    let info = head::analyze_request(req)?;
    if logging {
        record.clear();
        record.client = Some(peer);
        record.host.push_str(info.host);
        record.request_line.push_str(req.method);
        record.request_line.push(' ');
        record.request_line.push_str(req.target);
        record.request_line.push_str(if req.minor == 0 {
            " HTTP/1.0"
        } else {
            " HTTP/1.1"
        });
        for h in req.headers {
            if h.name.eq_ignore_ascii_case("referer") {
                record.referer.push_str(&String::from_utf8_lossy(h.value));
            } else if h.name.eq_ignore_ascii_case("user-agent") {
                record
                    .user_agent
                    .push_str(&String::from_utf8_lossy(h.value));
            }
        }
    }
    let mut p = Prepared {
        head_len: req.len,
        minor: req.minor,
        head_only: req.method == "HEAD",
        idempotent: is_idempotent(req.method),
        body: info.framing.body,
        client_close: info.framing.close,
        expect_continue: info.framing.expect_continue && req.minor == 1,
        action: Action::Reply {
            status: 404,
            body: "not found: no route matches this host and path",
            allow: None,
        },
    };
    // Routing and the upstream see the path with dot segments resolved.
    let path = head::normalize_path(info.path)?;
    let target: Cow<'_, str> = match (&path, info.path_and_query.split_once('?')) {
        (Cow::Borrowed(_), _) => Cow::Borrowed(info.path_and_query),
        (Cow::Owned(p), Some((_, query))) => Cow::Owned(format!("{p}?{query}")),
        (Cow::Owned(p), None) => Cow::Owned(p.clone()),
    };
    match view.snapshot.router.lookup(info.host, &path, req.method) {
        RouteMatch::NotFound => {}
        RouteMatch::MethodNotAllowed(set) => {
            let allow = set.names().collect::<Vec<_>>().join(", ");
            p.action = Action::Reply {
                status: 405,
                body: "method not allowed on this route",
                allow: Some(allow),
            };
        }
        RouteMatch::Found(route) => {
            let upstream = &view.snapshot.upstreams[route.upstream as usize];
            let path: Cow<'_, str> = route.rewrite(&target);
            let (host, per_endpoint) = match &upstream.settings.pass_host {
                PassHost::Pass => (HostHeader::Pass, false),
                PassHost::Rewrite(h) => (HostHeader::Set(h), false),
                PassHost::Node => (HostHeader::Omit, true),
            };
            out.clear();
            head::write_upstream_head(out, req, &info, &path, peer.ip(), host);
            p.action = Action::Forward {
                route,
                head_base: out.len(),
                host_per_endpoint: per_endpoint,
            };
        }
    }
    Ok(p)
}

/// Answers a malformed or timed-out request and closes.
async fn reply_error(c: &mut Client, w: &Worker, e: HeadError, started: Instant) -> Next {
    if w.access.is_some() {
        c.record.clear();
        c.record.client = Some(c.peer);
    }
    let reply = Reply {
        status: e.status,
        body: e.reason,
        allow: None,
        close: true,
        head_only: false,
        http10: false,
    };
    send_reply(c, w, &reply, started).await;
    Next::Close
}

/// Writes one of the proxy's own responses and logs it; false when the write failed.
async fn send_reply(c: &mut Client, w: &Worker, reply: &Reply<'_>, started: Instant) -> bool {
    c.out.clear();
    write_reply(&mut c.out, reply);
    let sent = c.out.len() as u64;
    let (res, out) = write_all(
        &mut c.stream,
        std::mem::take(&mut c.out),
        w.http.client_body_timeout,
    )
    .await;
    c.out = out;
    log(c, w, reply.status, sent, started);
    res.is_ok()
}

/// Where the request body stands before the upstream exchange.
struct BodyState {
    /// End of the request bytes already in the client buffer.
    end: usize,
    /// The whole body is in the buffer (and in `out`), so the request can be replayed.
    complete: bool,
    remaining: u64,
    decoder: ChunkedDecoder,
}

#[allow(clippy::too_many_arguments)]
async fn forward(
    c: &mut Client,
    w: &Worker,
    view: &View,
    p: &Prepared<'_>,
    route: &RouteEntry,
    head_base: usize,
    host_per_endpoint: bool,
    started: Instant,
) -> Next {
    let idx = route.upstream;
    let upstream = &view.snapshot.upstreams[idx as usize];
    let unavailable = match &upstream.status {
        UpstreamStatus::NotSynced { .. } => {
            Some("service unavailable: discovery has not synced yet")
        }
        UpstreamStatus::RegistryDisabled { .. } => {
            Some("service unavailable: the upstream's registry is disabled or not configured")
        }
        UpstreamStatus::Ready if !upstream.has_endpoints() => {
            Some("service unavailable: the upstream has no endpoints")
        }
        UpstreamStatus::Ready => None,
    };
    let settings = &upstream.settings;

    // Body bytes that arrived with the head.
    let mut body = BodyState {
        end: p.head_len,
        complete: true,
        remaining: 0,
        decoder: ChunkedDecoder::new(),
    };
    match p.body {
        BodyKind::None | BodyKind::Close => {}
        BodyKind::Length(n) => {
            let avail = (c.buf.len() - p.head_len) as u64;
            body.end = p.head_len + avail.min(n) as usize;
            body.complete = avail >= n;
            body.remaining = n - avail.min(n);
        }
        BodyKind::Chunked => match body.decoder.feed(&c.buf[p.head_len..], |_| {}) {
            Ok(progress) => {
                body.end = p.head_len + progress.consumed;
                body.complete = progress.done;
            }
            Err(e) => return reply_error(c, w, HeadError::new(400, e.0), started).await,
        },
    }
    if let Some(reason) = unavailable {
        let consumed = body.complete.then_some(body.end);
        return finish_with_status(c, w, p, 503, reason, started, consumed).await;
    }
    let attempts = view.attempts(idx);
    let mut tried: Vec<SocketAddr> = Vec::new();
    let mut last = ProxyError::new(ErrorKind::ConnectRefused, Side::Upstream, Retry::Safe);
    let mut fresh_retry = false;
    let mut body_sent = false;
    while tried.len() < attempts {
        let Some(ep) = view.pick(idx, &tried) else {
            break;
        };
        // The request's start stands in for "now": microseconds off, one clock read less.
        let now = started;
        let pooled = if fresh_retry {
            None
        } else {
            w.pool.take(ep.addr, &settings.pool, now)
        };
        let mut conn = match pooled {
            Some(conn) => conn,
            None => match connect(ep.addr, settings.connect_timeout).await {
                Ok(stream) => UpstreamConn {
                    stream,
                    addr: ep.addr,
                    requests: 0,
                    reused: false,
                },
                Err(kind) => {
                    note_attempt(
                        c,
                        w,
                        ep.addr,
                        if kind == ErrorKind::ConnectTimeout {
                            504
                        } else {
                            502
                        },
                    );
                    tracing::debug!(endpoint = %ep.addr, ?kind, "connect failed");
                    last = ProxyError::new(kind, Side::Upstream, Retry::Safe);
                    tried.push(ep.addr);
                    fresh_retry = false;
                    continue;
                }
            },
        };
        fresh_retry = false;
        // The head, then any body bytes we already hold, in one write.
        c.out.truncate(head_base);
        if host_per_endpoint {
            c.out.extend_from_slice(b"Host: ");
            c.out.extend_from_slice(ep.addr.to_string().as_bytes());
            c.out.extend_from_slice(b"\r\n");
        }
        head::finish_upstream_head(&mut c.out, false);
        c.out.extend_from_slice(&c.buf[p.head_len..body.end]);
        let (res, out) = write_all(
            &mut conn.stream,
            std::mem::take(&mut c.out),
            settings.read_timeout,
        )
        .await;
        c.out = out;
        if res.is_err() {
            // A pooled connection the upstream closed: try again on a fresh one.
            if conn.reused {
                fresh_retry = true;
                continue;
            }
            note_attempt(c, w, ep.addr, 502);
            last = ProxyError::new(ErrorKind::UpstreamClosed, Side::Upstream, Retry::Safe);
            tried.push(ep.addr);
            continue;
        }
        if !body.complete {
            if p.expect_continue && !body_sent {
                let (res, _) = write_all(
                    &mut c.stream,
                    b"HTTP/1.1 100 Continue\r\n\r\n".to_vec(),
                    w.http.client_body_timeout,
                )
                .await;
                if res.is_err() {
                    return Next::Close;
                }
            }
            body_sent = true;
            let rest = if p.body == BodyKind::Chunked {
                BodyKind::Chunked
            } else {
                BodyKind::Length(body.remaining)
            };
            let mut empty = Vec::new();
            let relayed = relay(
                &mut c.stream,
                &mut conn.stream,
                std::mem::take(&mut c.buf),
                body.end,
                rest,
                Mode::Pass,
                &mut empty,
                Some(body.decoder.clone()),
                Timeouts {
                    read: w.http.client_body_timeout,
                    write: settings.read_timeout,
                },
                Side::Downstream,
            )
            .await;
            c.buf = relayed.buf;
            if let Err(e) = relayed.result {
                if e.side == Side::Downstream {
                    return Next::Close;
                }
                note_attempt(c, w, ep.addr, 502);
                let err = ProxyError::new(e.kind, Side::Upstream, Retry::No);
                return finish_with_status(c, w, p, err.status(), err.message(), started, None)
                    .await;
            }
            // The whole request is read: drop it from the buffer, keeping what follows.
            c.buf.drain(..relayed.end);
            body.end = 0;
        }
        let upstream_started = if w.access.is_some() {
            Instant::now()
        } else {
            started
        };
        match respond(
            c,
            w,
            p,
            &mut conn,
            settings.response_header_timeout,
            settings.read_timeout,
        )
        .await
        {
            Ok(outcome) => {
                if w.access.is_some() {
                    push_list(&mut c.record.upstream_addr, &conn.addr.to_string());
                    push_list(&mut c.record.upstream_status, &outcome.status.to_string());
                    c.record.upstream_time = upstream_started.elapsed().as_secs_f64();
                }
                if outcome.reuse_upstream {
                    w.pool.put(conn, &settings.pool, Instant::now());
                }
                c.buf.drain(..body.end);
                log(c, w, outcome.status, outcome.bytes_sent, started);
                return if outcome.keep_client {
                    Next::KeepAlive
                } else {
                    Next::Close
                };
            }
            Err(Failure::ClientGone) => return Next::Close,
            Err(Failure::AfterHeadSent { status, bytes_sent }) => {
                log(c, w, status, bytes_sent, started);
                return Next::Close;
            }
            Err(Failure::BeforeHead(e)) => {
                let replayable = body.complete && !body_sent;
                if conn.reused
                    && replayable
                    && e.kind == ErrorKind::UpstreamClosed
                    && (p.idempotent || p.body.is_empty())
                {
                    // The upstream closed an idle pooled connection as we reused it.
                    fresh_retry = true;
                    continue;
                }
                note_attempt(c, w, ep.addr, e.status());
                let consumed = if body_sent { Some(0) } else { Some(body.end) };
                return finish_with_status(c, w, p, e.status(), e.message(), started, consumed)
                    .await;
            }
        }
    }
    let consumed = if body_sent {
        Some(0)
    } else {
        body.complete.then_some(body.end)
    };
    finish_with_status(c, w, p, last.status(), last.message(), started, consumed).await
}

/// Answers with the proxy's own status (with the route's `Allow` for a 405). `consumed`:
/// how many bytes of the client buffer the request occupied, when it was read whole (then
/// the connection can be kept).
async fn finish_with_status(
    c: &mut Client,
    w: &Worker,
    p: &Prepared<'_>,
    status: u16,
    reason: &str,
    started: Instant,
    consumed: Option<usize>,
) -> Next {
    let close = p.client_close || consumed.is_none();
    let allow = match &p.action {
        Action::Reply { allow, .. } => allow.as_deref(),
        Action::Forward { .. } => None,
    };
    let reply = Reply {
        status,
        body: reason,
        allow,
        close,
        head_only: p.head_only,
        http10: p.minor == 0,
    };
    let written = send_reply(c, w, &reply, started).await;
    if let Some(n) = consumed {
        c.buf.drain(..n.min(c.buf.len()));
    }
    if !written || close {
        Next::Close
    } else {
        Next::KeepAlive
    }
}

fn push_list(list: &mut String, item: &str) {
    if !list.is_empty() {
        list.push_str(", ");
    }
    list.push_str(item);
}

fn note_attempt(c: &mut Client, w: &Worker, addr: SocketAddr, status: u16) {
    if w.access.is_some() {
        push_list(&mut c.record.upstream_addr, &addr.to_string());
        push_list(&mut c.record.upstream_status, &status.to_string());
    }
}

fn log(c: &mut Client, w: &Worker, status: u16, bytes_sent: u64, started: Instant) {
    if let Some(access) = &w.access {
        c.record.status = status;
        c.record.bytes_sent = bytes_sent;
        c.record.request_time = started.elapsed().as_secs_f64();
        access.write(&c.record);
        c.record.clear();
    }
}

/// How a response exchange ended.
struct Outcome {
    status: u16,
    bytes_sent: u64,
    keep_client: bool,
    reuse_upstream: bool,
}

enum Failure {
    /// Nothing was sent to the client yet; the caller answers or retries.
    BeforeHead(ProxyError),
    /// The response head went out; the connection can only be closed.
    AfterHeadSent {
        status: u16,
        bytes_sent: u64,
    },
    ClientGone,
}

/// Reads the response head (forwarding interim 1xx responses), then streams the
/// response to the client.
async fn respond(
    c: &mut Client,
    w: &Worker,
    p: &Prepared<'_>,
    conn: &mut UpstreamConn,
    head_timeout: Duration,
    io_timeout: Duration,
) -> Result<Outcome, Failure> {
    let mut ub = w.take_buf();
    let until = Instant::now() + head_timeout;
    let mut bytes_sent = 0u64;
    loop {
        if !ub.is_empty() {
            // Parsed synchronously: the header array never lives in this future's state.
            match response_head(&ub, p, &mut c.cout) {
                Err(e) => return Err(Failure::BeforeHead(e)),
                Ok(None) => {}
                Ok(Some(UpHead::Interim { len, forward })) => {
                    if forward {
                        let (res, out) = write_all(
                            &mut c.stream,
                            std::mem::take(&mut c.cout),
                            w.http.client_body_timeout,
                        )
                        .await;
                        c.cout = out;
                        if res.is_err() {
                            return Err(Failure::ClientGone);
                        }
                    }
                    ub.drain(..len);
                    continue;
                }
                Ok(Some(UpHead::Final(h))) => {
                    let mut head_out = std::mem::take(&mut c.cout);
                    let head_bytes = head_out.len() as u64;
                    let relayed = relay(
                        &mut conn.stream,
                        &mut c.stream,
                        ub,
                        h.head_len,
                        h.body,
                        h.mode,
                        &mut head_out,
                        None,
                        Timeouts {
                            read: io_timeout,
                            write: w.http.client_body_timeout,
                        },
                        Side::Upstream,
                    )
                    .await;
                    head_out.clear();
                    c.cout = head_out;
                    bytes_sent += head_bytes + relayed.written;
                    let clean = relayed.result.is_ok() && relayed.end == relayed.buf.len();
                    w.give_buf(relayed.buf);
                    let status = h.status;
                    return match relayed.result {
                        Ok(()) => Ok(Outcome {
                            status,
                            bytes_sent,
                            keep_client: h.keep_client,
                            reuse_upstream: h.upstream_reusable && clean,
                        }),
                        Err(e) => {
                            if e.side == Side::Upstream {
                                tracing::warn!(endpoint = %conn.addr, kind = ?e.kind, "upstream failed mid-response");
                            }
                            if relayed.head_sent {
                                Err(Failure::AfterHeadSent { status, bytes_sent })
                            } else if e.side == Side::Downstream {
                                Err(Failure::ClientGone)
                            } else {
                                Err(Failure::BeforeHead(ProxyError::new(
                                    e.kind,
                                    Side::Upstream,
                                    Retry::No,
                                )))
                            }
                        }
                    };
                }
            }
            if ub.len() >= MAX_RESPONSE_HEAD {
                return Err(Failure::BeforeHead(bad_response()));
            }
        }
        if ub.capacity() - ub.len() < 1024 {
            ub.reserve(READ_CHUNK);
        }
        let (res, buf) = read_more(&mut conn.stream, ub, until).await;
        ub = buf;
        match res {
            Ok(0) => {
                w.give_buf(ub);
                return Err(Failure::BeforeHead(ProxyError::new(
                    ErrorKind::UpstreamClosed,
                    Side::Upstream,
                    Retry::IfIdempotent,
                )));
            }
            Ok(_) => {}
            Err(e) => {
                let kind = if e.kind() == io::ErrorKind::TimedOut {
                    ErrorKind::ResponseTimeout
                } else {
                    ErrorKind::UpstreamClosed
                };
                w.give_buf(ub);
                return Err(Failure::BeforeHead(ProxyError::new(
                    kind,
                    Side::Upstream,
                    Retry::IfIdempotent,
                )));
            }
        }
    }
}

/// A parsed upstream response head, reduced to what streaming the response needs.
enum UpHead {
    /// A 1xx: `len` bytes to drop; `forward`: its head is in `cout` for the client.
    Interim {
        len: usize,
        forward: bool,
    },
    Final(FinalHead),
}

struct FinalHead {
    status: u16,
    head_len: usize,
    body: BodyKind,
    mode: Mode,
    keep_client: bool,
    upstream_reusable: bool,
}

/// Parses the response head in `ub` and writes the client's head (or the interim
/// head to forward) into `cout`. `Ok(None)`: incomplete.
fn response_head(
    ub: &[u8],
    p: &Prepared<'_>,
    cout: &mut Vec<u8>,
) -> Result<Option<UpHead>, ProxyError> {
    let mut hb = head::header_buf();
    let resp = match head::parse_response(ub, &mut hb) {
        Ok(Some(resp)) => resp,
        Ok(None) if ub.len() >= MAX_RESPONSE_HEAD => return Err(bad_response()),
        Ok(None) => return Ok(None),
        Err(_) => return Err(bad_response()),
    };
    if (100..200).contains(&resp.status) {
        if resp.status == 101 {
            return Err(bad_response());
        }
        let forward = p.minor == 1;
        if forward {
            cout.clear();
            head::write_interim_head(cout, &resp);
        }
        return Ok(Some(UpHead::Interim {
            len: resp.len,
            forward,
        }));
    }
    let framing = head::analyze_response(&resp).map_err(|_| bad_response())?;
    let status = resp.status;
    let no_body = p.head_only || status == 204 || status == 304;
    let body = if no_body {
        BodyKind::None
    } else {
        framing.body
    };
    let (client_framing, mode) = match (body, p.minor) {
        (BodyKind::None, _) => (ClientFraming::None, Mode::Pass),
        (BodyKind::Length(n), _) => (ClientFraming::Length(n), Mode::Pass),
        (BodyKind::Chunked, 1) => (ClientFraming::Chunked, Mode::Pass),
        (BodyKind::Chunked, _) => (ClientFraming::Close, Mode::Dechunk),
        (BodyKind::Close, 1) => (ClientFraming::Chunked, Mode::Chunk),
        (BodyKind::Close, _) => (ClientFraming::Close, Mode::Pass),
    };
    let keep_client = !p.client_close && client_framing != ClientFraming::Close;
    cout.clear();
    head::write_client_head(cout, &resp, &framing, client_framing, keep_client, p.minor);
    Ok(Some(UpHead::Final(FinalHead {
        status,
        head_len: resp.len,
        body,
        mode,
        keep_client,
        // A bodiless 204/304 or HEAD response leaves the connection reusable.
        upstream_reusable: !framing.conn_close && body != BodyKind::Close,
    })))
}

fn bad_response() -> ProxyError {
    ProxyError::new(ErrorKind::BadResponse, Side::Upstream, Retry::No)
}

/// How body bytes are re-framed on the way.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    /// Unchanged (framing passed through).
    Pass,
    /// Chunked in, raw data out (to an HTTP/1.0 client).
    Dechunk,
    /// Close-delimited in, chunked out (to an HTTP/1.1 client).
    Chunk,
}

#[derive(Debug, Clone, Copy)]
struct Timeouts {
    read: Duration,
    write: Duration,
}

#[derive(Debug, Clone, Copy)]
struct RelayError {
    side: Side,
    kind: ErrorKind,
}

struct Relayed {
    buf: Vec<u8>,
    /// Index in `buf` just past the body (later bytes belong to the next message).
    end: usize,
    /// Body bytes written to the destination.
    written: u64,
    /// The `head` given to [`relay`] was written.
    head_sent: bool,
    result: Result<(), RelayError>,
}

/// Streams one body from `src` to `dst` through `buf`, starting with the bytes at
/// `buf[start..]`, re-framing per `mode`. A non-empty `head` is written first, in the
/// same write as the first body segment when that is small.
#[allow(clippy::too_many_arguments)]
async fn relay(
    src: &mut TcpStream,
    dst: &mut TcpStream,
    mut buf: Vec<u8>,
    mut start: usize,
    body: BodyKind,
    mode: Mode,
    head: &mut Vec<u8>,
    decoder: Option<ChunkedDecoder>,
    t: Timeouts,
    src_side: Side,
) -> Relayed {
    let dst_side = if src_side == Side::Upstream {
        Side::Downstream
    } else {
        Side::Upstream
    };
    let src_err = |timeout: bool| RelayError {
        side: src_side,
        kind: match (src_side, timeout) {
            (Side::Upstream, true) => ErrorKind::UpstreamIoTimeout,
            (Side::Upstream, false) => ErrorKind::UpstreamClosed,
            (_, true) => ErrorKind::ClientTimeout,
            (_, false) => ErrorKind::ClientIo,
        },
    };
    let dst_err = RelayError {
        side: dst_side,
        kind: if dst_side == Side::Upstream {
            ErrorKind::UpstreamClosed
        } else {
            ErrorKind::ClientIo
        },
    };
    let mut remaining = match body {
        BodyKind::Length(n) => n,
        _ => 0,
    };
    let mut decoder = decoder.unwrap_or_default();
    let mut written = 0u64;
    let mut head_sent = head.is_empty();
    let head_initial = head.len() as u64;
    let mut eof = false;
    loop {
        let avail = buf.len() - start;
        // 1. Take the body's part of what is buffered.
        let (seg_end, done) = match body {
            BodyKind::None => (start, true),
            BodyKind::Length(_) => {
                let take = remaining.min(avail as u64) as usize;
                remaining -= take as u64;
                (start + take, remaining == 0)
            }
            BodyKind::Chunked => {
                let input = &buf[start..];
                let fed = if mode == Mode::Dechunk {
                    decoder.feed(input, |r| head.extend_from_slice(&input[r]))
                } else {
                    decoder.feed(input, |_| {})
                };
                match fed {
                    Ok(progress) => (start + progress.consumed, progress.done),
                    Err(_) => {
                        return Relayed {
                            buf,
                            end: start,
                            written,
                            head_sent,
                            result: Err(RelayError {
                                side: src_side,
                                kind: if src_side == Side::Upstream {
                                    ErrorKind::BadResponse
                                } else {
                                    ErrorKind::ClientIo
                                },
                            }),
                        };
                    }
                }
            }
            BodyKind::Close => (buf.len(), eof),
        };
        // 2. Write it (re-framed as needed), coalesced with any pending head.
        let seg = seg_end - start;
        let mut direct = false;
        match mode {
            Mode::Pass => {
                if head.is_empty() {
                    direct = seg > 0;
                } else if seg <= COALESCE {
                    head.extend_from_slice(&buf[start..seg_end]);
                } else {
                    direct = true;
                }
            }
            Mode::Dechunk => {}
            Mode::Chunk => {
                if seg > 0 {
                    head.extend_from_slice(format!("{seg:x}\r\n").as_bytes());
                    head.extend_from_slice(&buf[start..seg_end]);
                    head.extend_from_slice(b"\r\n");
                }
                if done {
                    head.extend_from_slice(b"0\r\n\r\n");
                }
            }
        }
        if !head.is_empty() {
            let n = head.len() as u64;
            let (res, h) = write_all(dst, std::mem::take(head), t.write).await;
            *head = h;
            head.clear();
            if res.is_err() {
                return Relayed {
                    buf,
                    end: start,
                    written,
                    head_sent,
                    result: Err(dst_err),
                };
            }
            written += if head_sent { n } else { n - head_initial };
            head_sent = true;
        }
        if direct {
            let (res, b) = write_range(dst, buf, start..seg_end, t.write).await;
            buf = b;
            if res.is_err() {
                return Relayed {
                    buf,
                    end: start,
                    written,
                    head_sent,
                    result: Err(dst_err),
                };
            }
            written += seg as u64;
        }
        start = seg_end;
        if done {
            return Relayed {
                buf,
                end: start,
                written,
                head_sent,
                result: Ok(()),
            };
        }
        // 3. Everything buffered was consumed: read more.
        buf.clear();
        start = 0;
        if buf.capacity() < READ_CHUNK {
            buf.reserve(READ_CHUNK);
        }
        let (res, b) = read_more(src, buf, Instant::now() + t.read).await;
        buf = b;
        match res {
            Ok(0) if body == BodyKind::Close => eof = true,
            Ok(0) => {
                return Relayed {
                    buf,
                    end: 0,
                    written,
                    head_sent,
                    result: Err(src_err(false)),
                }
            }
            Ok(_) => {}
            Err(e) => {
                return Relayed {
                    buf,
                    end: 0,
                    written,
                    head_sent,
                    result: Err(src_err(e.kind() == io::ErrorKind::TimedOut)),
                };
            }
        }
    }
}

/// Connects with a deadline; TCP_NODELAY on.
async fn connect(addr: SocketAddr, limit: Duration) -> Result<TcpStream, ErrorKind> {
    match monoio::time::timeout(limit, TcpStream::connect_addr(addr)).await {
        Ok(Ok(stream)) => {
            let _ = stream.set_nodelay(true);
            Ok(stream)
        }
        Ok(Err(_)) => Err(ErrorKind::ConnectRefused),
        Err(_) => Err(ErrorKind::ConnectTimeout),
    }
}

/// Reads into the spare capacity of `buf`, appending. On timeout the buffer is lost
/// with the cancelled operation, so an empty one comes back.
async fn read_more(
    stream: &mut TcpStream,
    buf: Vec<u8>,
    until: Instant,
) -> (io::Result<usize>, Vec<u8>) {
    let len = buf.len();
    let cap = buf.capacity();
    let deadline = monoio::time::Instant::from_std(until);
    match monoio::time::timeout_at(deadline, stream.read(buf.slice_mut(len..cap))).await {
        Ok((res, slice)) => (res, slice.into_inner()),
        Err(_) => (Err(io::ErrorKind::TimedOut.into()), Vec::new()),
    }
}

async fn write_all(
    stream: &mut TcpStream,
    buf: Vec<u8>,
    limit: Duration,
) -> (io::Result<()>, Vec<u8>) {
    if buf.is_empty() {
        return (Ok(()), buf);
    }
    match monoio::time::timeout(limit, stream.write_all(buf)).await {
        Ok((res, buf)) => (res.map(|_| ()), buf),
        Err(_) => (Err(io::ErrorKind::TimedOut.into()), Vec::new()),
    }
}

async fn write_range(
    stream: &mut TcpStream,
    buf: Vec<u8>,
    range: std::ops::Range<usize>,
    limit: Duration,
) -> (io::Result<()>, Vec<u8>) {
    match monoio::time::timeout(limit, stream.write_all(buf.slice(range))).await {
        Ok((res, slice)) => (res.map(|_| ()), slice.into_inner()),
        Err(_) => (Err(io::ErrorKind::TimedOut.into()), Vec::new()),
    }
}

#[cfg(test)]
mod tests {
    use super::head_complete;

    #[test]
    fn a_head_is_complete_at_its_blank_line_however_it_was_read() {
        let head = b"\r\nGET / HTTP/1.1\r\nHost: a\r\n\r\nBODY";
        let end = head.len() - 4;
        for cut in 0..=head.len() {
            // Scanning resumes where the last (incomplete) read ended.
            for from in (0..=cut).filter(|f| !head_complete(&head[..*f], 0)) {
                assert_eq!(
                    head_complete(&head[..cut], from),
                    cut >= end,
                    "cut {cut} from {from}"
                );
            }
        }
        assert!(head_complete(b"GET / HTTP/1.1\nHost: a\n\n", 0));
        assert!(
            !head_complete(b"\r\n\r\n", 0),
            "leading empty lines are not a head"
        );
    }
}
