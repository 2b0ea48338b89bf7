//! The compiled router: host (exact, then `*.suffix` wildcard, then default) → the
//! longest matching path prefix → method → upstream index.
//!
//! Compiled on the control side by [`Router::compile`]; [`Router::lookup`] is pure and
//! allocation-free, and runs on the workers' request path.

use std::collections::HashMap;
use std::sync::Arc;

use crate::spec::ServiceSpec;

/// A set of HTTP methods as a bit set. Empty means "any method".
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Hash)]
pub struct MethodSet(u16);

/// The methods a route may name, in `Allow` order.
pub const METHODS: [&str; 9] = [
    "GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS", "TRACE", "CONNECT",
];

impl MethodSet {
    /// Any method.
    pub const ANY: MethodSet = MethodSet(0);

    /// Every method of [`METHODS`] but `CONNECT`: what a route that allows "any method"
    /// answers in `Allow` to a `CONNECT`, which it does not accept.
    pub const STANDARD: MethodSet = MethodSet((1 << (METHODS.len() - 1)) - 1);

    /// The bit of a method name; `None` for a name outside [`METHODS`].
    pub fn bit(method: &str) -> Option<u16> {
        METHODS.iter().position(|m| *m == method).map(|i| 1 << i)
    }

    /// Builds a set from names; `Err(name)` for the first unknown one.
    pub fn try_from_names<'a>(names: impl IntoIterator<Item = &'a str>) -> Result<Self, &'a str> {
        let mut set = 0;
        for name in names {
            set |= Self::bit(name).ok_or(name)?;
        }
        Ok(MethodSet(set))
    }

    pub fn is_any(self) -> bool {
        self.0 == 0
    }

    /// True when a request with this method may use the route.
    pub fn allows(self, method: &str) -> bool {
        self.0 == 0 || Self::bit(method).is_some_and(|b| self.0 & b != 0)
    }

    /// True when the set names `method` itself: an "any method" set names none. A
    /// `CONNECT` needs a route that names it.
    pub fn names_method(self, method: &str) -> bool {
        Self::bit(method).is_some_and(|b| self.0 & b != 0)
    }

    pub fn union(self, other: MethodSet) -> MethodSet {
        if self.is_any() || other.is_any() {
            MethodSet::ANY
        } else {
            MethodSet(self.0 | other.0)
        }
    }

    /// Method names in the set, for an `Allow` header.
    pub fn names(self) -> impl Iterator<Item = &'static str> {
        METHODS
            .iter()
            .enumerate()
            .filter(move |(i, _)| self.0 & (1 << i) != 0)
            .map(|(_, m)| *m)
    }
}

/// One compiled route.
#[derive(Debug)]
pub struct RouteEntry {
    /// Full prefix: the service's `path_prefix` joined with the route's path.
    pub prefix: Box<str>,
    /// Bytes to remove from the front of the path before forwarding (the service's
    /// prefix when `strip_prefix` is on), 0 otherwise.
    pub strip: usize,
    pub methods: MethodSet,
    /// Index into [`crate::Snapshot::upstreams`].
    pub upstream: u32,
    pub service: Arc<str>,
    pub route: Arc<str>,
    /// Largest request body on this route, when it overrides the gateway's (0: no limit).
    pub max_body_bytes: Option<u64>,
    /// How long an HTTP/2 stream to an `h2`/`h2c` upstream may idle, when it overrides the
    /// gateway's.
    pub stream_idle_timeout: Option<std::time::Duration>,
    /// Index of (`service`, `route`) in [`Router::routes`]: where a worker counts it.
    pub stats: u32,
}

impl RouteEntry {
    /// The path to send upstream for `target` (path plus query), if it differs.
    pub fn rewrite<'a>(&self, target: &'a str) -> std::borrow::Cow<'a, str> {
        if self.strip == 0 || self.strip > target.len() {
            return std::borrow::Cow::Borrowed(target);
        }
        let rest = &target[self.strip..];
        if rest.starts_with('/') {
            std::borrow::Cow::Borrowed(rest)
        } else {
            std::borrow::Cow::Owned(format!("/{rest}"))
        }
    }
}

