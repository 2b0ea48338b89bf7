//! HTTP/2 to upstreams (`protocol: h2` or `h2c`): a per-worker pool of HTTP/2 connections
//! per endpoint ([`crate::upstream::H2Pool`]), streams multiplexed on them up to the peer's
//! `MAX_CONCURRENT_STREAMS` (a new connection when every one is full), and the relay of
//! one client stream to one upstream stream (`forward`): headers, DATA both ways
//! within each side's flow-control window, and trailers (gRPC's `grpc-status`).
//!
//! - An endpoint that leaves the table gets no new stream; its connections are dropped
//!   from the pool and close once their streams end (h2 closes a connection with no
//!   handle and no stream left).
//! - A stream the upstream refuses (REFUSED_STREAM, or above a GOAWAY's last stream id:
//!   it was not processed) is sent again to another endpoint when its whole body was
//!   held (up to `retry_body_bytes`).
//! - Errors strait produces on a gRPC request are gRPC errors in a trailers-only
//!   response: 14 UNAVAILABLE (no endpoint, connect failed, reset), 4 DEADLINE_EXCEEDED
//!   (timeouts), 8 RESOURCE_EXHAUSTED (body over the limit), 12 UNIMPLEMENTED (no route).
//! - A stream stays up as long as frames move: each wait is bounded by
//!   `http.http2.stream_idle_timeout`, not by the HTTP/1.1 read timeouts.
//!
//! Runs on: a worker. The h2 crate keeps each connection's state behind its own lock,
//! taken only by this worker's tasks (never contended across cores).

use std::cell::{Cell, RefCell};
use std::future::poll_fn;
use std::rc::Rc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use h2::server::SendResponse;
use h2::{Reason, RecvStream, SendStream};
use http::{HeaderMap, HeaderValue, Method, Uri};
use std::sync::Arc;

use strait_discovery::route::RouteEntry;
use strait_discovery::spec::{Filters, UpstreamProtocol};
use strait_discovery::{EndpointAddr, Upstream};

use super::io::PollIo;
use super::reply::{edit_headers, reply};
use super::Conn;
use crate::access_log::Record;
use crate::error::ErrorKind;
use crate::http::head::{self, Request as Head, RequestInfo};
use crate::http1::observe;
use crate::transport::ClientAddr;
use crate::upstream::View;
use crate::upstream::{H2Conn, Observed};
use crate::worker::Worker;

/// The HTTP/2 form of the HTTP/1.1 head strait wrote for an upstream (X-Forwarded-*,
/// Host rules and hop-by-hop removal applied): what every attempt sends.
pub(crate) struct UpstreamHead {
    method: Method,
    path: String,
    /// `:authority`: the Host strait would send (None: the endpoint's address).
    authority: Option<String>,
    headers: HeaderMap,
}

impl UpstreamHead {
    /// From `out`, a complete HTTP/1.1 request head; `te_trailers`: the client accepts
    /// trailers (gRPC), which HTTP/2 says with `te: trailers`.
    pub(crate) fn parse(out: &[u8], per_endpoint: bool, te_trailers: bool) -> Option<UpstreamHead> {
        let mut fields = [httparse::EMPTY_HEADER; head::MAX_HEADERS + 8];
        let mut r = httparse::Request::new(&mut fields);
        let Ok(httparse::Status::Complete(_)) = r.parse(out) else {
            return None;
        };
        let method = Method::from_bytes(r.method?.as_bytes()).ok()?;
        let path = r.path?.to_string();
        let mut authority = None;
        let mut headers = HeaderMap::with_capacity(r.headers.len() + 1);
        for h in r.headers.iter() {
            let name = h.name.to_ascii_lowercase();
            match name.as_str() {
                "host" => authority = std::str::from_utf8(h.value).ok().map(str::to_string),
                "connection" | "keep-alive" | "proxy-connection" | "transfer-encoding"
                | "upgrade" | "te" => {}
                _ => {
                    let name = http::header::HeaderName::from_bytes(name.as_bytes()).ok()?;
                    let value = HeaderValue::from_bytes(h.value).ok()?;
                    headers.append(name, value);
                }
            }
        }
        if te_trailers {
            headers.insert(http::header::TE, HeaderValue::from_static("trailers"));
        }
        Some(UpstreamHead {
            method,
            path,
            authority: if per_endpoint { None } else { authority },
            headers,
        })
    }

