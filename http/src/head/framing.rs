//! What a head says about its message: the framing headers (body length, chunked, the
//! connection's fate, `Expect`), the request target and `Host`, a CONNECT's authority,
//! an upgrade request, and the path with its dot segments resolved. Malformed framing is
//! refused here (400 for requests, 502 for responses): the request-smuggling defences.
//!
//! Runs on: a worker, per request. Pure functions over a parsed head; no allocation except
//! a normalised path that had dot segments.

use httparse::Header;

use super::{Request, Response};
use crate::{BodyKind, HeadError};

/// Hop-by-hop headers (RFC 9110 §7.6.1) plus the framing headers the proxy re-emits.
pub(super) fn is_hop_by_hop(name: &str) -> bool {
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
    /// A request's `TE` lists `trailers` (RFC 9110 §10.1.4): its client takes trailer
    /// fields on a chunked response.
    pub te_trailers: bool,
    /// Header names listed in `Connection`, removed when forwarding.
    conn_tokens: [&'b str; MAX_CONN_TOKENS],
    n_tokens: usize,
}

impl Framing<'_> {
    pub(super) fn listed_in_connection(&self, name: &str) -> bool {
        self.conn_tokens[..self.n_tokens]
            .iter()
            .any(|t| t.eq_ignore_ascii_case(name))
    }
}

pub(super) fn trim(v: &[u8]) -> &[u8] {
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
    let mut expect_other = false;
    let mut unsupported_coding = false;
    let mut hosts = 0;
    let mut f = Framing {
        body: BodyKind::None,
        close: false,
        expect_continue: false,
        te_trailers: false,
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
                unsupported_coding |= !chunked;
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
        } else if request && name.eq_ignore_ascii_case("te") {
            f.te_trailers |= h.value.split(|b| *b == b',').any(|t| {
                let t = trim(t);
                trim(t.split(|b| *b == b';').next().unwrap_or(t)).eq_ignore_ascii_case(b"trailers")
            });
        } else if request && name.eq_ignore_ascii_case("expect") {
            let v = trim(h.value);
            if v.eq_ignore_ascii_case(b"100-continue") {
                expect_continue = true;
            } else {
                expect_other = true;
            }
        }
    }
    if te_seen && length.is_some() {
        return Err(bad("both Content-Length and Transfer-Encoding"));
    }
    if request && te_seen && !chunked {
        return Err(bad("Transfer-Encoding whose final coding is not chunked"));
    }
    if request && unsupported_coding {
        // `gzip, chunked`, `identity, chunked`: well-formed, but strait decodes chunked
        // only (nginx answers the same).
        return Err(HeadError::new(
            501,
            "not implemented: a transfer coding other than chunked",
        ));
    }
    if request && expect_other {
        return Err(HeadError::new(
            417,
            "expectation failed: only 100-continue is supported",
        ));
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

/// Validates a response head's framing.
pub fn analyze_response<'b>(resp: &Response<'_, 'b>) -> Result<Framing<'b>, HeadError> {
    framing(resp.headers, resp.minor, false)
}
