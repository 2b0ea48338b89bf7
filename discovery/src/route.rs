//! The compiled router: host (exact, then `*.suffix` wildcard, then default) → the first
//! route, in a fixed order, whose path, header and query conditions and methods accept
//! the request → what the route does (its upstream or weighted backends, filters, rate
//! limit).
//!
//! Compiled on the control side by [`Router::compile`]; [`Router::route`] is pure and
//! allocation-free (regex search state comes from the worker's [`Caches`]), and runs on
//! the workers' request path.

use std::borrow::Cow;
use std::collections::HashMap;
use std::sync::Arc;

mod matching;

pub use matching::{check_regex, query_param, BadRegex, Caches, Matcher, PathMatcher};
use matching::{PathSet, Regexes};

use crate::spec::{Filters, HashKey, PathMatch, RateLimit, Rewrite, RouteSpec, ServiceSpec};

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

/// [`RouteEntry::upstream`] of a route that answers itself (a redirect, a direct
/// response) and names no upstream: no index of the snapshot's upstreams.
pub const NO_UPSTREAM: u32 = u32::MAX;

/// One compiled route.
#[derive(Debug, Clone)]
pub struct RouteEntry {
    /// The path condition, with the service's `path_prefix` joined in front.
    pub path: PathMatcher,
    /// Bytes to remove from the front of the path before forwarding (the service's
    /// prefix when `strip_prefix` is on), 0 otherwise.
    pub strip: usize,
    pub methods: MethodSet,
    headers: Box<[Matcher]>,
    query: Box<[Matcher]>,
    /// Index into [`crate::Snapshot::upstreams`]: the route's upstream, or its first
    /// backend.
    pub upstream: u32,
    /// A weighted split: upstream indices, and the smooth weighted sequence of positions
    /// in it (empty: `upstream` alone).
    pub backends: Arc<[u32]>,
    pub schedule: Arc<[u32]>,
    /// Sticks a request to a backend by this key's hash.
    pub backend_hash: Option<HashKey>,
    pub filters: Arc<Filters>,
    pub rate_limit: Option<Arc<RateLimit>>,
    pub service: Arc<str>,
    pub route: Arc<str>,
    /// Largest request body on this route, when it overrides the gateway's (0: no limit).
    pub max_body_bytes: Option<u64>,
    /// How long an HTTP/2 stream to an `h2`/`h2c` upstream may idle, when it overrides the
    /// gateway's.
    pub stream_idle_timeout: Option<std::time::Duration>,
    /// Index of (`service`, `route`) in [`Router::routes`]: where a worker counts it.
    pub stats: u32,
    /// Position in the service's config, for the order among equals.
    order: u32,
}