    /// The request for an attempt on `addr`.
    pub(crate) fn request(&self, addr: EndpointAddr, tls: bool) -> Option<http::Request<()>> {
        let authority = match &self.authority {
            Some(a) => a.clone(),
            None => match addr {
                EndpointAddr::Inet(a) => a.to_string(),
                EndpointAddr::Unix(_) => "localhost".to_string(),
            },
        };
        let uri = Uri::builder()
            .scheme(if tls { "https" } else { "http" })
            .authority(authority.as_str())
            .path_and_query(self.path.as_str())
            .build()
            .ok()?;
        let mut req = http::Request::new(());
        *req.method_mut() = self.method.clone();
        *req.uri_mut() = uri;
        *req.version_mut() = http::Version::HTTP_2;
        *req.headers_mut() = self.headers.clone();
        Some(req)
    }

    /// The declared body length, if any.
    fn content_length(&self) -> Option<u64> {
        self.headers
            .get(http::header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok()?.parse::<u64>().ok())
    }
}

/// A routed request for an HTTP/2 upstream, ready to send to any endpoint.
pub(super) struct Outgoing {
    view: Rc<View>,
    upstream: u32,
    stats: u32,
    /// The route's filters (its response header edits).
    filters: Arc<Filters>,
    /// The request id (`http.request_id`): returned to the client when the response
    /// lacks it.
    request_id: Option<(http::HeaderName, HeaderValue)>,
    /// The real client (`trusted_proxies`), for the access log.
    client: ClientAddr,
    max_body: u64,
    /// The route's stream idle timeout.
    idle: Duration,
    /// The request's `consistent_hash` key.
    hash: Option<u64>,
    head: UpstreamHead,
    grpc: bool,
    /// For the access log: the client's host and request line.
    host: String,
    request_line: String,
    user_agent: String,
}

impl Outgoing {
    /// A client stream routed to `route`, from the HTTP/1.1 head strait would send.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn from_head(
        out: &[u8],
        (route, upstream, client): (&RouteEntry, u32, ClientAddr),
        request_id: Option<(&str, &[u8])>,
        view: &Rc<View>,
        max_body: u64,
        idle: Duration,
        hash: Option<u64>,
        per_endpoint: bool,
        te_trailers: bool,
        grpc: bool,
        req: &Head<'_, '_>,
        info: &RequestInfo<'_>,
    ) -> Option<Outgoing> {
        let head = UpstreamHead::parse(out, per_endpoint, te_trailers)?;
        let user_agent = req
            .headers
            .iter()
            .find(|h| h.name.eq_ignore_ascii_case("user-agent"))
            .map(|h| String::from_utf8_lossy(h.value).into_owned())
            .unwrap_or_default();
        let request_id = request_id.and_then(|(name, value)| {
            Some((
                http::HeaderName::from_bytes(name.as_bytes()).ok()?,
                HeaderValue::from_bytes(value).ok()?,
            ))
        });
        Some(Outgoing {
            view: view.clone(),
            upstream,
            stats: route.stats,
            filters: route.filters.clone(),
            request_id,
            client,
            max_body,
            idle,
            hash,
            head,
            grpc,
            host: info.host.to_string(),
            request_line: format!("{} {} HTTP/2.0", req.method, req.target),
            user_agent,
        })
    }
}

/// The route's response header edits and the request id, on a relayed response.
fn edit_response(headers: &mut HeaderMap, out: &Outgoing) {
    let id = out
        .request_id
        .as_ref()
        .map(|(n, v)| (n.as_str(), v.as_bytes()));
    edit_headers(headers, &out.filters.response_headers, id);
}

/// Why an attempt failed.
pub(crate) struct AttemptError {
    pub(crate) kind: ErrorKind,
    /// The upstream did not process the stream: it may go to another endpoint.
    pub(crate) refused: bool,
}

