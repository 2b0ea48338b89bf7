//! Strict parsing of request and response heads: httparse over the connection's buffer, in
//! place, plus what httparse lets through and strait refuses (a bare LF, a request line
//! over its limit, a status code out of range).
//!
//! Runs on: a worker, per request. No allocation; `Ok(None)` while the head is incomplete.

use std::mem::MaybeUninit;

use httparse::Header;

use super::{Request, Response};
use crate::HeadError;

fn map_err(e: httparse::Error, request: bool, buf: &[u8]) -> HeadError {
    match e {
        httparse::Error::TooManyHeaders => HeadError::new(431, "too many header fields"),
        httparse::Error::Version if request => version_error(buf),
        httparse::Error::HeaderName => HeadError::new(400, "invalid header name"),
        httparse::Error::HeaderValue => HeadError::new(400, "invalid header value"),
        httparse::Error::NewLine => HeadError::new(400, "invalid line ending"),
        httparse::Error::Token => HeadError::new(400, "invalid token in request line"),
        _ => HeadError::new(400, "malformed head"),
    }
}

/// `buf` from its first byte that is not CR or LF: the empty lines a request may be
/// preceded by (RFC 9112 §2.2) skipped.
fn after_empty_lines(buf: &[u8]) -> &[u8] {
    let lead = buf
        .iter()
        .take_while(|b| **b == b'\r' || **b == b'\n')
        .count();
    &buf[lead..]
}

/// The request line at the start of `buf` (leading empty lines skipped), up to its CR or
/// LF or the end of what arrived.
fn request_line(buf: &[u8]) -> &[u8] {
    let line = after_empty_lines(buf);
    let end = line
        .iter()
        .position(|b| *b == b'\r' || *b == b'\n')
        .unwrap_or(line.len());
    &line[..end]
}

/// Whether `v` is an HTTP-version token: `HTTP/` DIGIT `.` DIGIT (RFC 9112 §2.3,
/// case-sensitive).
fn is_version_token(v: &[u8]) -> bool {
    v.len() == 8
        && v.starts_with(b"HTTP/")
        && v[5].is_ascii_digit()
        && v[6] == b'.'
        && v[7].is_ascii_digit()
}

/// Whether the request line is still arriving and its version so far could still become
/// an HTTP-version token.
fn version_pending(buf: &[u8]) -> bool {
    let line = request_line(buf);
    let complete = buf.len() > line.as_ptr() as usize - buf.as_ptr() as usize + line.len();
    let mut parts = line.split(|b| *b == b' ');
    let (Some(_), Some(_), Some(version), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return false;
    };
    !complete
        && version.len() < 8
        && version.iter().enumerate().all(|(i, b)| match i {
            0..=4 => *b == b"HTTP/"[i],
            6 => *b == b'.',
            _ => b.is_ascii_digit(),
        })
}

/// Why httparse refused the request line's version: a well-formed version strait does not
/// speak (`HTTP/2.0`, `HTTP/0.9`) is 505; anything else (`http/1.1`, `HTTP/1.1x`, a
/// space inside the target, which leaves more than three parts) is a malformed line, 400.
fn version_error(buf: &[u8]) -> HeadError {
    let mut parts = request_line(buf).split(|b| *b == b' ');
    let (Some(_), Some(_), Some(version), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return HeadError::new(400, "malformed request line");
    };
    if is_version_token(version) {
        HeadError::new(505, "HTTP version not supported")
    } else {
        HeadError::new(400, "malformed HTTP version")
    }
}

/// Rewrites an `HTTP/1.x` request version with another minor digit (`HTTP/1.2`) to
/// `HTTP/1.1` in place, so that it is served as HTTP/1.1 (RFC 9110 §2.5: a recipient
/// treats a higher minor version as the highest it speaks). Only a request line of three
/// parts whose version is exactly such a token (or its first eight bytes, while the line
/// is still arriving) is touched; returns whether it rewrote anything.
pub fn serve_minor_as_1_1(buf: &mut [u8]) -> bool {
    // The usual case: the first CR ends a request line in HTTP/1.1 or 1.0.
    if let Some(cr) = memchr::memchr(b'\r', buf) {
        let version = &buf[cr.saturating_sub(9)..cr];
        if version == b" HTTP/1.1" || version == b" HTTP/1.0" {
            return false;
        }
    }
    let line = request_line(buf);
    let mut spaces = line.iter().enumerate().filter(|(_, b)| **b == b' ');
    let (Some(_), Some((second, _)), None) = (spaces.next(), spaces.next(), spaces.next()) else {
        return false;
    };
    let version = &line[second + 1..];
    if !(is_version_token(version) && version[5] == b'1' && !matches!(version[7], b'0' | b'1')) {
        return false;
    }
    let at = line.as_ptr() as usize - buf.as_ptr() as usize + second + 1 + 7;
    buf[at] = b'1';
    true
}

