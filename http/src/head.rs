//! Request and response heads: strict parsing (httparse over the connection's buffer,
//! in place), framing analysis, and the rewritten heads sent on.
//!
//! Runs on: a worker, per request. No allocation except growing the caller's output
//! buffer; parsing returns `Ok(None)` while the head is incomplete.

use std::mem::MaybeUninit;
use std::net::IpAddr;

use httparse::Header;

use super::{BodyKind, HeadError};

/// Most header fields parsed in one head (the configured limit may be lower).
pub const MAX_HEADERS: usize = 128;

/// Uninitialised header storage for one parse.
pub type HeaderBuf<'b> = [MaybeUninit<Header<'b>>; MAX_HEADERS];

/// Fresh header storage.
pub fn header_buf<'b>() -> HeaderBuf<'b> {
    [const { MaybeUninit::uninit() }; MAX_HEADERS]
}

/// A parsed request head, borrowing the connection's buffer.
#[derive(Debug)]
pub struct Request<'h, 'b> {
    pub method: &'b str,
    pub target: &'b str,
    /// HTTP/1.`minor`.
    pub minor: u8,
    pub headers: &'h [Header<'b>],
    /// Length of the head in the buffer, including the blank line.
    pub len: usize,
}

/// A parsed response head, borrowing the upstream connection's buffer.
#[derive(Debug)]
pub struct Response<'h, 'b> {
    pub status: u16,
    pub reason: &'b str,
    pub minor: u8,
    pub headers: &'h [Header<'b>],
    pub len: usize,
}

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

/// Hop-by-hop headers (RFC 9110 §7.6.1) plus the framing headers the proxy re-emits.
fn is_hop_by_hop(name: &str) -> bool {
    const HOP: [&str; 8] = [
        "connection",
        "keep-alive",
        "proxy-connection",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
        "proxy-authenticate",
    ];
    HOP.iter().any(|h| name.eq_ignore_ascii_case(h))
}

/// Up to this many extra header names listed in `Connection` are removed.
const MAX_CONN_TOKENS: usize = 8;

/// What the framing headers of a message say.
#[derive(Debug, Clone, Copy)]
pub struct Framing<'b> {
    pub body: BodyKind,
    /// `Connection: close` (1.1) or no `keep-alive` (1.0), or a close-delimited body.
    pub close: bool,
    /// `Connection: close` (1.1) or no `keep-alive` (1.0): the sender will close.
    pub conn_close: bool,
    /// `Expect: 100-continue` on a request.
    pub expect_continue: bool,
    /// Header names listed in `Connection`, removed when forwarding.
    conn_tokens: [&'b str; MAX_CONN_TOKENS],
    n_tokens: usize,
}

impl Framing<'_> {
    fn listed_in_connection(&self, name: &str) -> bool {
        self.conn_tokens[..self.n_tokens]
            .iter()
            .any(|t| t.eq_ignore_ascii_case(name))
    }
}

fn trim(v: &[u8]) -> &[u8] {
    let start = v
        .iter()
        .position(|b| *b != b' ' && *b != b'\t')
        .unwrap_or(v.len());
    let end = v
        .iter()
        .rposition(|b| *b != b' ' && *b != b'\t')
        .map_or(start, |e| e + 1);
    &v[start..end]
}

fn parse_length(v: &[u8]) -> Option<u64> {
    let v = trim(v);
    if v.is_empty() || v.len() > 19 || !v.iter().all(u8::is_ascii_digit) {
        return None;
    }
    v.iter().try_fold(0u64, |acc, d| {
        acc.checked_mul(10)?.checked_add(u64::from(d - b'0'))
    })
}

