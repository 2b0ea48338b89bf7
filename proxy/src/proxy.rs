//! The life of a request, top-down.
//!
//! A client connection ([`serve`]) loops over exchanges: read and parse a request head in
//! the connection's buffer → route it with the worker's current view → pick an endpoint
//! (round-robin, skipping ones already tried) → take a pooled upstream connection or
//! connect → write the rewritten head (plus any body bytes already read, in one write) →
//! stream the rest of the request body → read the response head (forwarding 1xx) → write
//! the client head and stream the body → return the upstream connection to the pool.
//! An upgrade request answered with 101 ends the exchanges: the connection becomes a
//! tunnel (`proxy/tunnel.rs`) to that upstream connection. A CONNECT is routed by its
//! authority's host to a route that names CONNECT and, once connected to that route's
//! upstream, answered 200 and tunnelled the same way (`proxy/connect.rs`); otherwise
//! refused (405 with `Allow`, 404, 400).
//!
//! Runs on: a worker, one task per client connection. Touches only worker-local state
//! (`Rc`, `Cell`, `RefCell`); no lock, no shared atomic, no cross-thread channel. Every
//! read and write has a deadline. Bodies are streamed through reused buffers, never
//! held whole.

use std::borrow::Cow;
use std::cell::{Cell, RefCell};
use std::io;
use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::Arc;
use std::time::Instant;

use monoio::net::TcpStream;
use strait_discovery::route::{RouteEntry, RouteMatch};
use strait_discovery::spec::PassHost;

mod connect;
mod forward;
mod relay;
mod tunnel;

use crate::access_log::{AccessLog, Record};
use crate::config::HttpConfig;
use crate::http::head::{self, HostHeader};
use crate::http::reply::{write_reply, Reply};
use crate::http::{is_idempotent, BodyKind, HeadError};
use crate::metrics::{RouteStats, WorkerMetrics};
use crate::upstream::{Departures, Health, Pool, Table, View};
use crate::worker::signal::Signal;
use forward::forward;
use relay::{read_more, write_all};

/// Size of a body-streaming read (and of a `tcp` connection's buffers).
pub(crate) const READ_CHUNK: usize = 64 * 1024;
/// A body segment up to this size rides in the same write as its head.
const COALESCE: usize = 16 * 1024;
/// Largest upstream response head accepted.
const MAX_RESPONSE_HEAD: usize = 64 * 1024;
/// A client buffer above this capacity shrinks when its connection goes idle.
const IDLE_BUF_MAX: usize = 16 * 1024;
/// Buffers kept for reuse per worker.
const MAX_POOLED_BUFFERS: usize = 64;
/// Capacity of a head buffer (a connection's `out` and `cout`).
const HEAD_BUF: usize = 1024;
/// Spare head buffers kept per worker.
const MAX_SPARE_HEADS: usize = 256;

/// Everything a worker's connections share. One per worker, behind an `Rc`.
#[derive(Debug)]
pub struct Worker {
    pub id: usize,
    pub table: Table,
    pub pool: Pool,
    /// Endpoints this worker has seen refuse connections, and its ejections.
    pub health: Health,
    /// Endpoints its `tcp` connections are open to, told when they leave the table.
    pub departures: Departures,
    pub http: HttpConfig,
    pub access: Option<AccessLog>,
    /// This worker's counters and gauges (single writer: this worker).
    pub metrics: Arc<WorkerMetrics>,
    /// Fired when a graceful stop begins: accept loops stop, idle connections close,
    /// busy ones close after their current response.
    pub draining: Signal,
    /// Fired once `draining` fired, every listener is closed and the last client
    /// connection (those taken from the listeners' queues included) has ended.
    pub drained: Signal,
    /// Fired when a graceful stop's timeout passes: every connection still open drops
    /// its sockets at once. (A worker that returned with tasks still parked would leave
    /// them, and their sockets, open: the runtime does not drop them.)
    pub stop: Signal,
    /// Open client connections, counted from their accept (see [`Open`]).
    connections: Cell<usize>,
    /// Accept loops paused at `http.max_connections_per_worker`, woken when a
    /// connection closes.
    paused: RefCell<Vec<std::task::Waker>>,
    /// Listeners still open. The worker must not exit before its accept loops closed
    /// them: a listening socket left open stays in the SO_REUSEPORT group, and the
    /// kernel keeps queueing connections on it that nobody will accept.
    listeners: Cell<usize>,
    /// Spare 64 KiB buffers for response streaming.
    bufs: RefCell<Vec<Vec<u8>>>,
    /// Spare head buffers: an idle keep-alive connection lends its `out` and `cout`
    /// here, so that thousands of idle connections do not hold 2 KiB each.
    heads: RefCell<Vec<Vec<u8>>>,
}

