//! A route's description: what it matches (path, methods, headers, query), where it
//! sends (one upstream or weighted backends), what it changes on the way (header edits,
//! path rewrite), what it answers itself (redirect, direct response) and how fast a
//! client may call it. Plain data, compiled by [`crate::route::Router::compile`].

use std::time::Duration;

use super::HashKey;
use crate::route::MethodSet;

/// One route inside a service.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct RouteSpec {
    pub name: String,
    /// Relative to the service's `path_prefix`: a prefix matched at a segment boundary,
    /// an exact path or an anchored regular expression, as `path_match` says.
    pub path: String,
    pub path_match: PathMatch,
    /// Remove the service's `path_prefix` before forwarding.
    pub strip_prefix: bool,
    /// Empty set: any method.
    pub methods: MethodSet,
    /// Every one must match (header names lower-case).
    pub headers: Vec<ValueMatch>,
    /// Every one must match (parameter names as sent).
    pub query: Vec<ValueMatch>,
    /// Overrides the service's upstream.
    pub upstream: Option<String>,
    /// A weighted split over upstreams instead of `upstream` (empty: none).
    pub backends: Vec<Backend>,
    /// Sticks a client to one backend by this key (header or cookie).
    pub backend_hash: Option<HashKey>,
    /// Overrides `http.max_request_body_bytes` for this route (0: no limit).
    pub max_body_bytes: Option<u64>,
    /// Overrides `http.http2.stream_idle_timeout` for this route's HTTP/2 streams.
    pub stream_idle_timeout: Option<Duration>,
    pub filters: Filters,
    pub rate_limit: Option<RateLimit>,
}

/// How a route's `path` is compared with the request's.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum PathMatch {
    /// At a segment boundary: `/api` takes `/api` and `/api/x`, not `/apix`.
    #[default]
    Prefix,
    /// The whole path.
    Exact,
    /// The whole path matches the regular expression.
    Regex,
}

/// A header or query parameter condition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ValueMatch {
    pub name: String,
    pub value: ValueCondition,
}

/// What the value of a [`ValueMatch`] must be.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ValueCondition {
    /// Byte for byte (surrounding whitespace of a header value ignored).
    Exact(String),
    /// The whole value matches the regular expression.
    Regex(String),
    /// Present, with any value.
    Present,
}

/// One of a route's weighted backends.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Backend {
    pub upstream: String,
    pub weight: u32,
}

/// What a route changes or answers.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Filters {
    pub request_headers: HeaderEdits,
    pub response_headers: HeaderEdits,
    pub rewrite: Option<Rewrite>,
    pub redirect: Option<Redirect>,
    pub direct_response: Option<DirectResponse>,
}

/// Header changes, applied remove, then set, then add.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct HeaderEdits {
    /// Replaces every field of the name (or adds it).
    pub set: Vec<(String, String)>,
    /// Appended beside any existing field of the name.
    pub add: Vec<(String, String)>,
    /// Names (lower-case) whose fields are dropped.
    pub remove: Vec<String>,
}

impl HeaderEdits {
    pub fn is_empty(&self) -> bool {
        self.set.is_empty() && self.add.is_empty() && self.remove.is_empty()
    }

    /// True when a field of this (any-case) name is dropped or replaced.
    pub fn drops(&self, name: &str) -> bool {
        self.remove.iter().any(|r| r.eq_ignore_ascii_case(name))
            || self.set.iter().any(|(n, _)| n.eq_ignore_ascii_case(name))
    }
}

/// A path rewrite before forwarding.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Rewrite {
    /// The matched prefix (the route's full prefix) becomes this.
    Prefix(String),
    /// The whole path becomes this (the query is kept).
    Full(String),
}

/// A redirect answered by the gateway; `None` parts keep the request's.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Redirect {
    pub scheme: Option<String>,
    pub host: Option<String>,
    pub port: Option<u16>,
    pub path: Option<Rewrite>,
    /// 301, 302, 307 or 308.
    pub status: u16,
}

/// A response answered by the gateway.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DirectResponse {
    pub status: u16,
    pub body: String,
    pub content_type: String,
}

/// A local rate limit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RateLimit {
    /// Tokens per `per`, for the whole gateway (each worker holds its share).
    pub tokens: u64,
    pub per: Duration,
    /// Requests allowed at once above the rate.
    pub burst: u64,
    pub key: RateKey,
}

/// What a rate limit counts by.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RateKey {
    /// The client's address (the real one, after `trusted_proxies` and PROXY protocol).
    ClientIp,
    /// A request header's value (name lower-case); requests without it share one bucket.
    Header(String),
}
