//! From a whole request head to a decision: the head is parsed (strictly, held to the
//! worker's limits), analysed (framing, Host, target), its path normalised and routed
//! with the worker's current view; the upstream head's common part is written once, so
//! that retries only append the per-endpoint rest. The answer is what the request is
//! ([`Prepared`]) and what to do with it ([`Action`]).
//!
//! Runs on: a worker, per request. Synchronous on purpose: the parse's header array
//! lives on this stack frame, not in the connection's future.

use std::borrow::Cow;

use strait_discovery::route::{RouteEntry, RouteMatch};
use strait_discovery::spec::{HeaderEdits, PassHost};

use super::Client;
use crate::access_log::Record;
use crate::http::head::{self, Edits, Forwarding, HostHeader};
use crate::http::{is_idempotent, BodyKind, HeadError};
use crate::metrics::RouteStats;
use crate::routing::{self, Decision};
use crate::transport::ClientAddr;
use crate::upstream::View;
use crate::worker::Worker;

/// What a parsed request is, owned (the head's borrow of the buffer has ended).
pub(super) struct Prepared<'v> {
    pub(super) head_len: usize,
    /// The request asks to switch protocols (`Connection: upgrade`, see
    /// [`head::upgrade`]): a 101 answer starts a tunnel.
    pub(super) upgrade: bool,
    pub(super) minor: u8,
    pub(super) head_only: bool,
    pub(super) idempotent: bool,
    pub(super) body: BodyKind,
    pub(super) client_close: bool,
    pub(super) expect_continue: bool,
    /// Most request body bytes accepted (0: no limit).
    pub(super) max_body: u64,
    /// Where this request is counted: its route's stats, or the unrouted ones.
    pub(super) stats: &'v RouteStats,
    /// The route's response header edits.
    pub(super) response_edits: Option<&'v HeaderEdits>,
    /// The client said `TE: trailers`: a chunked response keeps its trailer fields.
    pub(super) te_trailers: bool,
}

/// What to do with a prepared request.
pub(super) enum Action<'v> {
    /// Answer it ourselves (404, 405 with its `Allow`, 413, 503…).
    Reply {
        status: u16,
        body: &'static str,
        allow: Option<String>,
    },
    /// The route answers it itself (a redirect, a direct response, a 429).
    Answer(RouteAnswer<'v>),
    Forward(Forward),
    /// A CONNECT to tunnel to the route's upstream.
    Connect {
        route: &'v RouteEntry,
    },
}

/// A response a route gives itself.
pub(super) struct RouteAnswer<'v> {
    pub(super) status: u16,
    pub(super) content_type: &'v str,
    pub(super) body: &'v str,
    /// `Location` (a redirect) or `Retry-After` (a 429).
    pub(super) field: Option<(&'static str, String)>,
}

/// A routed request to forward.
#[derive(Clone, Copy)]
pub(super) struct Forward {
    /// The upstream picked: the route's, or one of its weighted backends.
    pub(super) upstream: u32,
    /// The upstream head's common part is `out[..head_base]`; each attempt appends the
    /// rest.
    pub(super) head_base: usize,
    /// The upstream wants the endpoint's address as `Host` (`pass_host: node`).
    pub(super) host_per_endpoint: bool,
    /// The request's `consistent_hash` key, when its upstream has one.
    pub(super) hash: Option<u64>,
}

/// Parses the complete head at the start of the client buffer and decides what to do.
pub(super) fn prepare<'v, S>(
    c: &mut Client<S>,
    w: &Worker,
    view: &'v View,
) -> Result<(Prepared<'v>, Action<'v>), HeadError> {
    let Client {
        buf,
        out,
        record,
        peer,
        trusted,
        request_id,
        path_buf,
        ..
    } = c;
    let mut hb = head::header_buf();
    let req = head::reader::parse_complete(buf, &mut hb, &w.head_limits)?;
    let https = record.tls.is_some();
    let record = w.access.is_some().then_some(record);
    let client = routing::client(*peer, trusted, req.headers);
    if req.method == "CONNECT" {
        return prepare_connect(&req, *peer, &client, view, record);
    }
    routing::fill_request_id(w, req.headers, request_id);
    let rid = &w.http.request_id;
    let r = Routing {
        peer: *peer,
        client,
        https,
        max_body: w.http.max_request_body_bytes,
        request_id: rid.enabled.then(|| (rid.header.as_str(), &request_id[..])),
    };
    route(&req, &r, view, (out, path_buf), record)
}

