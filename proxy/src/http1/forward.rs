//! Forwarding one routed request: hold a small body for replay, pick an endpoint, take a
//! pooled connection or connect, send the head and body, hand the response to
//! `respond.rs`, and retry on another endpoint where that is safe.
//!
//! Runs on: a worker, inside a client connection's task. Touches only worker-local state.

use std::io;
use std::time::Instant;

use strait_discovery::{EndpointAddr, Upstream, UpstreamStatus};

use super::exchange::Exchange;
use super::prepare::Forward;
use super::relay::{relay, Body, Mode, Timeouts};
use super::respond::{respond, Failure};
use super::tunnel::Upgraded;
use super::Next;
use crate::error::{ErrorKind, ProxyError, Retry, Side};
use crate::http::chunked::ChunkedDecoder;
use crate::http::head;
use crate::http::{BodyKind, HeadError};
use crate::transport::deadline::{read_more, write_all};
use crate::transport::Transport;
use crate::upstream::{self, Observed, UpstreamConn};
use crate::worker::READ_CHUNK;
use strait_discovery::spec::Balance;

/// Where the request body stands before the upstream exchange.
pub(super) struct BodyState {
    /// End of the request bytes in the client buffer (head, then body bytes read so far).
    pub(super) end: usize,
    /// The whole body is in the buffer, so the request can be sent again.
    pub(super) complete: bool,
    /// Content-Length bytes not in the buffer yet.
    remaining: u64,
    decoder: ChunkedDecoder,
}

impl BodyState {
    /// The body of a request whose head is `buf[..head_len]`, as far as `buf` holds it.
    pub(super) fn new(
        buf: &[u8],
        head_len: usize,
        kind: BodyKind,
        max_body: u64,
    ) -> Result<BodyState, HeadError> {
        let mut body = BodyState {
            end: head_len,
            complete: matches!(kind, BodyKind::None | BodyKind::Close),
            remaining: match kind {
                BodyKind::Length(n) => n,
                _ => 0,
            },
            decoder: ChunkedDecoder::with_limit(max_body),
        };
        body.advance(buf, kind)?;
        Ok(body)
    }

    /// Takes in the body bytes that arrived in `buf` past `end`.
    fn advance(&mut self, buf: &[u8], kind: BodyKind) -> Result<(), HeadError> {
        match kind {
            BodyKind::None | BodyKind::Close => {}
            BodyKind::Length(_) => {
                let take = ((buf.len() - self.end) as u64).min(self.remaining);
                self.end += take as usize;
                self.remaining -= take;
                self.complete = self.remaining == 0;
            }
            BodyKind::Chunked if !self.complete => {
                let progress = self
                    .decoder
                    .feed(&buf[self.end..], |_| {})
                    .map_err(|e| HeadError::new(e.status(), e.0))?;
                self.end += progress.consumed;
                self.complete = progress.done;
            }
            BodyKind::Chunked => {}
        }
        Ok(())
    }
}

/// Why reading a held body stopped the exchange.
pub(super) enum HoldError {
    /// Closed, reset or failed: nothing to answer.
    Gone,
    /// Answer this and close.
    Reply(HeadError),
}

/// Reads the rest of a request body into the client buffer, so that a failed attempt
/// can be replayed, as long as it stays within `limit` bytes (a chunked body that
/// outgrows it stops being held and is streamed instead).
/// When the request's whole body must have arrived (`http.client_body_total_timeout`).
pub(super) fn body_deadline<S>(x: &Exchange<'_, '_, S>) -> Instant {
    x.started + x.w.http.client_body_total_timeout
}

pub(super) async fn hold_body<S: Transport>(
    x: &mut Exchange<'_, '_, S>,
    body: &mut BodyState,
    limit: usize,
) -> Result<(), HoldError> {
    let body_until = body_deadline(x);
    let c = &mut *x.c;
    let p = &x.req;
    while !body.complete && body.end - p.head_len <= limit {
        let want = match p.body {
            BodyKind::Length(_) => body.remaining as usize,
            _ => READ_CHUNK / 4,
        };
        if c.buf.capacity() - c.buf.len() < want.min(READ_CHUNK) {
            c.buf.reserve(want.min(READ_CHUNK));
        }
        let until = (Instant::now() + x.w.http.client_body_timeout).min(body_until);
        let (res, buf) = read_more(
            &mut c.stream,
            std::mem::take(&mut c.buf),
            until,
            &mut c.timer,
        )
        .await;
        c.buf = buf;
        match res {
            Ok(0) => return Err(HoldError::Gone),
            Ok(_) => body.advance(&c.buf, p.body).map_err(HoldError::Reply)?,
            Err(e) if e.kind() == io::ErrorKind::TimedOut => {
                return Err(HoldError::Reply(HeadError::new(
                    408,
                    "request body timed out",
                )))
            }
            Err(_) => return Err(HoldError::Gone),
        }
    }
    Ok(())
}

