//! The table builder: spec + endpoints → [`Snapshot`], sharing what did not change.
//!
//! The router is compiled once per spec. Each upstream is its own `Arc`; replacing one
//! upstream's endpoints ([`TableBuilder::set_endpoints`]) rebuilds only that upstream, and
//! [`TableBuilder::snapshot`] clones the `Arc`s of all others (O(upstreams) pointer
//! copies, no endpoint copies).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Instant;

use crate::addr::EndpointAddr;
use crate::balance;
use crate::route::{CompileError, Router, UnknownUpstream};
use crate::snapshot::{
    Check, Endpoint, EndpointState, Place, Snapshot, SnapshotVersion, Tier, Upstream,
    UpstreamStatus,
};
use crate::spec::{Prefer, Spec, UpstreamSource};

/// Why a spec cannot become a table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BuildError {
    /// A service or route names an upstream that does not exist.
    UnknownUpstream(UnknownUpstream),
    /// Two upstreams share a name.
    DuplicateUpstream(String),
    /// A route's regular expression does not compile.
    Regex(String),
}

impl std::error::Error for BuildError {}

impl std::fmt::Display for BuildError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            BuildError::UnknownUpstream(u) => {
                write!(f, "service {:?}", u.service)?;
                if let Some(r) = &u.route {
                    write!(f, " route {r:?}")?;
                }
                match &u.upstream {
                    Some(n) => write!(f, " names upstream {n:?}, which is not defined"),
                    None => write!(f, " has no upstream"),
                }
            }
            BuildError::DuplicateUpstream(n) => write!(f, "upstream {n:?} is defined twice"),
            BuildError::Regex(e) => f.write_str(e),
        }
    }
}

/// Holds the current spec, compiled router and per-upstream tables.
#[derive(Debug)]
pub struct TableBuilder {
    spec: Arc<Spec>,
    router: Arc<Router>,
    upstreams: Vec<Arc<Upstream>>,
    by_name: HashMap<String, usize>,
    version: SnapshotVersion,
    /// Active health check results per upstream (indexed like `upstreams`).
    checks: Vec<HashMap<EndpointAddr, Check>>,
    here: Here,
}

impl TableBuilder {
    /// Compiles `spec`. Static upstreams get their nodes; discovery-backed ones start
    /// empty and [`UpstreamStatus::NotSynced`] until [`Self::set_endpoints`] fills them.
    pub fn try_new(spec: Spec) -> Result<TableBuilder, BuildError> {
        let mut by_name = HashMap::new();
        for (i, u) in spec.upstreams.iter().enumerate() {
            if by_name.insert(u.name.clone(), i).is_some() {
                return Err(BuildError::DuplicateUpstream(u.name.clone()));
            }
        }
        let router = Router::compile(&spec.services, |n| by_name.get(n).map(|i| *i as u32))
            .map_err(|e| match e {
                CompileError::Upstream(u) => BuildError::UnknownUpstream(u),
                CompileError::Regex {
                    service,
                    route,
                    error,
                } => BuildError::Regex(format!("service {service:?} route {route:?}: {error}")),
            })?;
        let here = Here {
            node: spec.node.name.as_deref().map(Arc::from),
            zone: spec.node.zone.as_deref().map(Arc::from),
        };
        let upstreams = spec
            .upstreams
            .iter()
            .map(|u| {
                let (endpoints, status) = match &u.source {
                    UpstreamSource::Static(nodes) => (
                        nodes
                            .iter()
                            .map(|n| {
                                let e = Endpoint {
                                    addr: n.addr,
                                    weight: n.weight,
                                    state: EndpointState::Ready,
                                };
                                (e, Place::default())
                            })
                            .collect(),
                        UpstreamStatus::Ready,
                    ),
                    UpstreamSource::Discovery(d) => (
                        Vec::new(),
                        UpstreamStatus::NotSynced {
                            registry: Arc::from(d.registry.as_str()),
                        },
                    ),
                };
                Arc::new(make_upstream(
                    &u.name,
                    Arc::new(u.settings.clone()),
                    endpoints,
                    status,
                    &HashMap::new(),
                    &here,
                ))
            })
            .collect();
        Ok(TableBuilder {
            checks: vec![HashMap::new(); spec.upstreams.len()],
            spec: Arc::new(spec),
            router: Arc::new(router),
            upstreams,
            by_name,
            version: SnapshotVersion(0),
            here,
        })
    }

