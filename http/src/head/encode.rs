//! The heads strait writes: the upstream request head (hop-by-hop fields dropped,
//! `X-Forwarded-*` added, framing re-emitted), the client's response head, interim (1xx)
//! heads and the 101 of an upgrade.
//!
//! Runs on: a worker, per request. Appends to the caller's reused buffer; nothing else
//! is allocated.

use std::net::IpAddr;

use super::framing::{is_hop_by_hop, trim, upgrade, Framing, RequestInfo};
use super::{Request, Response};
use crate::BodyKind;

/// The start of the `X-Forwarded-For` field written upstream.
const XFF: &[u8] = b"X-Forwarded-For: ";

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

/// Header changes on the way through (a route's filters) and a field to add when the
/// head lacks it (the request id). Applied in one pass over the fields: a field whose
/// name is removed or set is dropped, then the set and added ones are written.
#[derive(Debug, Clone, Copy, Default)]
pub struct Edits<'a> {
    /// Names (lower-case) whose fields are dropped.
    pub remove: &'a [String],
    /// Fields that replace every field of their name.
    pub set: &'a [(String, String)],
    /// Fields appended beside the existing ones.
    pub add: &'a [(String, String)],
    /// The request id: on a response head, `(name, value)` written when the head has no
    /// field of that name; on the upstream request head, written in place of any field
    /// of that name.
    pub ensure: Option<(&'a str, &'a [u8])>,
}

impl Edits<'_> {
    fn changes_fields(&self) -> bool {
        !(self.remove.is_empty() && self.set.is_empty())
    }

    /// Whether a field of this name is dropped (removed, or replaced by a set one).
    fn drops(&self, name: &str) -> bool {
        self.remove.iter().any(|r| r.eq_ignore_ascii_case(name))
            || self.set.iter().any(|(n, _)| n.eq_ignore_ascii_case(name))
    }

    /// Writes the set and added fields, and `ensure`'s unless `present`.
    fn write(&self, out: &mut Vec<u8>, present: bool) {
        for (n, v) in self.set.iter().chain(self.add) {
            push_header(out, n, v.as_bytes());
        }
        if let (Some((n, v)), false) = (self.ensure, present) {
            push_header(out, n, v);
        }
    }

    /// Whether `name` is `ensure`'s.
    fn is_ensured(&self, name: &str) -> bool {
        self.ensure
            .is_some_and(|(n, _)| n.eq_ignore_ascii_case(name))
    }
}

/// What the upstream request head says beyond the client's fields.
#[derive(Debug, Clone, Copy)]
pub struct Forwarding<'a> {
    /// The request target to send (path and query, rewritten).
    pub path: &'a str,
    /// The address appended to `X-Forwarded-For` (the connection's peer, or the client a
    /// PROXY header named); `None` for a client without one (a Unix socket), which passes
    /// the earlier hops only, as Envoy does.
    pub client_ip: Option<IpAddr>,
    pub host: HostHeader<'a>,
    /// The client is on TLS: `X-Forwarded-Proto: https`.
    pub https: bool,
    /// The peer is a trusted proxy: the client's `X-Forwarded-For` is kept and appended
    /// to; otherwise it is replaced.
    pub trusted_peer: bool,
    pub edits: Edits<'a>,
}

/// Writes the upstream request head, without the final blank line, into `out`:
/// request line with `path`, the client's end-to-end headers, `X-Forwarded-*`, with
/// `X-Forwarded-For` appended to (as from a trusted peer).
/// Call [`finish_upstream_head`] after it.
pub fn write_upstream_head(
    out: &mut Vec<u8>,
    req: &Request<'_, '_>,
    info: &RequestInfo<'_>,
    path: &str,
    client_ip: Option<IpAddr>,
    host: HostHeader<'_>,
) {
    let f = Forwarding {
        path,
        client_ip,
        host,
        https: false,
        trusted_peer: true,
        edits: Edits::default(),
    };
    write_upstream_head_for(out, req, info, &f);
}

