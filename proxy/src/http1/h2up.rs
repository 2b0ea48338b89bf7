//! An HTTP/1.1 request to an `h2`/`h2c` upstream: the request (its body read whole first,
//! within the body limit) becomes one HTTP/2 stream on the worker's pooled connection to
//! the endpoint (`h2/upstream.rs`), and the response comes back as HTTP/1.1, its length
//! kept when the upstream gave one, chunked otherwise (close-delimited for HTTP/1.0).
//! Trailers are not passed to an HTTP/1.1 client. A stream the upstream refused, or a
//! connect that failed, goes to another endpoint (the body is in hand).
//!
//! Runs on: a worker, inside a client connection's task.

use bytes::Bytes;
use strait_discovery::spec::{HeaderEdits, UpstreamProtocol};

use super::exchange::Exchange;
use super::forward::{hold_body, BodyState, HoldError};
use super::prepare::Forward;
use super::Next;
use crate::error::{ErrorKind, ProxyError, Retry, Side};
use crate::h2::upstream::{pooled, refusal, send_all, StreamSlot, UpstreamHead};
use crate::http::chunked::ChunkedDecoder;
use crate::http::head;
use crate::http::BodyKind;
use crate::transport::Transport;
use crate::upstream::Observed;

/// A body over this many bytes is refused (413) when the route sets no limit.
const UNLIMITED_CAP: u64 = 16 * 1024 * 1024;

