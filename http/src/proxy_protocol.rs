//! The HAProxy PROXY protocol, versions 1 (text) and 2 (binary), both directions: [`parse`]
//! reads the header a load balancer puts in front of a downstream connection, and
//! [`write_v1`], [`write_v2`] and [`write_v2_local`] build the header sent to an upstream.
//! Spec: <https://www.haproxy.org/download/2.8/doc/proxy-protocol.txt>.
//!
//! Runs on: a worker, once per connection. Pure functions over byte slices; no IO, no
//! allocation beyond growing the caller's output buffer. Parsing is strict and incremental:
//! an input that is still a valid beginning is [`Parsed::Partial`], anything that cannot
//! become a header is an [`Error`] as soon as it is seen, never a panic. A header is never
//! longer than [`MAX_LEN`], so a caller reads at most that much before deciding.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use crate::head::push_u64;

/// What a PROXY header says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Proxied {
    /// The connection was proxied for this client, to this destination.
    Addrs { src: SocketAddr, dst: SocketAddr },
    /// v1 `UNKNOWN` or v2 `LOCAL` (a health check) or an address family we do not carry
    /// (AF_UNIX, UNSPEC, UDP): use the real peer.
    Local,
}

/// The outcome of [`parse`] on input that is not (yet) wrong.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Parsed {
    /// A complete header of `len` bytes at the start of the input.
    Done { header: Proxied, len: usize },
    /// More bytes are needed (the input is a valid beginning so far).
    Partial,
}

/// A header that cannot be accepted: what is wrong, for a log line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Error(pub &'static str);

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.0)
    }
}

impl std::error::Error for Error {}

/// Longest header accepted: v1 is at most 107 bytes; v2 is 16 bytes plus its length, capped
/// at 536 (the largest address block, AF_UNIX's 216 bytes, plus a bounded amount of TLVs).
/// A longer v2 header is refused with an [`Error`].
pub const MAX_LEN: usize = V2_FIXED + V2_MAX_PAYLOAD;

/// The v2 signature: the first 12 bytes of every v2 header.
const V2_SIGNATURE: [u8; 12] = *b"\r\n\r\n\0\r\nQUIT\n";
/// Signature, version/command, family/protocol and the 2-byte length.
const V2_FIXED: usize = 16;
/// Largest v2 length (the bytes after the fixed part) accepted.
const V2_MAX_PAYLOAD: usize = 536;
/// Address block of TCP over IPv4: two addresses and two ports.
const V2_INET_LEN: usize = 12;
/// Address block of TCP over IPv6: two addresses and two ports.
const V2_INET6_LEN: usize = 36;
/// Version 2 with command LOCAL, and with command PROXY.
const V2_LOCAL: u8 = 0x20;
const V2_PROXY: u8 = 0x21;
/// Family/protocol bytes: TCP over IPv4 and TCP over IPv6.
const TCP4: u8 = 0x11;
const TCP6: u8 = 0x21;

/// Every v1 header starts with this.
const V1_PREFIX: &[u8] = b"PROXY ";
/// Longest v1 header, CRLF included (the spec's worst case, `UNKNOWN` with TCP6 fields).
const V1_MAX_LEN: usize = 107;

const NOT_PROXY: Error = Error("not a PROXY protocol header");
const V1_NO_CRLF: Error = Error("PROXY v1 header has no CRLF within 107 bytes");
const V1_BARE_LF: Error = Error("PROXY v1 header line ends with a bare LF");
const V1_PROTOCOL: Error = Error("PROXY v1 header has an unknown protocol");
const V1_BAD_BYTE: Error = Error("PROXY v1 header has a byte not allowed in an address");
const V1_FIELDS: Error = Error("PROXY v1 header does not have 4 fields after the protocol");
const V1_ADDRESS: Error = Error("PROXY v1 header has an address not of its protocol's family");
const V1_PORT: Error = Error("PROXY v1 header has an invalid port");
const V2_VERSION: Error = Error("PROXY v2 header has a version other than 2");
const V2_COMMAND: Error = Error("PROXY v2 header has a command other than LOCAL or PROXY");
const V2_FAMILY: Error = Error("PROXY v2 header has an unknown address family or protocol");
const V2_TOO_LONG: Error = Error("PROXY v2 header is longer than accepted");
const V2_TOO_SHORT: Error = Error("PROXY v2 header is too short for its addresses");