impl Worker {
    pub fn new(
        id: usize,
        table: Table,
        http: HttpConfig,
        access: Option<AccessLog>,
        metrics: Arc<WorkerMetrics>,
    ) -> Worker {
        Worker {
            id,
            table,
            pool: Pool::new(metrics.clone()),
            metrics,
            health: Health::default(),
            departures: Departures::default(),
            http,
            access,
            draining: Signal::default(),
            drained: Signal::default(),
            stop: Signal::default(),
            connections: Cell::new(0),
            paused: RefCell::new(Vec::new()),
            listeners: Cell::new(0),
            bufs: RefCell::new(Vec::new()),
            heads: RefCell::new(Vec::new()),
        }
    }

    /// Open client connections.
    pub fn connections(&self) -> usize {
        self.connections.get()
    }

    /// Resolves once the worker has fewer open client connections than
    /// `http.max_connections_per_worker`: an accept loop waits on it before accepting.
    pub fn slot_free(&self) -> SlotFree<'_> {
        SlotFree(self)
    }

    /// Starts a graceful stop (see [`Worker::draining`]).
    pub fn drain(&self) {
        self.draining.fire();
        self.check_drained();
    }

    /// Counts a listener its accept loop now owns (before the loop is spawned).
    pub fn listener_opened(&self) {
        self.listeners.set(self.listeners.get() + 1);
    }

    /// Counts a listener closed by its accept loop, after the connections it took from
    /// the queue were counted (their [`Open`] guards exist).
    pub fn listener_closed(&self) {
        self.listeners.set(self.listeners.get() - 1);
        self.check_drained();
    }

    /// Fires `drained` when a graceful stop has nothing left to wait for.
    fn check_drained(&self) {
        if self.draining.is_fired() && self.listeners.get() == 0 && self.connections.get() == 0 {
            self.drained.fire();
        }
    }

    /// A spare 64 KiB buffer (or a new one).
    pub(crate) fn take_buf(&self) -> Vec<u8> {
        self.bufs
            .borrow_mut()
            .pop()
            .unwrap_or_else(|| Vec::with_capacity(READ_CHUNK))
    }

    /// Gives `c` its head buffers back, when it lent them while idle.
    fn lend_heads(&self, c: &mut Client) {
        let mut heads = self.heads.borrow_mut();
        for buf in [&mut c.out, &mut c.cout] {
            if buf.capacity() == 0 {
                *buf = heads.pop().unwrap_or_else(|| Vec::with_capacity(HEAD_BUF));
            }
        }
    }

    /// Takes an idle connection's head buffers (a grown one is dropped).
    fn reclaim_heads(&self, c: &mut Client) {
        let mut heads = self.heads.borrow_mut();
        for buf in [&mut c.out, &mut c.cout] {
            let mut buf = std::mem::take(buf);
            if buf.capacity() <= IDLE_BUF_MAX && heads.len() < MAX_SPARE_HEADS {
                buf.clear();
                heads.push(buf);
            }
        }
    }

    /// Keeps `buf` for reuse when it is a 64 KiB one and fewer than
    /// `MAX_POOLED_BUFFERS` are spare.
    pub(crate) fn give_buf(&self, mut buf: Vec<u8>) {
        if buf.capacity() >= READ_CHUNK {
            buf.clear();
            let mut bufs = self.bufs.borrow_mut();
            if bufs.len() < MAX_POOLED_BUFFERS {
                bufs.push(buf);
            }
        }
    }
}