impl RouteEntry {
    /// The path to send upstream for `target` (path plus query), if it differs: the
    /// service prefix stripped, or the route's `rewrite`.
    pub fn rewrite<'a>(&self, target: &'a str) -> Cow<'a, str> {
        let mut buf = String::new();
        match self.rewrite_into(target, &mut buf) {
            Some(path) => Cow::Borrowed(path),
            None => Cow::Owned(buf),
        }
    }

    /// [`RouteEntry::rewrite`] without allocating: `Some` of a part of `target` when that
    /// is the path to send, `None` when the path was written into `buf` (cleared first;
    /// the caller reuses it across requests).
    pub fn rewrite_into<'a>(&self, target: &'a str, buf: &mut String) -> Option<&'a str> {
        if let Some(rewrite) = &self.filters.rewrite {
            buf.clear();
            self.push_rewritten(rewrite, target, buf);
            return None;
        }
        if self.strip == 0 || self.strip > target.len() {
            return Some(target);
        }
        let rest = &target[self.strip..];
        if rest.starts_with('/') {
            return Some(rest);
        }
        buf.clear();
        buf.push('/');
        buf.push_str(rest);
        None
    }

    /// `target` with `rewrite` applied to its path; the query is kept. A prefix rewrite
    /// replaces the route's prefix at its segment boundary (`/api` → `/v2`: `/api/x` →
    /// `/v2/x`, `/api` → `/v2`).
    pub fn rewritten(&self, rewrite: &Rewrite, target: &str) -> String {
        let mut out = String::with_capacity(target.len() + 32);
        self.push_rewritten(rewrite, target, &mut out);
        out
    }

    fn push_rewritten(&self, rewrite: &Rewrite, target: &str, out: &mut String) {
        let (path, query) = match target.split_once('?') {
            Some((p, q)) => (p, Some(q)),
            None => (target, None),
        };
        match (rewrite, &self.path) {
            (Rewrite::Prefix(new), PathMatcher::Prefix(old)) if path.starts_with(&**old) => {
                let rest = &path[old.len()..];
                let new = new.trim_end_matches('/');
                if old.ends_with('/') {
                    out.push_str(new);
                    out.push('/');
                    out.push_str(rest);
                } else if new.is_empty() && rest.is_empty() {
                    out.push('/');
                } else {
                    out.push_str(new);
                    out.push_str(rest);
                }
            }
            (Rewrite::Prefix(new) | Rewrite::Full(new), _) => out.push_str(new),
        }
        if let Some(q) = query {
            out.push('?');
            out.push_str(q);
        }
    }

    /// Whether this route's header and query conditions accept the request.
    fn conditions_match(
        &self,
        req: &Request<'_, '_>,
        regexes: &Regexes,
        caches: &mut Caches,
    ) -> bool {
        self.headers
            .iter()
            .all(|m| m.accepts((req.headers)(&m.name), regexes, caches))
            && self
                .query
                .iter()
                .all(|m| m.accepts(matching::query_param(req.query, &m.name), regexes, caches))
    }

    /// The sort key among a host's routes (see [`Router::compile`]).
    fn rank(
        &self,
    ) -> (
        u8,
        std::cmp::Reverse<usize>,
        bool,
        std::cmp::Reverse<usize>,
        std::cmp::Reverse<usize>,
        u32,
    ) {
        let (kind, len) = match &self.path {
            PathMatcher::Exact(p) => (0, p.len()),
            PathMatcher::Regex { .. } => (1, 0),
            PathMatcher::Prefix(p) => (2, p.len()),
        };
        (
            kind,
            std::cmp::Reverse(len),
            self.methods.is_any(),
            std::cmp::Reverse(self.headers.len()),
            std::cmp::Reverse(self.query.len()),
            self.order,
        )
    }
}

/// What a request is routed by.
pub struct Request<'a, 'h> {
    /// The Host header (any case, port allowed).
    pub host: &'a str,
    /// The normalised path, without the query.
    pub path: &'a str,
    /// The query, without `?` (empty when none).
    pub query: &'a str,
    pub method: &'a str,
    /// The value of the first header field of a (lower-case) name.
    pub headers: &'a dyn Fn(&str) -> Option<&'h [u8]>,
}

/// The result of [`Router::lookup`].
#[derive(Debug)]
pub enum RouteMatch<'a> {
    Found(&'a RouteEntry),
    /// Some route matched the path but none allows the method.
    MethodNotAllowed(MethodSet),
    NotFound,
}

/// One host's routes, in lookup order, and its path regexes as one set.
#[derive(Debug, Default)]
struct Group {
    entries: Vec<RouteEntry>,
    paths: Option<PathSet>,
}

/// Routes grouped by host.
#[derive(Debug, Default)]
pub struct Router {
    exact: HashMap<Box<str>, usize>,
    /// `*.suffix` patterns by their suffix including the dot (`.example.com`).
    wildcard: HashMap<Box<str>, usize>,
    default: Option<usize>,
    groups: Vec<Group>,
    /// Every (service, route) pair once, in config order ([`RouteEntry::stats`]).
    routes: Vec<(Arc<str>, Arc<str>)>,
    regexes: Regexes,
}

/// An error from [`Router::compile`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnknownUpstream {
    pub service: String,
    pub route: Option<String>,
    pub upstream: Option<String>,
}

/// Why services cannot be compiled.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CompileError {
    Upstream(UnknownUpstream),
    Regex {
        service: String,
        route: String,
        error: BadRegex,
    },
}

