//! The table builder: spec + endpoints → [`Snapshot`], sharing what did not change.
//!
//! The router is compiled once per spec. Each upstream is its own `Arc`; replacing one
//! upstream's endpoints ([`TableBuilder::set_endpoints`]) rebuilds only that upstream, and
//! [`TableBuilder::snapshot`] clones the `Arc`s of all others (O(upstreams) pointer
//! copies, no endpoint copies).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Instant;

use crate::balance;
use crate::route::{Router, UnknownUpstream};
use crate::snapshot::{
    Endpoint, EndpointState, Snapshot, SnapshotVersion, Upstream, UpstreamStatus,
};
use crate::spec::{Spec, UpstreamSource};

/// Why a spec cannot become a table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BuildError {
    /// A service or route names an upstream that does not exist.
    UnknownUpstream(UnknownUpstream),
    /// Two upstreams share a name.
    DuplicateUpstream(String),
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
            .map_err(BuildError::UnknownUpstream)?;
        let upstreams = spec
            .upstreams
            .iter()
            .map(|u| {
                let (endpoints, status) = match &u.source {
                    UpstreamSource::Static(nodes) => (
                        nodes
                            .iter()
                            .map(|n| Endpoint {
                                addr: n.addr,
                                weight: n.weight,
                                state: EndpointState::Ready,
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
                ))
            })
            .collect();
        Ok(TableBuilder {
            spec: Arc::new(spec),
            router: Arc::new(router),
            upstreams,
            by_name,
            version: SnapshotVersion(0),
        })
    }

    pub fn spec(&self) -> &Spec {
        &self.spec
    }

    /// Replaces one upstream's endpoints and status; returns false for an unknown name.
    pub fn set_endpoints(
        &mut self,
        upstream: &str,
        endpoints: Vec<Endpoint>,
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
        ));
        true
    }

    /// A new snapshot with the next version, sharing every upstream `Arc`.
    pub fn snapshot(&mut self, origin: Instant) -> Arc<Snapshot> {
        self.version = SnapshotVersion(self.version.0 + 1);
        Arc::new(Snapshot {
            version: self.version,
            router: self.router.clone(),
            upstreams: self.upstreams.clone(),
            origin,
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

fn make_upstream(
    name: &str,
    settings: Arc<crate::spec::UpstreamSettings>,
    mut endpoints: Vec<Endpoint>,
    status: UpstreamStatus,
) -> Upstream {
    // Duplicates collapse; order is stable so schedules are deterministic.
    let mut seen = std::collections::HashSet::new();
    endpoints.retain(|e| seen.insert(e.addr));
    let weights: Vec<u32> = endpoints
        .iter()
        .map(|e| {
            if e.state == EndpointState::Ready {
                e.weight
            } else {
                0
            }
        })
        .collect();
    let schedule = balance::schedule(&weights);
    let fallback: Vec<u32> = endpoints
        .iter()
        .enumerate()
        .filter(|(_, e)| e.state == EndpointState::Terminating && e.weight > 0)
        .map(|(i, _)| i as u32)
        .collect();
    let ready = weights.iter().filter(|w| **w > 0).count();
    let usable = if ready > 0 { ready } else { fallback.len() };
    let maglev = match settings.balance {
        crate::spec::Balance::ConsistentHash(_) => {
            // Over the endpoints in rotation: the ready ones, else the terminating ones.
            let names: Vec<(String, u32, u32)> = endpoints
                .iter()
                .enumerate()
                .filter(|(i, e)| {
                    if ready > 0 {
                        weights[*i] > 0
                    } else {
                        e.state == EndpointState::Terminating && e.weight > 0
                    }
                })
                .map(|(i, e)| (e.addr.to_string(), e.weight, i as u32))
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
        usable,
        settings,
        endpoints: endpoints.into(),
        schedule: schedule.into(),
        fallback: fallback.into(),
        maglev: maglev.into(),
        status,
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
}