/// The result of [`Router::lookup`].
#[derive(Debug)]
pub enum RouteMatch<'a> {
    Found(&'a RouteEntry),
    /// Some route matched the path but none allows the method.
    MethodNotAllowed(MethodSet),
    NotFound,
}

/// Routes grouped by host.
#[derive(Debug, Default)]
pub struct Router {
    exact: HashMap<Box<str>, usize>,
    /// `*.suffix` patterns by their suffix including the dot (`.example.com`).
    wildcard: HashMap<Box<str>, usize>,
    default: Option<usize>,
    /// Each group's routes, longest prefix first.
    groups: Vec<Vec<RouteEntry>>,
    /// Every (service, route) pair once, in config order ([`RouteEntry::stats`]).
    routes: Vec<(Arc<str>, Arc<str>)>,
}

/// An error from [`Router::compile`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnknownUpstream {
    pub service: String,
    pub route: Option<String>,
    pub upstream: Option<String>,
}

impl Router {
    /// Compiles services into a router; `upstream_index` maps an upstream name to its
    /// index in the snapshot.
    pub fn compile(
        services: &[ServiceSpec],
        upstream_index: impl Fn(&str) -> Option<u32>,
    ) -> Result<Router, UnknownUpstream> {
        let mut router = Router::default();
        for service in services {
            let service_name: Arc<str> = Arc::from(service.name.as_str());
            let mut entries = Vec::new();
            let resolve = |name: Option<&String>, route: Option<&str>| {
                name.and_then(|n| upstream_index(n))
                    .ok_or_else(|| UnknownUpstream {
                        service: service.name.clone(),
                        route: route.map(str::to_owned),
                        upstream: name.cloned(),
                    })
            };
            let mut stats = |route: Arc<str>| {
                router.routes.push((service_name.clone(), route));
                (router.routes.len() - 1) as u32
            };
            if service.routes.is_empty() {
                entries.push(RouteEntry {
                    prefix: service.path_prefix.clone().into_boxed_str(),
                    strip: 0,
                    methods: MethodSet::ANY,
                    upstream: resolve(service.upstream.as_ref(), None)?,
                    service: service_name.clone(),
                    route: Arc::from(""),
                    max_body_bytes: None,
                    stream_idle_timeout: None,
                    stats: stats(Arc::from("")),
                });
            }
            for route in &service.routes {
                let upstream = resolve(
                    route.upstream.as_ref().or(service.upstream.as_ref()),
                    Some(&route.name),
                )?;
                let base = service.path_prefix.trim_end_matches('/');
                entries.push(RouteEntry {
                    prefix: join_path(base, &route.path).into_boxed_str(),
                    strip: if route.strip_prefix { base.len() } else { 0 },
                    methods: route.methods,
                    upstream,
                    service: service_name.clone(),
                    route: Arc::from(route.name.as_str()),
                    max_body_bytes: route.max_body_bytes,
                    stream_idle_timeout: route.stream_idle_timeout,
                    stats: stats(Arc::from(route.name.as_str())),
                });
            }
            let hosts: Vec<Option<&str>> = if service.hosts.is_empty() {
                vec![None]
            } else {
                service.hosts.iter().map(|h| Some(h.as_str())).collect()
            };
            for host in hosts {
                let group = router.group_for(host);
                for e in &entries {
                    router.groups[group].push(RouteEntry {
                        prefix: e.prefix.clone(),
                        strip: e.strip,
                        methods: e.methods,
                        upstream: e.upstream,
                        service: e.service.clone(),
                        route: e.route.clone(),
                        max_body_bytes: e.max_body_bytes,
                        stream_idle_timeout: e.stream_idle_timeout,
                        stats: e.stats,
                    });
                }
            }
        }
        for group in &mut router.groups {
            // Stable: among equal prefixes, config order decides.
            group.sort_by_key(|e| std::cmp::Reverse(e.prefix.len()));
        }
        Ok(router)
    }