/// The size of the future `serve` makes for a client connection on a worker with an
/// empty table (what an idle connection costs beyond its buffers and sockets).
#[cfg(test)]
pub(crate) fn connection_future_size<F: std::future::Future>(
    serve: impl FnOnce(TcpStream, SocketAddr, Open) -> F,
) -> usize {
    let mut rt = monoio::RuntimeBuilder::<monoio::LegacyDriver>::new()
        .enable_timer()
        .build()
        .expect("a legacy runtime");
    rt.block_on(async {
        let listener = monoio::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = listener.local_addr().expect("local address");
        let stream = TcpStream::connect_addr(addr).await.expect("connect");
        let snapshot = strait_discovery::TableBuilder::try_new(strait_discovery::Spec::default())
            .expect("an empty spec builds")
            .snapshot(Instant::now());
        let metrics = Arc::new(crate::metrics::WorkerMetrics::default());
        let w = Rc::new(Worker::new(
            0,
            Table::new(snapshot, 0, metrics.clone()),
            HttpConfig::default(),
            None,
            metrics,
        ));
        let fut = serve(stream, addr, Open::new(w));
        std::mem::size_of_val(&fut)
    })
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
#[derive(Debug)]
enum Next {
    KeepAlive,
    Close,
    /// The upstream switched protocols (101 sent to the client): tunnel from now on.
    Upgrade(tunnel::Upgraded),
}

/// Counts a client connection open from its accept for as long as it lives. Made by the
/// accept loop before it spawns the connection's task, so that a connection whose task
/// has not run yet still keeps a draining worker alive.
#[derive(Debug)]
pub struct Open(Rc<Worker>);

impl Open {
    pub fn new(w: Rc<Worker>) -> Open {
        w.connections.set(w.connections.get() + 1);
        w.metrics.client_connections.inc();
        Open(w)
    }

    /// The worker the connection is counted on.
    pub fn worker(&self) -> &Rc<Worker> {
        &self.0
    }
}

impl Drop for Open {
    fn drop(&mut self) {
        let w = &self.0;
        w.connections.set(w.connections.get() - 1);
        w.metrics.client_connections.dec();
        let paused = std::mem::take(&mut *w.paused.borrow_mut());
        for waker in paused {
            waker.wake();
        }
        w.check_drained();
    }
}

/// The future of [`Worker::slot_free`].
#[derive(Debug)]
pub struct SlotFree<'a>(&'a Worker);

impl std::future::Future for SlotFree<'_> {
    type Output = ();

    fn poll(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<()> {
        let w = self.0;
        if w.connections.get() < w.http.max_connections_per_worker {
            return std::task::Poll::Ready(());
        }
        let mut paused = w.paused.borrow_mut();
        if !paused.iter().any(|p| p.will_wake(cx.waker())) {
            paused.push(cx.waker().clone());
        }
        std::task::Poll::Pending
    }
}

