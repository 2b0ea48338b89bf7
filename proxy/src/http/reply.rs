//! The proxy's own responses (404, 405, 502, 503, 504, 400…): small, `text/plain`, with a
//! body that names the reason.
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

/// Writes a complete response: status line, `Content-Type`, `Content-Length`,
/// optional `Allow`, `Connection: close` when `close`, and `body` + a newline.
pub fn write_reply(
    out: &mut Vec<u8>,
    status: u16,
    body: &str,
    allow: Option<&str>,
    close: bool,
    head_only: bool,
) {
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
            405,
            "method not allowed",
            Some("GET, HEAD"),
            false,
            false,
        );
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "HTTP/1.1 405 Method Not Allowed\r\nServer: strait\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: 19\r\nAllow: GET, HEAD\r\n\r\nmethod not allowed\n"
        );
    }
}