/// What [`route`] needs beyond the head.
struct Routing<'a> {
    peer: ClientAddr,
    client: routing::Client,
    https: bool,
    max_body: u64,
    /// The request-id field to ensure upstream: (name, value).
    request_id: Option<(&'a str, &'a [u8])>,
}

/// Validates the head, routes it and writes the upstream head's common part into `out`.
fn route<'v>(
    req: &head::Request<'_, '_>,
    r: &Routing<'_>,
    view: &'v View,
    (out, path_buf): (&mut Vec<u8>, &mut String),
    record: Option<&mut Record>,
) -> Result<(Prepared<'v>, Action<'v>), HeadError> {
    let info = head::analyze_request(req)?;
    let mut record = record;
    if let Some(record) = record.as_deref_mut() {
        start_record(record, r.peer, &r.client, info.host, req);
        if let Some((_, id)) = r.request_id {
            record.request_id.push_str(&String::from_utf8_lossy(id));
        }
    }
    let mut p = Prepared {
        head_len: req.len,
        upgrade: head::upgrade(req, &info).is_some(),
        minor: req.minor,
        head_only: req.method == "HEAD",
        idempotent: is_idempotent(req.method),
        body: info.framing.body,
        client_close: info.framing.close,
        expect_continue: info.framing.expect_continue && req.minor == 1,
        max_body: r.max_body,
        stats: &view.unrouted,
        response_edits: None,
        te_trailers: info.framing.te_trailers,
    };
    // Routing and the upstream see the path with dot segments resolved.
    let path = head::normalize_path(info.path)?;
    let target: Cow<'_, str> = match (&path, info.path_and_query.split_once('?')) {
        (Cow::Borrowed(_), _) => Cow::Borrowed(info.path_and_query),
        (Cow::Owned(p), Some((_, query))) => Cow::Owned(format!("{p}?{query}")),
        (Cow::Owned(p), None) => Cow::Owned(p.clone()),
    };
    let decision = routing::decide(view, req, &info, (&path, &target), &r.client, r.https);
    let (route, upstream) = match decision {
        Decision::NotFound => {
            let action = Action::Reply {
                status: 404,
                body: "not found: no route matches this host and path",
                allow: None,
            };
            return Ok((p, action));
        }
        Decision::MethodNotAllowed(set) => {
            let action = Action::Reply {
                status: 405,
                body: "method not allowed on this route",
                allow: Some(set.names().collect::<Vec<_>>().join(", ")),
            };
            return Ok((p, action));
        }
        Decision::Limited { route, retry_after } => {
            p.stats = &view.route_stats[route.stats as usize];
            p.response_edits = Some(&route.filters.response_headers);
            let action = Action::Answer(RouteAnswer {
                status: 429,
                content_type: "text/plain; charset=utf-8",
                body: "too many requests: this route's rate limit is reached\n",
                field: Some(("Retry-After", retry_after.to_string())),
            });
            return Ok((p, action));
        }
        Decision::Redirect {
            route,
            status,
            location,
        } => {
            p.stats = &view.route_stats[route.stats as usize];
            p.response_edits = Some(&route.filters.response_headers);
            let action = Action::Answer(RouteAnswer {
                status,
                content_type: "",
                body: "",
                field: Some(("Location", location)),
            });
            return Ok((p, action));
        }
        Decision::Direct { route, response } => {
            p.stats = &view.route_stats[route.stats as usize];
            p.response_edits = Some(&route.filters.response_headers);
            let action = Action::Answer(RouteAnswer {
                status: response.status,
                content_type: &response.content_type,
                body: &response.body,
                field: None,
            });
            return Ok((p, action));
        }
        Decision::Forward { route, upstream } => (route, upstream),
    };
    p.stats = &view.route_stats[route.stats as usize];
    p.response_edits = Some(&route.filters.response_headers);
    p.max_body = route.max_body_bytes.unwrap_or(p.max_body);
    if let BodyKind::Length(n) = p.body {
        if p.max_body > 0 && n > p.max_body {
            // Refused before reading the body; the connection closes.
            let action = Action::Reply {
                status: 413,
                body: "content too large: the request body is over the limit",
                allow: None,
            };
            return Ok((p, action));
        }
    }
    let settings = &view.snapshot.upstreams[upstream as usize].settings;
    let rewritten = match route.rewrite_into(&target, path_buf) {
        Some(path) => path,
        None => path_buf.as_str(),
    };
    let (host, per_endpoint) = match &settings.pass_host {
        PassHost::Pass => (HostHeader::Pass, false),
        PassHost::Rewrite(h) => (HostHeader::Set(h), false),
        PassHost::Node => (HostHeader::Omit, true),
    };
    out.clear();
    let edits = &route.filters.request_headers;
    let forwarding = Forwarding {
        path: rewritten,
        client_ip: r.peer.ip(),
        host,
        https: r.https,
        trusted_peer: r.client.trusted_peer,
        edits: Edits {
            remove: &edits.remove,
            set: &edits.set,
            add: &edits.add,
            ensure: r.request_id,
        },
    };
    head::write_upstream_head_for(out, req, &info, &forwarding);
    if let Some(record) = record {
        // The upstream URL of the access log (`apisix`, `json`).
        record.upstream_scheme = if settings.tls.is_some() {
            "https"
        } else {
            "http"
        };
        match host {
            HostHeader::Pass => record.upstream_host.push_str(info.host),
            HostHeader::Set(h) => record.upstream_host.push_str(h),
            HostHeader::Omit => {}
        }
        record.upstream_uri.push_str(rewritten);
    }
    let hash =
        crate::upstream::key::request_key(&settings.balance, req.headers, &path, r.client.ip);
    let action = Action::Forward(Forward {
        upstream,
        head_base: out.len(),
        host_per_endpoint: per_endpoint,
        hash,
    });
    Ok((p, action))
}