impl Router {
    /// Compiles services into a router; `upstream_index` maps an upstream name to its
    /// index in the snapshot.
    ///
    /// Within a host, routes are tried in this order (the first that matches path,
    /// headers, query and method wins): exact paths (longest first), then regex paths,
    /// then prefixes (longest first); among equal paths, a route naming methods before
    /// one taking any, then more header conditions first, then more query conditions,
    /// then config order.
    pub fn compile(
        services: &[ServiceSpec],
        upstream_index: impl Fn(&str) -> Option<u32>,
    ) -> Result<Router, CompileError> {
        let mut router = Router::default();
        for service in services {
            let entries = router.service_entries(service, &upstream_index)?;
            let hosts: Vec<Option<&str>> = if service.hosts.is_empty() {
                vec![None]
            } else {
                service.hosts.iter().map(|h| Some(h.as_str())).collect()
            };
            for host in hosts {
                let group = router.group_for(host);
                router.groups[group].entries.extend(entries.iter().cloned());
            }
        }
        for group in &mut router.groups {
            group.entries.sort_by_key(RouteEntry::rank);
            let mut patterns = Vec::new();
            for e in &mut group.entries {
                if let PathMatcher::Regex { pattern, index } = &mut e.path {
                    *index = patterns.len() as u32;
                    patterns.push(pattern.clone());
                }
            }
            if !patterns.is_empty() {
                let refs: Vec<&str> = patterns.iter().map(|p| &**p).collect();
                let set = PathSet::new(&refs).map_err(|error| CompileError::Regex {
                    service: String::new(),
                    route: String::new(),
                    error,
                })?;
                group.paths = Some(set);
            }
        }
        Ok(router)
    }

    /// One service's compiled routes (an implicit one when it has none).
    fn service_entries(
        &mut self,
        service: &ServiceSpec,
        upstream_index: &impl Fn(&str) -> Option<u32>,
    ) -> Result<Vec<RouteEntry>, CompileError> {
        let service_name: Arc<str> = Arc::from(service.name.as_str());
        let implicit;
        let routes: &[RouteSpec] = if service.routes.is_empty() {
            implicit = [RouteSpec {
                path: "/".into(),
                ..RouteSpec::default()
            }];
            &implicit
        } else {
            &service.routes
        };
        let mut entries = Vec::with_capacity(routes.len());
        for (order, route) in routes.iter().enumerate() {
            let unknown = |name: Option<&String>| {
                CompileError::Upstream(UnknownUpstream {
                    service: service.name.clone(),
                    route: (!service.routes.is_empty()).then(|| route.name.clone()),
                    upstream: name.cloned(),
                })
            };
            let resolve = |name: Option<&String>| {
                name.and_then(|n| upstream_index(n))
                    .ok_or_else(|| unknown(name))
            };
            let bad_regex = |error| CompileError::Regex {
                service: service.name.clone(),
                route: route.name.clone(),
                error,
            };
            let backends: Vec<u32> = route
                .backends
                .iter()
                .map(|b| resolve(Some(&b.upstream)))
                .collect::<Result<_, _>>()?;
            let weights: Vec<u32> = route.backends.iter().map(|b| b.weight).collect();
            let answers =
                route.filters.redirect.is_some() || route.filters.direct_response.is_some();
            let upstream = match (
                backends.first(),
                route.upstream.as_ref().or(service.upstream.as_ref()),
            ) {
                (Some(first), _) => *first,
                // A route that answers itself sends nowhere.
                (None, None) if answers => NO_UPSTREAM,
                (None, name) => resolve(name)?,
            };
            let base = service.path_prefix.trim_end_matches('/');
            let path = match route.path_match {
                PathMatch::Prefix if service.routes.is_empty() => {
                    PathMatcher::Prefix(service.path_prefix.as_str().into())
                }
                PathMatch::Prefix => PathMatcher::Prefix(join_path(base, &route.path).into()),
                PathMatch::Exact => PathMatcher::Exact(join_path(base, &route.path).into()),
                PathMatch::Regex => {
                    let pattern = format!("{}(?:{})", regex::escape(base), route.path);
                    matching::check_regex(&pattern).map_err(bad_regex)?;
                    PathMatcher::Regex {
                        pattern: pattern.into(),
                        index: 0,
                    }
                }
            };
            let mut matchers = |list: &[crate::spec::ValueMatch]| {
                list.iter()
                    .map(|m| self.regexes.matcher(m))
                    .collect::<Result<Box<[Matcher]>, _>>()
                    .map_err(bad_regex)
            };
            let headers = matchers(&route.headers)?;
            let query = matchers(&route.query)?;
            let name: Arc<str> = Arc::from(route.name.as_str());
            self.routes.push((service_name.clone(), name.clone()));
            entries.push(RouteEntry {
                path,
                strip: if route.strip_prefix { base.len() } else { 0 },
                methods: route.methods,
                headers,
                query,
                upstream,
                schedule: if backends.len() > 1 {
                    crate::balance::schedule(&weights).into()
                } else {
                    Arc::from([])
                },
                backends: if backends.len() > 1 {
                    backends.into()
                } else {
                    Arc::from([])
                },
                backend_hash: route.backend_hash.clone(),
                filters: Arc::new(route.filters.clone()),
                rate_limit: route.rate_limit.clone().map(Arc::new),
                service: service_name.clone(),
                route: name,
                max_body_bytes: route.max_body_bytes,
                stream_idle_timeout: route.stream_idle_timeout,
                stats: (self.routes.len() - 1) as u32,
                order: order as u32,
            });
        }
        Ok(entries)
    }