/// The attempts of one request, in order. What they have learnt so far decides the next
/// one: which endpoints failed it, whether its body can still be sent again.
struct Attempts {
    /// How many endpoints the request may try (1 + retries).
    allowed: usize,
    /// Endpoints that failed this request; the next attempt picks another.
    tried: Vec<EndpointAddr>,
    /// Attempts counted against `allowed`.
    used: usize,
    /// The first failure on a reused pooled connection (the upstream closed it as we
    /// reused it) is not counted, and may be retried on the same endpoint when no other
    /// is left: `stale` holds that endpoint until then.
    stale_pass: bool,
    stale: Option<EndpointAddr>,
    /// The next attempt opens a new connection.
    fresh: bool,
    /// Part of the body was streamed from the client: the request cannot be sent again.
    body_sent: bool,
    /// Why the last attempt failed.
    last: ProxyError,
}

impl Attempts {
    /// Counts a failed attempt on `conn`, except the first failure of a reused pooled
    /// connection, whose endpoint may then be tried once more on a fresh connection.
    fn failed(&mut self, conn: &UpstreamConn) {
        if conn.reused && self.stale_pass {
            self.stale_pass = false;
            self.stale = Some(conn.addr);
        } else {
            self.used += 1;
        }
        self.tried.push(conn.addr);
        self.fresh = true;
    }
}

