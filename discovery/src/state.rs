//! What one registry (one cluster) has discovered: Services and endpoint slices by
//! namespace, fed by watch events, and the endpoint list of any `namespace/service:port`.
//!
//! Pure and synchronous: the discovery thread feeds it events (already filtered by
//! namespace) and asks which Services changed. A relist is staged aside and replaces the
//! live state only when complete (per [`Kind`]: `init` → `init_apply`… → `init_done`), so
//! a list under way never publishes a partial or empty set.

use std::collections::{BTreeSet, HashMap, HashSet};

use k8s_openapi::api::core::v1::{Endpoints, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;

use crate::convert::{self, ServicePorts, SliceEntry};
use crate::snapshot::{Endpoint, Place};
use crate::spec::ServicePort;

/// `(namespace, service name)`.
pub type ServiceKey = (String, String);

/// The two watched collections of a registry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Kind {
    /// EndpointSlices or core/v1 Endpoints, whichever the registry watches.
    Endpoints,
    Services,
}

/// A watched object, already reduced.
#[derive(Debug, Clone, PartialEq)]
pub enum Object {
    /// `(namespace, object name, entries)`; an EndpointSlice gives one entry, an
    /// Endpoints object one per subset.
    Slice {
        namespace: String,
        name: String,
        entries: Vec<SliceEntry>,
    },
    Service {
        namespace: String,
        name: String,
        ports: ServicePorts,
    },
}

impl Object {
    pub fn from_slice(slice: &EndpointSlice) -> Option<Object> {
        let namespace = slice.metadata.namespace.clone()?;
        let name = slice.metadata.name.clone()?;
        let entry = SliceEntry::from_slice(slice)?;
        Some(Object::Slice {
            namespace,
            name,
            entries: vec![entry],
        })
    }

    pub fn from_endpoints(ep: &Endpoints) -> Option<Object> {
        let namespace = ep.metadata.namespace.clone()?;
        let name = ep.metadata.name.clone()?;
        Some(Object::Slice {
            namespace,
            name,
            entries: SliceEntry::from_endpoints(ep),
        })
    }

    pub fn from_service(svc: &Service) -> Option<Object> {
        let namespace = svc.metadata.namespace.clone()?;
        let name = svc.metadata.name.clone()?;
        Some(Object::Service {
            namespace,
            name,
            ports: ServicePorts::from_service(svc),
        })
    }

    fn kind(&self) -> Kind {
        match self {
            Object::Slice { .. } => Kind::Endpoints,
            Object::Service { .. } => Kind::Services,
        }
    }
}

#[derive(Debug, Default, Clone)]
struct Tables {
    /// Slices by Service, then by object name.
    slices: HashMap<ServiceKey, HashMap<String, Vec<SliceEntry>>>,
    /// Which Service each slice object belongs to (slices may move, in theory).
    slice_owner: HashMap<(String, String), ServiceKey>,
    services: HashMap<ServiceKey, ServicePorts>,
}

/// The discovered state of one registry.
#[derive(Debug, Default)]
pub struct RegistryState {
    live: Tables,
    /// A relist in progress, per collection.
    staged: HashMap<Kind, Tables>,
    /// Collections that finished their first list.
    synced: HashSet<Kind>,
    /// The API server refuses the Services (403): ports are resolved from the endpoint
    /// objects alone until a list of Services succeeds.
    services_refused: bool,
}

impl RegistryState {
    /// True once both collections finished their first list.
    pub fn synced(&self) -> bool {
        self.synced.len() == 2
    }

    /// An object was added or modified; returns the Services it changes.
    pub fn apply(&mut self, obj: Object) -> Vec<ServiceKey> {
        apply_to(&mut self.live, obj)
    }

    /// An object was deleted.
    pub fn delete(&mut self, obj: &Object) -> Vec<ServiceKey> {
        delete_from(&mut self.live, obj)
    }

    /// A (re)list of `kind` starts: objects go to a staging area until [`Self::init_done`].
    pub fn init(&mut self, kind: Kind) {
        self.staged.insert(kind, Tables::default());
    }

    /// An object of the list under way.
    pub fn init_apply(&mut self, obj: Object) {
        let kind = obj.kind();
        apply_to(self.staged.entry(kind).or_default(), obj);
    }

    /// The API server refused to list or watch Services (403, the seed's RBAC grants
    /// `endpoints` only). Services never listed count as an empty, complete collection,
    /// so that endpoints resolve from the endpoint objects alone ([`convert::resolve`]
    /// without a Service: a port name matching the endpoints' port name, a number matching
    /// one of their ports, or their single port); Services listed before are kept as last
    /// known. Returns every Service whose data changes (none when already refused).
    pub fn services_refused(&mut self) -> Vec<ServiceKey> {
        if self.services_refused {
            return Vec::new();
        }
        self.services_refused = true;
        self.staged.remove(&Kind::Services);
        if !self.synced.insert(Kind::Services) {
            return Vec::new();
        }
        self.live.slices.keys().cloned().collect()
    }

    /// Whether Services are refused (see [`Self::services_refused`]).
    pub fn services_are_refused(&self) -> bool {
        self.services_refused
    }

