//! Trusted proxies and the real client address, as nginx's `real_ip` module with
//! `real_ip_recursive on`: when the peer is a trusted proxy, the client is the rightmost
//! untrusted address of `X-Forwarded-For`.
//!
//! Runs on: [`Cidr::parse`] on the control side (config checking); [`client_ip`] on a
//! worker, per request, over the header values in place: no allocation, no lock. Pure.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::str::FromStr;

/// An IPv4 or IPv6 network: `10.0.0.0/8`, `::1/128`, or a bare address (a /32 or /128).
/// Host bits beyond the prefix are accepted and cleared, as nginx does (`10.1.2.3/8` is
/// `10.0.0.0/8`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Cidr {
    /// The network address, host bits cleared.
    net: IpAddr,
    /// The prefix length: ≤ 32 for IPv4, ≤ 128 for IPv6.
    prefix: u8,
}

impl Cidr {
    /// Parses `ADDRESS/PREFIX` or a bare `ADDRESS` (surrounding whitespace ignored).
    /// Refuses a prefix over 32 (IPv4) or 128 (IPv6), a signed or empty prefix, and
    /// anything that is not an address.
    pub fn parse(text: &str) -> Result<Cidr, String> {
        let refuse = |why: &str| {
            format!(
                "expected an address or a network like `10.0.0.0/8` or `fd00::/8`, \
                 got `{text}`: {why}"
            )
        };
        let text = text.trim();
        let (addr, prefix) = match text.split_once('/') {
            Some((addr, prefix)) => (addr, Some(prefix)),
            None => (text, None),
        };
        let net: IpAddr = addr.parse().map_err(|_| refuse("not an IP address"))?;
        let max = match net {
            IpAddr::V4(_) => 32,
            IpAddr::V6(_) => 128,
        };
        let prefix = match prefix {
            None => max,
            Some(p) if !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()) => p
                .parse::<u8>()
                .ok()
                .filter(|p| *p <= max)
                .ok_or_else(|| refuse(&format!("the prefix is over {max}")))?,
            Some(_) => return Err(refuse("the prefix is not a number")),
        };
        Ok(Cidr {
            net: mask(net, prefix),
            prefix,
        })
    }

    /// Whether `ip` is in this network. An IPv4-mapped IPv6 address (`::ffff:a.b.c.d`)
    /// matches IPv4 networks, and an IPv4 address matches IPv6 networks through its
    /// mapped form (`::ffff:0:0/96` holds every IPv4 address).
    pub fn contains(&self, ip: IpAddr) -> bool {
        match (self.net, ip) {
            (IpAddr::V4(_), IpAddr::V6(v6)) => match v6.to_ipv4_mapped() {
                Some(v4) => self.contains(IpAddr::V4(v4)),
                None => false,
            },
            (IpAddr::V6(_), IpAddr::V4(v4)) => self.contains(IpAddr::V6(v4.to_ipv6_mapped())),
            (net, ip) => mask(ip, self.prefix) == net,
        }
    }
}

impl FromStr for Cidr {
    type Err = String;

    fn from_str(text: &str) -> Result<Cidr, String> {
        Cidr::parse(text)
    }
}

impl fmt::Display for Cidr {
    /// `NETWORK/PREFIX`, always with the prefix (`10.0.0.0/8`, `::1/128`).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.net, self.prefix)
    }
}

/// `ip` with the bits beyond `prefix` cleared (`prefix` at most the address width).
fn mask(ip: IpAddr, prefix: u8) -> IpAddr {
    match ip {
        IpAddr::V4(v4) => {
            let bits = u32::MAX.checked_shl(32 - u32::from(prefix)).unwrap_or(0);
            IpAddr::V4(Ipv4Addr::from(u32::from(v4) & bits))
        }
        IpAddr::V6(v6) => {
            let bits = u128::MAX.checked_shl(128 - u32::from(prefix)).unwrap_or(0);
            IpAddr::V6(Ipv6Addr::from(u128::from(v6) & bits))
        }
    }
}

/// Whether `ip` is in one of the `trusted` networks.
pub fn is_trusted(trusted: &[Cidr], ip: IpAddr) -> bool {
    trusted.iter().any(|net| net.contains(ip))
}

