//! `upstreams[].balance`, `hash` and `outlier`, as written (see `file.rs`).

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