/// Serves one client connection until it closes, errs or times out, or the worker stops
/// (then it is dropped where it stands, closing its sockets). Its first request is read
/// and answered even during a graceful stop (it was let in: accepted before the stop,
/// or taken from the listener's queue); later ones are not waited for.
pub async fn serve(stream: TcpStream, peer: SocketAddr, open: Open) {
    let w = open.0.clone();
    let _ = stream.set_nodelay(true);
    let mut c = Client {
        stream,
        peer,
        buf: Vec::with_capacity(4096),
        // Lent by the worker for each exchange (`Worker::lend_heads`).
        out: Vec::new(),
        cout: Vec::new(),
        record: Record::default(),
    };
    // The shutdown timeout drops the connection wherever it is.
    let upgraded = {
        let exchanges = std::pin::pin!(exchanges(&mut c, &w));
        monoio::select! {
            biased;
            up = exchanges => up,
            () = w.stop.wait() => None,
        }
    };
    if let Some(up) = upgraded {
        // Boxed: only upgraded connections pay for the tunnel's state. A graceful stop
        // lets a tunnel run until the shutdown timeout, which ends it.
        let Client { stream, buf, .. } = c;
        let tunnel = Box::pin(tunnel::run(stream, buf, up, &w));
        monoio::select! {
            biased;
            () = tunnel => {}
            () = w.stop.wait() => {}
        }
    }
}

/// The exchanges of one client connection, one after another while it is kept alive;
/// an upgraded connection's tunnel, when an exchange ends in one.
async fn exchanges(c: &mut Client, w: &Worker) -> Option<tunnel::Upgraded> {
    let mut first = true;
    loop {
        match exchange(c, w, first).await {
            Next::KeepAlive => {}
            Next::Close => return None,
            Next::Upgrade(up) => return Some(up),
        }
        first = false;
        // A body held for replay may have grown the buffer; idle connections stay small.
        if c.buf.capacity() > IDLE_BUF_MAX && c.buf.len() < IDLE_BUF_MAX / 4 {
            c.buf.shrink_to(IDLE_BUF_MAX / 4);
        }
        w.reclaim_heads(c);
    }
}

/// What a parsed request asks for, owned (the head's borrow of the buffer has ended).
struct Prepared<'v> {
    head_len: usize,
    /// The request asks to switch protocols (`Connection: upgrade`, see
    /// [`head::upgrade`]): a 101 answer starts a tunnel.
    upgrade: bool,
    minor: u8,
    head_only: bool,
    idempotent: bool,
    body: BodyKind,
    client_close: bool,
    expect_continue: bool,
    /// Most request body bytes accepted (0: no limit).
    max_body: u64,
    /// Where this request is counted: its route's stats, or the unrouted ones.
    stats: &'v RouteStats,
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
    /// A CONNECT to tunnel to the route's upstream.
    Connect { route: &'v RouteEntry },
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
            if let Err(e) = check_partial_head(&c.buf, limit, &w.http) {
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
        let (res, buf) = if c.buf.is_empty() && !first {
            // Idle between requests. A graceful stop closes the connection. (A new
            // connection waits for its first request instead: closing it unanswered
            // would fail a request its client may have sent already.)
            if w.draining.is_fired() {
                return Next::Close;
            }
            // Pinned here so that select! moves a pointer, not the read's state.
            let read = std::pin::pin!(read_more(&mut c.stream, std::mem::take(&mut c.buf), until));
            monoio::select! {
                biased;
                r = read => r,
                _ = w.draining.wait() => return Next::Close,
            }
        } else {
            read_more(&mut c.stream, std::mem::take(&mut c.buf), until).await
        };
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
    w.lend_heads(c);
    // The table is read only now that the request is here, so a connection that sat idle
    // through a reload routes with the current one.
    let view = w.table.view();
    let logging = w.access.is_some();
    let mut p = match parse_and_prepare(
        &c.buf,
        &w.http,
        c.peer,
        &view,
        &mut c.out,
        &mut c.record,
        logging,
    ) {
        Ok(p) => p,
        Err(e) => return reply_error(c, w, e, Instant::now()).await,
    };
    // During a graceful stop, this response is the connection's last.
    p.client_close |= w.draining.is_fired();
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
        Action::Connect { route } => connect::open(c, w, &view, &p, route, started).await,
    }
}