/// Reads the framing headers. `request` selects request rules (no close-delimited body;
/// Host required on 1.1); `status` is 0 for requests.
fn framing<'b>(headers: &[Header<'b>], minor: u8, request: bool) -> Result<Framing<'b>, HeadError> {
    let bad = |reason| HeadError::new(if request { 400 } else { 502 }, reason);
    let mut length: Option<u64> = None;
    let mut chunked = false;
    let mut te_seen = false;
    let mut close = minor == 0;
    let mut expect_continue = false;
    let mut hosts = 0;
    let mut f = Framing {
        body: BodyKind::None,
        close: false,
        expect_continue: false,
        conn_close: false,
        conn_tokens: [""; MAX_CONN_TOKENS],
        n_tokens: 0,
    };
    for h in headers {
        let name = h.name;
        if name.eq_ignore_ascii_case("content-length") {
            let v = parse_length(h.value).ok_or_else(|| bad("invalid Content-Length"))?;
            if length.is_some_and(|l| l != v) {
                return Err(bad("conflicting Content-Length values"));
            }
            length = Some(v);
        } else if name.eq_ignore_ascii_case("transfer-encoding") {
            if minor == 0 && request {
                return Err(bad("Transfer-Encoding in an HTTP/1.0 request"));
            }
            te_seen = true;
            // The final coding decides; anything after "chunked" is invalid.
            for coding in h.value.split(|b| *b == b',') {
                let coding = trim(coding);
                if coding.is_empty() {
                    continue;
                }
                if chunked {
                    return Err(bad("a coding after chunked in Transfer-Encoding"));
                }
                chunked = coding.eq_ignore_ascii_case(b"chunked");
            }
        } else if name.eq_ignore_ascii_case("connection") {
            let Ok(v) = std::str::from_utf8(h.value) else {
                return Err(bad("invalid Connection header"));
            };
            for token in v.split(',').map(str::trim).filter(|t| !t.is_empty()) {
                if token.eq_ignore_ascii_case("close") {
                    close = true;
                } else if token.eq_ignore_ascii_case("keep-alive") {
                    if minor == 0 {
                        close = false;
                    }
                } else if f.n_tokens < MAX_CONN_TOKENS {
                    f.conn_tokens[f.n_tokens] = token;
                    f.n_tokens += 1;
                }
            }
        } else if request && name.eq_ignore_ascii_case("host") {
            hosts += 1;
        } else if request && name.eq_ignore_ascii_case("expect") {
            expect_continue = trim(h.value).eq_ignore_ascii_case(b"100-continue");
        }
    }
    if te_seen && length.is_some() {
        return Err(bad("both Content-Length and Transfer-Encoding"));
    }
    if request && te_seen && !chunked {
        return Err(bad("Transfer-Encoding whose final coding is not chunked"));
    }
    if request && (hosts > 1 || (hosts == 0 && minor == 1)) {
        return Err(bad(if hosts > 1 {
            "more than one Host header"
        } else {
            "missing Host header"
        }));
    }
    f.body = match (chunked, te_seen, length) {
        (true, _, _) => BodyKind::Chunked,
        // A response with a non-chunked coding is delimited by close (RFC 9112 §6.3).
        (false, true, _) => BodyKind::Close,
        (false, false, Some(n)) => BodyKind::Length(n),
        (false, false, None) if request => BodyKind::None,
        (false, false, None) => BodyKind::Close,
    };
    f.conn_close = close;
    f.close = close || f.body == BodyKind::Close;
    f.expect_continue = expect_continue && !f.body.is_empty();
    Ok(f)
}

/// What a request says about itself, beyond the request line.
#[derive(Debug, Clone, Copy)]
pub struct RequestInfo<'b> {
    /// Host header (or the authority of an absolute-form target), as sent.
    pub host: &'b str,
    /// Origin-form path and query.
    pub path_and_query: &'b str,
    /// Path without the query.
    pub path: &'b str,
    pub framing: Framing<'b>,
}

/// Validates a request head and extracts routing and framing facts. The target must be
/// in origin form (`/path`) or absolute form (`http://host/path`); the asterisk and
/// authority forms are refused (400) (a `CONNECT` goes to [`analyze_connect`] instead). Identical repeated `Content-Length` values are
/// collapsed into one (RFC 9110 §8.6); differing ones, a list in one field, or a value
/// that is not all digits are refused.
pub fn analyze_request<'b>(req: &Request<'_, 'b>) -> Result<RequestInfo<'b>, HeadError> {
    let framing = framing(req.headers, req.minor, true)?;
    let mut host = req
        .headers
        .iter()
        .find(|h| h.name.eq_ignore_ascii_case("host"))
        .map(|h| std::str::from_utf8(trim(h.value)).unwrap_or(""))
        .unwrap_or("");
    let mut target = req.target;
    if !target.starts_with('/') {
        // absolute-form: http://authority/path
        let rest = target
            .strip_prefix("http://")
            .or_else(|| target.strip_prefix("https://"))
            .ok_or_else(|| HeadError::new(400, "invalid request target"))?;
        let slash = rest.find(['/', '?']).unwrap_or(rest.len());
        host = &rest[..slash];
        if host.is_empty() {
            return Err(HeadError::new(400, "absolute-form target without a host"));
        }
        target = if slash == rest.len() {
            "/"
        } else {
            &rest[slash..]
        };
        if target.starts_with('?') {
            return Err(HeadError::new(400, "invalid request target"));
        }
    }
    if host
        .bytes()
        .any(|b| b <= b' ' || b == b'/' || b == b'@' || b >= 0x7f)
    {
        return Err(HeadError::new(400, "invalid Host header"));
    }
    let path = target.split_once('?').map_or(target, |(p, _)| p);
    Ok(RequestInfo {
        host,
        path_and_query: target,
        path,
        framing,
    })
}