/// Parses the PROXY header at the start of `input`, v1 or v2. Bytes after the header are
/// left alone: [`Parsed::Done`] says how many belong to it.
pub fn parse(input: &[u8]) -> Result<Parsed, Error> {
    match input.first() {
        None => Ok(Parsed::Partial),
        Some(&b) if b == V2_SIGNATURE[0] => parse_v2(input),
        Some(&b) if b == V1_PREFIX[0] => parse_v1(input),
        Some(_) => Err(NOT_PROXY),
    }
}

/// Appends a v1 header (`PROXY TCP4 a b p q\r\n`, TCP6 for IPv6; when the families of `src`
/// and `dst` differ, the IPv4 one is mapped to IPv6 so both are TCP6).
pub fn write_v1(out: &mut Vec<u8>, src: SocketAddr, dst: SocketAddr) {
    out.extend_from_slice(V1_PREFIX);
    match IpPair::of(src.ip(), dst.ip()) {
        IpPair::V4(s, d) => {
            out.extend_from_slice(b"TCP4 ");
            push_ipv4(out, s);
            out.push(b' ');
            push_ipv4(out, d);
        }
        IpPair::V6(s, d) => {
            out.extend_from_slice(b"TCP6 ");
            push_ipv6(out, s);
            out.push(b' ');
            push_ipv6(out, d);
        }
    }
    out.push(b' ');
    push_u64(out, u64::from(src.port()));
    out.push(b' ');
    push_u64(out, u64::from(dst.port()));
    out.extend_from_slice(b"\r\n");
}

/// Appends a v2 header: command PROXY, TCP over IPv4 or IPv6 (same family rule as
/// [`write_v1`]), no TLVs.
pub fn write_v2(out: &mut Vec<u8>, src: SocketAddr, dst: SocketAddr) {
    out.extend_from_slice(&V2_SIGNATURE);
    out.push(V2_PROXY);
    match IpPair::of(src.ip(), dst.ip()) {
        IpPair::V4(s, d) => {
            push_v2_family_len(out, TCP4, V2_INET_LEN);
            out.extend_from_slice(&s.octets());
            out.extend_from_slice(&d.octets());
        }
        IpPair::V6(s, d) => {
            push_v2_family_len(out, TCP6, V2_INET6_LEN);
            out.extend_from_slice(&s.octets());
            out.extend_from_slice(&d.octets());
        }
    }
    out.extend_from_slice(&src.port().to_be_bytes());
    out.extend_from_slice(&dst.port().to_be_bytes());
}

/// Appends a v2 LOCAL header (no addresses): the receiver uses the connection's own peer.
pub fn write_v2_local(out: &mut Vec<u8>) {
    out.extend_from_slice(&V2_SIGNATURE);
    out.push(V2_LOCAL);
    push_v2_family_len(out, 0x00, 0);
}

// === v1 ===

/// Parses a v1 header: `PROXY TCP4|TCP6 src dst sport dport\r\n` or `PROXY UNKNOWN…\r\n`.
fn parse_v1(input: &[u8]) -> Result<Parsed, Error> {
    if !starts_with_prefix(input, V1_PREFIX)? {
        return Ok(Parsed::Partial);
    }
    let window = &input[..input.len().min(V1_MAX_LEN)];
    let Some(lf) = memchr::memchr(b'\n', window) else {
        if input.len() >= V1_MAX_LEN {
            return Err(V1_NO_CRLF);
        }
        check_v1_beginning(&input[V1_PREFIX.len()..])?;
        return Ok(Parsed::Partial);
    };
    // `lf >= V1_PREFIX.len()` (the prefix has no LF), and the prefix ends in a space, so a
    // CR before the LF is past the prefix.
    if window[lf - 1] != b'\r' {
        return Err(V1_BARE_LF);
    }
    let header = parse_v1_line(&input[V1_PREFIX.len()..lf - 1])?;
    Ok(Parsed::Done {
        header,
        len: lf + 1,
    })
}

/// Rejects an incomplete v1 line (after `PROXY `) that no more bytes could make valid.
fn check_v1_beginning(rest: &[u8]) -> Result<(), Error> {
    if let Some(after) = rest.strip_prefix(b"UNKNOWN") {
        return match after.first() {
            None | Some(b' ') | Some(b'\r') => Ok(()),
            Some(_) => Err(V1_PROTOCOL),
        };
    }
    for token in [&b"TCP4 "[..], b"TCP6 "] {
        if let Some(fields) = rest.strip_prefix(token) {
            let fields = fields.strip_suffix(b"\r").unwrap_or(fields);
            if !fields.iter().all(|&b| is_v1_field_byte(b)) {
                return Err(V1_BAD_BYTE);
            }
            return Ok(());
        }
    }
    let could_become = |token: &[u8]| token.starts_with(rest);
    if ![&b"UNKNOWN"[..], b"TCP4 ", b"TCP6 "]
        .into_iter()
        .any(could_become)
    {
        return Err(V1_PROTOCOL);
    }
    Ok(())
}