/// Relays one client stream to an HTTP/2 upstream and the response back.
pub(super) async fn forward(
    out: Outgoing,
    mut body: RecvStream,
    mut respond: SendResponse<Bytes>,
    w: &Rc<Worker>,
    conn: &Conn,
) {
    let started = Instant::now();
    let view = out.view.clone();
    let upstream = &view.snapshot.upstreams[out.upstream as usize];
    let stats = &view.route_stats[out.stats as usize];
    let mut record = Record {
        client: Some(out.client),
        tls: conn.tls.clone(),
        h2: true,
        ..Record::default()
    };
    record.host.push_str(&out.host);
    record.request_line.push_str(&out.request_line);
    record.user_agent.push_str(&out.user_agent);
    record.upstream_scheme = if upstream.settings.tls.is_some() {
        "https"
    } else {
        "http"
    };
    if let Some(a) = &out.head.authority {
        record.upstream_host.push_str(a);
    }
    record.upstream_uri.push_str(&out.head.path);
    if let Some((_, id)) = &out.request_id {
        record
            .request_id
            .push_str(&String::from_utf8_lossy(id.as_bytes()));
    }
    let finish = |record: &mut Record, status: u16, bytes: u64| {
        let took = started.elapsed();
        stats.record(status, took);
        if let Some(access) = &w.access {
            record.status = status;
            // The body's DATA bytes (HPACK-coded heads are not counted).
            record.bytes_sent = bytes;
            record.body_bytes_sent = bytes;
            record.request_time = took.as_secs_f64();
            access.write(record);
        }
    };
    if let Some(reason) = crate::http1::unavailable(upstream) {
        reply(&mut respond, out.grpc, 503, reason);
        return finish(&mut record, 503, 0);
    }
    let declared = out.head.content_length();
    if out.max_body > 0 && declared.is_some_and(|n| n > out.max_body) {
        reply(
            &mut respond,
            out.grpc,
            413,
            "content too large: the request body is over the limit",
        );
        return finish(&mut record, 413, 0);
    }
    let idle = out.idle;
    // The body held for a replay: complete and within retry_body_bytes.
    let limit = upstream.settings.retry_body_bytes;
    let held: RefCell<Vec<Bytes>> = RefCell::new(Vec::new());
    let held_len = Cell::new(0usize);
    let body_done = Cell::new(body.is_end_stream());
    let body_total = Cell::new(0u64);
    let mut tried: Vec<EndpointAddr> = Vec::new();
    let allowed = view.attempts(out.upstream);
    let mut used = 0;
    let mut last = ErrorKind::ConnectRefused;
    let tls_id = upstream.settings.tls.as_ref().map_or(0, |t| t.id);
    let tls = upstream.settings.protocol == UpstreamProtocol::H2;
    while used < allowed {
        used += 1;
        let health = &w.upstreams.health;
        let Some(ep) = view.pick_for(out.upstream, &tried, health, started, out.hash) else {
            break;
        };
        tried.push(ep.addr);
        let least = upstream.settings.balance == strait_discovery::spec::Balance::LeastRequest;
        let _busy = least.then(|| health.enter(ep.addr));
        let up_stats = &view.upstream_stats[out.upstream as usize];
        let h2conn = match pooled(w, upstream, up_stats, ep.addr, tls_id).await {
            Ok(c) => c,
            Err(kind) => {
                last = kind;
                note(w, &mut record, ep.addr, &ProxyStatus(kind));
                continue;
            }
        };
        let Some(request) = out.head.request(ep.addr, tls) else {
            reply(
                &mut respond,
                out.grpc,
                400,
                "bad request: not a valid HTTP/2 request",
            );
            return finish(&mut record, 400, 0);
        };
        let end = body_done.get() && held.borrow().is_empty();
        h2conn.streams.set(h2conn.streams.get() + 1);
        let _open = StreamSlot(h2conn.streams.clone());
        let sent = async {
            let ready = h2conn.send.clone().ready().await.map_err(|e| refusal(&e))?;
            let mut ready = ready;
            ready.send_request(request, end).map_err(|e| refusal(&e))
        };
        let (response, mut up_send) = match monoio::time::timeout(idle, sent).await {
            Ok(Ok(pair)) => pair,
            Ok(Err(e)) => {
                h2conn.dead.set(true);
                last = e.kind;
                note(w, &mut record, ep.addr, &ProxyStatus(e.kind));
                continue;
            }
            Err(_) => {
                last = ErrorKind::ResponseTimeout;
                note(w, &mut record, ep.addr, &ProxyStatus(last));
                continue;
            }
        };
        // Replay what is held (a retry), then stream the rest while the response comes.
        let replay: Vec<Bytes> = held.borrow().clone();
        for (i, chunk) in replay.iter().enumerate() {
            let last_chunk = body_done.get() && i + 1 == replay.len();
            if send_all(&mut up_send, chunk.clone(), last_chunk)
                .await
                .is_err()
            {
                break;
            }
        }
        let relay = relay_request(
            &mut body,
            &mut up_send,
            RelayState {
                done: &body_done,
                held: &held,
                held_len: &held_len,
                total: &body_total,
                limit,
                max_body: out.max_body,
                idle,
            },
        );
        let mut relay = std::pin::pin!(relay);
        let response_head =
            monoio::time::timeout(upstream.settings.response_header_timeout, response);
        let mut response_head = std::pin::pin!(response_head);
        let mut relay_finished = false;
        let mut relay_failed = false;
        let head = loop {
            monoio::select! {
                r = &mut response_head => break r,
                r = &mut relay, if !relay_finished => {
                    relay_finished = true;
                    if let Err(status) = r {
                        relay_failed = true;
                        if status != 0 {
                            reply(&mut respond, out.grpc, status, "the request body is over the limit");
                            return finish(&mut record, status, 0);
                        }
                    }
                }
            }
        };
        let response = match head {
            Ok(Ok(r)) => r,
            Ok(Err(e)) => {
                let e = refusal(&e);
                if !e.refused {
                    observe(w, upstream, up_stats, ep.addr, Observed::GatewayError);
                }
                note(w, &mut record, ep.addr, &ProxyStatus(e.kind));
                last = e.kind;
                // Not processed, and every byte of the body is in hand: again, on another
                // connection (this endpoint may be picked again: it refused one stream).
                let replayable =
                    body_done.get() && (held_len.get() as u64) == body_total.get() && !relay_failed;
                if e.refused && replayable {
                    tried.retain(|t| *t != ep.addr);
                    continue;
                }
                break;
            }
            Err(_) => {
                observe(w, upstream, up_stats, ep.addr, Observed::GatewayError);
                last = ErrorKind::ResponseTimeout;
                note(w, &mut record, ep.addr, &ProxyStatus(last));
                break;
            }
        };
        let (parts, mut up_body) = response.into_parts();
        let status = parts.status.as_u16();
        observe(w, upstream, up_stats, ep.addr, Observed::of_status(status));
        if w.access.is_some() {
            note(w, &mut record, ep.addr, &status);
            record.upstream_time = started.elapsed().as_secs_f64();
        }
        let mut client_response = http::Response::new(());
        *client_response.status_mut() = parts.status;
        *client_response.headers_mut() = parts.headers;
        edit_response(client_response.headers_mut(), &out);
        let end = up_body.is_end_stream();
        let mut to_client = match respond.send_response(client_response, end) {
            Ok(s) => s,
            Err(_) => return finish(&mut record, status, 0),
        };
        let mut sent_bytes = 0u64;
        if !end {
            let back = relay_response(
                &mut up_body,
                &mut to_client,
                idle,
                out.grpc,
                &mut sent_bytes,
            );
            if relay_finished {
                let _ = back.await;
            } else {
                // Both ways at once: a bidirectional stream.
                let mut back = std::pin::pin!(back);
                loop {
                    monoio::select! {
                        _ = &mut back => break,
                        _ = &mut relay, if !relay_finished => relay_finished = true,
                    }
                }
            }
        }
        return finish(&mut record, status, sent_bytes);
    }
    let status = ProxyStatus(last).code();
    reply(&mut respond, out.grpc, status, message(last));
    finish(&mut record, status, 0)
}

