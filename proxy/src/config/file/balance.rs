//! `upstreams[].balance`, `hash`, `outlier`, `health_check` and `locality`, and the
//! top-level `node`, as written (see `file.rs`).

use serde::Deserialize;

/// `upstreams[].balance:` values.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FileBalance {
    #[default]
    RoundRobin,
    LeastRequest,
    ConsistentHash,
    Random,
}

impl FileBalance {
    /// The values, as written in the file.
    pub const VARIANTS: &'static [&'static str] =
        &["round_robin", "least_request", "consistent_hash", "random"];
}

/// `upstreams[].hash:`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileHash {
    pub key: FileHashKey,
    /// The header or cookie name (`key: header | cookie`).
    #[serde(default)]
    pub name: Option<String>,
}

impl FileHash {
    /// The keys of this mapping, as written in the file.
    pub const FIELDS: &'static [&'static str] = &["key", "name"];
}

/// `upstreams[].hash.key:` values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FileHashKey {
    Header,
    Cookie,
    SourceIp,
    Path,
}

impl FileHashKey {
    /// The values, as written in the file.
    pub const VARIANTS: &'static [&'static str] = &["header", "cookie", "source_ip", "path"];
}

/// `upstreams[].outlier:`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileOutlier {
    #[serde(default)]
    pub consecutive_5xx: Option<u32>,
    #[serde(default)]
    pub consecutive_gateway_errors: Option<u32>,
    #[serde(default)]
    pub base_ejection: Option<String>,
}

impl FileOutlier {
    /// The keys of this mapping, as written in the file.
    pub const FIELDS: &'static [&'static str] = &[
        "consecutive_5xx",
        "consecutive_gateway_errors",
        "base_ejection",
    ];
}

/// `upstreams[].health_check:`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileHealthCheck {
    /// `http` (default) or `tcp`.
    #[serde(default, rename = "type")]
    pub kind: FileCheckType,
    #[serde(default)]
    pub path: Option<String>,
    #[serde(default)]
    pub host: Option<String>,
    /// Passing statuses: numbers or `"200-399"` ranges.
    #[serde(default)]
    pub statuses: Option<Vec<FileStatus>>,
    #[serde(default)]
    pub interval: Option<String>,
    #[serde(default)]
    pub timeout: Option<String>,
    #[serde(default)]
    pub jitter: Option<String>,
    #[serde(default)]
    pub healthy: Option<u32>,
    #[serde(default)]
    pub unhealthy: Option<u32>,
}

impl FileHealthCheck {
    /// The keys of this mapping, as written in the file.
    pub const FIELDS: &'static [&'static str] = &[
        "type",
        "path",
        "host",
        "statuses",
        "interval",
        "timeout",
        "jitter",
        "healthy",
        "unhealthy",
    ];
}

/// `upstreams[].health_check.type:` values.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FileCheckType {
    #[default]
    Http,
    Tcp,
}

impl FileCheckType {
    /// The values, as written in the file.
    pub const VARIANTS: &'static [&'static str] = &["http", "tcp"];
}

/// One item of `health_check.statuses`: `200` or `"200-399"`.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum FileStatus {
    Code(u16),
    Range(String),
}

/// `upstreams[].locality:`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileLocality {
    #[serde(default)]
    pub prefer: FilePrefer,
    #[serde(default)]
    pub min_ready: Option<u32>,
}

impl FileLocality {
    /// The keys of this mapping, as written in the file.
    pub const FIELDS: &'static [&'static str] = &["prefer", "min_ready"];
}

/// `upstreams[].locality.prefer:` values.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FilePrefer {
    #[default]
    None,
    Node,
    Zone,
}

impl FilePrefer {
    /// The values, as written in the file.
    pub const VARIANTS: &'static [&'static str] = &["none", "node", "zone"];
}

/// `node:` (top level): where this gateway runs.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileGatewayNode {
    /// The node name. Default: the `NODE_NAME` environment variable.
    #[serde(default)]
    pub name: Option<String>,
    /// The zone. Default: the Node's `topology.kubernetes.io/zone` label.
    #[serde(default)]
    pub zone: Option<String>,
    /// The registry the Node is read in. Default: the first enabled one.
    #[serde(default)]
    pub zone_from: Option<String>,
}

impl FileGatewayNode {
    /// The keys of this mapping, as written in the file.
    pub const FIELDS: &'static [&'static str] = &["name", "zone", "zone_from"];
}