    /// Every (service, route) pair once, in config order; a service without routes
    /// has one route named `""`.
    pub fn routes(&self) -> &[(Arc<str>, Arc<str>)] {
        &self.routes
    }

    fn group_for(&mut self, host: Option<&str>) -> usize {
        let next = self.groups.len();
        let slot = match host {
            None => *self.default.get_or_insert(next),
            Some(h) if h.starts_with("*.") => *self.wildcard.entry(h[1..].into()).or_insert(next),
            Some(h) => *self.exact.entry(h.into()).or_insert(next),
        };
        if slot == next {
            self.groups.push(Vec::new());
        }
        slot
    }

    /// Finds the route for a request. `host` is the Host header (any case, port allowed),
    /// `path` the request target's path (no query), `method` the request method.
    pub fn lookup(&self, host: &str, path: &str, method: &str) -> RouteMatch<'_> {
        let Some(group) = self.group(host) else {
            return RouteMatch::NotFound;
        };
        let mut allowed: Option<MethodSet> = None;
        for entry in &self.groups[group] {
            if !prefix_matches(&entry.prefix, path) {
                continue;
            }
            if entry.methods.allows(method) {
                return RouteMatch::Found(entry);
            }
            allowed = Some(allowed.map_or(entry.methods, |a| a.union(entry.methods)));
        }
        match allowed {
            Some(set) => RouteMatch::MethodNotAllowed(set),
            None => RouteMatch::NotFound,
        }
    }

    /// Finds the route for a `CONNECT` to `authority` (`host:port`): by host as
    /// [`Router::lookup`] does, then the first route of that host, in lookup order,
    /// whatever its path, that names `CONNECT` (an "any method" route does not).
    /// `MethodNotAllowed` carries what the host's routes allow instead, with "any
    /// method" as [`MethodSet::STANDARD`].
    pub fn lookup_connect(&self, authority: &str) -> RouteMatch<'_> {
        let Some(group) = self.group(authority) else {
            return RouteMatch::NotFound;
        };
        let mut allowed = MethodSet::default();
        for entry in &self.groups[group] {
            if entry.methods.names_method("CONNECT") {
                return RouteMatch::Found(entry);
            }
            let methods = if entry.methods.is_any() {
                MethodSet::STANDARD
            } else {
                entry.methods
            };
            allowed = MethodSet(allowed.0 | methods.0);
        }
        RouteMatch::MethodNotAllowed(if allowed.is_any() {
            MethodSet::STANDARD
        } else {
            allowed
        })
    }

    fn group(&self, host: &str) -> Option<usize> {
        let name = host_name(host);
        // Host names are case-insensitive; avoid allocating for the usual lower-case one.
        let mut lower = [0u8; 256];
        let name = if name.bytes().any(|b| b.is_ascii_uppercase()) && name.len() <= lower.len() {
            let buf = &mut lower[..name.len()];
            buf.copy_from_slice(name.as_bytes());
            buf.make_ascii_lowercase();
            std::str::from_utf8(buf).unwrap_or(name)
        } else {
            name
        };
        if let Some(g) = self.exact.get(name) {
            return Some(*g);
        }
        // The longest matching `*.suffix`: try `.b.example.com`, then `.example.com`, …
        if !self.wildcard.is_empty() {
            let mut rest = name;
            // Byte search: a '.' is always a char boundary, and an empty name has none.
            while let Some(dot) = rest.bytes().skip(1).position(|b| b == b'.').map(|i| i + 1) {
                if let Some(g) = self.wildcard.get(&rest[dot..]) {
                    return Some(*g);
                }
                rest = &rest[dot..];
            }
        }
        self.default
    }
}

/// The host part of a Host header value: `[v6]:port` → `[v6]`, `name:port` → `name`.
pub fn host_name(host: &str) -> &str {
    if host.starts_with('[') {
        return match host.find(']') {
            Some(i) => &host[..=i],
            None => host,
        };
    }
    match host.rfind(':') {
        Some(i) => &host[..i],
        None => host,
    }
}