    pub fn spec(&self) -> &Spec {
        &self.spec
    }

    /// Replaces one upstream's endpoints (static ones: no place) and status; returns
    /// false for an unknown name.
    pub fn set_endpoints(
        &mut self,
        upstream: &str,
        endpoints: Vec<Endpoint>,
        status: UpstreamStatus,
    ) -> bool {
        let placed = endpoints.into_iter().map(|e| (e, Place::default()));
        self.set_discovered(upstream, placed.collect(), status)
    }

    /// Replaces one upstream's endpoints, with where each runs, and status; returns false
    /// for an unknown name.
    pub fn set_discovered(
        &mut self,
        upstream: &str,
        endpoints: Vec<(Endpoint, Place)>,
        status: UpstreamStatus,
    ) -> bool {
        let Some(&i) = self.by_name.get(upstream) else {
            return false;
        };
        let old = &self.upstreams[i];
        self.upstreams[i] = Arc::new(make_upstream(
            &old.name,
            old.settings.clone(),
            endpoints,
            status,
            &self.checks[i],
            &self.here,
        ));
        true
    }

    /// Replaces one upstream's health check results (endpoints not named are
    /// unchecked) and rebuilds it; false for an unknown name.
    pub fn set_checks(&mut self, upstream: &str, checks: HashMap<EndpointAddr, Check>) -> bool {
        let Some(&i) = self.by_name.get(upstream) else {
            return false;
        };
        self.checks[i] = checks;
        self.rebuild(i);
        true
    }

    /// Sets this gateway's zone (read from its Node) and rebuilds the upstreams that
    /// prefer a locality.
    pub fn set_zone(&mut self, zone: Option<&str>) {
        let zone = zone.map(Arc::from);
        if self.here.zone == zone {
            return;
        }
        self.here.zone = zone;
        for i in 0..self.upstreams.len() {
            if self.upstreams[i].settings.locality.prefer != Prefer::None {
                self.rebuild(i);
            }
        }
    }

    /// The zone this gateway compares endpoints with.
    pub fn zone(&self) -> Option<&str> {
        self.here.zone.as_deref()
    }

    /// The addresses of upstream `upstream` a health check watches: every endpoint that
    /// is ready or terminating, in table order.
    pub fn checked_addrs(&self, upstream: &str) -> Vec<EndpointAddr> {
        let Some(&i) = self.by_name.get(upstream) else {
            return Vec::new();
        };
        let u = &self.upstreams[i];
        u.endpoints
            .iter()
            .filter(|e| e.state != EndpointState::NotServing)
            .map(|e| e.addr)
            .collect()
    }

    /// Rebuilds upstream `i` from its own endpoints and places.
    fn rebuild(&mut self, i: usize) {
        let old = &self.upstreams[i];
        let endpoints = old
            .endpoints
            .iter()
            .copied()
            .zip(old.places.iter().cloned())
            .collect();
        self.upstreams[i] = Arc::new(make_upstream(
            &old.name,
            old.settings.clone(),
            endpoints,
            old.status.clone(),
            &self.checks[i],
            &self.here,
        ));
    }

    /// A new snapshot with the next version, sharing every upstream `Arc`.
    pub fn snapshot(&mut self, origin: Instant) -> Arc<Snapshot> {
        self.version = SnapshotVersion(self.version.0 + 1);
        Arc::new(Snapshot {
            version: self.version,
            router: self.router.clone(),
            upstreams: self.upstreams.clone(),
            origin,
            node: self.here.node.clone(),
            zone: self.here.zone.clone(),
        })
    }

    /// The version of the last snapshot built.
    pub fn version(&self) -> SnapshotVersion {
        self.version
    }

    /// Continues version numbering from `version` (after a reload replaced the builder).
    pub fn continue_from(&mut self, version: SnapshotVersion) {
        self.version = self.version.max(version);
    }
}

/// Where this gateway runs, as the builder compares endpoints' places with it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct Here {
    node: Option<Arc<str>>,
    zone: Option<Arc<str>>,
}

