//! One HTTP/2 stream from a client: its headers become an HTTP/1.1 request head, checked
//! and routed exactly as an HTTP/1.1 client's (the same parser, limits, Host rules, path
//! normalisation and router). Then:
//! - to an `http1` upstream (and for every answer strait gives itself: 404, 405, 413,
//!   503…), the HTTP/1.1 engine runs the exchange over the stream (`pipe.rs`);
//! - to an `h2`/`h2c` upstream, the stream is relayed to a pooled upstream HTTP/2
//!   connection (`upstream.rs`);
//! - a gRPC request (`content-type: application/grpc…`) that strait answers itself gets a
//!   gRPC error (trailers-only, `grpc-status`), not an HTML page.
//!
//! Runs on: a worker, one task per stream.

use std::borrow::Cow;
use std::cell::Cell;
use std::rc::Rc;

use bytes::Bytes;
use h2::server::SendResponse;
use h2::RecvStream;
use http::request::Parts;
use strait_discovery::spec::PassHost;

use super::pipe::StreamPipe;
use super::reply;
use super::upstream::{self, Outgoing};
use super::Conn;
use crate::http::head::{self, Edits, Forwarding, HostHeader};
use crate::http1;
use crate::routing::{self, Decision as Routed};
use crate::worker::Worker;

/// Counts a stream in progress on its connection.
struct Active(Rc<Cell<usize>>);

impl Drop for Active {
    fn drop(&mut self) {
        self.0.set(self.0.get() - 1);
    }
}