/// Parses a head that is not complete yet, for its errors only.
fn check_partial_head(buf: &[u8], limit: usize, http: &HttpConfig) -> Result<(), HeadError> {
    head::check_request_line(buf, http.max_request_line_bytes)?;
    let mut hb = head::header_buf();
    head::parse_request(buf, &mut hb[..limit]).map(|_| ())
}

/// Parses the complete head at the start of `buf` and prepares the exchange. Synchronous,
/// so the header array stays on this stack frame, out of the connection's future.
fn parse_and_prepare<'v>(
    buf: &[u8],
    http: &HttpConfig,
    peer: SocketAddr,
    view: &'v View,
    out: &mut Vec<u8>,
    record: &mut Record,
    logging: bool,
) -> Result<Prepared<'v>, HeadError> {
    head::check_request_line(buf, http.max_request_line_bytes)?;
    let mut hb = head::header_buf();
    let limit = http.max_headers.min(head::MAX_HEADERS);
    match head::parse_request(buf, &mut hb[..limit])? {
        // A head that arrived whole in one read is held to the same limit.
        Some(req) if req.len > http.max_request_head_bytes => {
            Err(HeadError::new(431, "request head too large"))
        }
        Some(req) => prepare(&req, http, peer, view, out, record, logging),
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
    http: &HttpConfig,
    peer: SocketAddr,
    view: &'v View,
    out: &mut Vec<u8>,
    record: &mut Record,
    logging: bool,
) -> Result<Prepared<'v>, HeadError> {
    if req.method == "CONNECT" {
        return prepare_connect(req, peer, view, record, logging);
    }
    let info = head::analyze_request(req)?;
    if logging {
        start_record(record, peer, info.host, req);
    }
    let mut p = Prepared {
        head_len: req.len,
        upgrade: head::upgrade(req, &info).is_some(),
        minor: req.minor,
        head_only: req.method == "HEAD",
        idempotent: is_idempotent(req.method),
        body: info.framing.body,
        client_close: info.framing.close,
        expect_continue: info.framing.expect_continue && req.minor == 1,
        max_body: http.max_request_body_bytes,
        stats: &view.unrouted,
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
            p.stats = &view.route_stats[route.stats as usize];
            p.max_body = route.max_body_bytes.unwrap_or(p.max_body);
            if let BodyKind::Length(n) = p.body {
                if p.max_body > 0 && n > p.max_body {
                    // Refused before reading the body; the connection closes.
                    p.action = Action::Reply {
                        status: 413,
                        body: "content too large: the request body is over the limit",
                        allow: None,
                    };
                    return Ok(p);
                }
            }
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

/// Validates and routes a CONNECT (CONFIG.md, "Upgrade (WebSocket) and CONNECT"): by its
/// authority's host, to the first route of that host that names CONNECT; never to the
/// authority itself. Every answer but the tunnel closes the connection: what the client
/// sent behind the head was meant for the tunnel, not read as requests.
fn prepare_connect<'v>(
    req: &head::Request<'_, '_>,
    peer: SocketAddr,
    view: &'v View,
    record: &mut Record,
    logging: bool,
) -> Result<Prepared<'v>, HeadError> {
    let authority = head::analyze_connect(req)?;
    if logging {
        start_record(record, peer, authority, req);
    }
    let action = match view.snapshot.router.lookup_connect(authority) {
        RouteMatch::NotFound => Action::Reply {
            status: 404,
            body: "not found: no service answers for this host",
            allow: None,
        },
        RouteMatch::MethodNotAllowed(set) => Action::Reply {
            status: 405,
            body: "method not allowed: no route of this host accepts CONNECT",
            allow: Some(set.names().collect::<Vec<_>>().join(", ")),
        },
        RouteMatch::Found(route) => Action::Connect { route },
    };
    let stats = match &action {
        Action::Connect { route } => &view.route_stats[route.stats as usize],
        _ => &view.unrouted,
    };
    Ok(Prepared {
        head_len: req.len,
        upgrade: false,
        minor: req.minor,
        head_only: false,
        idempotent: false,
        body: BodyKind::None,
        client_close: true,
        expect_continue: false,
        max_body: 0,
        stats,
        action,
    })
}

