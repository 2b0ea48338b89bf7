//! The response side of an exchange: the upstream's head is read (interim 1xx heads
//! forwarded, a 101 to an upgrade request turned into a tunnel), checked as strictly as
//! a request, rewritten for the client, and its body streamed back (`relay.rs`).
//!
//! Runs on: a worker, inside a client connection's task. The head is parsed in a
//! synchronous helper so the header array never lives in the connection's future.

use std::io;
use std::time::Instant;

use strait_discovery::spec::UpstreamSettings;

use super::exchange::{write_client, Exchange};
use super::prepare::Prepared;
use super::relay::{relay, Body, Mode, Timeouts};
use crate::error::{ErrorKind, ProxyError, Retry, Side};
use crate::http::head::{self, ClientFraming, Edits};
use crate::http::BodyKind;
use crate::transport::deadline::read_more;
use crate::transport::Transport;
use crate::upstream::UpstreamConn;
use crate::worker::READ_CHUNK;

/// Largest upstream response head accepted.
const MAX_RESPONSE_HEAD: usize = 64 * 1024;

/// How a response exchange ended.
pub(super) struct Outcome {
    pub(super) status: u16,
    /// Bytes written to the client: heads (interim ones too) and body.
    pub(super) bytes_sent: u64,
    /// Of those, the body's (its chunked framing included, as nginx counts).
    pub(super) body_bytes: u64,
    pub(super) keep_client: bool,
    pub(super) reuse_upstream: bool,
    /// A 101 went to the client: the upstream bytes read past its head, to tunnel.
    pub(super) tunnel: Option<Vec<u8>>,
}

pub(super) enum Failure {
    /// Nothing was sent to the client yet; the caller answers or retries.
    BeforeHead(ProxyError),
    /// The response head went out; the connection can only be closed.
    AfterHeadSent {
        status: u16,
        bytes_sent: u64,
        body_bytes: u64,
    },
    ClientGone,
}

/// Reads the response head (forwarding interim 1xx responses), then streams the
/// response to the client.
pub(super) async fn respond<S: Transport>(
    x: &mut Exchange<'_, '_, S>,
    conn: &mut UpstreamConn,
    settings: &UpstreamSettings,
) -> Result<Outcome, Failure> {
    let w = x.w;
    let p = &x.req;
    let c = &mut *x.c;
    let mut ub = w.take_buf();
    let until = Instant::now() + settings.response_header_timeout;
    let mut bytes_sent = 0u64;
    loop {
        if !ub.is_empty() {
            // Parsed synchronously: the header array never lives in this future's state.
            let closing = p.client_close || w.draining.is_fired();
            let rid = &w.http.request_id;
            let request_id = (rid.enabled && !c.request_id.is_empty())
                .then_some((rid.header.as_str(), &c.request_id[..]));
            match response_head(&ub, p, (closing, request_id), &mut c.cout) {
                Err(e) => return Err(Failure::BeforeHead(e)),
                Ok(None) => {}
                Ok(Some(UpHead::Interim { len, forward })) => {
                    if forward && !write_client(&mut c.stream, &mut c.cout, &mut c.timer, w).await {
                        return Err(Failure::ClientGone);
                    }
                    ub.drain(..len);
                    continue;
                }
                Ok(Some(UpHead::Switch { len })) => {
                    let head_bytes = c.cout.len() as u64;
                    let written = write_client(&mut c.stream, &mut c.cout, &mut c.timer, w).await;
                    c.cout.clear();
                    if !written {
                        w.give_buf(ub);
                        return Err(Failure::ClientGone);
                    }
                    ub.drain(..len);
                    return Ok(Outcome {
                        status: 101,
                        bytes_sent: head_bytes,
                        body_bytes: 0,
                        keep_client: false,
                        reuse_upstream: false,
                        tunnel: Some(ub),
                    });
                }
                Ok(Some(UpHead::Final(h))) => {
                    let mut head_out = std::mem::take(&mut c.cout);
                    let head_bytes = head_out.len() as u64;
                    let job = Body {
                        buf: ub,
                        start: h.head_len,
                        kind: h.body,
                        mode: h.mode,
                        decoder: None,
                        timeouts: Timeouts {
                            read: settings.read_timeout,
                            write: w.http.client_body_timeout,
                            until: None,
                        },
                        src_side: Side::Upstream,
                        drop_trailers: !p.te_trailers,
                    };
                    let relayed = relay(
                        &mut conn.stream,
                        &mut c.stream,
                        &mut head_out,
                        &mut c.timer,
                        job,
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
                            body_bytes: relayed.written,
                            keep_client: h.keep_client,
                            reuse_upstream: h.upstream_reusable && clean,
                            tunnel: None,
                        }),
                        Err(e) => {
                            if e.side == Side::Upstream {
                                tracing::warn!(endpoint = %conn.addr, kind = ?e.kind, "upstream failed mid-response");
                            }
                            if relayed.head_sent {
                                Err(Failure::AfterHeadSent {
                                    status,
                                    bytes_sent,
                                    body_bytes: relayed.written,
                                })
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
        let (res, buf) = read_more(&mut conn.stream, ub, until, &mut c.timer).await;
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
    (closing, request_id): (bool, Option<(&str, &[u8])>),
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
    let edits = match p.response_edits {
        Some(e) => Edits {
            remove: &e.remove,
            set: &e.set,
            add: &e.add,
            ensure: request_id,
        },
        None => Edits {
            ensure: request_id,
            ..Edits::default()
        },
    };
    head::write_client_head_with(
        cout,
        &resp,
        &framing,
        client_framing,
        keep_client,
        p.minor,
        &edits,
    );
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
