//! The proxy's own responses (404, 405, 502, 503, 504, 400…): small, `text/plain`, with a
//! body that names the reason; the bodiless `200` that opens a CONNECT tunnel; and the one
//! table of reason phrases.
//!
//! Runs on: workers. Writes into the caller's reusable buffer.

use super::head::push_u64;

/// The reason phrase of `status` (RFC 9110 §15 and the IANA status code registry), for
/// every head strait writes itself: the workers' own replies, the admin server's and the
/// echo backend's. An unregistered code gets `Unknown`.
pub fn reason_phrase(status: u16) -> &'static str {
    match status {
        100 => "Continue",
        101 => "Switching Protocols",
        102 => "Processing",
        103 => "Early Hints",
        200 => "OK",
        201 => "Created",
        202 => "Accepted",
        203 => "Non-Authoritative Information",
        204 => "No Content",
        205 => "Reset Content",
        206 => "Partial Content",
        207 => "Multi-Status",
        208 => "Already Reported",
        226 => "IM Used",
        300 => "Multiple Choices",
        301 => "Moved Permanently",
        302 => "Found",
        303 => "See Other",
        304 => "Not Modified",
        305 => "Use Proxy",
        307 => "Temporary Redirect",
        308 => "Permanent Redirect",
        400 => "Bad Request",
        401 => "Unauthorized",
        402 => "Payment Required",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        406 => "Not Acceptable",
        407 => "Proxy Authentication Required",
        408 => "Request Timeout",
        409 => "Conflict",
        410 => "Gone",
        411 => "Length Required",
        412 => "Precondition Failed",
        413 => "Content Too Large",
        414 => "URI Too Long",
        415 => "Unsupported Media Type",
        416 => "Range Not Satisfiable",
        417 => "Expectation Failed",
        418 => "I'm a teapot",
        421 => "Misdirected Request",
        422 => "Unprocessable Content",
        423 => "Locked",
        424 => "Failed Dependency",
        425 => "Too Early",
        426 => "Upgrade Required",
        428 => "Precondition Required",
        429 => "Too Many Requests",
        431 => "Request Header Fields Too Large",
        451 => "Unavailable For Legal Reasons",
        500 => "Internal Server Error",
        501 => "Not Implemented",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        504 => "Gateway Timeout",
        505 => "HTTP Version Not Supported",
        506 => "Variant Also Negotiates",
        507 => "Insufficient Storage",
        508 => "Loop Detected",
        510 => "Not Extended",
        511 => "Network Authentication Required",
        _ => "Unknown",
    }
}

/// The answer to a `CONNECT` whose tunnel is open: no content, so no `Content-Length`
/// (RFC 9110 §9.3.6); the tunnelled bytes follow it.
pub const CONNECT_ESTABLISHED: &[u8] = b"HTTP/1.1 200 Connection Established\r\n\r\n";

/// One of the proxy's own responses.
#[derive(Debug, Clone, Copy)]
pub struct Reply<'a> {
    pub status: u16,
    /// The reason, sent as the body (plus a newline).
    pub body: &'a str,
    /// An `Allow` header (405).
    pub allow: Option<&'a str>,
    /// The connection closes after it (`Connection: close`).
    pub close: bool,
    /// A HEAD request: headers only.
    pub head_only: bool,
    /// The client speaks HTTP/1.0: a kept connection says `Connection: keep-alive`.
    pub http10: bool,
}

/// Writes a complete response: status line, `Content-Type`, `Content-Length`,
/// optional `Allow`, the connection's fate, and the body.
pub fn write_reply(out: &mut Vec<u8>, r: &Reply<'_>) {
    let Reply {
        status,
        body,
        allow,
        close,
        head_only,
        http10,
    } = *r;
    out.extend_from_slice(b"HTTP/1.1 ");
    push_u64(out, u64::from(status));
    out.push(b' ');
    out.extend_from_slice(reason_phrase(status).as_bytes());
    out.extend_from_slice(
        b"\r\nServer: strait\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: ",
    );
    push_u64(out, body.len() as u64 + 1);
    out.extend_from_slice(b"\r\n");
    if let Some(allow) = allow {
        out.extend_from_slice(b"Allow: ");
        out.extend_from_slice(allow.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    if close {
        out.extend_from_slice(b"Connection: close\r\n");
    } else if http10 {
        out.extend_from_slice(b"Connection: keep-alive\r\n");
    }
    out.extend_from_slice(b"\r\n");
    if !head_only {
        out.extend_from_slice(body.as_bytes());
        out.push(b'\n');
    }
}

/// A response a route gives itself: a redirect, a direct response, a 429.
#[derive(Debug, Clone, Copy)]
pub struct Answer<'a> {
    pub status: u16,
    pub content_type: &'a str,
    /// Sent as is (no newline added); none on a HEAD request.
    pub body: &'a [u8],
    /// More fields (`Location`, `Retry-After`, the request id, a route's response
    /// headers), written in order.
    pub fields: &'a [(&'a str, &'a [u8])],
    pub close: bool,
    pub head_only: bool,
    pub http10: bool,
}

/// Writes a complete [`Answer`]: status line, `Server`, its fields, `Content-Type` (when
/// it has a body), `Content-Length`, the connection's fate, and the body.
pub fn write_answer(out: &mut Vec<u8>, a: &Answer<'_>) {
    out.extend_from_slice(b"HTTP/1.1 ");
    push_u64(out, u64::from(a.status));
    out.push(b' ');
    out.extend_from_slice(reason_phrase(a.status).as_bytes());
    out.extend_from_slice(b"\r\nServer: strait\r\n");
    for (name, value) in a.fields {
        out.extend_from_slice(name.as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(value);
        out.extend_from_slice(b"\r\n");
    }
    if !a.body.is_empty() {
        out.extend_from_slice(b"Content-Type: ");
        out.extend_from_slice(a.content_type.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"Content-Length: ");
    push_u64(out, a.body.len() as u64);
    out.extend_from_slice(b"\r\n");
    if a.close {
        out.extend_from_slice(b"Connection: close\r\n");
    } else if a.http10 {
        out.extend_from_slice(b"Connection: keep-alive\r\n");
    }
    out.extend_from_slice(b"\r\n");
    if !a.head_only {
        out.extend_from_slice(a.body);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reply_is_complete_and_names_the_reason() {
        let mut out = Vec::new();
        write_reply(
            &mut out,
            &Reply {
                status: 405,
                body: "method not allowed",
                allow: Some("GET, HEAD"),
                close: false,
                head_only: false,
                http10: false,
            },
        );
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "HTTP/1.1 405 Method Not Allowed\r\nServer: strait\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: 19\r\nAllow: GET, HEAD\r\n\r\nmethod not allowed\n"
        );
    }

    #[test]
    fn an_answer_carries_its_fields_type_and_exact_body() {
        let mut out = Vec::new();
        write_answer(
            &mut out,
            &Answer {
                status: 503,
                content_type: "text/html",
                body: b"<p>down</p>",
                fields: &[("Retry-After", b"30"), ("X-Request-Id", b"abc")],
                close: false,
                head_only: false,
                http10: false,
            },
        );
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "HTTP/1.1 503 Service Unavailable\r\nServer: strait\r\nRetry-After: 30\r\nX-Request-Id: abc\r\nContent-Type: text/html\r\nContent-Length: 11\r\n\r\n<p>down</p>"
        );
    }
}
