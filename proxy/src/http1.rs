//! HTTP/1.1 (and 1.0) from clients: the life of a request, top-down, one file per step.
//!
//! - this file: the connection ([`serve`]): it loops over exchanges while the client
//!   keeps it alive, reading each request head with the shared head reader
//!   ([`crate::http::head::HeadReader`]) within the idle and header timeouts;
//! - `prepare.rs`: parse the head, route it with the worker's current view, and decide
//!   (`prepare::Action`): reply ourselves (404, 405, 413…), forward, or open a CONNECT;
//! - `exchange.rs`: the `Exchange` that carries one request from there to
//!   its end, and the finishing steps every path ends with (the proxy's own reply, the
//!   metrics, the access log line);
//! - `forward.rs`: pick an endpoint (round-robin, skipping ones already tried), take a
//!   pooled upstream connection or connect, write the rewritten head (plus body bytes
//!   already read, in one write), stream the rest of the body, retry where safe;
//! - `respond.rs`: read the response head (forwarding 1xx), write the client's head and
//!   stream the body back, then return the upstream connection to the pool;
//! - `relay.rs`: one body streamed between two transports through a reused buffer,
//!   re-framed on the way (chunked ↔ close-delimited);
//! - `h2up.rs`: a request to an `h2`/`h2c` upstream, sent as an HTTP/2 stream (body held
//!   whole) and its response streamed back as HTTP/1.1;
//! - `connect.rs` and `tunnel.rs`: a CONNECT routed to a route that names it, and any
//!   connection that switched protocols (101, or CONNECT's 200), copied both ways.
//!
//! Everything is written over [`Transport`]: the client side is any stream a listener
//! accepts (TCP, Unix, TLS over either), the upstream side an [`crate::transport::UpstreamStream`] (plain or TLS).
//!
//! Runs on: a worker, one task per client connection. Touches only worker-local state
//! (`Rc`, `Cell`, `RefCell`); no lock, no shared atomic, no cross-thread channel. Every
//! read and write has a deadline. Bodies are streamed through reused buffers, never held
//! whole.

use std::io;
use std::rc::Rc;
use std::time::Instant;

use crate::access_log::Record;
use crate::http::head::HeadReader;
use crate::http::HeadError;
use crate::real_ip::Cidr;
use crate::tls::TlsFacts;
use crate::transport::deadline::{read_more, Timer};
use crate::transport::{ClientAddr, Transport};
use crate::worker::{Open, Worker};

mod connect;
mod exchange;
mod forward;
mod h2up;
mod prepare;
mod relay;
mod respond;
mod tunnel;

use exchange::{reply_error, Exchange};
use prepare::Action;

/// A client buffer above this capacity shrinks when its connection goes idle.
const IDLE_BUF_MAX: usize = 16 * 1024;

/// One client connection's state, reused across its requests.
struct Client<S> {
    stream: S,
    peer: ClientAddr,
    /// The listener's `trusted_proxies`.
    trusted: Rc<[Cidr]>,
    /// The current request's id (`http.request_id`), empty when off.
    request_id: Vec<u8>,
    /// The current request's rewritten path, when it has one (reused).
    path_buf: String,
    /// Request bytes read and not yet consumed (head, body, pipelined requests).
    buf: Vec<u8>,
    /// The upstream request head (kept intact for retries) and the proxy's own replies.
    out: Vec<u8>,
    /// Response heads for the client.
    cout: Vec<u8>,
    record: Record,
    /// Bounds every wait of this connection's task, one at a time.
    timer: Timer,
}

/// What to do with the client connection after an exchange.
#[derive(Debug)]
enum Next {
    KeepAlive,
    Close,
    /// The upstream switched protocols (101 sent to the client): tunnel from now on.
    Upgrade(tunnel::Upgraded),
    /// The connection opened with the HTTP/2 preface (h2c with prior knowledge).
    Http2,
}