pub(super) async fn forward<S: Transport>(x: &mut Exchange<'_, '_, S>, to: Forward) -> Next {
    let view = x.view;
    let idx = to.upstream;
    let upstream = &view.snapshot.upstreams[idx as usize];
    let settings = &upstream.settings;
    if settings.protocol.is_h2() {
        // Boxed: only requests to HTTP/2 upstreams carry its state.
        return Box::pin(super::h2up::forward(x, to)).await;
    }

    // Body bytes that arrived with the head.
    let mut body = match BodyState::new(&x.c.buf, x.req.head_len, x.req.body, x.req.max_body) {
        Ok(body) => body,
        Err(e) => return x.refuse(e).await,
    };
    if let Some(reason) = unavailable(upstream) {
        let consumed = body.complete.then_some(body.end);
        return x.answer(503, reason, None, consumed).await;
    }
    // A body small enough is held whole, so that a failed attempt can be replayed.
    let limit = settings.retry_body_bytes;
    let hold = match x.req.body {
        BodyKind::Length(n) => n <= limit as u64,
        BodyKind::Chunked => limit > 0,
        BodyKind::None | BodyKind::Close => false,
    };
    let mut continued = false;
    if hold && !body.complete {
        if x.req.expect_continue {
            // We take the body ourselves; the client waits for this before sending it.
            if !send_continue(x).await {
                return Next::Close;
            }
            continued = true;
        }
        match hold_body(x, &mut body, limit).await {
            Ok(()) => {}
            Err(HoldError::Gone) => return Next::Close,
            Err(HoldError::Reply(e)) => return x.refuse(e).await,
        }
    }

    let mut a = Attempts {
        allowed: view.attempts(idx),
        tried: Vec::new(),
        used: 0,
        stale_pass: true,
        stale: None,
        fresh: false,
        body_sent: false,
        last: ProxyError::new(ErrorKind::ConnectRefused, Side::Upstream, Retry::Safe),
    };
    // The request's start stands in for "now": microseconds off, one clock read less.
    let now = x.started;
    let w = x.w;
    let stats = &view.upstream_stats[idx as usize];
    let mut first = true;
    while a.used < a.allowed {
        if !std::mem::take(&mut first) {
            stats.retries.inc();
        }
        let health = &w.upstreams.health;
        let ep = match view.pick_for(idx, &a.tried, health, now, to.hash) {
            Some(ep) => ep,
            None => match a.stale.take() {
                Some(addr) => {
                    a.tried.retain(|t| *t != addr);
                    match view.pick_for(idx, &a.tried, health, now, to.hash) {
                        Some(ep) => ep,
                        None => break,
                    }
                }
                None => break,
            },
        };
        // least_request counts this worker's requests in flight per endpoint.
        let _busy = (settings.balance == Balance::LeastRequest).then(|| health.enter(ep.addr));
        // A connection that began with a PROXY header speaks for one client: never pooled.
        let pooled = if a.fresh || settings.proxy_protocol.is_some() {
            None
        } else {
            // Sent again on a fresh connection should the pooled one turn out closed.
            let replayable = x.req.idempotent && body.complete;
            w.upstreams
                .pool
                .take(ep.addr, tls_id(upstream), &settings.pool, now, replayable)
        };
        a.fresh = false;
        let mut conn = match pooled {
            Some(conn) => conn,
            None => {
                let up = (&**upstream, Some(x.c.peer));
                match upstream::connect(health, &w.upstreams.tls, up, stats, ep.addr, w.id).await {
                    Ok(stream) => UpstreamConn {
                        stream,
                        addr: ep.addr,
                        tls: tls_id(upstream),
                        requests: 0,
                        reused: false,
                    },
                    Err(kind) => {
                        // Passive health and the upstream's counters already know.
                        a.last = ProxyError::new(kind, Side::Upstream, Retry::Safe);
                        x.note_attempt(ep.addr, &a.last.status());
                        a.tried.push(ep.addr);
                        a.used += 1;
                        continue;
                    }
                }
            }
        };
        let _active = w.metrics.pool_active.hold();
        // The head, then the body bytes we hold, in one write.
        let c = &mut *x.c;
        c.out.truncate(to.head_base);
        if to.host_per_endpoint {
            push_host(&mut c.out, ep.addr);
        }
        head::finish_upstream_head(&mut c.out, false);
        c.out.extend_from_slice(&c.buf[x.req.head_len..body.end]);
        let (res, out) = write_all(
            &mut conn.stream,
            std::mem::take(&mut c.out),
            settings.write_timeout,
            &mut c.timer,
        )
        .await;
        c.out = out;
        if let Err(e) = res {
            // Not all of the request reached the upstream (it closed, reset or stalled):
            // nothing was processed, and what we hold can go to another endpoint.
            let kind = if e.kind() == io::ErrorKind::TimedOut {
                ErrorKind::UpstreamIoTimeout
            } else {
                ErrorKind::UpstreamClosed
            };
            a.last = ProxyError::new(kind, Side::Upstream, Retry::Safe);
            x.note_attempt(ep.addr, &a.last.status());
            a.failed(&conn);
            continue;
        }
        if !body.complete {
            if x.req.expect_continue && !continued {
                if !send_continue(x).await {
                    return Next::Close;
                }
                continued = true;
            }
            a.body_sent = true;
            let rest = if x.req.body == BodyKind::Chunked {
                BodyKind::Chunked
            } else {
                BodyKind::Length(body.remaining)
            };
            let body_until = body_deadline(x);
            let c = &mut *x.c;
            let mut empty = Vec::new();
            let job = Body {
                buf: std::mem::take(&mut c.buf),
                start: body.end,
                kind: rest,
                mode: Mode::Pass,
                decoder: Some(body.decoder.clone()),
                timeouts: Timeouts {
                    read: w.http.client_body_timeout,
                    write: settings.write_timeout,
                    until: Some(body_until),
                },
                src_side: Side::Downstream,
                // A request's trailers go on: chunked to the upstream, as they came.
                drop_trailers: false,
            };
            let relayed = relay(
                &mut c.stream,
                &mut conn.stream,
                &mut empty,
                &mut c.timer,
                job,
            )
            .await;
            c.buf = relayed.buf;
            if let Err(e) = relayed.result {
                // The body is cut short either way: answer (400, 408 or 413; a client that
                // went away does not read it) and close; the upstream connection is dropped.
                let err = ProxyError::new(e.kind, e.side, Retry::No);
                if e.side != Side::Downstream {
                    x.note_attempt(ep.addr, &err.status());
                }
                return x.answer(err.status(), err.message(), None, None).await;
            }
            // The whole request is read: drop it from the buffer, keeping what follows.
            c.buf.drain(..relayed.end);
            body.end = 0;
        }
        let upstream_started = if w.access.is_some() {
            Instant::now()
        } else {
            x.started
        };
        match respond(x, &mut conn, settings).await {
            Ok(outcome) => {
                observe(
                    w,
                    upstream,
                    stats,
                    conn.addr,
                    Observed::of_status(outcome.status),
                );
                if w.access.is_some() {
                    x.note_attempt(conn.addr, &outcome.status);
                    x.c.record.upstream_time = upstream_started.elapsed().as_secs_f64();
                }
                x.c.buf.drain(..body.end);
                x.log(outcome.status, outcome.bytes_sent, outcome.body_bytes);
                if let Some(to_client) = outcome.tunnel {
                    // Never pooled: it speaks another protocol now.
                    return Next::Upgrade(Upgraded {
                        upstream: conn.stream,
                        to_client,
                        write_timeout: settings.write_timeout,
                    });
                }
                // An endpoint that left the table since the pick gets no pooled
                // connection back.
                if outcome.reuse_upstream
                    && settings.proxy_protocol.is_none()
                    && w.upstreams.table.still_sends_to(view, conn.addr)
                {
                    w.upstreams.pool.put(conn, &settings.pool, Instant::now());
                }
                return if outcome.keep_client {
                    Next::KeepAlive
                } else {
                    Next::Close
                };
            }
            Err(Failure::ClientGone) => return Next::Close,
            Err(Failure::AfterHeadSent {
                status,
                bytes_sent,
                body_bytes,
            }) => {
                x.log(status, bytes_sent, body_bytes);
                return Next::Close;
            }
            Err(Failure::BeforeHead(e)) => {
                // A reused connection the upstream had closed is the pool's race, not the
                // endpoint's fault.
                if !conn.reused || e.kind == ErrorKind::ResponseTimeout {
                    observe(w, upstream, stats, conn.addr, Observed::GatewayError);
                }
                x.note_attempt(ep.addr, &e.status());
                a.last = e;
                let again = !a.body_sent
                    && match e.retry {
                        Retry::Safe => true,
                        Retry::IfIdempotent => x.req.idempotent,
                        Retry::No => false,
                    };
                if !again {
                    break;
                }
                // Closed or reset before any response byte: another endpoint, fresh.
                a.failed(&conn);
            }
        }
    }
    let consumed = if a.body_sent {
        Some(0)
    } else {
        body.complete.then_some(body.end)
    };
    x.answer(a.last.status(), a.last.message(), None, consumed)
        .await
}