/// Finds a line feed not preceded by a carriage return in `head`. httparse accepts a bare
/// LF as a line end (RFC 9112 §2.2 allows it), but another parser on the path may not
/// agree about where a field ends, so strait refuses it (a smuggling vector).
fn has_bare_lf(head: &[u8]) -> bool {
    memchr::memchr_iter(b'\n', head).any(|i| i == 0 || head[i - 1] != b'\r')
}

/// Checks the request line's length against `max` bytes (its CRLF excluded, leading
/// empty lines skipped): a longer one, or `max` bytes without a line end yet, is 414.
pub fn check_request_line(buf: &[u8], max: usize) -> Result<(), HeadError> {
    let line = after_empty_lines(buf);
    let end = line
        .iter()
        .take(max.saturating_add(2))
        .position(|b| *b == b'\n');
    let len = match end {
        Some(lf) => lf - usize::from(lf > 0 && line[lf - 1] == b'\r'),
        None => line.len(),
    };
    if len > max {
        return Err(HeadError::new(414, "request line too long"));
    }
    Ok(())
}

/// Parses a request head at the start of `buf`.
pub fn parse_request<'h, 'b>(
    buf: &'b [u8],
    headers: &'h mut [MaybeUninit<Header<'b>>],
) -> Result<Option<Request<'h, 'b>>, HeadError> {
    let mut req = httparse::Request::new(&mut []);
    let status = match req.parse_with_uninit_headers(buf, headers) {
        Ok(status) => status,
        // `HTTP/2` of a line still arriving: wait for the whole token before judging it.
        Err(httparse::Error::Version) if version_pending(buf) => return Ok(None),
        Err(e) => return Err(map_err(e, true, buf)),
    };
    let httparse::Status::Complete(len) = status else {
        if has_bare_lf(buf) {
            return Err(HeadError::new(400, "bare LF in the request head"));
        }
        return Ok(None);
    };
    if has_bare_lf(&buf[..len]) {
        return Err(HeadError::new(400, "bare LF in the request head"));
    }
    let (Some(method), Some(target), Some(minor)) = (req.method, req.path, req.version) else {
        return Err(HeadError::new(400, "malformed request line"));
    };
    Ok(Some(Request {
        method,
        target,
        minor,
        headers: req.headers,
        len,
    }))
}

/// Parses a response head at the start of `buf`.
pub fn parse_response<'h, 'b>(
    buf: &'b [u8],
    headers: &'h mut [MaybeUninit<Header<'b>>],
) -> Result<Option<Response<'h, 'b>>, HeadError> {
    let mut resp = httparse::Response::new(&mut []);
    let status = httparse::ParserConfig::default()
        .parse_response_with_uninit_headers(&mut resp, buf, headers)
        .map_err(|e| map_err(e, false, buf))?;
    let httparse::Status::Complete(len) = status else {
        if has_bare_lf(buf) {
            return Err(HeadError::new(502, "bare LF in the response head"));
        }
        return Ok(None);
    };
    if has_bare_lf(&buf[..len]) {
        return Err(HeadError::new(502, "bare LF in the response head"));
    }
    let (Some(code), Some(minor)) = (resp.code, resp.version) else {
        return Err(HeadError::new(502, "malformed status line"));
    };
    if !(100..=599).contains(&code) {
        return Err(HeadError::new(502, "status code out of range"));
    }
    Ok(Some(Response {
        status: code,
        reason: resp.reason.unwrap_or(""),
        minor,
        headers: resp.headers,
        len,
    }))
}
