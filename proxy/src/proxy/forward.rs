//! Forwarding one routed request: pick an endpoint, connect or reuse, send the head and
//! body, read the response head and stream the response back; retries where safe.
//!
//! Runs on: a worker, inside a client connection's task. Touches only worker-local state.

use std::io;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use strait_discovery::route::RouteEntry;
use strait_discovery::UpstreamStatus;

use super::relay::{connect, read_more, relay, write_all, Mode, Timeouts};
use super::{
    finish_with_status, log, note_attempt, push_list, reply_error, Client, Next, Prepared, Worker,
    MAX_RESPONSE_HEAD, READ_CHUNK,
};
use crate::error::{ErrorKind, ProxyError, Retry, Side};
use crate::http::chunked::ChunkedDecoder;
use crate::http::head::{self, ClientFraming};
use crate::http::{BodyKind, HeadError};
use crate::upstream::{UpstreamConn, View};

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