/// What a connection turns into after its HTTP/1.1 exchanges, if anything.
enum Handoff {
    Tunnel(tunnel::Upgraded),
    Http2,
}

/// Serves one client connection until it closes, errs or times out, or the worker stops
/// (then it is dropped where it stands, closing its sockets). Its first request is read
/// and answered even during a graceful stop (it was let in: accepted before the stop,
/// or taken from the listener's queue); later ones are not waited for.
///
/// `tls`: what the TLS listener's handshake found (the connection is HTTPS: the upstream
/// is told `X-Forwarded-Proto: https`, the access log gets the version and SNI).
pub async fn serve<S: Transport>(stream: S, peer: ClientAddr, open: Open, tls: Option<TlsFacts>) {
    let w = open.worker().clone();
    stream.set_nodelay();
    let mut c = Client {
        stream,
        peer,
        trusted: open.trusted().clone(),
        request_id: Vec::new(),
        path_buf: String::new(),
        buf: Vec::with_capacity(4096),
        // Lent by the worker for each exchange (`Worker::lend_head`).
        out: Vec::new(),
        cout: Vec::new(),
        record: Record {
            tls,
            ..Record::default()
        },
        timer: Timer::new(),
    };
    // The shutdown timeout drops the connection wherever it is.
    let handoff = {
        let exchanges = std::pin::pin!(exchanges(&mut c, &w));
        monoio::select! {
            biased;
            up = exchanges => up,
            () = w.stop.wait() => None,
        }
    };
    if let Some(Handoff::Http2) = handoff {
        let Client {
            stream,
            buf,
            record,
            ..
        } = c;
        // Boxed: only HTTP/2 connections carry its state.
        return Box::pin(crate::h2::serve(stream, buf, peer, open, record.tls)).await;
    }
    if let Some(Handoff::Tunnel(up)) = handoff {
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
/// an upgraded connection's tunnel, when an exchange ends in one, or HTTP/2.
async fn exchanges<S: Transport>(c: &mut Client<S>, w: &Worker) -> Option<Handoff> {
    let mut first = true;
    loop {
        match exchange(c, w, first).await {
            Next::KeepAlive => {}
            Next::Close => return None,
            Next::Upgrade(up) => return Some(Handoff::Tunnel(up)),
            Next::Http2 => return Some(Handoff::Http2),
        }
        first = false;
        // A body held for replay may have grown the buffer; idle connections stay small.
        if c.buf.capacity() > IDLE_BUF_MAX && c.buf.len() < IDLE_BUF_MAX / 4 {
            c.buf.shrink_to(IDLE_BUF_MAX / 4);
        }
        w.reclaim_head(&mut c.out);
        w.reclaim_head(&mut c.cout);
    }
}

/// One exchange: waits for a whole request head, prepares it, and carries it out.
async fn exchange<S: Transport>(c: &mut Client<S>, w: &Worker, first: bool) -> Next {
    if let Err(next) = read_head(c, w, first).await {
        return next;
    }
    w.lend_head(&mut c.out);
    w.lend_head(&mut c.cout);
    // The table is read only now that the request is here, so a connection that sat idle
    // through a reload routes with the current one.
    let view = w.upstreams.table.view();
    let (mut req, action) = match prepare::prepare(c, w, &view) {
        Ok(p) => p,
        Err(e) => return reply_error(c, w, e, Instant::now()).await,
    };
    // During a graceful stop, this response is the connection's last.
    req.client_close |= w.draining.is_fired();
    let mut x = Exchange {
        c,
        w,
        view: &view,
        req,
        started: Instant::now(),
    };
    match action {
        Action::Reply {
            status,
            body,
            allow,
        } => {
            // A request body we will not read makes the connection unusable.
            let consumed = x.req.body.is_empty().then_some(x.req.head_len);
            x.answer(status, body, allow.as_deref(), consumed).await
        }
        Action::Answer(a) => {
            let consumed = x.req.body.is_empty().then_some(x.req.head_len);
            x.answer_route(&a, consumed).await
        }
        Action::Forward(to) => forward::forward(&mut x, to).await,
        Action::Connect { route } => connect::open(&mut x, route).await,
    }
}

/// Reads until a whole request head is at the start of the client buffer: while idle
/// between requests within the keep-alive timeout (a graceful stop closes an idle
/// connection), from its first byte within the header timeout. `Err`: the connection's
/// fate, the request refused or the client gone.
async fn read_head<S: Transport>(c: &mut Client<S>, w: &Worker, first: bool) -> Result<(), Next> {
    let mut reader = HeadReader::default();
    // Idle keep-alive wait for the first byte; from the first byte on, the header timeout.
    let mut deadline: Option<Instant> = None;
    loop {
        // A first request that is the HTTP/2 preface (or the start of it): h2c.
        let preface = first
            && w.http.http2.enabled
            && !c.buf.is_empty()
            && crate::h2::PREFACE.starts_with(&c.buf[..c.buf.len().min(crate::h2::PREFACE.len())]);
        if preface && c.buf.len() >= crate::h2::PREFACE.len() {
            return Err(Next::Http2);
        }
        if !c.buf.is_empty() && !preface {
            match reader.poll(&mut c.buf, &w.head_limits) {
                Ok(true) => return Ok(()),
                Ok(false) => {}
                Err(e) => return Err(reply_error(c, w, e, Instant::now()).await),
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
                return Err(Next::Close);
            }
            // Pinned here so that select! moves a pointer, not the read's state.
            let read = std::pin::pin!(read_more(
                &mut c.stream,
                std::mem::take(&mut c.buf),
                until,
                &mut c.timer
            ));
            monoio::select! {
                biased;
                r = read => r,
                _ = w.draining.wait() => return Err(Next::Close),
            }
        } else {
            read_more(
                &mut c.stream,
                std::mem::take(&mut c.buf),
                until,
                &mut c.timer,
            )
            .await
        };
        c.buf = buf;
        match res {
            Ok(0) => return Err(Next::Close),
            Ok(_) => {
                if deadline.is_none() {
                    deadline = Some(Instant::now() + w.http.client_header_timeout);
                }
            }
            Err(e) if e.kind() == io::ErrorKind::TimedOut && deadline.is_some() => {
                let e = HeadError::new(408, "request head timed out");
                return Err(reply_error(c, w, e, Instant::now()).await);
            }
            Err(_) => return Err(Next::Close),
        }
    }
}

/// One HTTP/2 stream's request, as the HTTP/2 layer hands it over (`h2/pipe.rs`): a
/// single exchange with the same routing, limits, retries, metrics and log line as an
/// HTTP/1.1 client's.
pub(crate) async fn serve_stream<S: Transport>(
    stream: S,
    (peer, trusted): (ClientAddr, &Rc<[Cidr]>),
    w: &Worker,
    tls: Option<TlsFacts>,
) {
    let mut c = Client {
        stream,
        peer,
        trusted: trusted.clone(),
        request_id: Vec::new(),
        path_buf: String::new(),
        buf: Vec::with_capacity(1024),
        out: Vec::new(),
        cout: Vec::new(),
        record: Record {
            tls,
            h2: true,
            ..Record::default()
        },
        timer: Timer::new(),
    };
    // No keep-alive, no upgrade: the stream ends with its response.
    let _ = exchange(&mut c, w, true).await;
    w.reclaim_head(&mut c.out);
    w.reclaim_head(&mut c.cout);
}

pub(crate) use forward::{observe, unavailable};

#[cfg(test)]
mod tests {
    use super::*;

    /// What an idle keep-alive connection costs beyond its buffers: its task's future.
    #[test]
    fn a_connections_future_stays_small() {
        let size = crate::worker::connection_future_size(|s, p, o| serve(s, p, o, None));
        eprintln!("serve future: {size} bytes");
        assert!(size <= 4096, "serve future: {size} bytes");
    }
}