/// The client's address.
///
/// `peer` itself when it is not in `trusted` (the `X-Forwarded-For` fields are then
/// ignored: anyone can write them). Otherwise `xff` — the values of every
/// `X-Forwarded-For` field, in order, each a comma-separated list — is walked from the
/// right, skipping trusted addresses, and the first untrusted one is the client; when
/// every listed address is trusted, the leftmost. An entry that is not an address stops
/// the walk, and the last good address is the client (the peer if there was none).
///
/// Entries may be `ip`, `[v6]`, `ip:port` or `[v6]:port`, with spaces around them;
/// empty entries (`a,,b`, a trailing comma, an empty field) are skipped. The address is
/// returned as written (call `to_canonical()` to fold `::ffff:a.b.c.d` into IPv4).
///
/// Allocation-free: pass the header values in place, e.g.
/// `headers.iter().filter(|h| h.name.eq_ignore_ascii_case("x-forwarded-for")).map(|h| h.value)`.
pub fn client_ip<'a, I>(peer: IpAddr, trusted: &[Cidr], xff: I) -> IpAddr
where
    I: IntoIterator<Item = &'a [u8]>,
    I::IntoIter: DoubleEndedIterator,
{
    if !is_trusted(trusted, peer) {
        return peer;
    }
    let entries = xff
        .into_iter()
        .rev()
        .flat_map(|value| value.rsplit(|b| *b == b','))
        .map(<[u8]>::trim_ascii)
        .filter(|entry| !entry.is_empty());
    let mut client = peer;
    for entry in entries {
        match parse_entry(entry) {
            Some(ip) if is_trusted(trusted, ip) => client = ip,
            Some(ip) => return ip,
            None => break,
        }
    }
    client
}

