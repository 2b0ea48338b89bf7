//! What strait writes on a client's HTTP/2 stream itself: its own answers (a gRPC error
//! for a gRPC request, plain text otherwise) and a route's response header edits on a
//! relayed response.
//!
//! Runs on: a worker, per stream that needs them.

use bytes::Bytes;
use h2::server::SendResponse;
use http::{HeaderMap, HeaderValue};
use strait_discovery::spec::HeaderEdits;

/// Is this a gRPC request (`content-type: application/grpc`, `+proto` and the like)?
pub(crate) fn is_grpc(headers: &HeaderMap) -> bool {
    headers
        .get(http::header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"application/grpc"))
}

/// The gRPC status for an HTTP status strait answers with.
fn grpc_code(status: u16) -> u32 {
    match status {
        504 | 408 => 4,
        413 | 431 => 8,
        404 | 405 | 501 => 12,
        502 | 503 => 14,
        400 => 13,
        _ => 2,
    }
}

/// Answers a gRPC request with a trailers-only error.
pub(crate) fn grpc_error(respond: &mut SendResponse<Bytes>, code: u32, message: &str) {
    let mut response = http::Response::new(());
    let h = response.headers_mut();
    h.insert(
        http::header::CONTENT_TYPE,
        HeaderValue::from_static("application/grpc"),
    );
    h.insert("grpc-status", HeaderValue::from(code));
    if let Ok(v) = HeaderValue::from_str(&percent_encode(message)) {
        h.insert("grpc-message", v);
    }
    let _ = respond.send_response(response, true);
}

/// gRPC's grpc-message encoding: printable ASCII but `%` as is, the rest `%XX`.
fn percent_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if (0x20..0x7f).contains(&b) && b != b'%' {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// Answers with strait's own `status` (a gRPC error for a gRPC request).
pub(crate) fn reply(respond: &mut SendResponse<Bytes>, grpc: bool, status: u16, message: &str) {
    if grpc {
        return grpc_error(respond, grpc_code(status), message);
    }
    let mut response = http::Response::new(());
    *response.status_mut() =
        http::StatusCode::from_u16(status).unwrap_or(http::StatusCode::BAD_GATEWAY);
    response.headers_mut().insert(
        http::header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain"),
    );
    if let Ok(mut send) = respond.send_response(response, false) {
        let mut body = message.as_bytes().to_vec();
        body.push(b'\n');
        let _ = send.send_data(Bytes::from(body), true);
    }
}

/// Applies header `edits` (remove, set, add) to a response's `headers`, then adds the
/// request-id field `(name, value)` when the response lacks it. Names or values that
/// are not valid in HTTP/2 are skipped (the config checker refuses them beforehand).
pub(crate) fn edit_headers(
    headers: &mut HeaderMap,
    edits: &HeaderEdits,
    request_id: Option<(&str, &[u8])>,
) {
    for name in &edits.remove {
        headers.remove(name.as_str());
    }
    let field = |n: &str, v: &str| {
        Some((
            http::HeaderName::from_bytes(n.as_bytes()).ok()?,
            HeaderValue::from_str(v).ok()?,
        ))
    };
    for (n, v) in &edits.set {
        if let Some((n, v)) = field(n, v) {
            headers.insert(n, v);
        }
    }
    for (n, v) in &edits.add {
        if let Some((n, v)) = field(n, v) {
            headers.append(n, v);
        }
    }
    let id = request_id.and_then(|(n, v)| {
        Some((
            http::HeaderName::from_bytes(n.as_bytes()).ok()?,
            HeaderValue::from_bytes(v).ok()?,
        ))
    });
    if let Some((name, value)) = id {
        if !headers.contains_key(&name) {
            headers.insert(name, value);
        }
    }
}
