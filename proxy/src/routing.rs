//! From a parsed request head to what its route says: the route (host, path, headers,
//! query, method), its rate limit, and then an answer strait gives itself (a redirect, a
//! direct response) or the upstream to forward to (one of the route's weighted
//! backends). Also the request's real client address (`trusted_proxies`).
//!
//! Shared by the HTTP/1.1 engine (`http1/prepare.rs`, which HTTP/2 streams to HTTP/1.1
//! upstreams go through too) and the HTTP/2 relay (`h2/stream.rs`).
//!
//! Runs on: a worker, per request. Touches only the view's worker-local state (the
//! regex caches, the backend cursor, the rate-limit buckets); allocates only for a
//! redirect's `Location`.

use std::fmt::Write;
use std::net::IpAddr;
use std::time::Instant;

use httparse::Header;
use strait_discovery::route::{self, MethodSet, RouteEntry, RouteMatch};
use strait_discovery::spec::{DirectResponse, Redirect, Rewrite};

use crate::http::head::{self, RequestInfo};
use crate::real_ip::{self, Cidr};
use crate::transport::ClientAddr;
use crate::upstream::key;
use crate::upstream::View;
use crate::worker::Worker;

/// What a routed request becomes.
#[derive(Debug)]
pub enum Decision<'v> {
    NotFound,
    /// Some route matched but not with this method: what the matching ones allow.
    MethodNotAllowed(MethodSet),
    /// The route's rate limit refused it; retry after this many seconds (≥ 1).
    Limited {
        route: &'v RouteEntry,
        retry_after: u64,
    },
    /// A redirect to `location`.
    Redirect {
        route: &'v RouteEntry,
        status: u16,
        location: String,
    },
    /// The route's own response.
    Direct {
        route: &'v RouteEntry,
        response: &'v DirectResponse,
    },
    /// Forward to upstream `upstream` (the route's, or the backend picked).
    Forward {
        route: &'v RouteEntry,
        upstream: u32,
    },
}

/// Who sent a request.
#[derive(Debug, Clone, Copy)]
pub struct Client {
    /// The client's address: the peer's, or, from a trusted proxy, the one its
    /// `X-Forwarded-For` names.
    pub ip: Option<IpAddr>,
    /// The connection's peer is a trusted proxy (its `X-Forwarded-For` is kept).
    pub trusted_peer: bool,
}

impl Client {
    /// The client's address for the access log: its IP with the peer's port.
    pub fn addr(&self, peer: ClientAddr) -> ClientAddr {
        match (peer, self.ip) {
            (ClientAddr::Inet(a), Some(ip)) => {
                ClientAddr::Inet(std::net::SocketAddr::new(ip, a.port()))
            }
            _ => peer,
        }
    }
}

/// The client of a request from `peer`, with `trusted` proxies (nginx's `real_ip` with
/// `real_ip_recursive on`).
pub fn client(peer: ClientAddr, trusted: &[Cidr], headers: &[Header<'_>]) -> Client {
    let Some(ip) = peer.ip() else {
        return Client {
            ip: None,
            trusted_peer: false,
        };
    };
    if !real_ip::is_trusted(trusted, ip) {
        return Client {
            ip: Some(ip),
            trusted_peer: false,
        };
    }
    let xff = headers
        .iter()
        .filter(|h| h.name.eq_ignore_ascii_case("x-forwarded-for"))
        .map(|h| h.value);
    Client {
        ip: Some(real_ip::client_ip(ip, trusted, xff).to_canonical()),
        trusted_peer: true,
    }
}

/// Longest client-sent request id passed through as is.
const MAX_PASSED_ID: usize = 200;

/// Fills `into` with the request's id (`http.request_id`): the client's, when it sent a
/// usable one (1 to 200 visible ASCII characters, no space, quote or backslash, so that
/// it stays one field of the access log), otherwise a new random UUID. Left empty when
/// request ids are off.
pub fn fill_request_id(w: &Worker, headers: &[Header<'_>], into: &mut Vec<u8>) {
    into.clear();
    let config = &w.http.request_id;
    if !config.enabled {
        return;
    }
    let usable = |v: &[u8]| {
        (1..=MAX_PASSED_ID).contains(&v.len())
            && v.iter()
                .all(|b| b.is_ascii_graphic() && !matches!(b, b'"' | b'\\'))
    };
    match header(headers, &config.header).map(<[u8]>::trim_ascii) {
        Some(v) if usable(v) => into.extend_from_slice(v),
        _ => into.extend_from_slice(&w.request_ids.next()),
    }
}

/// The value of the first header field named `name` (any case).
pub fn header<'b>(headers: &[Header<'b>], name: &str) -> Option<&'b [u8]> {
    headers
        .iter()
        .find(|h| h.name.eq_ignore_ascii_case(name))
        .map(|h| h.value)
}