/// What to do with a stream, decided from its head.
enum Decision {
    /// The HTTP/1.1 engine runs it (an `http1` upstream, or strait's own answer).
    Engine,
    /// Relayed to an HTTP/2 upstream.
    Relay(Box<Outgoing>),
    /// A gRPC error strait answers itself: (`grpc-status`, message, HTTP status counted).
    Grpc(u32, &'static str, u16),
}

pub(super) async fn serve(
    req: http::Request<RecvStream>,
    mut respond: SendResponse<Bytes>,
    w: Rc<Worker>,
    conn: Conn,
) {
    let _active = Active(conn.active.clone());
    let (parts, body) = req.into_parts();
    let grpc = reply::is_grpc(&parts.headers);
    if parts.method == http::Method::CONNECT {
        // Extended CONNECT (WebSocket over HTTP/2) is not offered in SETTINGS either.
        reply::reply(
            &mut respond,
            grpc,
            501,
            "CONNECT over HTTP/2 is not supported",
        );
        return;
    }
    let chunked =
        !body.is_end_stream() && !parts.headers.contains_key(http::header::CONTENT_LENGTH);
    let head = synthesize(&parts, chunked);
    let decision = {
        let view = w.upstreams.table.view();
        decide(&head, &parts, grpc, &w, &conn, &view)
    };
    match decision {
        Decision::Engine => {
            let head_request = parts.method == http::Method::HEAD;
            let body = (!body.is_end_stream()).then_some(body);
            let (pipe, resp) = StreamPipe::new(head, body, chunked, respond, head_request);
            http1::serve_stream(pipe, (conn.peer, &conn.trusted), &w, conn.tls.clone()).await;
            resp.borrow_mut().finish();
        }
        Decision::Relay(out) => upstream::forward(*out, body, respond, &w, &conn).await,
        Decision::Grpc(code, message, status) => {
            w.metrics.unrouted.record(status, std::time::Duration::ZERO);
            reply::grpc_error(&mut respond, code, message);
        }
    }
}

/// The HTTP/1.1 request head an HTTP/2 request stands for: `:authority` as `Host`,
/// cookies joined (RFC 9113 §8.2.3), a chunked body when its length is not known. What
/// HTTP/2 forbids (connection-specific fields) the h2 crate has refused already;
/// `Expect` is dropped (the client sends its body as flow control allows).
pub(super) fn synthesize(parts: &Parts, chunked: bool) -> Vec<u8> {
    let mut out = Vec::with_capacity(512);
    out.extend_from_slice(parts.method.as_str().as_bytes());
    out.push(b' ');
    let target = parts.uri.path_and_query().map_or("/", |p| p.as_str());
    out.extend_from_slice(if target.is_empty() {
        b"/"
    } else {
        target.as_bytes()
    });
    out.extend_from_slice(b" HTTP/1.1\r\n");
    let authority = parts.uri.authority().map(|a| a.as_str());
    if let Some(a) = authority {
        push(&mut out, b"host", a.as_bytes());
    }
    let mut cookies: Vec<&[u8]> = Vec::new();
    for (name, value) in &parts.headers {
        match name.as_str() {
            "host" if authority.is_some() => {}
            "cookie" => cookies.push(value.as_bytes()),
            "expect" | "te" => {}
            n => push(&mut out, n.as_bytes(), value.as_bytes()),
        }
    }
    if !cookies.is_empty() {
        out.extend_from_slice(b"cookie: ");
        for (i, c) in cookies.iter().enumerate() {
            if i > 0 {
                out.extend_from_slice(b"; ");
            }
            out.extend_from_slice(c);
        }
        out.extend_from_slice(b"\r\n");
    }
    if chunked {
        out.extend_from_slice(b"transfer-encoding: chunked\r\n");
    }
    out.extend_from_slice(b"\r\n");
    out
}

fn push(out: &mut Vec<u8>, name: &[u8], value: &[u8]) {
    out.extend_from_slice(name);
    out.extend_from_slice(b": ");
    out.extend_from_slice(value);
    out.extend_from_slice(b"\r\n");
}

/// Routes the head like the HTTP/1.1 engine would. Anything the engine would refuse or
/// answer itself goes to it (the same answer, the same log line), except a gRPC request's,
/// which gets a gRPC error; a route to an HTTP/2 upstream is relayed.
fn decide(
    head: &[u8],
    parts: &Parts,
    grpc: bool,
    w: &Worker,
    conn: &Conn,
    view: &Rc<crate::upstream::View>,
) -> Decision {
    let mut hb = head::header_buf();
    let Ok(req) = head::reader::parse_complete(head, &mut hb, &w.head_limits) else {
        return Decision::Engine;
    };
    let Ok(info) = head::analyze_request(&req) else {
        return Decision::Engine;
    };
    let Ok(path) = head::normalize_path(info.path) else {
        return Decision::Engine;
    };
    let target: Cow<'_, str> = match (&path, info.path_and_query.split_once('?')) {
        (Cow::Borrowed(_), _) => Cow::Borrowed(info.path_and_query),
        (Cow::Owned(p), Some((_, query))) => Cow::Owned(format!("{p}?{query}")),
        (Cow::Owned(p), None) => Cow::Owned(p.clone()),
    };
    let route = match routing::find(view, &req, &info, (&path, &target)) {
        Ok(route) => route,
        Err(Routed::NotFound) if grpc => {
            return Decision::Grpc(12, "no route matches this host and path", 404)
        }
        Err(Routed::MethodNotAllowed(_)) if grpc => {
            return Decision::Grpc(12, "method not allowed on this route", 405)
        }
        Err(_) => return Decision::Engine,
    };
    // A route that answers itself: the engine writes its answer.
    if route.filters.redirect.is_some() || route.filters.direct_response.is_some() {
        return Decision::Engine;
    }
    let client = routing::client(conn.peer, &conn.trusted, req.headers);
    let idx = routing::backend(view, route, &req, &path, &client);
    let upstream = &view.snapshot.upstreams[idx as usize];
    if !upstream.settings.protocol.is_h2() {
        return Decision::Engine;
    }
    if routing::limit(view, route, &req, &client).is_some() {
        // A gRPC client reads UNAVAILABLE (what HTTP 429 maps to); others get the engine's
        // 429 (the bucket is still empty).
        return if grpc {
            Decision::Grpc(14, "rate limited: this route's rate limit is reached", 429)
        } else {
            Decision::Engine
        };
    }
    let rewritten = route.rewrite(&target);
    let (host, per_endpoint) = match &upstream.settings.pass_host {
        PassHost::Pass => (HostHeader::Pass, false),
        PassHost::Rewrite(h) => (HostHeader::Set(h), false),
        PassHost::Node => (HostHeader::Omit, true),
    };
    let mut out = Vec::with_capacity(head.len() + 128);
    let rid = &w.http.request_id;
    let mut request_id = Vec::new();
    routing::fill_request_id(w, req.headers, &mut request_id);
    let edits = &route.filters.request_headers;
    let forwarding = Forwarding {
        path: &rewritten,
        client_ip: conn.peer.ip(),
        host,
        https: conn.tls.is_some(),
        trusted_peer: client.trusted_peer,
        edits: Edits {
            remove: &edits.remove,
            set: &edits.set,
            add: &edits.add,
            ensure: rid
                .enabled
                .then_some((rid.header.as_str(), &request_id[..])),
        },
    };
    head::write_upstream_head_for(&mut out, &req, &info, &forwarding);
    head::finish_upstream_head(&mut out, false);
    let te_trailers = parts
        .headers
        .get_all(http::header::TE)
        .iter()
        .any(|v| v.as_bytes().eq_ignore_ascii_case(b"trailers"));
    let max_body = route
        .max_body_bytes
        .unwrap_or(w.http.max_request_body_bytes);
    let idle = route
        .stream_idle_timeout
        .unwrap_or(w.http.http2.stream_idle_timeout);
    let hash = crate::upstream::key::request_key(
        &upstream.settings.balance,
        req.headers,
        &path,
        client.ip,
    );
    let outgoing = upstream::Outgoing::from_head(
        &out,
        (route, idx, client.addr(conn.peer)),
        rid.enabled
            .then_some((rid.header.as_str(), &request_id[..])),
        view,
        max_body,
        idle,
        hash,
        per_endpoint,
        te_trailers,
        grpc,
        &req,
        &info,
    );
    match outgoing {
        Some(o) => Decision::Relay(Box::new(o)),
        None => Decision::Engine,
    }
}