/// Validates a `CONNECT` request head (RFC 9110 §9.3.6) and returns its target: the
/// authority (`host:port`) it asks for. The target must be in authority form, with a host
/// (a name of letters, digits, `-`, `.`, `_`, or a bracketed IPv6 literal) and a port
/// 1–65535; any other form is refused (400). A `Host` header, when present (HTTP/1.1
/// requires one, as for any request), must name the same authority, in any case. A
/// CONNECT has no content: a `Content-Length` above 0 or a `Transfer-Encoding` is 400.
/// The framing headers are otherwise held to [`analyze_request`]'s rules.
pub fn analyze_connect<'b>(req: &Request<'_, 'b>) -> Result<&'b str, HeadError> {
    let framing = framing(req.headers, req.minor, true)?;
    if !framing.body.is_empty() {
        return Err(HeadError::new(400, "a CONNECT request with content"));
    }
    let authority = req.target;
    if !is_authority(authority) {
        return Err(HeadError::new(400, "invalid CONNECT target: not host:port"));
    }
    let host = req
        .headers
        .iter()
        .find(|h| h.name.eq_ignore_ascii_case("host"));
    if let Some(h) = host {
        if !trim(h.value).eq_ignore_ascii_case(authority.as_bytes()) {
            return Err(HeadError::new(
                400,
                "the Host header differs from the CONNECT target",
            ));
        }
    }
    Ok(authority)
}

/// True for an authority-form target: `name:port` or `[v6]:port`, port 1–65535.
fn is_authority(target: &str) -> bool {
    let (host, port) = if let Some(rest) = target.strip_prefix('[') {
        let Some((v6, port)) = rest.split_once("]:") else {
            return false;
        };
        let v6_ok = v6.contains(':')
            && v6
                .bytes()
                .all(|b| b.is_ascii_hexdigit() || b == b':' || b == b'.');
        (v6_ok.then_some(v6), port)
    } else {
        let Some((name, port)) = target.split_once(':') else {
            return false;
        };
        let name_ok = name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.' || b == b'_');
        (name_ok.then_some(name), port)
    };
    let port_ok = (1..=5).contains(&port.len())
        && port.bytes().all(|b| b.is_ascii_digit())
        && port.parse::<u16>().is_ok_and(|p| p > 0);
    host.is_some_and(|h| !h.is_empty()) && port_ok
}

/// Resolves `.` and `..` segments of a request path (RFC 3986 §5.2.4), so that routing
/// and the upstream see the same path a browser would: `/public/../admin` is `/admin`.
/// A `..` above the root, or a dot segment spelt with `%2e`, is refused (400).
pub fn normalize_path(path: &str) -> Result<std::borrow::Cow<'_, str>, HeadError> {
    let encoded_dot = |seg: &str| {
        let b = seg.as_bytes();
        b.windows(3)
            .any(|w| w[0] == b'%' && w[1] == b'2' && (w[2] | 0x20) == b'e')
    };
    if !path.contains("/.") && !encoded_dot(path) {
        return Ok(std::borrow::Cow::Borrowed(path));
    }
    let mut out: Vec<&str> = Vec::new();
    let mut trailing_slash = false;
    for seg in path.split('/').skip(1) {
        trailing_slash = false;
        if encoded_dot(seg) {
            let decoded = seg.replace("%2e", ".").replace("%2E", ".");
            if decoded == "." || decoded == ".." {
                return Err(HeadError::new(
                    400,
                    "encoded dot segment in the request path",
                ));
            }
        }
        match seg {
            "." => trailing_slash = true,
            ".." => {
                if out.pop().is_none() {
                    return Err(HeadError::new(400, "request path climbs above the root"));
                }
                trailing_slash = true;
            }
            _ => out.push(seg),
        }
    }
    let mut normal = String::with_capacity(path.len());
    for seg in &out {
        normal.push('/');
        normal.push_str(seg);
    }
    if trailing_slash || normal.is_empty() {
        normal.push('/');
    }
    Ok(std::borrow::Cow::Owned(normal))
}

