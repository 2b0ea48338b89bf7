//! Forwarding one routed request: pick an endpoint, connect or reuse, send the head and
//! body, read the response head and stream the response back; retries where safe.
//!
//! Runs on: a worker, inside a client connection's task. Touches only worker-local state.

use std::io;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use strait_discovery::route::RouteEntry;
use strait_discovery::{Upstream, UpstreamStatus};

use super::relay::{read_more, relay, write_all, Mode, Timeouts};
use super::tunnel::Upgraded;
use super::{
    finish_with_status, log, note_attempt, push_list, reply_error, write_client, Client, Next,
    Prepared, Worker, MAX_RESPONSE_HEAD, READ_CHUNK,
};
use crate::error::{ErrorKind, ProxyError, Retry, Side};
use crate::http::chunked::ChunkedDecoder;
use crate::http::head::{self, ClientFraming};
use crate::http::{BodyKind, HeadError};
use crate::upstream::{self, UpstreamConn, View};

/// Where the request body stands before the upstream exchange.
struct BodyState {
    /// End of the request bytes in the client buffer (head, then body bytes read so far).
    end: usize,
    /// The whole body is in the buffer, so the request can be sent again.
    complete: bool,
    /// Content-Length bytes not in the buffer yet.
    remaining: u64,
    decoder: ChunkedDecoder,
}