/// One `X-Forwarded-For` entry: `ip`, `[v6]`, `ip:port` or `[v6]:port`.
fn parse_entry(entry: &[u8]) -> Option<IpAddr> {
    let text = std::str::from_utf8(entry).ok()?;
    if let Ok(ip) = text.parse::<IpAddr>() {
        return Some(ip);
    }
    if let Some(v6) = text.strip_prefix('[').and_then(|t| t.strip_suffix(']')) {
        return v6.parse::<Ipv6Addr>().ok().map(IpAddr::V6);
    }
    text.parse::<SocketAddr>().ok().map(|addr| addr.ip())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(text: &str) -> IpAddr {
        text.parse().unwrap()
    }

    fn cidrs(list: &[&str]) -> Vec<Cidr> {
        list.iter().map(|c| Cidr::parse(c).unwrap()).collect()
    }

    fn client(peer: &str, trusted: &[&str], xff: &[&str]) -> IpAddr {
        let trusted = cidrs(trusted);
        client_ip(ip(peer), &trusted, xff.iter().map(|v| v.as_bytes()))
    }

    #[test]
    fn networks_and_bare_addresses_parse_and_print_with_their_prefix() {
        for (text, shown) in [
            ("10.0.0.0/8", "10.0.0.0/8"),
            ("192.168.1.7", "192.168.1.7/32"),
            (" 0.0.0.0/0 ", "0.0.0.0/0"),
            ("::1/128", "::1/128"),
            ("::1", "::1/128"),
            ("fd00::/8", "fd00::/8"),
            ("::/0", "::/0"),
        ] {
            assert_eq!(Cidr::parse(text).unwrap().to_string(), shown, "{text}");
        }
        assert_eq!("10.0.0.0/8".parse(), Cidr::parse("10.0.0.0/8"));
    }

    #[test]
    fn host_bits_beyond_the_prefix_are_cleared() {
        assert_eq!(Cidr::parse("10.1.2.3/8").unwrap().to_string(), "10.0.0.0/8");
        assert_eq!(Cidr::parse("10.1.2.3/8"), Cidr::parse("10.0.0.0/8"));
        assert_eq!(
            Cidr::parse("fd12:3456::1/16").unwrap().to_string(),
            "fd12::/16"
        );
    }

    #[test]
    fn malformed_networks_are_refused() {
        for text in [
            "",
            "10.0.0.0/33",
            "::/129",
            "10.0.0.0/",
            "10.0.0.0/+8",
            "10.0.0.0/-1",
            "10.0.0.0/8/8",
            "10.0.0/8",
            "10.0.0.256",
            "localhost",
            "[::1]/128",
            "10.0.0.0 /8",
            "10.0.0.0/999",
        ] {
            let err = Cidr::parse(text).unwrap_err();
            assert!(err.contains("10.0.0.0/8"), "{text}: {err}");
        }
    }

    #[test]
    fn networks_contain_their_addresses_only() {
        let net = Cidr::parse("10.0.0.0/8").unwrap();
        assert!(net.contains(ip("10.255.0.1")));
        assert!(!net.contains(ip("11.0.0.1")));
        assert!(!net.contains(ip("::1")));
        let host = Cidr::parse("192.168.1.7").unwrap();
        assert!(host.contains(ip("192.168.1.7")));
        assert!(!host.contains(ip("192.168.1.8")));
        let any = Cidr::parse("0.0.0.0/0").unwrap();
        assert!(any.contains(ip("1.2.3.4")));
        let v6 = Cidr::parse("fd00::/8").unwrap();
        assert!(v6.contains(ip("fd12::1")));
        assert!(!v6.contains(ip("fe80::1")));
        assert!(!v6.contains(ip("10.0.0.1")));
        assert!(Cidr::parse("::/0").unwrap().contains(ip("2001:db8::1")));
    }

    #[test]
    fn v4_mapped_addresses_match_v4_networks_and_back() {
        let net = Cidr::parse("10.0.0.0/8").unwrap();
        assert!(net.contains(ip("::ffff:10.1.2.3")));
        assert!(!net.contains(ip("::ffff:11.1.2.3")));
        assert!(
            !net.contains(ip("::a01:203")),
            "IPv4-compatible is not mapped"
        );
        let mapped = Cidr::parse("::ffff:10.0.0.0/104").unwrap();
        assert!(mapped.contains(ip("10.1.2.3")));
        assert!(!mapped.contains(ip("11.1.2.3")));
    }

    #[test]
    fn an_untrusted_peer_is_the_client_whatever_the_header_says() {
        assert_eq!(
            client("203.0.113.9", &["10.0.0.0/8"], &["1.2.3.4", "10.0.0.1"]),
            ip("203.0.113.9")
        );
        assert_eq!(client("203.0.113.9", &[], &["1.2.3.4"]), ip("203.0.113.9"));
    }

    #[test]
    fn a_trusted_peer_hands_over_to_the_rightmost_untrusted_entry() {
        let trusted = ["10.0.0.0/8"];
        assert_eq!(
            client("10.0.0.1", &trusted, &["1.1.1.1, 2.2.2.2, 10.0.0.5"]),
            ip("2.2.2.2")
        );
        assert_eq!(client("10.0.0.1", &trusted, &["1.1.1.1"]), ip("1.1.1.1"));
        assert_eq!(client("10.0.0.1", &trusted, &[]), ip("10.0.0.1"));
    }

    #[test]
    fn several_fields_are_one_list_in_order() {
        let trusted = ["10.0.0.0/8"];
        assert_eq!(
            client(
                "10.0.0.1",
                &trusted,
                &["1.1.1.1, 2.2.2.2", "10.0.0.7,10.0.0.8"]
            ),
            ip("2.2.2.2")
        );
        assert_eq!(
            client("10.0.0.1", &trusted, &["1.1.1.1", "3.3.3.3"]),
            ip("3.3.3.3")
        );
    }

    #[test]
    fn when_every_entry_is_trusted_the_leftmost_is_the_client() {
        let trusted = ["10.0.0.0/8"];
        assert_eq!(
            client("10.0.0.1", &trusted, &["10.0.0.3, 10.0.0.2", "10.0.0.4"]),
            ip("10.0.0.3")
        );
    }

    #[test]
    fn spaces_empty_entries_and_ports_are_tolerated() {
        let trusted = ["10.0.0.0/8", "fd00::/8"];
        assert_eq!(
            client(
                "10.0.0.1",
                &trusted,
                &["  1.1.1.1 ,\t2.2.2.2  ,, 10.0.0.2,"]
            ),
            ip("2.2.2.2")
        );
        assert_eq!(client("10.0.0.1", &trusted, &[""]), ip("10.0.0.1"));
        assert_eq!(
            client("10.0.0.1", &trusted, &["2.2.2.2:5555"]),
            ip("2.2.2.2")
        );
        assert_eq!(
            client("10.0.0.1", &trusted, &["[2001:db8::1]:443"]),
            ip("2001:db8::1")
        );
        assert_eq!(
            client("10.0.0.1", &trusted, &["[2001:db8::2]"]),
            ip("2001:db8::2")
        );
        assert_eq!(
            client("fd00::1", &trusted, &["2001:db8::3, fd00::2"]),
            ip("2001:db8::3")
        );
    }

    #[test]
    fn garbage_stops_the_walk_at_the_last_good_address() {
        let trusted = ["10.0.0.0/8"];
        assert_eq!(
            client("10.0.0.1", &trusted, &["1.1.1.1, unknown, 10.0.0.2"]),
            ip("10.0.0.2")
        );
        assert_eq!(
            client("10.0.0.1", &trusted, &["1.1.1.1, bogus"]),
            ip("10.0.0.1")
        );
        assert_eq!(
            client("10.0.0.1", &trusted, &["1.1.1.1", "10.0.0.9, 1.2.3"]),
            ip("10.0.0.1")
        );
        let invalid_utf8: &[u8] = b"1.1.1.1, \xff\xfe";
        assert_eq!(
            client_ip(ip("10.0.0.1"), &cidrs(&trusted), [invalid_utf8]),
            ip("10.0.0.1")
        );
    }

    #[test]
    fn a_v4_mapped_peer_or_entry_counts_as_its_v4_address() {
        let trusted = ["10.0.0.0/8"];
        assert_eq!(
            client("::ffff:10.0.0.1", &trusted, &["1.1.1.1, ::ffff:10.0.0.2"]),
            ip("1.1.1.1")
        );
        assert_eq!(
            client("::ffff:10.0.0.1", &trusted, &["::ffff:1.1.1.1"]),
            ip("::ffff:1.1.1.1")
        );
        assert_eq!(
            client("::ffff:11.0.0.1", &trusted, &["1.1.1.1"]),
            ip("::ffff:11.0.0.1")
        );
    }
}
