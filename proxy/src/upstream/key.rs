//! The key a `consistent_hash` upstream hashes a request by: a header, a cookie, the
//! client's address or the path, hashed with the control side's fixed function
//! (`strait_discovery::balance::hash64`), so a key lands on the same endpoint on every
//! worker and every gateway replica.
//!
//! Runs on: a worker, per request routed to a `consistent_hash` upstream (one pass over
//! the headers); nothing for the others.

use std::net::IpAddr;

use strait_discovery::balance::hash64;
use strait_discovery::spec::{Balance, HashKey};

use httparse::Header;

/// The hash of `balance`'s key for a request, or `None` (not `consistent_hash`, or the
/// header or cookie is absent: the pick falls back to round-robin).
pub fn request_key(
    balance: &Balance,
    headers: &[Header<'_>],
    path: &str,
    client: Option<IpAddr>,
) -> Option<u64> {
    let Balance::ConsistentHash(key) = balance else {
        return None;
    };
    key_hash(key, headers, path, client)
}

/// The hash of `key`'s value in a request, or `None` when the request lacks it.
pub fn key_hash(
    key: &HashKey,
    headers: &[Header<'_>],
    path: &str,
    client: Option<IpAddr>,
) -> Option<u64> {
    match key {
        HashKey::Header(name) => headers
            .iter()
            .find(|h| h.name.eq_ignore_ascii_case(name))
            .map(|h| hash64(h.value.trim_ascii())),
        HashKey::Cookie(name) => headers
            .iter()
            .filter(|h| h.name.eq_ignore_ascii_case("cookie"))
            .flat_map(|h| h.value.split(|b| *b == b';'))
            .find_map(|pair| {
                let pair = pair.trim_ascii();
                let eq = pair.iter().position(|b| *b == b'=')?;
                (pair[..eq].trim_ascii() == name.as_bytes())
                    .then(|| hash64(pair[eq + 1..].trim_ascii()))
            }),
        HashKey::SourceIp => client.map(ip_key),
        HashKey::Path => Some(hash64(path.as_bytes())),
    }
}

/// The hash of a client address (its text form, as every replica writes it).
pub fn ip_key(ip: IpAddr) -> u64 {
    hash64(ip.to_string().as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn h<'a>(name: &'a str, value: &'a [u8]) -> Header<'a> {
        Header { name, value }
    }

    #[test]
    fn keys_come_from_the_header_the_cookie_the_address_or_the_path() {
        let by = |k: HashKey| Balance::ConsistentHash(k);
        let headers = [
            h("X-User", b" alice "),
            h("Cookie", b"a=1; session=abc; b=2"),
        ];
        let ip: IpAddr = "10.1.2.3".parse().unwrap();
        assert_eq!(
            request_key(&by(HashKey::Header("x-user".into())), &headers, "/", None),
            Some(hash64(b"alice"))
        );
        assert_eq!(
            request_key(&by(HashKey::Cookie("session".into())), &headers, "/", None),
            Some(hash64(b"abc"))
        );
        assert_eq!(
            request_key(&by(HashKey::Cookie("none".into())), &headers, "/", None),
            None
        );
        assert_eq!(
            request_key(&by(HashKey::Header("x-other".into())), &headers, "/", None),
            None
        );
        assert_eq!(
            request_key(&by(HashKey::SourceIp), &headers, "/", Some(ip)),
            Some(hash64(b"10.1.2.3"))
        );
        assert_eq!(
            request_key(&by(HashKey::Path), &headers, "/a/b", None),
            Some(hash64(b"/a/b"))
        );
        assert_eq!(
            request_key(&Balance::RoundRobin, &headers, "/", Some(ip)),
            None
        );
    }
}