/// Writes the upstream request head as `f` says (see [`write_upstream_head`]).
pub fn write_upstream_head_for(
    out: &mut Vec<u8>,
    req: &Request<'_, '_>,
    info: &RequestInfo<'_>,
    f: &Forwarding<'_>,
) {
    let proto: &[u8] = if f.https {
        b"X-Forwarded-Proto: https\r\n"
    } else {
        b"X-Forwarded-Proto: http\r\n"
    };
    out.extend_from_slice(req.method.as_bytes());
    out.push(b' ');
    out.extend_from_slice(f.path.as_bytes());
    out.extend_from_slice(b" HTTP/1.1\r\n");
    match f.host {
        HostHeader::Pass => push_header(out, "Host", info.host.as_bytes()),
        HostHeader::Set(h) => push_header(out, "Host", h.as_bytes()),
        HostHeader::Omit => {}
    }
    // An upgrade is the one hop-by-hop request the proxy passes on (see [`upgrade`]).
    let upgrading = upgrade(req, info).is_some();
    let edits = &f.edits;
    let editing = edits.changes_fields();
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
            || (editing && edits.drops(name))
            || edits.is_ensured(name)
        {
            continue;
        }
        push_header(out, name, h.value);
    }
    // Upstream, `ensure`'s field replaces the client's (the caller passes the client's
    // own value when it is to be kept).
    edits.write(out, false);
    // Every earlier hop, in order (several fields combine into one list, RFC 9110
    // §5.3), when the peer is trusted; then the client.
    let start = out.len();
    out.extend_from_slice(XFF);
    for h in req.headers.iter().filter(|_| f.trusted_peer) {
        if h.name.eq_ignore_ascii_case("x-forwarded-for") {
            let prev = trim(h.value);
            if !prev.is_empty() {
                out.extend_from_slice(prev);
                out.extend_from_slice(b", ");
            }
        }
    }
    match f.client_ip {
        Some(ip) => {
            push_ip(out, ip);
            out.extend_from_slice(b"\r\n");
            out.extend_from_slice(proto);
        }
        None => {
            // The earlier hops only, without the last `, `; no field when there were none.
            let end = if out.len() == start + XFF.len() {
                start
            } else {
                out.len() - 2
            };
            out.truncate(end);
            if end != start {
                out.extend_from_slice(b"\r\n");
            }
            out.extend_from_slice(proto);
        }
    }
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
    let edits = Edits::default();
    write_client_head_with(
        out,
        resp,
        framing,
        client_framing,
        keep_alive,
        client_minor,
        &edits,
    );
}

/// [`write_client_head`] with a route's response header edits and the request id.
pub fn write_client_head_with(
    out: &mut Vec<u8>,
    resp: &Response<'_, '_>,
    framing: &Framing<'_>,
    client_framing: ClientFraming,
    keep_alive: bool,
    client_minor: u8,
    edits: &Edits<'_>,
) {
    push_status_line(out, resp);
    let editing = edits.changes_fields();
    let mut ensured = false;
    for h in resp.headers {
        let name = h.name;
        if is_hop_by_hop(name)
            || framing.listed_in_connection(name)
            || name.eq_ignore_ascii_case("content-length")
            || (editing && edits.drops(name))
        {
            continue;
        }
        ensured |= edits.is_ensured(name);
        push_header(out, name, h.value);
    }
    edits.write(out, ensured);
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
    push_status_line(out, resp);
    for h in resp.headers {
        if !is_hop_by_hop(h.name) {
            push_header(out, h.name, h.value);
        }
    }
    out.extend_from_slice(b"\r\n");
}

/// `HTTP/1.1 <status> <reason>` and its CRLF, as the upstream gave them.
#[inline]
fn push_status_line(out: &mut Vec<u8>, resp: &Response<'_, '_>) {
    out.extend_from_slice(b"HTTP/1.1 ");
    push_u64(out, u64::from(resp.status));
    out.push(b' ');
    out.extend_from_slice(resp.reason.as_bytes());
    out.extend_from_slice(b"\r\n");
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