/// How the upstream request's `Host` header is produced.
#[derive(Debug, Clone, Copy)]
pub enum HostHeader<'a> {
    /// Copy the client's header.
    Pass,
    /// This value.
    Set(&'a str),
    /// None here: the caller appends one per endpoint.
    Omit,
}

/// Writes the upstream request head, without the final blank line, into `out`:
/// request line with `path`, the client's end-to-end headers, `X-Forwarded-*`.
/// Call [`finish_upstream_head`] after it.
pub fn write_upstream_head(
    out: &mut Vec<u8>,
    req: &Request<'_, '_>,
    info: &RequestInfo<'_>,
    path: &str,
    client_ip: IpAddr,
    host: HostHeader<'_>,
) {
    out.extend_from_slice(req.method.as_bytes());
    out.push(b' ');
    out.extend_from_slice(path.as_bytes());
    out.extend_from_slice(b" HTTP/1.1\r\n");
    match host {
        HostHeader::Pass => push_header(out, "Host", info.host.as_bytes()),
        HostHeader::Set(h) => push_header(out, "Host", h.as_bytes()),
        HostHeader::Omit => {}
    }
    // An upgrade is the one hop-by-hop request the proxy passes on (see [`upgrade`]).
    let upgrading = upgrade(req, info).is_some();
    for h in req.headers {
        let name = h.name;
        if upgrading && name.eq_ignore_ascii_case("upgrade") {
            push_header(out, name, h.value);
            continue;
        }
        if is_hop_by_hop(name) || info.framing.listed_in_connection(name) {
            continue;
        }
        if name.eq_ignore_ascii_case("host")
            || name.eq_ignore_ascii_case("expect")
            || name.eq_ignore_ascii_case("content-length")
            || name.eq_ignore_ascii_case("x-forwarded-for")
            || name.eq_ignore_ascii_case("x-forwarded-proto")
            || name.eq_ignore_ascii_case("x-forwarded-host")
        {
            continue;
        }
        push_header(out, name, h.value);
    }
    // Every earlier hop, in order (several fields combine into one list, RFC 9110
    // §5.3), then the client.
    out.extend_from_slice(b"X-Forwarded-For: ");
    for h in req.headers {
        if h.name.eq_ignore_ascii_case("x-forwarded-for") {
            let prev = trim(h.value);
            if !prev.is_empty() {
                out.extend_from_slice(prev);
                out.extend_from_slice(b", ");
            }
        }
    }
    push_ip(out, client_ip);
    out.extend_from_slice(b"\r\nX-Forwarded-Proto: http\r\n");
    push_header(out, "X-Forwarded-Host", info.host.as_bytes());
    match info.framing.body {
        BodyKind::Length(n) => {
            out.extend_from_slice(b"Content-Length: ");
            push_u64(out, n);
            out.extend_from_slice(b"\r\n");
        }
        BodyKind::Chunked => out.extend_from_slice(b"Transfer-Encoding: chunked\r\n"),
        BodyKind::None | BodyKind::Close => {}
    }
    if upgrading {
        out.extend_from_slice(b"Connection: upgrade\r\n");
    }
}

/// The protocols a request asks to switch to (RFC 9110 §7.8): its `Upgrade` value, when
/// it is HTTP/1.1 without a body and its `Connection` lists `upgrade`. Such a request is
/// forwarded with both headers, and a `101` answer to it starts a tunnel.
pub fn upgrade<'b>(req: &Request<'_, 'b>, info: &RequestInfo<'_>) -> Option<&'b [u8]> {
    if req.minor != 1 || !info.framing.body.is_empty() {
        return None;
    }
    if !info.framing.listed_in_connection("upgrade") {
        return None;
    }
    req.headers
        .iter()
        .find(|h| h.name.eq_ignore_ascii_case("upgrade"))
        .map(|h| trim(h.value))
        .filter(|v| !v.is_empty())
}

/// Writes a `101 Switching Protocols` for the client: the upstream's head minus
/// hop-by-hop fields, with its `Upgrade` and `Connection: upgrade` kept.
pub fn write_switching_head(out: &mut Vec<u8>, resp: &Response<'_, '_>) {
    out.extend_from_slice(b"HTTP/1.1 101 ");
    out.extend_from_slice(resp.reason.as_bytes());
    out.extend_from_slice(b"\r\n");
    for h in resp.headers {
        if h.name.eq_ignore_ascii_case("upgrade") || !is_hop_by_hop(h.name) {
            push_header(out, h.name, h.value);
        }
    }
    out.extend_from_slice(b"Connection: upgrade\r\n\r\n");
}

