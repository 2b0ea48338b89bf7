//! Strict parsing of request and response heads: httparse over the connection's buffer, in
//! place, plus what httparse lets through and strait refuses (a bare LF, a request line
//! over its limit, a status code out of range).
//!
//! Runs on: a worker, per request. No allocation; `Ok(None)` while the head is incomplete.

use std::mem::MaybeUninit;

use httparse::Header;

use super::{Request, Response};
use crate::HeadError;

fn map_err(e: httparse::Error, request: bool) -> HeadError {
    match e {
        httparse::Error::TooManyHeaders => HeadError::new(431, "too many header fields"),
        httparse::Error::Version if request => HeadError::new(505, "HTTP version not supported"),
        httparse::Error::HeaderName => HeadError::new(400, "invalid header name"),
        httparse::Error::HeaderValue => HeadError::new(400, "invalid header value"),
        httparse::Error::NewLine => HeadError::new(400, "invalid line ending"),
        httparse::Error::Token => HeadError::new(400, "invalid token in request line"),
        _ => HeadError::new(400, "malformed head"),
    }
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
    let lead = buf
        .iter()
        .take_while(|b| **b == b'\r' || **b == b'\n')
        .count();
    let line = &buf[lead..];
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
    let status = req
        .parse_with_uninit_headers(buf, headers)
        .map_err(|e| map_err(e, true))?;
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
        .map_err(|e| map_err(e, false))?;
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