/// Bytes that may appear in the fields of a TCP4 or TCP6 line.
fn is_v1_field_byte(b: u8) -> bool {
    b.is_ascii_hexdigit() || matches!(b, b'.' | b':' | b' ')
}

/// Parses a complete v1 line between `PROXY ` and the CRLF.
fn parse_v1_line(line: &[u8]) -> Result<Proxied, Error> {
    if let Some(after) = line.strip_prefix(b"UNKNOWN") {
        // The receiver ignores whatever follows UNKNOWN.
        return match after.first() {
            None | Some(b' ') => Ok(Proxied::Local),
            Some(_) => Err(V1_PROTOCOL),
        };
    }
    let (v6, fields) = if let Some(fields) = line.strip_prefix(b"TCP4 ") {
        (false, fields)
    } else if let Some(fields) = line.strip_prefix(b"TCP6 ") {
        (true, fields)
    } else {
        return Err(V1_PROTOCOL);
    };
    let fields = std::str::from_utf8(fields).map_err(|_| V1_BAD_BYTE)?;
    let mut it = fields.split(' ');
    let mut next = || it.next().ok_or(V1_FIELDS);
    let (src, dst, sport, dport) = (next()?, next()?, next()?, next()?);
    if it.next().is_some() {
        return Err(V1_FIELDS);
    }
    Ok(Proxied::Addrs {
        src: SocketAddr::new(parse_v1_ip(src, v6)?, parse_v1_port(sport)?),
        dst: SocketAddr::new(parse_v1_ip(dst, v6)?, parse_v1_port(dport)?),
    })
}

/// An address of the line's family: a dotted quad for TCP4, an IPv6 address for TCP6.
fn parse_v1_ip(s: &str, v6: bool) -> Result<IpAddr, Error> {
    let ip = if v6 {
        s.parse::<Ipv6Addr>().map(IpAddr::V6)
    } else {
        s.parse::<Ipv4Addr>().map(IpAddr::V4)
    };
    ip.map_err(|_| V1_ADDRESS)
}

/// A port: 0-65535 in decimal, no sign, no leading zero except in `0` itself.
fn parse_v1_port(s: &str) -> Result<u16, Error> {
    let digits_only = !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    if !digits_only || (s.len() > 1 && s.starts_with('0')) {
        return Err(V1_PORT);
    }
    s.parse().map_err(|_| V1_PORT)
}

fn push_ipv4(out: &mut Vec<u8>, ip: Ipv4Addr) {
    for (i, octet) in ip.octets().into_iter().enumerate() {
        if i > 0 {
            out.push(b'.');
        }
        push_u64(out, u64::from(octet));
    }
}

fn push_ipv6(out: &mut Vec<u8>, ip: Ipv6Addr) {
    use std::io::Write;
    // Writing to a Vec cannot fail.
    let _ = write!(out, "{ip}");
}

// === v2 ===

/// What a v2 header's command and family/protocol bytes ask for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum V2Kind {
    /// LOCAL, or PROXY over a family or protocol we do not carry.
    Local,
    /// PROXY, TCP over IPv4.
    Tcp4,
    /// PROXY, TCP over IPv6.
    Tcp6,
}

impl V2Kind {
    /// The shortest length (bytes after the fixed part) that holds the addresses.
    fn min_len(self) -> usize {
        match self {
            V2Kind::Local => 0,
            V2Kind::Tcp4 => V2_INET_LEN,
            V2Kind::Tcp6 => V2_INET6_LEN,
        }
    }
}

/// Parses a v2 header, checking each fixed field as soon as it has arrived.
fn parse_v2(input: &[u8]) -> Result<Parsed, Error> {
    if !starts_with_prefix(input, &V2_SIGNATURE)? {
        return Ok(Parsed::Partial);
    }
    let Some(&ver_cmd) = input.get(12) else {
        return Ok(Parsed::Partial);
    };
    let proxy = v2_command(ver_cmd)?;
    let Some(&family) = input.get(13) else {
        return Ok(Parsed::Partial);
    };
    let kind = if proxy {
        v2_family(family)?
    } else {
        V2Kind::Local
    };
    let Some(len) = input.get(14..16) else {
        return Ok(Parsed::Partial);
    };
    let len = usize::from(u16::from_be_bytes([len[0], len[1]]));
    if len > V2_MAX_PAYLOAD {
        return Err(V2_TOO_LONG);
    }
    if len < kind.min_len() {
        return Err(V2_TOO_SHORT);
    }
    let Some(payload) = input.get(V2_FIXED..V2_FIXED + len) else {
        return Ok(Parsed::Partial);
    };
    Ok(Parsed::Done {
        header: v2_addrs(kind, payload).ok_or(V2_TOO_SHORT)?,
        len: V2_FIXED + len,
    })
}