/// Prefix match at a segment boundary: `/api` matches `/api`, `/api/x`, not `/apix`;
/// a prefix ending in `/` matches anything under it.
pub fn prefix_matches(prefix: &str, path: &str) -> bool {
    if !path.starts_with(prefix) {
        return false;
    }
    prefix.ends_with('/') || path.len() == prefix.len() || path.as_bytes()[prefix.len()] == b'/'
}

fn join_path(base: &str, path: &str) -> String {
    let path = path.trim_start_matches('/');
    if path.is_empty() {
        if base.is_empty() {
            "/".to_owned()
        } else {
            base.to_owned()
        }
    } else {
        format!("{base}/{path}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spec::RouteSpec;

    fn service(name: &str, hosts: &[&str], prefix: &str, routes: Vec<RouteSpec>) -> ServiceSpec {
        ServiceSpec {
            name: name.into(),
            hosts: hosts.iter().map(|h| h.to_string()).collect(),
            path_prefix: prefix.into(),
            upstream: Some(name.into()),
            routes,
        }
    }

    fn route(name: &str, path: &str, strip: bool, methods: &[&str]) -> RouteSpec {
        RouteSpec {
            name: name.into(),
            path: path.into(),
            strip_prefix: strip,
            methods: MethodSet::try_from_names(methods.iter().copied()).unwrap(),
            upstream: None,
            max_body_bytes: None,
            stream_idle_timeout: None,
        }
    }

    fn router(services: &[ServiceSpec]) -> Router {
        let names: Vec<&str> = services.iter().map(|s| s.name.as_str()).collect();
        Router::compile(services, |n| {
            names.iter().position(|x| *x == n).map(|i| i as u32)
        })
        .unwrap()
    }

    fn found<'a>(m: RouteMatch<'a>) -> &'a RouteEntry {
        match m {
            RouteMatch::Found(e) => e,
            other => panic!("expected a route, got {other:?}"),
        }
    }

    #[test]
    fn seed_route_strips_the_service_prefix() {
        let r = router(&[service(
            "sd-app",
            &["sd.httpbin.org"],
            "/v1",
            vec![route("anything", "/anything", true, &[])],
        )]);
        let e = found(r.lookup("sd.httpbin.org", "/v1/anything", "GET"));
        assert_eq!(&*e.route, "anything");
        assert_eq!(e.rewrite("/v1/anything?a=1"), "/anything?a=1");
        assert_eq!(e.rewrite("/v1/anything/x"), "/anything/x");
        assert!(matches!(
            r.lookup("sd.httpbin.org", "/v1/anythingelse", "GET"),
            RouteMatch::NotFound
        ));
        assert!(matches!(
            r.lookup("sd.httpbin.org", "/anything", "GET"),
            RouteMatch::NotFound
        ));
        assert!(matches!(
            r.lookup("other.org", "/v1/anything", "GET"),
            RouteMatch::NotFound
        ));
    }

    #[test]
    fn host_matching_is_exact_then_wildcard_then_default_ignoring_case_and_port() {
        let r = router(&[
            service("exact", &["a.example.com"], "/", vec![]),
            service("wild", &["*.example.com"], "/", vec![]),
            service("deeper", &["*.b.example.com"], "/", vec![]),
            service("any", &[], "/", vec![]),
        ]);
        let svc = |h: &str| found(r.lookup(h, "/", "GET")).service.to_string();
        assert_eq!(svc("a.example.com"), "exact");
        assert_eq!(svc("A.Example.COM:8080"), "exact");
        assert_eq!(svc("x.example.com"), "wild");
        assert_eq!(svc("x.y.example.com"), "wild");
        assert_eq!(svc("x.b.example.com"), "deeper");
        assert_eq!(svc("example.com"), "any");
        assert_eq!(svc("[::1]:80"), "any");
        assert_eq!(svc(""), "any");
        assert_eq!(svc("é.example.com"), "wild");
    }

    #[test]
    fn longest_prefix_wins_and_methods_give_405_with_allow() {
        let r = router(&[service(
            "s",
            &["h"],
            "/",
            vec![
                route("all", "/", false, &[]),
                route("read", "/items", false, &["GET", "HEAD"]),
                route("write", "/items", false, &["POST"]),
                route("admin", "/admin", false, &["DELETE"]),
            ],
        )]);
        assert_eq!(&*found(r.lookup("h", "/items/1", "GET")).route, "read");
        assert_eq!(&*found(r.lookup("h", "/items", "POST")).route, "write");
        // A longer prefix that refuses the method falls back to a shorter one that allows it.
        assert_eq!(&*found(r.lookup("h", "/items", "PUT")).route, "all");
        assert_eq!(&*found(r.lookup("h", "/other", "PUT")).route, "all");
        let r = router(&[service(
            "s",
            &["h"],
            "/",
            vec![route("admin", "/admin", false, &["DELETE", "GET"])],
        )]);
        match r.lookup("h", "/admin", "POST") {
            RouteMatch::MethodNotAllowed(set) => {
                assert_eq!(set.names().collect::<Vec<_>>(), ["GET", "DELETE"])
            }
            other => panic!("expected 405, got {other:?}"),
        }
    }

    #[test]
    fn connect_goes_to_the_first_route_naming_it_whatever_its_path() {
        let r = router(&[
            service(
                "tunnels",
                &["t.example.com"],
                "/",
                vec![
                    route("any", "/", false, &[]),
                    route("long", "/a/b", false, &["GET"]),
                    route("first", "/x", false, &["CONNECT"]),
                    route("second", "/", false, &["CONNECT", "GET"]),
                ],
            ),
            service("plain", &["p.example.com"], "/", vec![]),
            service(
                "read",
                &["r.example.com"],
                "/",
                vec![
                    route("r", "/r", false, &["GET", "HEAD"]),
                    route("w", "/w", false, &["POST"]),
                ],
            ),
        ]);
        // Longest prefix first (lookup order): "/x" before "/".
        let e = found(r.lookup_connect("T.example.com:443"));
        assert_eq!(&*e.route, "first");
        assert!(matches!(
            r.lookup_connect("nowhere.test:443"),
            RouteMatch::NotFound
        ));
        let allow = |authority: &str| match r.lookup_connect(authority) {
            RouteMatch::MethodNotAllowed(set) => set.names().collect::<Vec<_>>(),
            other => panic!("expected 405, got {other:?}"),
        };
        // An "any method" route does not take CONNECT, and does not list it.
        assert_eq!(
            allow("p.example.com:443"),
            ["GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS", "TRACE"]
        );
        assert_eq!(allow("r.example.com:80"), ["GET", "HEAD", "POST"]);
        // An ordinary request passes over a CONNECT-only route.
        assert_eq!(&*found(r.lookup("t.example.com", "/x", "GET")).route, "any");
        assert!(!MethodSet::ANY.names_method("CONNECT"));
        assert!(MethodSet::ANY.allows("CONNECT"));
    }

    #[test]
    fn prefix_matches_only_at_segment_boundaries() {
        assert!(prefix_matches("/api", "/api"));
        assert!(prefix_matches("/api", "/api/"));
        assert!(prefix_matches("/api", "/api/v"));
        assert!(!prefix_matches("/api", "/apiv"));
        assert!(prefix_matches("/api/", "/api/v"));
        assert!(prefix_matches("/", "/anything"));
    }

    #[test]
    fn stripping_to_nothing_leaves_a_slash() {
        let r = router(&[service(
            "s",
            &[],
            "/v1",
            vec![route("root", "/", true, &[])],
        )]);
        let e = found(r.lookup("x", "/v1", "GET"));
        assert_eq!(e.rewrite("/v1"), "/");
        assert_eq!(e.rewrite("/v1?x=1"), "/?x=1");
    }
}
