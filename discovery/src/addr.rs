//! Endpoint addresses: an IP and port ([`EndpointAddr::Inet`], every discovered endpoint
//! and most static ones) or a Unix domain socket path ([`EndpointAddr::Unix`], a static
//! node written `unix:/path`: a sidecar or a local agent).
//!
//! Runs on: the control side builds them (config check, discovery); workers copy,
//! compare and hash them per request. So [`EndpointAddr`] is `Copy` and touches no
//! shared counter: a Unix path is interned once, on the control side, into a
//! `&'static str` that every snapshot and every worker shares by pointer ([`UnixPath`]).
//! The interned paths are never freed: one allocation per distinct path ever
//! configured, which a config holds a handful of.

// Control side only: the interner's lock is taken when a config is checked, never by
// a worker (a `UnixPath` is already interned when it reaches one).
#![allow(clippy::disallowed_types)]

use std::collections::BTreeSet;
use std::fmt;
use std::hash::{Hash, Hasher};
use std::net::SocketAddr;
use std::path::Path;
use std::sync::{Mutex, OnceLock};

/// Where an endpoint listens.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum EndpointAddr {
    /// TCP to an IP and port.
    Inet(SocketAddr),
    /// A Unix domain stream socket.
    Unix(UnixPath),
}

impl EndpointAddr {
    /// The IP and port, for a TCP endpoint.
    pub fn inet(&self) -> Option<SocketAddr> {
        match self {
            EndpointAddr::Inet(a) => Some(*a),
            EndpointAddr::Unix(_) => None,
        }
    }
}

/// Parses `ip:port`, `[v6]:port` or `unix:/path`; the error says what was expected.
impl std::str::FromStr for EndpointAddr {
    type Err = String;

    fn from_str(text: &str) -> Result<EndpointAddr, String> {
        match text.strip_prefix("unix:") {
            Some(path) => UnixPath::new(path).map(EndpointAddr::Unix),
            None => text.parse().map(EndpointAddr::Inet).map_err(|_| {
                format!("{text:?} is not an address: expected ip:port, [ipv6]:port or unix:/path")
            }),
        }
    }
}

/// Hashed as one word for an IPv4 endpoint (the workers' pool and health maps key by it
/// on every request); equal addresses hash alike, as `Eq` needs.
impl Hash for EndpointAddr {
    fn hash<H: Hasher>(&self, h: &mut H) {
        match self {
            EndpointAddr::Inet(SocketAddr::V4(a)) => {
                h.write_u64((u64::from(a.ip().to_bits()) << 16) | u64::from(a.port()));
            }
            EndpointAddr::Inet(SocketAddr::V6(a)) => {
                h.write_u128(a.ip().to_bits());
                h.write_u16(a.port());
            }
            EndpointAddr::Unix(p) => h.write(p.as_str().as_bytes()),
        }
    }
}

impl From<SocketAddr> for EndpointAddr {
    fn from(a: SocketAddr) -> EndpointAddr {
        EndpointAddr::Inet(a)
    }
}

impl PartialEq<SocketAddr> for EndpointAddr {
    fn eq(&self, other: &SocketAddr) -> bool {
        *self == EndpointAddr::Inet(*other)
    }
}

/// `10.0.0.7:80`, `[::1]:80` or `unix:/run/app.sock`: as written in the config, in the
/// access log and in `/debug/snapshot`.
impl fmt::Display for EndpointAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            EndpointAddr::Inet(a) => a.fmt(f),
            EndpointAddr::Unix(p) => write!(f, "unix:{}", p.as_str()),
        }
    }
}

/// An interned Unix socket path: `Copy`, compared by content.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct UnixPath(&'static str);

/// The longest path a `sockaddr_un` holds on Linux (108 bytes with the terminating NUL).
pub const MAX_UNIX_PATH: usize = 107;

impl UnixPath {
    /// Checks and interns `path` (see [`UnixPath::check`]).
    pub fn new(path: &str) -> Result<UnixPath, String> {
        UnixPath::check(path)?;
        Ok(UnixPath(intern(path)))
    }

    /// Checks that `path` can name a Unix socket: not empty, at most [`MAX_UNIX_PATH`]
    /// bytes, no NUL, and not an abstract socket (`@name`), which strait does not support.
    pub fn check(path: &str) -> Result<(), String> {
        if path.is_empty() {
            return Err("a unix: address needs a path, e.g. unix:/run/app.sock".into());
        }
        if path.starts_with('@') {
            return Err(format!(
                "unix:{path}: abstract sockets are not supported; give a filesystem path"
            ));
        }
        if path.len() > MAX_UNIX_PATH {
            return Err(format!(
                "unix:{path}: the path is {} bytes, longer than the {MAX_UNIX_PATH} a Unix socket address holds",
                path.len()
            ));
        }
        if path.contains('\0') {
            return Err(format!("unix:{path:?}: a NUL byte in the path"));
        }
        Ok(())
    }

    pub fn as_str(&self) -> &'static str {
        self.0
    }

    pub fn as_path(&self) -> &'static Path {
        Path::new(self.0)
    }
}

impl fmt::Debug for UnixPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self.0, f)
    }
}

/// The one copy of `path`, leaked the first time it is seen.
fn intern(path: &str) -> &'static str {
    static PATHS: OnceLock<Mutex<BTreeSet<&'static str>>> = OnceLock::new();
    let mut paths = PATHS
        .get_or_init(Default::default)
        .lock()
        .unwrap_or_else(|e| e.into_inner());
    if let Some(known) = paths.get(path) {
        return known;
    }
    let leaked: &'static str = Box::leak(path.to_owned().into_boxed_str());
    paths.insert(leaked);
    leaked
}

#[cfg(test)]
mod tests {
    use std::str::FromStr;

    use super::*;

    #[test]
    fn addresses_parse_print_and_intern() {
        let a = EndpointAddr::from_str("unix:/run/app.sock").unwrap();
        let b = EndpointAddr::from_str("unix:/run/app.sock").unwrap();
        let (EndpointAddr::Unix(pa), EndpointAddr::Unix(pb)) = (a, b) else {
            panic!("not unix: {a:?} {b:?}");
        };
        assert!(std::ptr::eq(pa.as_str(), pb.as_str()), "interned once");
        assert_eq!(a.to_string(), "unix:/run/app.sock");
        let inet = EndpointAddr::from_str("[::1]:8080").unwrap();
        assert_eq!(inet.to_string(), "[::1]:8080");
        assert_eq!(inet, "[::1]:8080".parse::<SocketAddr>().unwrap());
        assert!(inet.inet().is_some() && a.inet().is_none());
        for bad in ["unix:", "unix:@abstract", "localhost:80", "10.0.0.1"] {
            assert!(EndpointAddr::from_str(bad).is_err(), "{bad}");
        }
        let long = format!("unix:/{}", "a".repeat(MAX_UNIX_PATH));
        assert!(EndpointAddr::from_str(&long)
            .unwrap_err()
            .contains("longer than"));
        assert_eq!(
            std::mem::size_of::<EndpointAddr>(),
            std::mem::size_of::<SocketAddr>(),
            "as cheap to copy as a SocketAddr"
        );
    }
}