/// Ends a head written by [`write_upstream_head`].
pub fn finish_upstream_head(out: &mut Vec<u8>, close: bool) {
    if close {
        out.extend_from_slice(b"Connection: close\r\n");
    }
    out.extend_from_slice(b"\r\n");
}

/// How the response body travels to the client.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientFraming {
    /// No body (HEAD, 1xx, 204, 304).
    None,
    /// `Content-Length: n`.
    Length(u64),
    /// Chunked, either passed through or produced from a close-delimited body.
    Chunked,
    /// Delimited by closing the connection (HTTP/1.0 clients).
    Close,
}

/// Writes the response head for the client.
pub fn write_client_head(
    out: &mut Vec<u8>,
    resp: &Response<'_, '_>,
    framing: &Framing<'_>,
    client_framing: ClientFraming,
    keep_alive: bool,
    client_minor: u8,
) {
    out.extend_from_slice(b"HTTP/1.1 ");
    push_u64(out, u64::from(resp.status));
    out.push(b' ');
    out.extend_from_slice(resp.reason.as_bytes());
    out.extend_from_slice(b"\r\n");
    for h in resp.headers {
        let name = h.name;
        if is_hop_by_hop(name)
            || framing.listed_in_connection(name)
            || name.eq_ignore_ascii_case("content-length")
        {
            continue;
        }
        push_header(out, name, h.value);
    }
    match client_framing {
        ClientFraming::Length(n) => {
            out.extend_from_slice(b"Content-Length: ");
            push_u64(out, n);
            out.extend_from_slice(b"\r\n");
        }
        ClientFraming::Chunked => out.extend_from_slice(b"Transfer-Encoding: chunked\r\n"),
        ClientFraming::None | ClientFraming::Close => {
            // A HEAD or 304 response keeps the upstream's Content-Length as metadata.
            if let Some(h) = resp
                .headers
                .iter()
                .find(|h| h.name.eq_ignore_ascii_case("content-length"))
            {
                if client_framing == ClientFraming::None && resp.status != 204 && resp.status >= 200
                {
                    push_header(out, "Content-Length", trim(h.value));
                }
            }
        }
    }
    if !keep_alive {
        out.extend_from_slice(b"Connection: close\r\n");
    } else if client_minor == 0 {
        out.extend_from_slice(b"Connection: keep-alive\r\n");
    }
    out.extend_from_slice(b"\r\n");
}

/// Writes an interim (1xx) response for the client as received, minus hop-by-hop fields.
pub fn write_interim_head(out: &mut Vec<u8>, resp: &Response<'_, '_>) {
    out.extend_from_slice(b"HTTP/1.1 ");
    push_u64(out, u64::from(resp.status));
    out.push(b' ');
    out.extend_from_slice(resp.reason.as_bytes());
    out.extend_from_slice(b"\r\n");
    for h in resp.headers {
        if !is_hop_by_hop(h.name) {
            push_header(out, h.name, h.value);
        }
    }
    out.extend_from_slice(b"\r\n");
}

/// Validates a response head's framing.
pub fn analyze_response<'b>(resp: &Response<'_, 'b>) -> Result<Framing<'b>, HeadError> {
    framing(resp.headers, resp.minor, false)
}

fn push_header(out: &mut Vec<u8>, name: &str, value: &[u8]) {
    out.extend_from_slice(name.as_bytes());
    out.extend_from_slice(b": ");
    out.extend_from_slice(value);
    out.extend_from_slice(b"\r\n");
}