/// Tells passive health what a response said of `addr`; logs and counts an ejection.
pub(crate) fn observe(
    w: &crate::worker::Worker,
    up: &Upstream,
    stats: &crate::metrics::UpstreamStats,
    addr: EndpointAddr,
    said: Observed,
) {
    let Some((reason, length)) = w.upstreams.health.observe(addr, up, said, Instant::now()) else {
        return;
    };
    stats.count_ejection(reason);
    tracing::warn!(
        worker = w.id,
        upstream = %up.name,
        endpoint = %addr,
        ?reason,
        ejection = ?length,
        "endpoint ejected by outlier detection"
    );
}

/// Appends `Host: <the endpoint>`: its `ip:port`, or `localhost` for a Unix socket (as
/// nginx sends to one).
fn push_host(out: &mut Vec<u8>, addr: EndpointAddr) {
    use std::io::Write;
    out.extend_from_slice(b"Host: ");
    match addr {
        // Writing to a Vec cannot fail.
        EndpointAddr::Inet(a) => {
            let _ = write!(out, "{a}");
        }
        EndpointAddr::Unix(_) => out.extend_from_slice(b"localhost"),
    }
    out.extend_from_slice(b"\r\n");
}

/// Why `upstream` cannot take a request now (answered 503), if it cannot.
pub(crate) fn unavailable(upstream: &Upstream) -> Option<&'static str> {
    match &upstream.status {
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
    }
}

/// Tells an `Expect: 100-continue` client to send its body; false when the write failed.
async fn send_continue<S: Transport>(x: &mut Exchange<'_, '_, S>) -> bool {
    let (res, _) = write_all(
        &mut x.c.stream,
        b"HTTP/1.1 100 Continue\r\n\r\n".to_vec(),
        x.w.http.client_body_timeout,
        &mut x.c.timer,
    )
    .await;
    res.is_ok()
}

/// The pool key part of `up`'s TLS settings (0: plain text).
fn tls_id(up: &strait_discovery::Upstream) -> u64 {
    up.settings.tls.as_ref().map_or(0, |t| t.id)
}
