//! The checked description of what to route: services, routes and upstreams.
//!
//! Built from the YAML config by the proxy's `config` module (which owns field paths,
//! line numbers and error messages) and consumed by [`crate::build`]. Plain data: no
//! runtime types, `Send + Sync`, cheap to compare so a reload can tell what changed.

use std::net::SocketAddr;
use std::time::Duration;

use crate::route::MethodSet;

/// Everything the table builder needs from the config.
#[derive(Debug, Clone, PartialEq)]
pub struct Spec {
    pub services: Vec<ServiceSpec>,
    pub upstreams: Vec<UpstreamSpec>,
}

/// A set of hosts and a path prefix served by one upstream, optionally split into routes.
#[derive(Debug, Clone, PartialEq)]
pub struct ServiceSpec {
    pub name: String,
    /// Exact names (`api.example.com`) and `*.suffix` wildcards, lower-case.
    /// Empty: the service answers for any host that no other service names.
    pub hosts: Vec<String>,
    /// Starts with `/`; `/` when the config gives none.
    pub path_prefix: String,
    /// The upstream of routes that name none (and of the service when it has no routes).
    pub upstream: Option<String>,
    /// Empty: one implicit route covering the whole `path_prefix`, any method.
    pub routes: Vec<RouteSpec>,
}

/// One route inside a service.
#[derive(Debug, Clone, PartialEq)]
pub struct RouteSpec {
    pub name: String,
    /// Relative to the service's `path_prefix`; a prefix matched at a segment boundary.
    pub path: String,
    /// Remove the service's `path_prefix` before forwarding.
    pub strip_prefix: bool,
    /// Empty set: any method.
    pub methods: MethodSet,
    /// Overrides the service's upstream.
    pub upstream: Option<String>,
}

/// A named set of endpoints plus how to talk to them.
#[derive(Debug, Clone, PartialEq)]
pub struct UpstreamSpec {
    pub name: String,
    pub source: UpstreamSource,
    pub settings: UpstreamSettings,
}

/// Where an upstream's endpoints come from.
#[derive(Debug, Clone, PartialEq)]
pub enum UpstreamSource {
    /// A fixed list from the config.
    Static(Vec<NodeSpec>),
    /// A Kubernetes Service found through a registry (filled in by discovery).
    Discovery(DiscoveryRef),
}

/// A static endpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NodeSpec {
    pub addr: SocketAddr,
    /// 0 takes the node out of rotation.
    pub weight: u32,
}

/// `namespace/service:port` in registry `registry`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct DiscoveryRef {
    pub registry: String,
    pub namespace: String,
    pub service: String,
    /// The Service port, by number or by name.
    pub port: ServicePort,
}

/// A Kubernetes Service port reference.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum ServicePort {
    Number(u16),
    Name(String),
}

/// How the proxy talks to an upstream's endpoints.
#[derive(Debug, Clone, PartialEq)]
pub struct UpstreamSettings {
    /// TCP connect, per attempt.
    pub connect_timeout: Duration,
    /// From the last request byte written to the complete response head.
    pub response_header_timeout: Duration,
    /// Between two reads of a response body (and two writes of a request body).
    pub read_timeout: Duration,
    /// Extra endpoints tried after a failed connect; `None` = endpoints − 1, capped.
    pub retries: Option<u32>,
    pub pass_host: PassHost,
    pub pool: PoolSettings,
}

impl Default for UpstreamSettings {
    fn default() -> Self {
        Self {
            connect_timeout: Duration::from_secs(5),
            response_header_timeout: Duration::from_secs(60),
            read_timeout: Duration::from_secs(60),
            retries: None,
            pass_host: PassHost::Pass,
            pool: PoolSettings::default(),
        }
    }
}

/// What the `Host` header sent upstream says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PassHost {
    /// The client's Host, unchanged.
    Pass,
    /// The endpoint's `ip:port`.
    Node,
    /// A fixed value.
    Rewrite(String),
}

/// Per-worker keep-alive pool for one upstream's endpoints.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PoolSettings {
    /// Idle connections kept per endpoint per worker; 0 disables pooling.
    pub max_idle_per_endpoint: usize,
    /// An idle pooled connection older than this is closed, not reused.
    pub idle_timeout: Duration,
    /// A connection is closed after this many requests; 0 = unlimited.
    pub max_requests_per_connection: u32,
}

impl Default for PoolSettings {
    fn default() -> Self {
        Self {
            max_idle_per_endpoint: 64,
            idle_timeout: Duration::from_secs(30),
            max_requests_per_connection: 1000,
        }
    }
}