impl BodyState {
    /// The body of a request whose head is `buf[..head_len]`, as far as `buf` holds it.
    fn new(
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
enum HoldError {
    /// Closed, reset or failed: nothing to answer.
    Gone,
    /// Answer this and close.
    Reply(HeadError),
}

/// Reads the rest of a request body into the client buffer, so that a failed attempt
/// can be replayed, as long as it stays within `limit` bytes (a chunked body that
/// outgrows it stops being held and is streamed instead).
async fn hold_body(
    c: &mut Client,
    w: &Worker,
    p: &Prepared<'_>,
    body: &mut BodyState,
    limit: usize,
) -> Result<(), HoldError> {
    while !body.complete && body.end - p.head_len <= limit {
        let want = match p.body {
            BodyKind::Length(_) => body.remaining as usize,
            _ => READ_CHUNK / 4,
        };
        if c.buf.capacity() - c.buf.len() < want.min(READ_CHUNK) {
            c.buf.reserve(want.min(READ_CHUNK));
        }
        let until = Instant::now() + w.http.client_body_timeout;
        let (res, buf) = read_more(&mut c.stream, std::mem::take(&mut c.buf), until).await;
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

#[allow(clippy::too_many_arguments)]
pub(super) async fn forward(
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
    let unavailable = unavailable(upstream);
    let settings = &upstream.settings;

    // Body bytes that arrived with the head.
    let mut body = match BodyState::new(&c.buf, p.head_len, p.body, p.max_body) {
        Ok(body) => body,
        Err(e) => return reply_error(c, w, e, started).await,
    };
    if let Some(reason) = unavailable {
        let consumed = body.complete.then_some(body.end);
        return finish_with_status(c, w, p, 503, reason, started, consumed).await;
    }
    // A body small enough is held whole, so that a failed attempt can be replayed.
    let limit = settings.retry_body_bytes;
    let hold = match p.body {
        BodyKind::Length(n) => n <= limit as u64,
        BodyKind::Chunked => limit > 0,
        BodyKind::None | BodyKind::Close => false,
    };
    let mut continued = false;
    if hold && !body.complete {
        if p.expect_continue {
            // We take the body ourselves; the client waits for this before sending it.
            if !send_continue(c, w).await {
                return Next::Close;
            }
            continued = true;
        }
        match hold_body(c, w, p, &mut body, limit).await {
            Ok(()) => {}
            Err(HoldError::Gone) => return Next::Close,
            Err(HoldError::Reply(e)) => return reply_error(c, w, e, started).await,
        }
    }

    let attempts = view.attempts(idx);
    // Endpoints that failed this request; the next attempt picks another.
    let mut tried: Vec<SocketAddr> = Vec::new();
    // Attempts counted against `attempts`.
    let mut used = 0;
    // The first failure on a reused pooled connection (the upstream closed it as we
    // reused it) is not counted, and may be retried on the same endpoint when no other
    // is left: `stale` holds that endpoint until then.
    let mut stale_pass = true;
    let mut stale: Option<SocketAddr> = None;
    // The next attempt opens a new connection.
    let mut fresh = false;
    // Part of the body was streamed from the client: the request cannot be sent again.
    let mut body_sent = false;
    let mut last = ProxyError::new(ErrorKind::ConnectRefused, Side::Upstream, Retry::Safe);
    // The request's start stands in for "now": microseconds off, one clock read less.
    let now = started;
    let stats = &view.upstream_stats[idx as usize];
    let mut first = true;
    while used < attempts {
        if !std::mem::take(&mut first) {
            stats.retries.inc();
        }
        let ep = match view.pick(idx, &tried, &w.health, now) {
            Some(ep) => ep,
            None => match stale.take() {
                Some(addr) => {
                    tried.retain(|t| *t != addr);
                    match view.pick(idx, &tried, &w.health, now) {
                        Some(ep) => ep,
                        None => break,
                    }
                }
                None => break,
            },
        };
        let pooled = if fresh {
            None
        } else {
            w.pool.take(ep.addr, &settings.pool, now)
        };
        fresh = false;
        let mut conn = match pooled {
            Some(conn) => conn,
            None => match upstream::connect(&w.health, upstream, stats, ep.addr, w.id).await {
                Ok(stream) => UpstreamConn {
                    stream,
                    addr: ep.addr,
                    requests: 0,
                    reused: false,
                },
                Err(kind) => {
                    last = connect_failed(c, w, ep.addr, kind);
                    tried.push(ep.addr);
                    used += 1;
                    continue;
                }
            },
        };
        let _active = w.metrics.pool_active.hold();
        // The head, then the body bytes we hold, in one write.
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
            settings.write_timeout,
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
            last = ProxyError::new(kind, Side::Upstream, Retry::Safe);
            note_attempt(c, w, ep.addr, last.status());
            count_failure(&mut used, &mut stale_pass, &mut stale, &conn);
            tried.push(ep.addr);
            fresh = true;
            continue;
        }
        if !body.complete {
            if p.expect_continue && !continued {
                if !send_continue(c, w).await {
                    return Next::Close;
                }
                continued = true;
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
                    write: settings.write_timeout,
                },
                Side::Downstream,
            )
            .await;
            c.buf = relayed.buf;
            if let Err(e) = relayed.result {
                // The body is cut short either way: answer (400, 408 or 413; a client that
                // went away does not read it) and close; the upstream connection is dropped.
                let err = ProxyError::new(e.kind, e.side, Retry::No);
                if e.side != Side::Downstream {
                    note_attempt(c, w, ep.addr, err.status());
                }
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
                // An endpoint that left the table since the pick gets no pooled
                // connection back.
                c.buf.drain(..body.end);
                log(c, w, p.stats, outcome.status, outcome.bytes_sent, started);
                if let Some(to_client) = outcome.tunnel {
                    // Never pooled: it speaks another protocol now.
                    return Next::Upgrade(Upgraded {
                        upstream: conn.stream,
                        to_client,
                        write_timeout: settings.write_timeout,
                    });
                }
                if outcome.reuse_upstream && w.table.still_sends_to(view, conn.addr) {
                    w.pool.put(conn, &settings.pool, Instant::now());
                }
                return if outcome.keep_client {
                    Next::KeepAlive
                } else {
                    Next::Close
                };
            }
            Err(Failure::ClientGone) => return Next::Close,
            Err(Failure::AfterHeadSent { status, bytes_sent }) => {
                log(c, w, p.stats, status, bytes_sent, started);
                return Next::Close;
            }
            Err(Failure::BeforeHead(e)) => {
                note_attempt(c, w, ep.addr, e.status());
                last = e;
                let again = !body_sent
                    && match e.retry {
                        Retry::Safe => true,
                        Retry::IfIdempotent => p.idempotent,
                        Retry::No => false,
                    };
                if !again {
                    break;
                }
                // Closed or reset before any response byte: another endpoint, fresh.
                count_failure(&mut used, &mut stale_pass, &mut stale, &conn);
                tried.push(ep.addr);
                fresh = true;
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

/// Why `upstream` cannot take a request now (answered 503), if it cannot.
pub(super) fn unavailable(upstream: &Upstream) -> Option<&'static str> {
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

/// Records a failed connect to `addr` in the access log (passive health and the
/// upstream's counters already know, see [`upstream::connect`]). Returns the error, safe
/// to retry on another endpoint.
pub(super) fn connect_failed(
    c: &mut Client,
    w: &Worker,
    addr: SocketAddr,
    kind: ErrorKind,
) -> ProxyError {
    let err = ProxyError::new(kind, Side::Upstream, Retry::Safe);
    note_attempt(c, w, addr, err.status());
    err
}

/// Tells an `Expect: 100-continue` client to send its body; false when the write failed.
async fn send_continue(c: &mut Client, w: &Worker) -> bool {
    let (res, _) = write_all(
        &mut c.stream,
        b"HTTP/1.1 100 Continue\r\n\r\n".to_vec(),
        w.http.client_body_timeout,
    )
    .await;
    res.is_ok()
}

/// Counts a failed attempt on `conn`, except the first failure of a reused pooled
/// connection, whose endpoint may then be tried once more on a fresh connection.
fn count_failure(
    used: &mut usize,
    stale_pass: &mut bool,
    stale: &mut Option<SocketAddr>,
    conn: &UpstreamConn,
) {
    if conn.reused && *stale_pass {
        *stale_pass = false;
        *stale = Some(conn.addr);
    } else {
        *used += 1;
    }
}

/// How a response exchange ended.
struct Outcome {
    status: u16,
    bytes_sent: u64,
    keep_client: bool,
    reuse_upstream: bool,
    /// A 101 went to the client: the upstream bytes read past its head, to tunnel.
    tunnel: Option<Vec<u8>>,
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
            let closing = p.client_close || w.draining.is_fired();
            match response_head(&ub, p, closing, &mut c.cout) {
                Err(e) => return Err(Failure::BeforeHead(e)),
                Ok(None) => {}
                Ok(Some(UpHead::Interim { len, forward })) => {
                    if forward && !write_client(&mut c.stream, &mut c.cout, w).await {
                        return Err(Failure::ClientGone);
                    }
                    ub.drain(..len);
                    continue;
                }
                Ok(Some(UpHead::Switch { len })) => {
                    let head_bytes = c.cout.len() as u64;
                    let written = write_client(&mut c.stream, &mut c.cout, w).await;
                    c.cout.clear();
                    if !written {
                        w.give_buf(ub);
                        return Err(Failure::ClientGone);
                    }
                    ub.drain(..len);
                    return Ok(Outcome {
                        status: 101,
                        bytes_sent: head_bytes,
                        keep_client: false,
                        reuse_upstream: false,
                        tunnel: Some(ub),
                    });
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
                            tunnel: None,
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
            Ok(n) if n > 0 => {}
            res => {
                // Closed or reset before any response byte: an idempotent request may go
                // to another endpoint. A timeout or a torn head is not retried (the
                // upstream may be working on it).
                let (kind, retry) = match res {
                    Err(e) if e.kind() == io::ErrorKind::TimedOut => {
                        (ErrorKind::ResponseTimeout, Retry::No)
                    }
                    _ if ub.is_empty() => (ErrorKind::UpstreamClosed, Retry::IfIdempotent),
                    _ => (ErrorKind::UpstreamClosed, Retry::No),
                };
                w.give_buf(ub);
                return Err(Failure::BeforeHead(ProxyError::new(
                    kind,
                    Side::Upstream,
                    retry,
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
    /// A 101 to an upgrade request: `len` bytes of head; the client's head is in `cout`.
    Switch {
        len: usize,
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
/// head to forward) into `cout`; `closing`: the client connection ends after this
/// response. `Ok(None)`: incomplete.
fn response_head(
    ub: &[u8],
    p: &Prepared<'_>,
    closing: bool,
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
            // Switching protocols is only an answer to a request that asked for it.
            if !p.upgrade {
                return Err(bad_response());
            }
            cout.clear();
            head::write_switching_head(cout, &resp);
            return Ok(Some(UpHead::Switch { len: resp.len }));
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
    let keep_client = !closing && client_framing != ClientFraming::Close;
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