/// Routes a request whose normalised path is `path` and whose target (normalised path
/// and query) is `target`: [`find`], then [`limit`], then the route's own answer or
/// [`backend`].
pub fn decide<'v>(
    view: &'v View,
    req: &head::Request<'_, '_>,
    info: &RequestInfo<'_>,
    (path, target): (&str, &str),
    client: &Client,
    https: bool,
) -> Decision<'v> {
    let route = match find(view, req, info, (path, target)) {
        Ok(route) => route,
        Err(no) => return no,
    };
    if let Some(retry_after) = limit(view, route, req, client) {
        return Decision::Limited { route, retry_after };
    }
    let filters = &route.filters;
    if let Some(redirect) = &filters.redirect {
        let location = location(route, redirect, info.host, target, https);
        return Decision::Redirect {
            route,
            status: redirect.status,
            location,
        };
    }
    if let Some(response) = &filters.direct_response {
        return Decision::Direct { route, response };
    }
    Decision::Forward {
        route,
        upstream: backend(view, route, req, path, client),
    }
}

/// The route of a request (no side effect but the regex caches'): `Err` with
/// [`Decision::NotFound`] or [`Decision::MethodNotAllowed`].
pub fn find<'v, 'b>(
    view: &'v View,
    req: &head::Request<'_, 'b>,
    info: &RequestInfo<'_>,
    (path, target): (&str, &str),
) -> Result<&'v RouteEntry, Decision<'v>> {
    let query = target.split_once('?').map(|(_, q)| q).unwrap_or("");
    let headers = |name: &str| -> Option<&'b [u8]> { header(req.headers, name) };
    let request = route::Request {
        host: info.host,
        path,
        query,
        method: req.method,
        headers: &headers,
    };
    let routed = view
        .snapshot
        .router
        .route(&request, &mut view.routes.caches());
    match routed {
        RouteMatch::NotFound => Err(Decision::NotFound),
        RouteMatch::MethodNotAllowed(set) => Err(Decision::MethodNotAllowed(set)),
        RouteMatch::Found(route) => Ok(route),
    }
}

/// Takes a token from the route's rate limit, if it has one: `Some(seconds)` to wait
/// when refused (whole seconds rounded up, for `Retry-After`).
pub fn limit(
    view: &View,
    route: &RouteEntry,
    req: &head::Request<'_, '_>,
    client: &Client,
) -> Option<u64> {
    route.rate_limit.as_ref()?;
    let wait = view
        .routes
        .admit(route, client.ip, req.headers, Instant::now())
        .err()?;
    Some(wait.as_nanos().div_ceil(1_000_000_000).max(1) as u64)
}

/// The upstream a forwarded request goes to: the route's, or one of its weighted
/// backends (by the route's `hash` key when the request has it).
pub fn backend(
    view: &View,
    route: &RouteEntry,
    req: &head::Request<'_, '_>,
    path: &str,
    client: &Client,
) -> u32 {
    if route.schedule.is_empty() {
        return route.upstream;
    }
    let hash = route
        .backend_hash
        .as_ref()
        .and_then(|k| key::key_hash(k, req.headers, path, client.ip));
    view.routes.backend(route, hash)
}

/// A redirect's `Location`: the request's scheme, host, port and target, with what the
/// redirect replaces. A changed scheme without a port drops the request's port (the new
/// scheme's default); a default port (80 for http, 443 for https) is not written.
fn location(
    route: &RouteEntry,
    r: &Redirect,
    host_header: &str,
    target: &str,
    https: bool,
) -> String {
    let scheme = r
        .scheme
        .as_deref()
        .unwrap_or(if https { "https" } else { "http" });
    let name = route::host_name(host_header);
    let request_port = host_header[name.len()..]
        .strip_prefix(':')
        .and_then(|p| p.parse::<u16>().ok());
    let port = match (r.port, &r.scheme) {
        (Some(p), _) => Some(p),
        (None, Some(_)) => None,
        (None, None) => request_port,
    };
    let host = r.host.as_deref().unwrap_or(name);
    let path = match &r.path {
        None => std::borrow::Cow::Borrowed(target),
        Some(rewrite @ (Rewrite::Prefix(_) | Rewrite::Full(_))) => {
            std::borrow::Cow::Owned(route.rewritten(rewrite, target))
        }
    };
    let mut out = String::with_capacity(scheme.len() + host.len() + path.len() + 10);
    let _ = write!(out, "{scheme}://{host}");
    let default = if scheme == "https" { 443 } else { 80 };
    if let Some(p) = port.filter(|p| *p != default) {
        let _ = write!(out, ":{p}");
    }
    out.push_str(&path);
    out
}