/// Appends a decimal number without allocating.
pub fn push_u64(out: &mut Vec<u8>, mut n: u64) {
    let mut digits = [0u8; 20];
    let mut i = digits.len();
    loop {
        i -= 1;
        digits[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    out.extend_from_slice(&digits[i..]);
}

fn push_ip(out: &mut Vec<u8>, ip: IpAddr) {
    match ip {
        IpAddr::V4(v4) => {
            for (i, octet) in v4.octets().into_iter().enumerate() {
                if i > 0 {
                    out.push(b'.');
                }
                push_u64(out, u64::from(octet));
            }
        }
        IpAddr::V6(v6) => {
            use std::io::Write;
            // Writing to a Vec cannot fail.
            let _ = write!(out, "{v6}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(buf: &[u8]) -> Result<Option<(usize, BodyKind, bool)>, HeadError> {
        let mut h = header_buf();
        let Some(req) = parse_request(buf, &mut h)? else {
            return Ok(None);
        };
        let info = analyze_request(&req)?;
        Ok(Some((req.len, info.framing.body, info.framing.close)))
    }

    #[test]
    fn a_head_split_at_every_byte_parses_the_same() {
        let raw = b"POST /v1/anything?x=1 HTTP/1.1\r\nHost: sd.httpbin.org\r\nContent-Length: 5\r\n\r\nhello";
        let full = parse(raw).unwrap().unwrap();
        assert_eq!(full, (raw.len() - 5, BodyKind::Length(5), false));
        for cut in 0..raw.len() - 5 {
            assert!(parse(&raw[..cut]).unwrap().is_none(), "cut {cut}");
        }
    }

    #[test]
    fn framing_rules() {
        let p = |s: &str| parse(s.as_bytes()).map(|o| o.map(|(_, b, c)| (b, c)));
        assert_eq!(
            p("GET / HTTP/1.0\r\n\r\n").unwrap(),
            Some((BodyKind::None, true))
        );
        assert_eq!(
            p("GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n").unwrap(),
            Some((BodyKind::None, false))
        );
        assert_eq!(
            p("POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n").unwrap(),
            Some((BodyKind::Chunked, false))
        );
        assert_eq!(
            p("GET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n").unwrap(),
            Some((BodyKind::None, true))
        );
        for (bad, status) in [
            ("GET / HTTP/1.1\r\n\r\n", 400),
            ("GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n", 400),
            ("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n", 400),
            ("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n", 400),
            ("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: -1\r\n\r\n", 400),
            ("POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip\r\n\r\n", 400),
            ("POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked, gzip\r\n\r\n", 400),
            ("GET / HTTP/2.0\r\nHost: a\r\n\r\n", 505),
            ("GET / HTTP/1.1\r\nHost : a\r\n\r\n", 400),
            ("GET / HTTP/1.1\r\nHost: a\r\n folded\r\n\r\n", 400),
            ("GET x HTTP/1.1\r\nHost: a\r\n\r\n", 400),
            ("GET / HTTP/1.1\nHost: a\r\n\r\n", 400),
            ("GET / HTTP/1.1\r\nHost: a\nX: b\r\n\r\n", 400),
            ("GET / HTTP/1.1\r\nHost: a\n\n", 400),
            ("GET http:///a HTTP/1.1\r\nHost: a\r\n\r\n", 400),
            ("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 1, 1\r\n\r\n", 400),
        ] {
            assert_eq!(p(bad).map(|_| ()).unwrap_err().status, status, "{bad:?}");
        }
    }

    #[test]
    fn identical_content_lengths_are_collapsed() {
        let raw = b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 2\r\ncontent-length: 2\r\n\r\nok";
        assert_eq!(parse(raw).unwrap().unwrap().1, BodyKind::Length(2));
    }

    #[test]
    fn a_bare_lf_is_refused_before_the_head_is_complete() {
        let mut h = header_buf();
        let e = parse_request(b"GET / HTTP/1.1\nHost", &mut h).unwrap_err();
        assert_eq!(e.status, 400);
    }

    #[test]
    fn request_line_length_is_checked_with_or_without_its_end() {
        let line = |n: usize| format!("GET /{} HTTP/1.1", "a".repeat(n - 14));
        assert_eq!(line(40).len(), 40);
        let ok = format!("\r\n{}\r\nHost: a\r\n\r\n", line(40));
        assert_eq!(check_request_line(ok.as_bytes(), 40), Ok(()));
        let long = format!("{}\r\n", line(41));
        assert_eq!(
            check_request_line(long.as_bytes(), 40).unwrap_err().status,
            414
        );
        // Unfinished: refused once it is longer than the limit, not before.
        assert_eq!(check_request_line(&long.as_bytes()[..40], 40), Ok(()));
        assert_eq!(
            check_request_line(&long.as_bytes()[..41], 40)
                .unwrap_err()
                .status,
            414
        );
        assert_eq!(
            check_request_line(&long.as_bytes()[..42], 40)
                .unwrap_err()
                .status,
            414
        );
    }

    #[test]
    fn upstream_head_drops_hop_by_hop_and_sets_forwarding_headers() {
        let raw = b"GET http://sd.httpbin.org/v1/a HTTP/1.1\r\nHost: ignored\r\nConnection: close, X-Secret\r\nX-Secret: 1\r\nKeep-Alive: 5\r\nX-Forwarded-For: 10.0.0.1\r\nAccept: */*\r\n\r\n";
        let mut h = header_buf();
        let req = parse_request(raw, &mut h).unwrap().unwrap();
        let info = analyze_request(&req).unwrap();
        assert_eq!(info.host, "sd.httpbin.org");
        assert_eq!(info.path, "/v1/a");
        let mut out = Vec::new();
        write_upstream_head(
            &mut out,
            &req,
            &info,
            "/a",
            "127.0.0.9".parse().unwrap(),
            HostHeader::Pass,
        );
        finish_upstream_head(&mut out, false);
        let s = String::from_utf8(out).unwrap();
        assert_eq!(
            s,
            "GET /a HTTP/1.1\r\nHost: sd.httpbin.org\r\nAccept: */*\r\nX-Forwarded-For: 10.0.0.1, 127.0.0.9\r\nX-Forwarded-Proto: http\r\nX-Forwarded-Host: sd.httpbin.org\r\n\r\n"
        );
    }

    #[test]
    fn an_upgrade_request_keeps_upgrade_and_connection_upgrade_only() {
        let head = |raw: &str| {
            let mut h = header_buf();
            let req = parse_request(raw.as_bytes(), &mut h).unwrap().unwrap();
            let info = analyze_request(&req).unwrap();
            let asked = upgrade(&req, &info).map(<[u8]>::to_vec);
            let mut out = Vec::new();
            let ip = "127.0.0.9".parse().unwrap();
            write_upstream_head(&mut out, &req, &info, "/", ip, HostHeader::Pass);
            finish_upstream_head(&mut out, false);
            (asked, String::from_utf8(out).unwrap())
        };
        let (asked, out) = head(
            "GET / HTTP/1.1\r\nHost: a\r\nConnection: keep-alive, Upgrade, X-Hop\r\nX-Hop: 1\r\nUpgrade: websocket\r\nSec-WebSocket-Key: k\r\n\r\n",
        );
        assert_eq!(asked.as_deref(), Some(&b"websocket"[..]));
        assert!(out.contains("\r\nUpgrade: websocket\r\n"), "{out}");
        assert!(out.ends_with("\r\nConnection: upgrade\r\n\r\n"), "{out}");
        assert!(
            out.contains("Sec-WebSocket-Key: k\r\n") && !out.contains("X-Hop"),
            "{out}"
        );
        // Not an upgrade: no `upgrade` token, HTTP/1.0, or a body.
        for raw in [
            "GET / HTTP/1.1\r\nHost: a\r\nUpgrade: websocket\r\n\r\n",
            "GET / HTTP/1.0\r\nConnection: upgrade\r\nUpgrade: websocket\r\n\r\n",
            "POST / HTTP/1.1\r\nHost: a\r\nConnection: upgrade\r\nUpgrade: h2c\r\nContent-Length: 1\r\n\r\nx",
        ] {
            let (asked, out) = head(raw);
            assert_eq!(asked, None, "{raw}");
            assert!(!out.to_ascii_lowercase().contains("upgrade"), "{out}");
        }
    }

    #[test]
    fn a_connect_names_an_authority_and_carries_no_content() {
        let connect = |raw: &str| {
            let mut h = header_buf();
            let req = parse_request(raw.as_bytes(), &mut h).unwrap().unwrap();
            analyze_connect(&req)
                .map(str::to_owned)
                .map_err(|e| e.status)
        };
        for (raw, authority) in [
            (
                "CONNECT a.test:443 HTTP/1.1\r\nHost: a.test:443\r\n\r\n",
                "a.test:443",
            ),
            (
                "CONNECT A.test:443 HTTP/1.1\r\nHost: a.TEST:443\r\n\r\n",
                "A.test:443",
            ),
            ("CONNECT 10.0.0.1:22 HTTP/1.0\r\n\r\n", "10.0.0.1:22"),
            (
                "CONNECT [::1]:8443 HTTP/1.1\r\nHost: [::1]:8443\r\nContent-Length: 0\r\n\r\n",
                "[::1]:8443",
            ),
        ] {
            assert_eq!(connect(raw), Ok(authority.to_owned()), "{raw:?}");
        }
        for raw in [
            "CONNECT /anything HTTP/1.1\r\nHost: a.test\r\n\r\n",
            "CONNECT http://a.test:443/ HTTP/1.1\r\nHost: a.test:443\r\n\r\n",
            "CONNECT a.test HTTP/1.1\r\nHost: a.test\r\n\r\n",
            "CONNECT a.test: HTTP/1.1\r\nHost: a.test:\r\n\r\n",
            "CONNECT :443 HTTP/1.1\r\nHost: :443\r\n\r\n",
            "CONNECT a.test:0 HTTP/1.1\r\nHost: a.test:0\r\n\r\n",
            "CONNECT a.test:65536 HTTP/1.1\r\nHost: a.test:65536\r\n\r\n",
            "CONNECT a.test:+443 HTTP/1.1\r\nHost: a.test:+443\r\n\r\n",
            "CONNECT u@a.test:443 HTTP/1.1\r\nHost: u@a.test:443\r\n\r\n",
            "CONNECT a.test:443:1 HTTP/1.1\r\nHost: a.test:443:1\r\n\r\n",
            "CONNECT [a.test]:443 HTTP/1.1\r\nHost: [a.test]:443\r\n\r\n",
            "CONNECT * HTTP/1.1\r\nHost: a.test\r\n\r\n",
            // The Host names another authority, or none on HTTP/1.1.
            "CONNECT a.test:443 HTTP/1.1\r\nHost: b.test:443\r\n\r\n",
            "CONNECT a.test:443 HTTP/1.1\r\nHost: a.test\r\n\r\n",
            "CONNECT a.test:443 HTTP/1.1\r\n\r\n",
            // Content.
            "CONNECT a.test:443 HTTP/1.1\r\nHost: a.test:443\r\nContent-Length: 2\r\n\r\nhi",
            "CONNECT a.test:443 HTTP/1.1\r\nHost: a.test:443\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
        ] {
            assert_eq!(connect(raw), Err(400), "{raw:?}");
        }
    }

    #[test]
    fn dot_segments_are_resolved_or_refused() {
        let n = |p: &str| {
            normalize_path(p)
                .map(|c| c.into_owned())
                .map_err(|e| e.status)
        };
        assert_eq!(n("/a/b"), Ok("/a/b".into()));
        assert_eq!(n("/public/../admin/users"), Ok("/admin/users".into()));
        assert_eq!(n("/a/./b/."), Ok("/a/b/".into()));
        assert_eq!(n("/a/.."), Ok("/".into()));
        assert_eq!(n("/a/.hidden"), Ok("/a/.hidden".into()));
        assert_eq!(n("/.."), Err(400));
        assert_eq!(n("/a/%2e%2E/b"), Err(400));
        assert_eq!(n("/a/%2e/b"), Err(400));
        assert_eq!(n("/a/x%2ey"), Ok("/a/x%2ey".into()));
    }

    #[test]
    fn response_framing() {
        let f = |raw: &str| {
            let mut h = header_buf();
            let r = parse_response(raw.as_bytes(), &mut h).unwrap().unwrap();
            analyze_response(&r).map(|f| (f.body, f.close))
        };
        assert_eq!(
            f("HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\n").unwrap(),
            (BodyKind::Length(3), false)
        );
        assert_eq!(
            f("HTTP/1.1 200 OK\r\n\r\n").unwrap(),
            (BodyKind::Close, true)
        );
        assert_eq!(
            f("HTTP/1.0 200 OK\r\nContent-Length: 3\r\n\r\n").unwrap(),
            (BodyKind::Length(3), true)
        );
        assert_eq!(
            f("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n").unwrap(),
            (BodyKind::Chunked, false)
        );
        assert_eq!(
            f("HTTP/1.1 200 OK\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\n")
                .unwrap_err()
                .status,
            502
        );
        assert_eq!(
            f("HTTP/1.1 200 OK\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n")
                .unwrap_err()
                .status,
            502
        );
        for bad in [
            "HTTP/1.1 200 OK\nContent-Length: 3\r\n\r\n",
            "HTTP/1.1 099 OK\r\n\r\n",
            "HTTP/1.1 600 OK\r\n\r\n",
            "HTTP/1.1 200 OK\r\nX: a\r\n b\r\n\r\n",
            "HTTP/1.1 200 OK\r\nX : a\r\n\r\n",
        ] {
            let mut h = header_buf();
            assert!(parse_response(bad.as_bytes(), &mut h).is_err(), "{bad:?}");
        }
    }
}