/// Releases a stream's slot on its connection.
pub(crate) struct StreamSlot(pub(crate) Rc<Cell<usize>>);

impl Drop for StreamSlot {
    fn drop(&mut self) {
        self.0.set(self.0.get().saturating_sub(1));
    }
}

/// An attempt's status for the access log (`502`, `504`…).
struct ProxyStatus(ErrorKind);

impl ProxyStatus {
    fn code(&self) -> u16 {
        crate::error::ProxyError::new(
            self.0,
            crate::error::Side::Upstream,
            crate::error::Retry::No,
        )
        .status()
    }
}

impl std::fmt::Display for ProxyStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.code())
    }
}

fn message(kind: ErrorKind) -> &'static str {
    crate::error::ProxyError::new(kind, crate::error::Side::Upstream, crate::error::Retry::No)
        .message()
}

/// Adds an attempt to the access-log line.
fn note(w: &Worker, record: &mut Record, addr: EndpointAddr, status: &dyn std::fmt::Display) {
    use std::fmt::Write;
    if w.access.is_none() {
        return;
    }
    if !record.upstream_addr.is_empty() {
        record.upstream_addr.push_str(", ");
        record.upstream_status.push_str(", ");
    }
    let _ = write!(record.upstream_addr, "{addr}");
    let _ = write!(record.upstream_status, "{status}");
}

