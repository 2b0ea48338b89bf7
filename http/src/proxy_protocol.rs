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
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn sa(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    fn done(header: Proxied, len: usize) -> Result<Parsed, Error> {
        Ok(Parsed::Done { header, len })
    }

    fn addrs(src: &str, dst: &str) -> Proxied {
        Proxied::Addrs {
            src: sa(src),
            dst: sa(dst),
        }
    }

    fn v1(src: &str, dst: &str) -> Vec<u8> {
        let mut out = Vec::new();
        write_v1(&mut out, sa(src), sa(dst));
        out
    }

    fn v2(src: &str, dst: &str) -> Vec<u8> {
        let mut out = Vec::new();
        write_v2(&mut out, sa(src), sa(dst));
        out
    }

    /// A v2 header with the given command, family and payload (length taken from it).
    fn v2_raw(ver_cmd: u8, family: u8, payload: &[u8]) -> Vec<u8> {
        let mut out = V2_SIGNATURE.to_vec();
        out.push(ver_cmd);
        out.push(family);
        out.extend_from_slice(&(payload.len() as u16).to_be_bytes());
        out.extend_from_slice(payload);
        out
    }

    fn v1_err(line: &str) -> Error {
        parse(line.as_bytes()).unwrap_err()
    }

    fn assert_every_prefix_partial(header: &[u8]) {
        for n in 0..header.len() {
            assert_eq!(
                parse(&header[..n]),
                Ok(Parsed::Partial),
                "prefix of {n} bytes"
            );
        }
    }

    // --- v1 ---

    #[test]
    fn v1_ipv4_is_written_as_tcp4_and_parses_back() {
        let h = v1("192.0.2.1:56324", "198.51.100.7:443");
        assert_eq!(h, b"PROXY TCP4 192.0.2.1 198.51.100.7 56324 443\r\n");
        let want = addrs("192.0.2.1:56324", "198.51.100.7:443");
        assert_eq!(parse(&h), done(want, h.len()));
    }

    #[test]
    fn v1_ipv6_is_written_as_tcp6_and_parses_back() {
        let h = v1("[2001:db8::1]:1", "[::1]:65535");
        assert_eq!(h, b"PROXY TCP6 2001:db8::1 ::1 1 65535\r\n");
        let want = addrs("[2001:db8::1]:1", "[::1]:65535");
        assert_eq!(parse(&h), done(want, h.len()));
    }

    #[test]
    fn v1_mixed_families_map_the_ipv4_address_to_ipv6() {
        let h = v1("192.0.2.1:80", "[2001:db8::2]:0");
        assert_eq!(h, b"PROXY TCP6 ::ffff:192.0.2.1 2001:db8::2 80 0\r\n");
        let want = addrs("[::ffff:192.0.2.1]:80", "[2001:db8::2]:0");
        assert_eq!(parse(&h), done(want, h.len()));
        let h = v1("[2001:db8::2]:1", "10.0.0.1:2");
        let want = addrs("[2001:db8::2]:1", "[::ffff:10.0.0.1]:2");
        assert_eq!(parse(&h), done(want, h.len()));
    }

    #[test]
    fn v1_spec_worst_cases_parse() {
        let tcp4 = "PROXY TCP4 255.255.255.255 255.255.255.255 65535 65535\r\n";
        let want = addrs("255.255.255.255:65535", "255.255.255.255:65535");
        assert_eq!(parse(tcp4.as_bytes()), done(want, 56));
        let full = "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff";
        let tcp6 = format!("PROXY TCP6 {full} {full} 65535 65535\r\n");
        assert_eq!(tcp6.len(), 104);
        let want = addrs(&format!("[{full}]:65535"), &format!("[{full}]:65535"));
        assert_eq!(parse(tcp6.as_bytes()), done(want, 104));
        assert_eq!(parse(b"PROXY UNKNOWN\r\n"), done(Proxied::Local, 15));
        let unknown = format!("PROXY UNKNOWN {full} {full} 65535 65535\r\n");
        assert_eq!(unknown.len(), 107);
        assert_eq!(parse(unknown.as_bytes()), done(Proxied::Local, 107));
    }

    #[test]
    fn v1_unknown_ignores_what_follows_up_to_crlf() {
        let h = b"PROXY UNKNOWN whatever \x01\xff\r anything\r\nGET /";
        assert_eq!(parse(h), done(Proxied::Local, h.len() - 5));
        assert_eq!(v1_err("PROXY UNKNOWNX\r\n"), V1_PROTOCOL);
        assert_eq!(parse(b"PROXY UNKNOWNX"), Err(V1_PROTOCOL));
    }

    #[test]
    fn v1_every_prefix_is_partial() {
        assert_every_prefix_partial(&v1("192.0.2.1:56324", "198.51.100.7:443"));
        assert_every_prefix_partial(&v1("[2001:db8::1]:1", "[::1]:65535"));
        assert_every_prefix_partial(b"PROXY UNKNOWN\r\n");
        assert_every_prefix_partial(b"PROXY UNKNOWN \x01\xff\r\r\n");
    }

    #[test]
    fn v1_data_after_the_header_is_not_consumed() {
        let mut input = v1("192.0.2.1:1", "192.0.2.2:2");
        let len = input.len();
        input.extend_from_slice(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n");
        let want = addrs("192.0.2.1:1", "192.0.2.2:2");
        assert_eq!(parse(&input), done(want, len));
    }

    #[test]
    fn v1_bad_spaces_are_refused() {
        for line in [
            "PROXY  TCP4 1.2.3.4 5.6.7.8 1 2\r\n",
            "PROXY TCP4  1.2.3.4 5.6.7.8 1 2\r\n",
            "PROXY TCP4 1.2.3.4  5.6.7.8 1 2\r\n",
            "PROXY TCP4 1.2.3.4 5.6.7.8 1  2\r\n",
            "PROXY TCP4 1.2.3.4 5.6.7.8 1 2 \r\n",
            "PROXY TCP4 1.2.3.4 5.6.7.8 1\r\n",
            "PROXY TCP4 1.2.3.4 5.6.7.8 1 2 3\r\n",
            "PROXY TCP4\t1.2.3.4 5.6.7.8 1 2\r\n",
        ] {
            assert!(parse(line.as_bytes()).is_err(), "{line:?}");
        }
    }

    #[test]
    fn v1_ports_are_plain_decimal_without_leading_zeros() {
        for port in [
            "01", "00", "080", "65536", "99999", "+1", "-1", "1a", "123456", "",
        ] {
            let line = format!("PROXY TCP4 1.2.3.4 5.6.7.8 {port} 2\r\n");
            assert!(parse(line.as_bytes()).is_err(), "{port:?}");
        }
        let line = "PROXY TCP4 1.2.3.4 5.6.7.8 0 65535\r\n";
        assert_eq!(
            parse(line.as_bytes()),
            done(addrs("1.2.3.4:0", "5.6.7.8:65535"), line.len())
        );
    }

    #[test]
    fn v1_addresses_must_match_the_protocol() {
        for line in [
            "PROXY TCP4 ::1 5.6.7.8 1 2\r\n",
            "PROXY TCP6 1.2.3.4 ::1 1 2\r\n",
            "PROXY TCP4 1.2.3 5.6.7.8 1 2\r\n",
            "PROXY TCP4 1.2.3.256 5.6.7.8 1 2\r\n",
            "PROXY TCP4 01.2.3.4 5.6.7.8 1 2\r\n",
            "PROXY TCP6 ::1 2001:db8:::1 1 2\r\n",
            "PROXY TCP6 [::1] ::1 1 2\r\n",
            "PROXY TCP6 fe80::1%eth0 ::1 1 2\r\n",
        ] {
            assert!(parse(line.as_bytes()).is_err(), "{line:?}");
        }
    }

    #[test]
    fn v1_unknown_protocols_fail_at_the_first_wrong_byte() {
        assert_eq!(parse(b"PROXY X"), Err(V1_PROTOCOL));
        assert_eq!(parse(b"PROXY TCP5"), Err(V1_PROTOCOL));
        assert_eq!(
            parse(b"PROXY UDP4 1.2.3.4 5.6.7.8 1 2\r\n"),
            Err(V1_PROTOCOL)
        );
        assert_eq!(parse(b"PROXY TCP4 1.2.3.4 GET"), Err(V1_BAD_BYTE));
    }

    #[test]
    fn v1_line_must_end_with_crlf_within_107_bytes() {
        assert_eq!(v1_err("PROXY TCP4 1.2.3.4 5.6.7.8 1 2\n"), V1_BARE_LF);
        assert!(parse(b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2\r\r\n").is_err());
        let mut long = b"PROXY UNKNOWN ".to_vec();
        long.resize(106, b'x');
        assert_eq!(parse(&long), Ok(Parsed::Partial));
        long.push(b'x');
        assert_eq!(parse(&long), Err(V1_NO_CRLF));
        long.truncate(105);
        long.extend_from_slice(b"\r\n");
        assert_eq!(parse(&long), done(Proxied::Local, 107));
        long.insert(20, b'x');
        assert_eq!(parse(&long), Err(V1_NO_CRLF));
    }

    #[test]
    fn v1_overlong_tcp_line_is_refused() {
        let line = format!("PROXY TCP6 {} ::1 1 2\r\n", "0:".repeat(48) + "1");
        assert!(line.len() > 107);
        assert_eq!(parse(line.as_bytes()), Err(V1_NO_CRLF));
    }

    // --- v2 ---

    #[test]
    fn v2_ipv4_matches_the_spec_layout_and_parses_back() {
        let h = v2("192.0.2.1:56324", "198.51.100.7:443");
        let mut want = b"\x0D\x0A\x0D\x0A\x00\x0D\x0A\x51\x55\x49\x54\x0A".to_vec();
        want.extend_from_slice(b"\x21\x11\x00\x0c");
        want.extend_from_slice(&[192, 0, 2, 1, 198, 51, 100, 7, 0xdc, 0x04, 0x01, 0xbb]);
        assert_eq!(h, want);
        let want = addrs("192.0.2.1:56324", "198.51.100.7:443");
        assert_eq!(parse(&h), done(want, 28));
    }

    #[test]
    fn v2_ipv6_matches_the_spec_layout_and_parses_back() {
        let h = v2("[2001:db8::1]:1", "[::1]:65535");
        assert_eq!(h.len(), 52);
        assert_eq!(
            &h[..12],
            b"\x0D\x0A\x0D\x0A\x00\x0D\x0A\x51\x55\x49\x54\x0A"
        );
        assert_eq!(&h[12..16], b"\x21\x21\x00\x24");
        assert_eq!(&h[16..18], b"\x20\x01");
        assert_eq!(&h[48..], b"\x00\x01\xff\xff");
        let want = addrs("[2001:db8::1]:1", "[::1]:65535");
        assert_eq!(parse(&h), done(want, 52));
    }

    #[test]
    fn v2_mixed_families_map_the_ipv4_address_to_ipv6() {
        let h = v2("192.0.2.1:80", "[2001:db8::2]:443");
        assert_eq!(h[13], TCP6);
        let want = addrs("[::ffff:192.0.2.1]:80", "[2001:db8::2]:443");
        assert_eq!(parse(&h), done(want, 52));
    }

    #[test]
    fn v2_local_is_written_as_the_spec_says_and_means_the_real_peer() {
        let mut h = Vec::new();
        write_v2_local(&mut h);
        let want = b"\x0D\x0A\x0D\x0A\x00\x0D\x0A\x51\x55\x49\x54\x0A\x20\x00\x00\x00";
        assert_eq!(h, want);
        assert_eq!(parse(&h), done(Proxied::Local, 16));
    }

    #[test]
    fn v2_local_skips_whatever_it_carries() {
        let h = v2_raw(0x20, 0x11, &[1, 2, 3]);
        assert_eq!(parse(&h), done(Proxied::Local, 19));
        let h = v2_raw(0x20, 0xff, &[0; 40]);
        assert_eq!(parse(&h), done(Proxied::Local, 56));
    }

    #[test]
    fn v2_every_prefix_is_partial() {
        assert_every_prefix_partial(&v2("192.0.2.1:56324", "198.51.100.7:443"));
        assert_every_prefix_partial(&v2("[2001:db8::1]:1", "[::1]:65535"));
        assert_every_prefix_partial(&v2_raw(0x21, 0x11, &[7; 40]));
        let mut local = Vec::new();
        write_v2_local(&mut local);
        assert_every_prefix_partial(&local);
    }

    #[test]
    fn v2_data_after_the_header_is_not_consumed() {
        let mut input = v2("192.0.2.1:1", "192.0.2.2:2");
        input.extend_from_slice(b"\x16\x03\x01 TLS hello");
        let want = addrs("192.0.2.1:1", "192.0.2.2:2");
        assert_eq!(parse(&input), done(want, 28));
    }

    #[test]
    fn v2_tlvs_after_the_addresses_are_skipped() {
        let mut payload = vec![10, 0, 0, 1, 10, 0, 0, 2, 0, 80, 1, 0];
        // PP2_TYPE_AUTHORITY "a.example", then PP2_TYPE_NOOP with 3 bytes.
        payload.extend_from_slice(b"\x02\x00\x09a.example\x04\x00\x03\x00\x00\x00");
        let mut input = v2_raw(0x21, 0x11, &payload);
        let len = input.len();
        input.extend_from_slice(b"GET");
        assert_eq!(
            parse(&input),
            done(addrs("10.0.0.1:80", "10.0.0.2:256"), len)
        );
    }

    #[test]
    fn v2_wrong_version_is_refused() {
        for ver_cmd in [0x01, 0x11, 0x31, 0xf1] {
            let h = v2_raw(ver_cmd, 0x11, &[0; 12]);
            assert_eq!(parse(&h), Err(V2_VERSION), "{ver_cmd:#x}");
            assert_eq!(parse(&h[..13]), Err(V2_VERSION), "{ver_cmd:#x}");
        }
    }

    #[test]
    fn v2_unknown_command_is_refused() {
        for ver_cmd in [0x22, 0x2f] {
            let h = v2_raw(ver_cmd, 0x11, &[0; 12]);
            assert_eq!(parse(&h), Err(V2_COMMAND), "{ver_cmd:#x}");
        }
    }

    #[test]
    fn v2_families_we_do_not_carry_mean_the_real_peer() {
        for family in [0x00, 0x12, 0x22, 0x31, 0x32] {
            let h = v2_raw(0x21, family, &[0; 216]);
            assert_eq!(parse(&h), done(Proxied::Local, 232), "{family:#x}");
        }
        assert_eq!(parse(&v2_raw(0x21, 0x00, &[])), done(Proxied::Local, 16));
    }

    #[test]
    fn v2_unknown_families_are_refused() {
        for family in [0x01, 0x10, 0x13, 0x20, 0x30, 0x41, 0xff] {
            let h = v2_raw(0x21, family, &[0; 36]);
            assert_eq!(parse(&h), Err(V2_FAMILY), "{family:#x}");
            assert_eq!(parse(&h[..14]), Err(V2_FAMILY), "{family:#x}");
        }
    }

    #[test]
    fn v2_length_too_short_for_the_addresses_is_refused() {
        assert_eq!(parse(&v2_raw(0x21, 0x11, &[0; 11])), Err(V2_TOO_SHORT));
        assert_eq!(parse(&v2_raw(0x21, 0x21, &[0; 35])), Err(V2_TOO_SHORT));
        assert_eq!(
            parse(&v2_raw(0x21, 0x21, &[0; 12])[..16]),
            Err(V2_TOO_SHORT)
        );
    }

    #[test]
    fn v2_length_is_capped() {
        let at_cap = v2_raw(0x21, 0x11, &[0; V2_MAX_PAYLOAD]);
        assert_eq!(at_cap.len(), MAX_LEN);
        assert!(matches!(
            parse(&at_cap),
            Ok(Parsed::Done { len: MAX_LEN, .. })
        ));
        let over = v2_raw(0x21, 0x11, &[0; V2_MAX_PAYLOAD + 1]);
        assert_eq!(parse(&over), Err(V2_TOO_LONG));
        assert_eq!(parse(&over[..16]), Err(V2_TOO_LONG));
        let local_over = v2_raw(0x20, 0x00, &[0; 0xffff]);
        assert_eq!(parse(&local_over[..16]), Err(V2_TOO_LONG));
    }

    // --- detection ---

    #[test]
    fn anything_else_is_refused_at_the_first_wrong_byte() {
        assert_eq!(parse(b""), Ok(Parsed::Partial));
        assert_eq!(parse(b"G"), Err(NOT_PROXY));
        assert_eq!(parse(b"GET / HTTP/1.1\r\n"), Err(NOT_PROXY));
        assert_eq!(parse(b"\x16\x03\x01"), Err(NOT_PROXY));
        assert_eq!(parse(b"PROX"), Ok(Parsed::Partial));
        assert_eq!(parse(b"PROXX"), Err(NOT_PROXY));
        assert_eq!(parse(b"PROXY"), Ok(Parsed::Partial));
        assert_eq!(parse(b"proxy "), Err(NOT_PROXY));
        assert_eq!(parse(b"\r\n\r\n\0\r\nQU"), Ok(Parsed::Partial));
        assert_eq!(parse(b"\r\n\r\n\0\r\nQX"), Err(NOT_PROXY));
        assert_eq!(parse(b"\r\n\r\n"), Ok(Parsed::Partial));
        assert_eq!(parse(b"\r\n\r\nGET"), Err(NOT_PROXY));
    }

    #[test]
    fn error_displays_its_reason() {
        assert_eq!(NOT_PROXY.to_string(), "not a PROXY protocol header");
    }

    fn any_socket_addr() -> impl Strategy<Value = SocketAddr> {
        prop_oneof![
            (any::<[u8; 4]>(), any::<u16>()).prop_map(|(ip, p)| SocketAddr::from((ip, p))),
            (any::<[u8; 16]>(), any::<u16>()).prop_map(|(ip, p)| SocketAddr::from((ip, p))),
        ]
    }

    /// What parsing a written header gives back: mixed families come back as IPv6.
    fn expected(src: SocketAddr, dst: SocketAddr) -> Proxied {
        let (src, dst) = match (src, dst) {
            (SocketAddr::V4(_), SocketAddr::V4(_)) => (src, dst),
            _ => (
                SocketAddr::new(IpAddr::V6(to_ipv6(src.ip())), src.port()),
                SocketAddr::new(IpAddr::V6(to_ipv6(dst.ip())), dst.port()),
            ),
        };
        Proxied::Addrs { src, dst }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(512))]

        #[test]
        fn written_headers_parse_back(src in any_socket_addr(), dst in any_socket_addr()) {
            let want = expected(src, dst);
            let mut h = Vec::new();
            write_v1(&mut h, src, dst);
            prop_assert!(h.len() <= V1_MAX_LEN);
            prop_assert_eq!(parse(&h), done(want, h.len()));
            h.clear();
            write_v2(&mut h, src, dst);
            prop_assert_eq!(parse(&h), done(want, h.len()));
        }

        #[test]
        fn arbitrary_input_never_panics_and_len_is_within_input(
            input in prop_oneof![
                proptest::collection::vec(any::<u8>(), 0..600),
                proptest::collection::vec(any::<u8>(), 0..120)
                    .prop_map(|tail| [V1_PREFIX, &tail].concat()),
                proptest::collection::vec(any::<u8>(), 0..600)
                    .prop_map(|tail| [&V2_SIGNATURE[..], &tail].concat()),
            ]
        ) {
            if let Ok(Parsed::Done { len, .. }) = parse(&input) {
                prop_assert!(len <= input.len() && len <= MAX_LEN);
            }
        }
    }
}