pub(super) async fn forward<S: Transport>(x: &mut Exchange<'_, '_, S>, to: Forward) -> Next {
    let view = x.view;
    let w = x.w;
    let idx = to.upstream;
    let upstream = &view.snapshot.upstreams[idx as usize];
    let settings = &upstream.settings;
    let mut body = match BodyState::new(&x.c.buf, x.req.head_len, x.req.body, x.req.max_body) {
        Ok(b) => b,
        Err(e) => return x.refuse(e).await,
    };
    if let Some(reason) = super::forward::unavailable(upstream) {
        let consumed = body.complete.then_some(body.end);
        return x.answer(503, reason, None, consumed).await;
    }
    let cap = match x.req.max_body {
        0 => UNLIMITED_CAP,
        n => n,
    };
    if !body.complete {
        match hold_body(x, &mut body, cap as usize).await {
            Ok(()) => {}
            Err(HoldError::Gone) => return Next::Close,
            Err(HoldError::Reply(e)) => return x.refuse(e).await,
        }
        if !body.complete {
            let e = crate::http::HeadError::new(
                413,
                "content too large: the request body is over the limit",
            );
            return x.refuse(e).await;
        }
    }
    let data = match body_bytes(&x.c.buf[x.req.head_len..body.end], x.req.body) {
        Some(d) => Bytes::from(d),
        None => {
            return x
                .refuse(crate::http::HeadError::new(400, "bad chunked body"))
                .await
        }
    };
    let c = &mut *x.c;
    c.out.truncate(to.head_base);
    head::finish_upstream_head(&mut c.out, false);
    let Some(up_head) = UpstreamHead::parse(&c.out, to.host_per_endpoint, false) else {
        return x
            .answer(
                502,
                "bad gateway: the request cannot be sent over HTTP/2",
                None,
                Some(body.end),
            )
            .await;
    };
    let tls = settings.protocol == UpstreamProtocol::H2;
    let tls_id = settings.tls.as_ref().map_or(0, |t| t.id);
    let stats = &view.upstream_stats[idx as usize];
    let mut tried = Vec::new();
    let mut last = ErrorKind::ConnectRefused;
    let mut first = true;
    for _ in 0..view.attempts(idx) {
        if !std::mem::take(&mut first) {
            stats.retries.inc();
        }
        let Some(ep) = view.pick_for(idx, &tried, &w.upstreams.health, x.started, to.hash) else {
            break;
        };
        tried.push(ep.addr);
        let least = settings.balance == strait_discovery::spec::Balance::LeastRequest;
        let _busy = least.then(|| w.upstreams.health.enter(ep.addr));
        let conn = match pooled(w, upstream, stats, ep.addr, tls_id).await {
            Ok(c) => c,
            Err(kind) => {
                last = kind;
                x.note_attempt(ep.addr, &status_of(kind));
                continue;
            }
        };
        let Some(request) = up_head.request(ep.addr, tls) else {
            break;
        };
        conn.streams.set(conn.streams.get() + 1);
        let _slot = StreamSlot(conn.streams.clone());
        let sent = async {
            let mut ready = conn.send.clone().ready().await?;
            let (response, mut up) = ready.send_request(request, data.is_empty())?;
            if !data.is_empty() {
                send_all(&mut up, data.clone(), true).await?;
            }
            response.await
        };
        let response = match monoio::time::timeout(settings.response_header_timeout, sent).await {
            Ok(Ok(r)) => r,
            Ok(Err(e)) => {
                if e.is_go_away() || e.is_io() {
                    conn.dead.set(true);
                }
                let e = refusal(&e);
                if !e.refused {
                    super::forward::observe(w, upstream, stats, ep.addr, Observed::GatewayError);
                }
                last = e.kind;
                x.note_attempt(ep.addr, &status_of(e.kind));
                continue;
            }
            Err(_) => {
                super::forward::observe(w, upstream, stats, ep.addr, Observed::GatewayError);
                last = ErrorKind::ResponseTimeout;
                x.note_attempt(ep.addr, &status_of(last));
                break;
            }
        };
        let (parts, mut up_body) = response.into_parts();
        let status = parts.status.as_u16();
        super::forward::observe(w, upstream, stats, ep.addr, Observed::of_status(status));
        x.note_attempt(ep.addr, &status);
        let no_body = x.req.head_only || status == 204 || status == 304;
        let length = parts
            .headers
            .get(http::header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
        let chunked = !no_body && length.is_none() && x.req.minor == 1;
        let close = x.req.client_close
            || w.draining.is_fired()
            || (!no_body && length.is_none() && !chunked);
        let c = &mut *x.c;
        let mut headers = parts.headers;
        let rid = &w.http.request_id;
        let request_id = (rid.enabled && !c.request_id.is_empty())
            .then_some((rid.header.as_str(), &c.request_id[..]));
        let none = HeaderEdits::default();
        let edits = x.req.response_edits.unwrap_or(&none);
        crate::h2::reply::edit_headers(&mut headers, edits, request_id);
        c.cout.clear();
        write_head(&mut c.cout, status, &headers, chunked, close);
        let head_bytes = c.cout.len() as u64;
        let mut sent_bytes = head_bytes;
        if !x.write_client_cout().await {
            x.log(status, sent_bytes, 0);
            return Next::Close;
        }
        let mut ok = true;
        if !no_body {
            while let Some(next) = timed(settings.read_timeout, up_body.data()).await {
                let Ok(chunk) = next else {
                    ok = false;
                    break;
                };
                let _ = up_body.flow_control().release_capacity(chunk.len());
                let c = &mut *x.c;
                c.cout.clear();
                if chunked {
                    c.cout
                        .extend_from_slice(format!("{:x}\r\n", chunk.len()).as_bytes());
                }
                c.cout.extend_from_slice(&chunk);
                if chunked {
                    c.cout.extend_from_slice(b"\r\n");
                }
                sent_bytes += c.cout.len() as u64;
                if chunk.is_empty() {
                    continue;
                }
                if !x.write_client_cout().await {
                    ok = false;
                    break;
                }
            }
            if ok && chunked {
                x.c.cout.clear();
                x.c.cout.extend_from_slice(b"0\r\n\r\n");
                sent_bytes += 5;
                ok = x.write_client_cout().await;
            }
        }
        x.c.buf.drain(..body.end.min(x.c.buf.len()));
        x.log(status, sent_bytes, sent_bytes - head_bytes);
        return if ok && !close {
            Next::KeepAlive
        } else {
            Next::Close
        };
    }
    let err = ProxyError::new(last, Side::Upstream, Retry::No);
    x.answer(err.status(), err.message(), None, Some(body.end))
        .await
}

/// Waits for `f` within `limit`; `None` at the end of the body or when it timed out
/// (then `Some(Err)` would have been the better answer, but the head is out either way).
async fn timed<F: std::future::Future<Output = Option<Result<Bytes, h2::Error>>>>(
    limit: std::time::Duration,
    f: F,
) -> Option<Result<Bytes, h2::Error>> {
    match monoio::time::timeout(limit, f).await {
        Ok(r) => r,
        Err(_) => Some(Err(h2::Error::from(h2::Reason::CANCEL))),
    }
}

fn status_of(kind: ErrorKind) -> u16 {
    ProxyError::new(kind, Side::Upstream, Retry::No).status()
}

/// The body's bytes, de-chunked.
fn body_bytes(raw: &[u8], kind: BodyKind) -> Option<Vec<u8>> {
    match kind {
        BodyKind::Chunked => {
            let mut out = Vec::with_capacity(raw.len());
            let mut dec = ChunkedDecoder::new();
            dec.feed(raw, |r| out.extend_from_slice(&raw[r])).ok()?;
            Some(out)
        }
        _ => Some(raw.to_vec()),
    }
}

/// The HTTP/1.1 response head for the client.
fn write_head(
    out: &mut Vec<u8>,
    status: u16,
    headers: &http::HeaderMap,
    chunked: bool,
    close: bool,
) {
    out.extend_from_slice(b"HTTP/1.1 ");
    out.extend_from_slice(status.to_string().as_bytes());
    out.push(b' ');
    out.extend_from_slice(crate::http::reply::reason_phrase(status).as_bytes());
    out.extend_from_slice(b"\r\n");
    for (name, value) in headers {
        if chunked && name == http::header::CONTENT_LENGTH {
            continue;
        }
        out.extend_from_slice(name.as_str().as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(value.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    if chunked {
        out.extend_from_slice(b"Transfer-Encoding: chunked\r\n");
    }
    if close {
        out.extend_from_slice(b"Connection: close\r\n");
    }
    out.extend_from_slice(b"\r\n");
}