    /// Every (service, route) pair once, in config order; a service without routes
    /// has one route named `""`.
    pub fn routes(&self) -> &[(Arc<str>, Arc<str>)] {
        &self.routes
    }

    /// Every compiled route once (the first host's copy of a route with several hosts).
    pub fn entries(&self) -> impl Iterator<Item = &RouteEntry> {
        let mut seen = vec![false; self.routes.len()];
        self.groups
            .iter()
            .flat_map(|g| &g.entries)
            .filter(move |e| !std::mem::replace(&mut seen[e.stats as usize], true))
    }

    /// Search state for this router's regexes: one per worker.
    pub fn caches(&self) -> Caches {
        Caches::new(
            &self.regexes,
            &self
                .groups
                .iter()
                .map(|g| g.paths.as_ref())
                .collect::<Vec<_>>(),
        )
    }

    fn group_for(&mut self, host: Option<&str>) -> usize {
        let next = self.groups.len();
        let slot = match host {
            None => *self.default.get_or_insert(next),
            Some(h) if h.starts_with("*.") => *self.wildcard.entry(h[1..].into()).or_insert(next),
            Some(h) => *self.exact.entry(h.into()).or_insert(next),
        };
        if slot == next {
            self.groups.push(Group::default());
        }
        slot
    }

    /// Finds the route for a request by host, path and method only (no header or query
    /// conditions hold): for tools and tests; allocates its regex caches.
    pub fn lookup(&self, host: &str, path: &str, method: &str) -> RouteMatch<'_> {
        let none = |_: &str| None;
        let req = Request {
            host,
            path,
            query: "",
            method,
            headers: &none,
        };
        self.route(&req, &mut self.caches())
    }

    /// Finds the route for a request (see [`Router::compile`] for the order). `caches`
    /// must come from this router's [`Router::caches`].
    pub fn route(&self, req: &Request<'_, '_>, caches: &mut Caches) -> RouteMatch<'_> {
        let Some(g) = self.group(req.host) else {
            return RouteMatch::NotFound;
        };
        let group = &self.groups[g];
        let mut allowed: Option<MethodSet> = None;
        let mut paths_run = false;
        for entry in &group.entries {
            let path_ok = match &entry.path {
                PathMatcher::Prefix(p) => prefix_matches(p, req.path),
                PathMatcher::Exact(p) => **p == *req.path,
                PathMatcher::Regex { index, .. } => {
                    if let (false, Some(set)) = (paths_run, &group.paths) {
                        caches.run_paths(set, g, req.path);
                        paths_run = true;
                    }
                    caches.path_matched(*index)
                }
            };
            if !path_ok || !entry.conditions_match(req, &self.regexes, caches) {
                continue;
            }
            if entry.methods.allows(req.method) {
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
        for entry in &self.groups[group].entries {
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
mod match_tests;
#[cfg(test)]
mod tests;