/// Validates and routes a CONNECT (CONFIG.md, "Upgrade (WebSocket) and CONNECT"): by its
/// authority's host, to the first route of that host that names CONNECT; never to the
/// authority itself. Every answer but the tunnel closes the connection: what the client
/// sent behind the head was meant for the tunnel, not read as requests.
fn prepare_connect<'v>(
    req: &head::Request<'_, '_>,
    peer: ClientAddr,
    client: &routing::Client,
    view: &'v View,
    record: Option<&mut Record>,
) -> Result<(Prepared<'v>, Action<'v>), HeadError> {
    let authority = head::analyze_connect(req)?;
    if let Some(record) = record {
        start_record(record, peer, client, authority, req);
    }
    let action = match view.snapshot.router.lookup_connect(authority) {
        RouteMatch::NotFound => Action::Reply {
            status: 404,
            body: "not found: no service answers for this host",
            allow: None,
        },
        RouteMatch::MethodNotAllowed(set) => Action::Reply {
            status: 405,
            body: "method not allowed: no route of this host accepts CONNECT",
            allow: Some(set.names().collect::<Vec<_>>().join(", ")),
        },
        RouteMatch::Found(route) => Action::Connect { route },
    };
    let stats = match &action {
        Action::Connect { route } => &view.route_stats[route.stats as usize],
        _ => &view.unrouted,
    };
    let p = Prepared {
        head_len: req.len,
        upgrade: false,
        minor: req.minor,
        head_only: false,
        idempotent: false,
        body: BodyKind::None,
        client_close: true,
        expect_continue: false,
        max_body: 0,
        stats,
        response_edits: None,
        te_trailers: false,
    };
    Ok((p, action))
}

/// Fills the access-log fields a request head gives.
fn start_record(
    record: &mut Record,
    peer: ClientAddr,
    client: &routing::Client,
    host: &str,
    req: &head::Request<'_, '_>,
) {
    record.clear();
    // The real client (`trusted_proxies`).
    record.client = Some(client.addr(peer));
    record.host.push_str(host);
    record.request_line.push_str(req.method);
    record.request_line.push(' ');
    record.request_line.push_str(req.target);
    record.request_line.push_str(if record.h2 {
        " HTTP/2.0"
    } else if req.minor == 0 {
        " HTTP/1.0"
    } else {
        " HTTP/1.1"
    });
    for h in req.headers {
        if h.name.eq_ignore_ascii_case("referer") {
            record.referer.push_str(&String::from_utf8_lossy(h.value));
        } else if h.name.eq_ignore_ascii_case("user-agent") {
            record
                .user_agent
                .push_str(&String::from_utf8_lossy(h.value));
        }
    }
}
