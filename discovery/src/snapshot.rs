//! The immutable, versioned routing table handed to every worker.
//!
//! A [`Snapshot`] is built on the control side and shared as `Arc<Snapshot>`; each
//! worker turns it into its own view once. Upstreams are individually `Arc`ed so that a
//! new version shares every upstream that did not change.

use std::sync::Arc;
use std::time::Instant;

use crate::addr::EndpointAddr;
use crate::route::Router;
use crate::spec::UpstreamSettings;

/// Monotonic version of a published snapshot.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct SnapshotVersion(pub u64);

impl std::fmt::Display for SnapshotVersion {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "v{}", self.0)
    }
}

/// Routes plus upstreams, versioned.
#[derive(Debug)]
pub struct Snapshot {
    pub version: SnapshotVersion,
    pub router: Arc<Router>,
    /// Indexed by [`crate::route::RouteEntry::upstream`].
    pub upstreams: Vec<Arc<Upstream>>,
    /// When the change this snapshot carries reached the control side (for the
    /// propagation-latency measurement).
    pub origin: Instant,
    /// This gateway's node and zone, as locality compared endpoints with.
    pub node: Option<Arc<str>>,
    pub zone: Option<Arc<str>>,
}

impl Snapshot {
    pub fn upstream(&self, name: &str) -> Option<&Arc<Upstream>> {
        self.upstreams.iter().find(|u| &*u.name == name)
    }
}

/// A named set of endpoints and how to reach them.
#[derive(Debug)]
pub struct Upstream {
    pub name: Arc<str>,
    pub settings: Arc<UpstreamSettings>,
    /// Every known endpoint, in rotation or not.
    pub endpoints: Arc<[Endpoint]>,
    /// Weighted round-robin order over indices into `endpoints` (ready endpoints only).
    /// Empty when no endpoint is ready.
    pub schedule: Arc<[u32]>,
    /// Terminating-but-serving endpoints, used only when `schedule` is empty.
    pub fallback: Arc<[u32]>,
    /// `consistent_hash` only: the Maglev table over the endpoints in rotation (indices
    /// into `endpoints`); empty otherwise.
    pub maglev: Arc<[u32]>,
    pub status: UpstreamStatus,
    /// Where each endpoint runs (same index as `endpoints`).
    pub places: Arc<[Place]>,
    /// Each endpoint's active health check result (same index as `endpoints`).
    pub checks: Arc<[Check]>,
    /// How close each endpoint is to this gateway (same index as `endpoints`).
    pub tiers: Arc<[Tier]>,
    /// The distinct endpoints picks come from (indices into `endpoints`): those of
    /// `schedule`, else of `fallback`. Its length bounds a request's attempts.
    pub members: Arc<[u32]>,
    /// The locality tier `schedule` was drawn from (`Any` without `locality`).
    pub tier: Tier,
    /// Every ready endpoint fails its health check, so all of them are used (panic mode).
    pub panic: bool,
}

impl Upstream {
    /// True when the upstream has an endpoint it may send a request to.
    pub fn has_endpoints(&self) -> bool {
        !self.schedule.is_empty() || !self.fallback.is_empty()
    }

    /// True when `e` (one of `endpoints`) takes new requests: a ready endpoint, or a
    /// terminating one while no endpoint is ready.
    pub fn in_rotation(&self, e: &Endpoint) -> bool {
        let wanted = if self.schedule.is_empty() {
            EndpointState::Terminating
        } else {
            EndpointState::Ready
        };
        e.state == wanted && e.weight > 0
    }
}

/// Where an endpoint runs, from its EndpointSlice (empty for static nodes).
#[derive(Debug, Clone, PartialEq, Eq, Default, Hash)]
pub struct Place {
    /// `nodeName`.
    pub node: Option<Arc<str>>,
    /// `zone`.
    pub zone: Option<Arc<str>>,
    /// `hints.forZones`: the zones topology-aware routing assigns it to.
    pub for_zones: Arc<[Arc<str>]>,
}

/// An endpoint's active health check result.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Hash)]
pub enum Check {
    /// No check configured, or none finished yet: picked as passing.
    #[default]
    Unchecked,
    Passing,
    /// Out of rotation until it passes `healthy` checks in a row (unless all fail).
    Failing,
}

impl Check {
    pub fn name(self) -> &'static str {
        match self {
            Check::Unchecked => "unchecked",
            Check::Passing => "passing",
            Check::Failing => "failing",
        }
    }
}

/// How close an endpoint is to this gateway, and the tier an upstream picks from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Hash, PartialOrd, Ord)]
pub enum Tier {
    /// On this gateway's node.
    Node,
    /// In this gateway's zone (or hinted for it).
    Zone,
    /// Anywhere.
    #[default]
    Any,
}

impl Tier {
    pub const ALL: [Tier; 3] = [Tier::Node, Tier::Zone, Tier::Any];

    pub fn name(self) -> &'static str {
        match self {
            Tier::Node => "node",
            Tier::Zone => "zone",
            Tier::Any => "any",
        }
    }
}

/// Whether an upstream's endpoint list can be trusted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UpstreamStatus {
    /// Static, or discovered and synced.
    Ready,
    /// Its registry has not finished its first list yet.
    NotSynced { registry: Arc<str> },
    /// Its registry is disabled or missing from the config.
    RegistryDisabled { registry: Arc<str> },
}

/// One address an upstream can send to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Endpoint {
    pub addr: EndpointAddr,
    pub weight: u32,
    pub state: EndpointState,
}

/// Kubernetes-style endpoint conditions, reduced to what routing needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum EndpointState {
    /// In rotation.
    Ready,
    /// Serving but terminating: used only when no endpoint is ready.
    Terminating,
    /// Known but takes no traffic.
    NotServing,
}