    /// The list of `kind` is complete: it replaces the live collection. Returns every
    /// Service whose data may differ.
    pub fn init_done(&mut self, kind: Kind) -> Vec<ServiceKey> {
        let staged = self.staged.remove(&kind).unwrap_or_default();
        self.synced.insert(kind);
        if kind == Kind::Services {
            self.services_refused = false;
        }
        let mut changed: BTreeSet<ServiceKey> = BTreeSet::new();
        match kind {
            Kind::Endpoints => {
                let old = std::mem::replace(&mut self.live.slices, staged.slices);
                self.live.slice_owner = staged.slice_owner;
                for key in old.keys().chain(self.live.slices.keys()) {
                    let same = old.get(key) == self.live.slices.get(key);
                    if !same {
                        changed.insert(key.clone());
                    }
                }
            }
            Kind::Services => {
                let old = std::mem::replace(&mut self.live.services, staged.services);
                for key in old.keys().chain(self.live.services.keys()) {
                    if old.get(key) != self.live.services.get(key) {
                        changed.insert(key.clone());
                    }
                }
            }
        }
        changed.into_iter().collect()
    }

    /// The endpoints of `namespace/service:port`.
    pub fn endpoints(
        &self,
        namespace: &str,
        service: &str,
        port: &ServicePort,
    ) -> Vec<(Endpoint, Place)> {
        let key = (namespace.to_owned(), service.to_owned());
        let ports = self.live.services.get(&key);
        let Some(slices) = self.live.slices.get(&key) else {
            return Vec::new();
        };
        convert::resolve(ports, slices.values().flatten(), port)
    }
}

fn apply_to(t: &mut Tables, obj: Object) -> Vec<ServiceKey> {
    match obj {
        Object::Slice {
            namespace,
            name,
            entries,
        } => {
            let mut changed = Vec::new();
            // Entries name their Service; an Endpoints object is named after it.
            let service = entries
                .first()
                .map(|e| e.service.clone())
                .unwrap_or_else(|| name.clone());
            let key = (namespace.clone(), service);
            let id = (namespace, name.clone());
            if let Some(prev) = t.slice_owner.insert(id, key.clone()) {
                if prev != key {
                    remove_slice(t, &prev, &name);
                    changed.push(prev);
                }
            }
            t.slices
                .entry(key.clone())
                .or_default()
                .insert(name, entries);
            changed.push(key);
            changed
        }
        Object::Service {
            namespace,
            name,
            ports,
        } => {
            let key = (namespace, name);
            t.services.insert(key.clone(), ports);
            vec![key]
        }
    }
}

fn delete_from(t: &mut Tables, obj: &Object) -> Vec<ServiceKey> {
    match obj {
        Object::Slice {
            namespace, name, ..
        } => {
            let Some(key) = t.slice_owner.remove(&(namespace.clone(), name.clone())) else {
                return Vec::new();
            };
            remove_slice(t, &key, name);
            vec![key]
        }
        Object::Service {
            namespace, name, ..
        } => {
            let key = (namespace.clone(), name.clone());
            t.services.remove(&key);
            vec![key]
        }
    }
}

fn remove_slice(t: &mut Tables, key: &ServiceKey, name: &str) {
    if let Some(map) = t.slices.get_mut(key) {
        map.remove(name);
        if map.is_empty() {
            t.slices.remove(key);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::snapshot::EndpointState;

    fn slice_obj(ns: &str, name: &str, svc: &str, ips: &[&str]) -> Object {
        Object::Slice {
            namespace: ns.into(),
            name: name.into(),
            entries: vec![SliceEntry {
                service: svc.into(),
                ports: vec![(String::new(), 8080)],
                endpoints: ips
                    .iter()
                    .map(|ip| {
                        (
                            ip.parse().unwrap(),
                            EndpointState::Ready,
                            Default::default(),
                        )
                    })
                    .collect(),
            }],
        }
    }

    fn ips(state: &RegistryState) -> Vec<String> {
        state
            .endpoints("apisix", "httpbin", &ServicePort::Number(8080))
            .iter()
            .map(|(e, _)| e.addr.inet().unwrap().ip().to_string())
            .collect()
    }

    #[test]
    fn slices_of_one_service_merge_and_deletes_apply() {
        let mut s = RegistryState::default();
        assert_eq!(
            s.apply(slice_obj("apisix", "a", "httpbin", &["10.0.0.1"])),
            [("apisix".into(), "httpbin".into())]
        );
        s.apply(slice_obj("apisix", "b", "httpbin", &["10.0.0.2"]));
        assert_eq!(ips(&s), ["10.0.0.1", "10.0.0.2"]);
        s.delete(&slice_obj("apisix", "a", "httpbin", &[]));
        assert_eq!(ips(&s), ["10.0.0.2"]);
    }

    #[test]
    fn a_relist_replaces_state_only_when_complete() {
        let mut s = RegistryState::default();
        s.init(Kind::Endpoints);
        s.init_apply(slice_obj("apisix", "a", "httpbin", &["10.0.0.1"]));
        assert!(
            ips(&s).is_empty(),
            "nothing is live before the list completes"
        );
        assert!(!s.synced());
        assert_eq!(s.init_done(Kind::Endpoints).len(), 1);
        s.init(Kind::Services);
        s.init_done(Kind::Services);
        assert!(s.synced());
        assert_eq!(ips(&s), ["10.0.0.1"]);
        // Relist: while it runs the old endpoints stay.
        s.init(Kind::Endpoints);
        assert_eq!(ips(&s), ["10.0.0.1"]);
        s.init_apply(slice_obj("apisix", "a2", "httpbin", &["10.0.0.9"]));
        assert_eq!(ips(&s), ["10.0.0.1"]);
        let changed = s.init_done(Kind::Endpoints);
        assert_eq!(changed, [("apisix".to_string(), "httpbin".to_string())]);
        assert_eq!(ips(&s), ["10.0.0.9"]);
        // An identical relist changes nothing.
        s.init(Kind::Endpoints);
        s.init_apply(slice_obj("apisix", "a2", "httpbin", &["10.0.0.9"]));
        assert!(s.init_done(Kind::Endpoints).is_empty());
    }
}
