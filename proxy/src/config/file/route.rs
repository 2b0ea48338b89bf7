//! A route (`services[].routes[]`) with its matches, backends, filters and rate limit, the
//! listener's real-address keys, and `http.request_id`, as written (see `file.rs`).

use std::collections::BTreeMap;

use serde::Deserialize;

use super::FileHash;

/// One item of `services[].routes:`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileRoute {
    /// Unique within its service.
    pub name: String,
    /// Path prefix relative to the service's `path_prefix`; starts with `/`.
    pub path: String,
    /// Remove the service's `path_prefix` before forwarding. Default `false`.
    #[serde(default)]
    pub strip_prefix: bool,
    /// Methods the route accepts (any case). Empty or absent: any method but `CONNECT`,
    /// which only a route naming it accepts.
    #[serde(default)]
    pub methods: Vec<String>,
    /// Upstream for this route; default: the service's.
    #[serde(default)]
    pub upstream: Option<String>,
    /// Largest request body on this route in bytes (0: no limit); default:
    /// `http.max_request_body_bytes`.
    #[serde(default)]
    pub max_body_bytes: Option<u64>,
    /// How long an HTTP/2 stream to an `h2`/`h2c` upstream may idle; default:
    /// `http.http2.stream_idle_timeout`.
    #[serde(default)]
    pub stream_idle_timeout: Option<String>,
    /// How `path` compares: `prefix` (default), `exact` or `regex`.
    #[serde(default)]
    pub path_match: FilePathMatch,
    /// Header conditions, all of which must hold.
    #[serde(default)]
    pub headers: Vec<FileValueMatch>,
    /// Query parameter conditions, all of which must hold.
    #[serde(default)]
    pub query: Vec<FileValueMatch>,
    /// A weighted split over upstreams instead of `upstream`.
    #[serde(default)]
    pub backends: Option<Vec<FileBackend>>,
    /// Sticks a client to one of `backends` (`key: header | cookie | source_ip`).
    #[serde(default)]
    pub hash: Option<FileHash>,
    #[serde(default)]
    pub request_headers: Option<FileHeaderEdits>,
    #[serde(default)]
    pub response_headers: Option<FileHeaderEdits>,
    #[serde(default)]
    pub rewrite: Option<FileRewrite>,
    #[serde(default)]
    pub redirect: Option<FileRedirect>,
    #[serde(default)]
    pub direct_response: Option<FileDirectResponse>,
    #[serde(default)]
    pub rate_limit: Option<FileRateLimit>,
}

impl FileRoute {
    /// The keys of this mapping, as written in the file.
    pub const FIELDS: &'static [&'static str] = &[
        "name",
        "path",
        "strip_prefix",
        "methods",
        "upstream",
        "max_body_bytes",
        "stream_idle_timeout",
        "path_match",
        "headers",
        "query",
        "backends",
        "hash",
        "request_headers",
        "response_headers",
        "rewrite",
        "redirect",
        "direct_response",
        "rate_limit",
    ];
}

/// `services[].routes[].path_match:` values.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FilePathMatch {
    #[default]
    Prefix,
    Exact,
    Regex,
}

impl FilePathMatch {
    /// The values, as written in the file.
    pub const VARIANTS: &'static [&'static str] = &["prefix", "exact", "regex"];
}

/// One item of `routes[].headers:` or `routes[].query:`: exactly one of `value`, `regex`
/// and `present: true`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileValueMatch {
    pub name: String,
    #[serde(default)]
    pub value: Option<String>,
    #[serde(default)]
    pub regex: Option<String>,
    #[serde(default)]
    pub present: Option<bool>,
}

impl FileValueMatch {
    /// The keys of this mapping, as written in the file.
    pub const FIELDS: &'static [&'static str] = &["name", "value", "regex", "present"];
}

/// One item of `routes[].backends:`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileBackend {
    pub upstream: String,
    /// Default 1; 0 takes the backend out.
    #[serde(default)]
    pub weight: Option<u32>,
}

impl FileBackend {
    /// The keys of this mapping, as written in the file.
    pub const FIELDS: &'static [&'static str] = &["upstream", "weight"];
}

/// `routes[].request_headers:` and `routes[].response_headers:`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileHeaderEdits {
    #[serde(default)]
    pub set: BTreeMap<String, String>,
    #[serde(default)]
    pub add: BTreeMap<String, String>,
    #[serde(default)]
    pub remove: Vec<String>,
}

impl FileHeaderEdits {
    /// The keys of this mapping, as written in the file.
    pub const FIELDS: &'static [&'static str] = &["set", "add", "remove"];
}

/// `routes[].rewrite:`: exactly one of `prefix` and `path`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileRewrite {
    #[serde(default)]
    pub prefix: Option<String>,
    #[serde(default)]
    pub path: Option<String>,
}

impl FileRewrite {
    /// The keys of this mapping, as written in the file.
    pub const FIELDS: &'static [&'static str] = &["prefix", "path"];
}

/// `routes[].redirect:`; at least one part changes.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileRedirect {
    #[serde(default)]
    pub scheme: Option<String>,
    #[serde(default)]
    pub host: Option<String>,
    #[serde(default)]
    pub port: Option<u16>,
    /// The whole path.
    #[serde(default)]
    pub path: Option<String>,
    /// The matched prefix's replacement.
    #[serde(default)]
    pub prefix: Option<String>,
    /// 301, 302 (default), 307 or 308.
    #[serde(default)]
    pub status: Option<u16>,
}

impl FileRedirect {
    /// The keys of this mapping, as written in the file.
    pub const FIELDS: &'static [&'static str] =
        &["scheme", "host", "port", "path", "prefix", "status"];
}

/// `routes[].direct_response:`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileDirectResponse {
    pub status: u16,
    #[serde(default)]
    pub body: Option<String>,
    /// Default `text/plain; charset=utf-8`.
    #[serde(default)]
    pub content_type: Option<String>,
}

impl FileDirectResponse {
    /// The keys of this mapping, as written in the file.
    pub const FIELDS: &'static [&'static str] = &["status", "body", "content_type"];
}

/// `routes[].rate_limit:`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileRateLimit {
    /// `N/s`, `N/m` or `N/h`.
    pub rate: String,
    /// Default: one second's worth of the rate.
    #[serde(default)]
    pub burst: Option<u64>,
    #[serde(default)]
    pub key: FileRateKey,
    /// The header `key: header` counts by.
    #[serde(default)]
    pub header: Option<String>,
}

impl FileRateLimit {
    /// The keys of this mapping, as written in the file.
    pub const FIELDS: &'static [&'static str] = &["rate", "burst", "key", "header"];
}

/// `routes[].rate_limit.key:` values.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FileRateKey {
    #[default]
    ClientIp,
    Header,
}

impl FileRateKey {
    /// The values, as written in the file.
    pub const VARIANTS: &'static [&'static str] = &["client_ip", "header"];
}

/// `http.request_id:`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileRequestId {
    /// Default `true`.
    #[serde(default)]
    pub enabled: Option<bool>,
    /// Default `X-Request-Id`.
    #[serde(default)]
    pub header: Option<String>,
}

impl FileRequestId {
    /// The keys of this mapping, as written in the file.
    pub const FIELDS: &'static [&'static str] = &["enabled", "header"];
}

/// `upstreams[].proxy_protocol:` values: the PROXY header sent on each new connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FileProxyProtocol {
    V1,
    V2,
}

impl FileProxyProtocol {
    /// The values, as written in the file.
    pub const VARIANTS: &'static [&'static str] = &["v1", "v2"];
}