/// What an h2 error on a stream means for the attempt.
pub(crate) fn refusal(e: &h2::Error) -> AttemptError {
    let refused = e.reason() == Some(Reason::REFUSED_STREAM) || (e.is_go_away() && e.is_remote());
    let kind = if e.is_io() || e.is_go_away() || e.is_reset() {
        ErrorKind::UpstreamClosed
    } else {
        ErrorKind::BadResponse
    };
    AttemptError { kind, refused }
}

/// A pooled connection to `addr` with room for a stream, or a new one.
pub(crate) async fn pooled(
    w: &Worker,
    up: &Upstream,
    stats: &crate::metrics::UpstreamStats,
    addr: EndpointAddr,
    tls_id: u64,
) -> Result<Rc<H2Conn>, ErrorKind> {
    let key = (addr, tls_id);
    if let Some(c) = w.upstreams.h2.find(key) {
        return Ok(c);
    }
    let stream = crate::upstream::connect(
        &w.upstreams.health,
        &w.upstreams.tls,
        (up, None),
        stats,
        addr,
        w.id,
    )
    .await?;
    if let crate::transport::UpstreamStream::Tls(t) = &stream {
        if t.session().alpn_protocol() != Some(b"h2") {
            tracing::debug!(endpoint = %addr, upstream = %up.name, "the endpoint did not choose h2 by ALPN");
            return Err(ErrorKind::UpstreamTls);
        }
    }
    let cfg = &w.http.http2;
    let handshake = h2::client::Builder::new()
        .initial_window_size(cfg.initial_stream_window)
        .initial_connection_window_size(cfg.initial_connection_window)
        .max_send_buffer_size(cfg.max_send_buffer)
        .max_header_list_size(cfg.max_header_list_size)
        .enable_push(false)
        .handshake::<_, Bytes>(PollIo::new(stream, Vec::new()));
    let (send, connection) = match monoio::time::timeout(up.settings.connect_timeout, handshake)
        .await
    {
        Ok(Ok(pair)) => pair,
        Ok(Err(e)) => {
            tracing::debug!(endpoint = %addr, upstream = %up.name, "HTTP/2 handshake with the upstream failed: {e}");
            return Err(ErrorKind::UpstreamClosed);
        }
        Err(_) => return Err(ErrorKind::ConnectTimeout),
    };
    let dead = Rc::new(Cell::new(false));
    let task_dead = dead.clone();
    let stop = w.stop.clone();
    monoio::spawn(async move {
        let mut connection = std::pin::pin!(connection);
        monoio::select! {
            r = &mut connection => {
                if let Err(e) = r {
                    tracing::debug!(endpoint = %addr, "upstream HTTP/2 connection ended: {e}");
                }
            }
            () = stop.wait() => {}
        }
        task_dead.set(true);
    });
    let conn = Rc::new(H2Conn {
        send,
        streams: Rc::new(Cell::new(0)),
        dead,
    });
    w.upstreams.h2.add(key, conn.clone());
    Ok(conn)
}

/// Sends `data` on `send` as the window allows; `end` ends the stream with it.
pub(crate) async fn send_all(
    send: &mut SendStream<Bytes>,
    mut data: Bytes,
    end: bool,
) -> Result<(), h2::Error> {
    if data.is_empty() {
        if end {
            send.send_data(data, true)?;
        }
        return Ok(());
    }
    while !data.is_empty() {
        send.reserve_capacity(data.len());
        let n = match poll_fn(|cx| send.poll_capacity(cx)).await {
            Some(Ok(n)) => n.min(data.len()),
            Some(Err(e)) => return Err(e),
            None => return Err(h2::Error::from(Reason::CANCEL)),
        };
        if n == 0 {
            continue;
        }
        let chunk = data.split_to(n);
        send.send_data(chunk, end && data.is_empty())?;
    }
    Ok(())
}