impl Here {
    /// How close an endpoint at `place` is; `hinted`: the upstream's endpoints carry
    /// topology hints, which then decide the zone (as kube-proxy does).
    fn tier(&self, place: &Place, hinted: bool) -> Tier {
        if self.node.is_some() && place.node == self.node {
            return Tier::Node;
        }
        let Some(zone) = &self.zone else {
            return Tier::Any;
        };
        let in_zone = if hinted {
            place.for_zones.contains(zone)
        } else {
            place.zone.as_ref() == Some(zone)
        };
        if in_zone {
            Tier::Zone
        } else {
            Tier::Any
        }
    }
}

/// One upstream's table: endpoints (duplicates collapsed) with their places and check
/// results, the schedule over the endpoints picks come from and the Maglev table.
///
/// Picks come from the ready endpoints whose health check does not fail (all ready ones
/// when every one fails: panic mode), narrowed by `locality` to this node's, else this
/// zone's, when that tier has at least `min_ready` of them; terminating endpoints only
/// when none is ready.
fn make_upstream(
    name: &str,
    settings: Arc<crate::spec::UpstreamSettings>,
    endpoints: Vec<(Endpoint, Place)>,
    status: UpstreamStatus,
    checks: &HashMap<EndpointAddr, Check>,
    here: &Here,
) -> Upstream {
    // Duplicates collapse; order is stable so schedules are deterministic.
    let mut seen = std::collections::HashSet::new();
    let (endpoints, places): (Vec<Endpoint>, Vec<Place>) = endpoints
        .into_iter()
        .filter(|(e, _)| seen.insert(e.addr))
        .unzip();
    let check: Vec<Check> = endpoints
        .iter()
        .map(|e| checks.get(&e.addr).copied().unwrap_or_default())
        .collect();
    let ready: Vec<usize> = (0..endpoints.len())
        .filter(|i| endpoints[*i].state == EndpointState::Ready && endpoints[*i].weight > 0)
        .collect();
    let passing: Vec<usize> = ready
        .iter()
        .copied()
        .filter(|i| check[*i] != Check::Failing)
        .collect();
    let panic = passing.is_empty() && !ready.is_empty();
    let pool = if panic { ready } else { passing };
    // Hints, when any endpoint carries them, decide the zone (as kube-proxy does).
    let hinted = places.iter().any(|p| !p.for_zones.is_empty());
    let tiers: Vec<Tier> = places.iter().map(|p| here.tier(p, hinted)).collect();
    let min = settings.locality.min_ready.max(1) as usize;
    let preferred: &[Tier] = match settings.locality.prefer {
        Prefer::None => &[],
        Prefer::Node => &[Tier::Node, Tier::Zone],
        Prefer::Zone => &[Tier::Zone],
    };
    let (chosen, tier) = preferred
        .iter()
        .map(|t| {
            let near: Vec<usize> = pool.iter().copied().filter(|i| tiers[*i] <= *t).collect();
            (near, *t)
        })
        .find(|(near, _)| near.len() >= min)
        .unwrap_or((pool, Tier::Any));
    let mut weights = vec![0u32; endpoints.len()];
    for i in &chosen {
        weights[*i] = endpoints[*i].weight;
    }
    let schedule = balance::schedule(&weights);
    let fallback: Vec<u32> = endpoints
        .iter()
        .enumerate()
        .filter(|(_, e)| e.state == EndpointState::Terminating && e.weight > 0)
        .map(|(i, _)| i as u32)
        .collect();
    let members: Vec<u32> = if chosen.is_empty() {
        fallback.clone()
    } else {
        chosen.iter().map(|i| *i as u32).collect()
    };
    let maglev = match settings.balance {
        crate::spec::Balance::ConsistentHash(_) => {
            let names: Vec<(String, u32, u32)> = members
                .iter()
                .map(|i| {
                    let e = &endpoints[*i as usize];
                    (e.addr.to_string(), e.weight, *i)
                })
                .collect();
            let entries: Vec<(&[u8], u32, u32)> = names
                .iter()
                .map(|(n, w, i)| (n.as_bytes(), *w, *i))
                .collect();
            balance::maglev(&entries)
        }
        _ => Vec::new(),
    };
    Upstream {
        name: Arc::from(name),
        settings,
        endpoints: endpoints.into(),
        schedule: schedule.into(),
        fallback: fallback.into(),
        maglev: maglev.into(),
        status,
        places: places.into(),
        checks: check.into(),
        tiers: tiers.into(),
        members: members.into(),
        tier,
        panic,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spec::*;

    fn spec() -> Spec {
        let node = |a: &str| NodeSpec {
            addr: a.parse().unwrap(),
            weight: 1,
        };
        Spec {
            registries: Vec::new(),
            tls_secrets: Vec::new(),
            node: Default::default(),
            services: vec![ServiceSpec {
                name: "s".into(),
                hosts: vec![],
                path_prefix: "/".into(),
                upstream: Some("a".into()),
                routes: vec![],
            }],
            upstreams: vec![
                UpstreamSpec {
                    name: "a".into(),
                    source: UpstreamSource::Static(vec![
                        node("127.0.0.2:80"),
                        node("127.0.0.3:80"),
                    ]),
                    settings: UpstreamSettings::default(),
                },
                UpstreamSpec {
                    name: "b".into(),
                    source: UpstreamSource::Discovery(DiscoveryRef {
                        registry: "k".into(),
                        namespace: "n".into(),
                        service: "s".into(),
                        port: ServicePort::Number(80),
                    }),
                    settings: UpstreamSettings::default(),
                },
            ],
        }
    }

    #[test]
    fn a_changed_upstream_is_rebuilt_and_the_others_shared() {
        let mut b = TableBuilder::try_new(spec()).unwrap();
        let s1 = b.snapshot(Instant::now());
        assert_eq!(s1.upstreams[0].schedule.len(), 2);
        assert!(matches!(
            s1.upstreams[1].status,
            UpstreamStatus::NotSynced { .. }
        ));
        let ep = Endpoint {
            addr: "127.0.0.9:8080".parse().unwrap(),
            weight: 1,
            state: EndpointState::Ready,
        };
        assert!(b.set_endpoints("b", vec![ep, ep], UpstreamStatus::Ready));
        let s2 = b.snapshot(Instant::now());
        assert!(s2.version > s1.version);
        assert!(Arc::ptr_eq(&s1.upstreams[0], &s2.upstreams[0]));
        assert!(Arc::ptr_eq(&s1.router, &s2.router));
        assert_eq!(s2.upstreams[1].endpoints.len(), 1, "duplicates collapse");
        assert_eq!(s2.upstreams[1].status, UpstreamStatus::Ready);
    }

    #[test]
    fn terminating_endpoints_are_fallback_only() {
        let mut b = TableBuilder::try_new(spec()).unwrap();
        let e = |a: &str, state| Endpoint {
            addr: a.parse().unwrap(),
            weight: 1,
            state,
        };
        b.set_endpoints(
            "b",
            vec![
                e("127.0.0.2:1", EndpointState::Terminating),
                e("127.0.0.3:1", EndpointState::NotServing),
            ],
            UpstreamStatus::Ready,
        );
        let s = b.snapshot(Instant::now());
        assert!(s.upstreams[1].schedule.is_empty());
        assert_eq!(&*s.upstreams[1].fallback, &[0]);
    }

    #[test]
    fn unknown_and_duplicate_upstreams_are_refused() {
        let mut bad = spec();
        bad.services[0].upstream = Some("nope".into());
        let err = TableBuilder::try_new(bad).unwrap_err();
        assert_eq!(
            err.to_string(),
            "service \"s\" names upstream \"nope\", which is not defined"
        );
        let mut dup = spec();
        dup.upstreams[1].name = "a".into();
        assert!(matches!(
            TableBuilder::try_new(dup),
            Err(BuildError::DuplicateUpstream(_))
        ));
    }

    fn placed(a: &str, node: &str, zone: &str, hints: &[&str]) -> (Endpoint, Place) {
        let e = Endpoint {
            addr: a.parse().unwrap(),
            weight: 1,
            state: EndpointState::Ready,
        };
        let place = Place {
            node: Some(Arc::from(node)),
            zone: Some(Arc::from(zone)),
            for_zones: hints.iter().map(|z| Arc::from(*z)).collect(),
        };
        (e, place)
    }

    fn picked(u: &Upstream) -> Vec<String> {
        let mut v: Vec<String> = u
            .members
            .iter()
            .map(|i| u.endpoints[*i as usize].addr.to_string())
            .collect();
        v.sort();
        v
    }

    #[test]
    fn failing_checks_leave_the_schedule_and_all_failing_is_panic_mode() {
        let mut s = spec();
        s.upstreams[1].settings.health_check = Some(HealthCheck {
            kind: CheckKind::Tcp,
            interval: std::time::Duration::from_secs(1),
            timeout: std::time::Duration::from_secs(1),
            jitter: std::time::Duration::ZERO,
            healthy: 1,
            unhealthy: 1,
        });
        let mut b = TableBuilder::try_new(s).unwrap();
        let eps = vec![
            placed("127.0.0.2:1", "n1", "z1", &[]),
            placed("127.0.0.3:1", "n2", "z1", &[]),
        ];
        b.set_discovered("b", eps, UpstreamStatus::Ready);
        let a2: EndpointAddr = "127.0.0.2:1".parse().unwrap();
        let a3: EndpointAddr = "127.0.0.3:1".parse().unwrap();
        b.set_checks("b", [(a2, Check::Failing), (a3, Check::Passing)].into());
        let u = b.snapshot(Instant::now()).upstreams[1].clone();
        assert_eq!(picked(&u), ["127.0.0.3:1"]);
        assert!(!u.panic);
        assert_eq!(u.members.len(), 1);
        b.set_checks("b", [(a2, Check::Failing), (a3, Check::Failing)].into());
        let u = b.snapshot(Instant::now()).upstreams[1].clone();
        assert_eq!(picked(&u), ["127.0.0.2:1", "127.0.0.3:1"], "panic: all");
        assert!(u.panic);
    }

    #[test]
    fn locality_prefers_node_then_zone_then_any_with_min_ready() {
        let mut s = spec();
        s.node.name = Some("n1".into());
        s.node.zone = Some("z1".into());
        s.upstreams[1].settings.locality = Locality {
            prefer: Prefer::Node,
            min_ready: 1,
        };
        let mut b = TableBuilder::try_new(s.clone()).unwrap();
        let all = vec![
            placed("127.0.0.2:1", "n1", "z1", &[]),
            placed("127.0.0.3:1", "n2", "z1", &[]),
            placed("127.0.0.4:1", "n3", "z2", &[]),
        ];
        b.set_discovered("b", all.clone(), UpstreamStatus::Ready);
        let u = b.snapshot(Instant::now()).upstreams[1].clone();
        assert_eq!(
            (picked(&u), u.tier),
            (vec!["127.0.0.2:1".into()], Tier::Node)
        );
        // min_ready 2: this node has one, this zone two.
        s.upstreams[1].settings.locality.min_ready = 2;
        let mut b = TableBuilder::try_new(s.clone()).unwrap();
        b.set_discovered("b", all.clone(), UpstreamStatus::Ready);
        let u = b.snapshot(Instant::now()).upstreams[1].clone();
        assert_eq!(u.tier, Tier::Zone);
        assert_eq!(picked(&u), ["127.0.0.2:1", "127.0.0.3:1"]);
        // Hints, when present, decide the zone.
        let hinted = vec![
            placed("127.0.0.2:1", "n9", "z1", &["z2"]),
            placed("127.0.0.3:1", "n2", "z2", &["z1"]),
            placed("127.0.0.4:1", "n3", "z2", &["z1"]),
        ];
        b.set_discovered("b", hinted, UpstreamStatus::Ready);
        let u = b.snapshot(Instant::now()).upstreams[1].clone();
        assert_eq!(picked(&u), ["127.0.0.3:1", "127.0.0.4:1"]);
        // Too few anywhere near: everything.
        s.upstreams[1].settings.locality.min_ready = 3;
        let mut b = TableBuilder::try_new(s).unwrap();
        b.set_discovered("b", all, UpstreamStatus::Ready);
        let u = b.snapshot(Instant::now()).upstreams[1].clone();
        assert_eq!((u.members.len(), u.tier), (3, Tier::Any));
        assert_eq!(&u.tiers[..], &[Tier::Node, Tier::Zone, Tier::Any]);
    }
}