/// Fills the access-log fields a request head gives.
fn start_record(record: &mut Record, peer: SocketAddr, host: &str, req: &head::Request<'_, '_>) {
    record.clear();
    record.client = Some(peer);
    record.host.push_str(host);
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
    send_reply(c, w, &w.metrics.unrouted, &reply, started).await;
    Next::Close
}

/// Writes one of the proxy's own responses and logs it; false when the write failed.
async fn send_reply(
    c: &mut Client,
    w: &Worker,
    stats: &RouteStats,
    reply: &Reply<'_>,
    started: Instant,
) -> bool {
    c.out.clear();
    write_reply(&mut c.out, reply);
    let sent = c.out.len() as u64;
    let written = write_client(&mut c.stream, &mut c.out, w).await;
    log(c, w, stats, reply.status, sent, started);
    written
}

/// Writes all of `buf` (one of the client's reused buffers, which it keeps) to the
/// client, within `http.client_body_timeout`; false when the write failed.
async fn write_client(stream: &mut TcpStream, buf: &mut Vec<u8>, w: &Worker) -> bool {
    let (res, back) = write_all(stream, std::mem::take(buf), w.http.client_body_timeout).await;
    *buf = back;
    res.is_ok()
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
    let close = p.client_close || consumed.is_none() || w.draining.is_fired();
    let allow = match &p.action {
        Action::Reply { allow, .. } => allow.as_deref(),
        Action::Forward { .. } | Action::Connect { .. } => None,
    };
    let reply = Reply {
        status,
        body: reason,
        allow,
        close,
        head_only: p.head_only,
        http10: p.minor == 0,
    };
    let written = send_reply(c, w, p.stats, &reply, started).await;
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

/// Counts a finished request in `stats` and writes its access log line.
fn log(
    c: &mut Client,
    w: &Worker,
    stats: &RouteStats,
    status: u16,
    bytes_sent: u64,
    started: Instant,
) {
    let took = started.elapsed();
    stats.record(status, took);
    if let Some(access) = &w.access {
        c.record.status = status;
        c.record.bytes_sent = bytes_sent;
        c.record.request_time = took.as_secs_f64();
        access.write(&c.record);
        c.record.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What an idle keep-alive connection costs beyond its buffers: its task's future.
    #[test]
    fn a_connections_future_stays_small() {
        let size = connection_future_size(serve);
        eprintln!("serve future: {size} bytes");
        assert!(size <= 4096, "serve future: {size} bytes");
    }

    use proptest::prelude::*;

    use super::{check_partial_head, head_complete};
    use crate::config::HttpConfig;
    use crate::http::chunked::ChunkedDecoder;
    use crate::http::head::{analyze_request, header_buf, parse_request};
    use crate::http::BodyKind;

    /// What a parse says about a request: method, target, minor, header fields, head
    /// length, body framing.
    type Parsed = (String, String, u8, Vec<(String, Vec<u8>)>, usize, BodyKind);

    fn parse_whole(buf: &[u8]) -> Option<Parsed> {
        let mut hb = header_buf();
        let req = parse_request(buf, &mut hb).ok()??;
        let info = analyze_request(&req).ok()?;
        let headers = req
            .headers
            .iter()
            .map(|h| (h.name.to_owned(), h.value.to_vec()))
            .collect();
        Some((
            req.method.to_owned(),
            req.target.to_owned(),
            req.minor,
            headers,
            req.len,
            info.framing.body,
        ))
    }

    /// A valid request: head fields, then a body framed by Content-Length or chunked.
    fn valid_request() -> impl Strategy<Value = Vec<u8>> {
        let method = prop::sample::select(vec!["GET", "POST", "PUT", "DELETE", "PATCH"]);
        let path = "(/[a-zA-Z0-9._~%-]{0,12}){1,4}(\\?[a-z0-9=&]{0,16})?";
        let field = ("X-[A-Za-z0-9-]{1,12}", "[ -~]{0,40}");
        let body = prop::collection::vec(any::<u8>(), 0..200);
        let chunked = any::<bool>();
        let chunk = 1..50usize;
        (
            method,
            path,
            prop::collection::vec(field, 0..8),
            body,
            chunked,
            chunk,
            any::<bool>(),
        )
            .prop_map(|(method, path, fields, body, chunked, chunk, lead)| {
                let mut r = Vec::new();
                if lead {
                    r.extend_from_slice(b"\r\n");
                }
                r.extend_from_slice(
                    format!("{method} {path} HTTP/1.1\r\nHost: h.test\r\n").as_bytes(),
                );
                for (name, value) in fields {
                    r.extend_from_slice(format!("{name}: {}\r\n", value.trim()).as_bytes());
                }
                if chunked {
                    r.extend_from_slice(b"Transfer-Encoding: chunked\r\n\r\n");
                    for piece in body.chunks(chunk) {
                        r.extend_from_slice(format!("{:x}\r\n", piece.len()).as_bytes());
                        r.extend_from_slice(piece);
                        r.extend_from_slice(b"\r\n");
                    }
                    r.extend_from_slice(b"0\r\n\r\n");
                } else {
                    r.extend_from_slice(
                        format!("Content-Length: {}\r\n\r\n", body.len()).as_bytes(),
                    );
                    r.extend_from_slice(&body);
                }
                r
            })
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(512))]

        /// Reads the request in the pieces given by `cuts`, as the exchange loop does:
        /// incomplete heads pass the partial check, the head is complete exactly when
        /// its blank line arrived, and it parses as the whole does; a chunked body split
        /// the same way decodes to the same data.
        #[test]
        fn any_split_of_a_valid_request_parses_as_the_whole(
            raw in valid_request(),
            cuts in prop::collection::vec(any::<prop::sample::Index>(), 0..6),
        ) {
            let whole = parse_whole(&raw).expect("a valid request parses");
            let head_len = whole.4;
            let mut cuts: Vec<usize> = cuts.iter().map(|i| i.index(raw.len() + 1)).collect();
            cuts.push(raw.len());
            cuts.sort_unstable();
            let http = HttpConfig::default();
            let mut buf = Vec::new();
            let mut scanned = 0;
            let mut parsed = None;
            let mut prev = 0;
            for &cut in &cuts {
                buf.extend_from_slice(&raw[prev..cut]);
                prev = cut;
                if buf.is_empty() {
                    continue;
                }
                if head_complete(&buf, scanned) {
                    prop_assert!(buf.len() >= head_len);
                    parsed = parse_whole(&buf);
                    break;
                }
                scanned = buf.len();
                prop_assert!(buf.len() < head_len, "head end missed at {}", buf.len());
                prop_assert_eq!(check_partial_head(&buf, 100, &http), Ok(()));
            }
            prop_assert_eq!(parsed.as_ref(), Some(&whole));
            if whole.5 == BodyKind::Chunked {
                let body = &raw[head_len..];
                let mut whole_data = Vec::new();
                let p = ChunkedDecoder::new().feed(body, |r| whole_data.extend_from_slice(&body[r])).unwrap();
                prop_assert!(p.done);
                let mut d = ChunkedDecoder::new();
                let mut data = Vec::new();
                let mut start = 0;
                for &cut in cuts.iter().filter(|c| **c > head_len) {
                    let piece = &body[start..cut - head_len];
                    d.feed(piece, |r| data.extend_from_slice(&piece[r])).unwrap();
                    start = cut - head_len;
                }
                prop_assert!(d.is_done());
                prop_assert_eq!(data, whole_data);
            }
        }
    }

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