/// Where the request body relay keeps its state, shared with the attempts loop.
struct RelayState<'a> {
    done: &'a Cell<bool>,
    held: &'a RefCell<Vec<Bytes>>,
    held_len: &'a Cell<usize>,
    total: &'a Cell<u64>,
    limit: usize,
    max_body: u64,
    idle: Duration,
}

/// The client's request body to the upstream stream, then its trailers. Holds what it
/// sends while the whole stays within `limit` (for a replay). `Err(413)`: over the body
/// limit (nothing was answered yet); `Err(0)`: the client or the upstream failed.
async fn relay_request(
    body: &mut RecvStream,
    up: &mut SendStream<Bytes>,
    s: RelayState<'_>,
) -> Result<(), u16> {
    if s.done.get() {
        return Ok(());
    }
    loop {
        let next = match monoio::time::timeout(s.idle, body.data()).await {
            Ok(n) => n,
            Err(_) => {
                up.send_reset(Reason::CANCEL);
                return Err(0);
            }
        };
        match next {
            Some(Ok(data)) => {
                let _ = body.flow_control().release_capacity(data.len());
                let before = s.total.get();
                s.total.set(before + data.len() as u64);
                if s.max_body > 0 && s.total.get() > s.max_body {
                    up.send_reset(Reason::CANCEL);
                    return Err(413);
                }
                // Held while everything so far is held and it stays within the limit.
                if s.held_len.get() as u64 == before && s.held_len.get() + data.len() <= s.limit {
                    s.held_len.set(s.held_len.get() + data.len());
                    s.held.borrow_mut().push(data.clone());
                }
                let end = body.is_end_stream();
                if send_all(up, data, end).await.is_err() {
                    return Err(0);
                }
                if end {
                    s.done.set(true);
                    return Ok(());
                }
            }
            Some(Err(_)) => {
                up.send_reset(Reason::CANCEL);
                return Err(0);
            }
            None => {
                s.done.set(true);
                match body.trailers().await {
                    Ok(Some(t)) => {
                        let _ = up.send_trailers(t);
                    }
                    _ => {
                        let _ = up.send_data(Bytes::new(), true);
                    }
                }
                return Ok(());
            }
        }
    }
}

/// The upstream's response body to the client, then its trailers (gRPC's status).
async fn relay_response(
    up: &mut RecvStream,
    client: &mut SendStream<Bytes>,
    idle: Duration,
    grpc: bool,
    sent: &mut u64,
) -> Result<(), ()> {
    loop {
        let next = match monoio::time::timeout(idle, up.data()).await {
            Ok(n) => n,
            Err(_) => {
                // The upstream stream is reset when its handles drop. A gRPC client gets
                // the status in trailers (its headers are out); others a reset.
                if grpc {
                    let mut t = HeaderMap::new();
                    t.insert("grpc-status", HeaderValue::from(4u32));
                    t.insert(
                        "grpc-message",
                        HeaderValue::from_static("stream idle timeout"),
                    );
                    let _ = client.send_trailers(t);
                } else {
                    client.send_reset(Reason::CANCEL);
                }
                return Err(());
            }
        };
        match next {
            Some(Ok(data)) => {
                let _ = up.flow_control().release_capacity(data.len());
                let n = data.len() as u64;
                let end = up.is_end_stream();
                if send_all(client, data, end).await.is_err() {
                    return Err(());
                }
                *sent += n;
                if end {
                    return Ok(());
                }
            }
            Some(Err(e)) => {
                client.send_reset(e.reason().unwrap_or(Reason::INTERNAL_ERROR));
                return Err(());
            }
            None => {
                match up.trailers().await {
                    Ok(Some(t)) => {
                        let _ = client.send_trailers(t);
                    }
                    Ok(None) => {
                        let _ = client.send_data(Bytes::new(), true);
                    }
                    Err(e) => client.send_reset(e.reason().unwrap_or(Reason::INTERNAL_ERROR)),
                }
                return Ok(());
            }
        }
    }
}
