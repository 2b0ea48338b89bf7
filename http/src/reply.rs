//! The proxy's own responses (404, 405, 502, 503, 504, 400…): small, `text/plain`, with a
//! body that names the reason; and the bodiless `200` that opens a CONNECT tunnel.
//!
//! Runs on: workers. Writes into the caller's reusable buffer.

use super::head::push_u64;

/// Reason phrase for a status the proxy produces.
pub fn reason_phrase(status: u16) -> &'static str {
    match status {
        100 => "Continue",
        200 => "OK",
        400 => "Bad Request",
        404 => "Not Found",
        405 => "Method Not Allowed",
        408 => "Request Timeout",
        413 => "Content Too Large",
        414 => "URI Too Long",
        431 => "Request Header Fields Too Large",
        500 => "Internal Server Error",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        504 => "Gateway Timeout",
        505 => "HTTP Version Not Supported",
        _ => "Error",
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
}