/// Checks the version/command byte: true for PROXY, false for LOCAL.
fn v2_command(ver_cmd: u8) -> Result<bool, Error> {
    if ver_cmd >> 4 != 2 {
        return Err(V2_VERSION);
    }
    match ver_cmd & 0x0f {
        0 => Ok(false),
        1 => Ok(true),
        _ => Err(V2_COMMAND),
    }
}

/// Classifies the family/protocol byte of a PROXY command; the spec's other values are
/// refused.
fn v2_family(family: u8) -> Result<V2Kind, Error> {
    match family {
        TCP4 => Ok(V2Kind::Tcp4),
        TCP6 => Ok(V2Kind::Tcp6),
        // UNSPEC, UDP over IPv4 or IPv6, unix stream or datagram.
        0x00 | 0x12 | 0x22 | 0x31 | 0x32 => Ok(V2Kind::Local),
        _ => Err(V2_FAMILY),
    }
}

/// Reads the addresses at the start of `payload`; TLVs after them are skipped. None when
/// the payload is shorter than `kind.min_len()`.
fn v2_addrs(kind: V2Kind, payload: &[u8]) -> Option<Proxied> {
    let (src, dst, ports) = match kind {
        V2Kind::Local => return Some(Proxied::Local),
        V2Kind::Tcp4 => {
            let (src, dst, ports) = split_addrs::<4>(payload)?;
            (IpAddr::from(src), IpAddr::from(dst), ports)
        }
        V2Kind::Tcp6 => {
            let (src, dst, ports) = split_addrs::<16>(payload)?;
            (IpAddr::from(src), IpAddr::from(dst), ports)
        }
    };
    Some(Proxied::Addrs {
        src: SocketAddr::new(src, u16::from_be_bytes([ports[0], ports[1]])),
        dst: SocketAddr::new(dst, u16::from_be_bytes([ports[2], ports[3]])),
    })
}

/// Two `N`-byte addresses and the two ports, in that order.
fn split_addrs<const N: usize>(payload: &[u8]) -> Option<([u8; N], [u8; N], [u8; 4])> {
    let (src, rest) = payload.split_first_chunk::<N>()?;
    let (dst, rest) = rest.split_first_chunk::<N>()?;
    let (ports, _tlvs) = rest.split_first_chunk::<4>()?;
    Some((*src, *dst, *ports))
}

fn push_v2_family_len(out: &mut Vec<u8>, family: u8, len: usize) {
    out.push(family);
    // Only the fixed address lengths (12, 36) and 0 are written, all below u16::MAX.
    out.extend_from_slice(&(len as u16).to_be_bytes());
}

// === shared ===

/// The two addresses of a header, in the one family they are written in.
enum IpPair {
    V4(Ipv4Addr, Ipv4Addr),
    V6(Ipv6Addr, Ipv6Addr),
}

impl IpPair {
    /// Both addresses in one family: IPv4 when both are, else IPv6 (IPv4 mapped).
    fn of(src: IpAddr, dst: IpAddr) -> Self {
        match (src, dst) {
            (IpAddr::V4(s), IpAddr::V4(d)) => IpPair::V4(s, d),
            (s, d) => IpPair::V6(to_ipv6(s), to_ipv6(d)),
        }
    }
}

fn to_ipv6(ip: IpAddr) -> Ipv6Addr {
    match ip {
        IpAddr::V4(v4) => v4.to_ipv6_mapped(),
        IpAddr::V6(v6) => v6,
    }
}

/// Compares `input` with `prefix` over the bytes both have: Err on a difference, else
/// whether all of `prefix` has arrived.
fn starts_with_prefix(input: &[u8], prefix: &[u8]) -> Result<bool, Error> {
    let n = input.len().min(prefix.len());
    if input[..n] != prefix[..n] {
        return Err(NOT_PROXY);
    }
    Ok(n == prefix.len())
}

#[cfg(test)]
mod tests;
