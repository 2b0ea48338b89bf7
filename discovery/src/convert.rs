//! Kubernetes objects → the little routing needs of them. Pure functions, no IO.
//!
//! - [`SliceEntry::from_slice`]: an EndpointSlice → its Service, ports and endpoint
//!   states (`ready` unset counts as ready; serving + terminating is kept aside).
//! - [`SliceEntry::from_endpoints`]: a core/v1 Endpoints object → the same shape
//!   (`addresses` ready, `notReadyAddresses` not serving), one entry per subset.
//! - [`ServicePorts::from_service`]: a Service's ports, to map a *Service* port (by
//!   number or name) to the endpoints' port.
//! - [`resolve`]: Service ports + every slice of the Service → the endpoint list of one
//!   upstream, slices merged, duplicates collapsed (the best state wins).
//!
//! Runs on: the discovery thread. Never panics on odd input: what cannot be used is
//! skipped.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};

use k8s_openapi::api::core::v1::{Endpoints, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;

use std::sync::Arc;

use crate::snapshot::{Endpoint, EndpointState, Place};
use crate::spec::ServicePort;

/// The label an EndpointSlice names its Service with.
pub const SERVICE_NAME_LABEL: &str = "kubernetes.io/service-name";

/// One EndpointSlice (or one Endpoints subset), reduced.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SliceEntry {
    /// The Service it belongs to (same namespace).
    pub service: String,
    /// `(port name, port number)`; the name is `""` for an unnamed port.
    pub ports: Vec<(String, u16)>,
    /// Each endpoint's first address, state, and where it runs.
    pub endpoints: Vec<(IpAddr, EndpointState, Place)>,
}

impl SliceEntry {
    /// Reduces an EndpointSlice; `None` without a service-name label or for FQDN slices.
    pub fn from_slice(slice: &EndpointSlice) -> Option<SliceEntry> {
        let service = slice
            .metadata
            .labels
            .as_ref()?
            .get(SERVICE_NAME_LABEL)?
            .clone();
        if slice.address_type != "IPv4" && slice.address_type != "IPv6" {
            return None;
        }
        let ports = slice
            .ports
            .iter()
            .flatten()
            .filter(|p| p.protocol.as_deref().unwrap_or("TCP") == "TCP")
            .filter_map(|p| Some((p.name.clone().unwrap_or_default(), port_number(p.port?)?)))
            .collect();
        let endpoints = slice
            .endpoints
            .iter()
            .filter_map(|e| {
                // Addresses of one endpoint are interchangeable; the first is used.
                let ip: IpAddr = e.addresses.first()?.parse().ok()?;
                let c = e.conditions.as_ref();
                let ready = c.and_then(|c| c.ready).unwrap_or(true);
                let serving = c.and_then(|c| c.serving).unwrap_or(ready);
                let terminating = c.and_then(|c| c.terminating).unwrap_or(false);
                let state = if ready && !terminating {
                    EndpointState::Ready
                } else if serving && terminating {
                    EndpointState::Terminating
                } else {
                    EndpointState::NotServing
                };
                let place = Place {
                    node: e.node_name.as_deref().map(Arc::from),
                    zone: e.zone.as_deref().map(Arc::from),
                    for_zones: e
                        .hints
                        .iter()
                        .flat_map(|h| h.for_zones.iter().flatten())
                        .map(|z| Arc::from(z.name.as_str()))
                        .collect(),
                };
                Some((ip, state, place))
            })
            .collect();
        Some(SliceEntry {
            service,
            ports,
            endpoints,
        })
    }

    /// Reduces a core/v1 Endpoints object: one entry per subset.
    pub fn from_endpoints(ep: &Endpoints) -> Vec<SliceEntry> {
        let Some(service) = ep.metadata.name.clone() else {
            return Vec::new();
        };
        ep.subsets
            .iter()
            .flatten()
            .map(|subset| {
                let ports = subset
                    .ports
                    .iter()
                    .flatten()
                    .filter(|p| p.protocol.as_deref().unwrap_or("TCP") == "TCP")
                    .filter_map(|p| {
                        Some((p.name.clone().unwrap_or_default(), port_number(p.port)?))
                    })
                    .collect();
                let addrs = |list: &Option<Vec<k8s_openapi::api::core::v1::EndpointAddress>>,
                             state: EndpointState| {
                    list.iter()
                        .flatten()
                        .filter_map(move |a| {
                            let place = Place {
                                node: a.node_name.as_deref().map(Arc::from),
                                ..Place::default()
                            };
                            Some((a.ip.parse::<IpAddr>().ok()?, state, place))
                        })
                        .collect::<Vec<_>>()
                };
                let mut endpoints = addrs(&subset.addresses, EndpointState::Ready);
                endpoints.extend(addrs(
                    &subset.not_ready_addresses,
                    EndpointState::NotServing,
                ));
                SliceEntry {
                    service: service.clone(),
                    ports,
                    endpoints,
                }
            })
            .collect()
    }
}

/// A Service's TCP ports.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ServicePorts {
    /// `(name, port)`; the name is `""` for a single unnamed port.
    pub ports: Vec<(String, u16)>,
}

impl ServicePorts {
    pub fn from_service(svc: &Service) -> ServicePorts {
        let mut out = ServicePorts::default();
        for p in svc.spec.iter().flat_map(|s| s.ports.iter().flatten()) {
            if p.protocol.as_deref().unwrap_or("TCP") != "TCP" {
                continue;
            }
            let Some(port) = port_number(p.port) else {
                continue;
            };
            let name = p.name.clone().unwrap_or_default();
            out.ports.push((name, port));
        }
        out
    }

    /// The name of the Service port `port` refers to.
    fn port_name(&self, port: &ServicePort) -> Option<&str> {
        self.ports
            .iter()
            .find(|(name, number)| match port {
                ServicePort::Number(n) => number == n,
                ServicePort::Name(want) => name == want,
            })
            .map(|(name, _)| name.as_str())
    }
}

/// The endpoints of Service port `port`, from the Service's ports (when known) and all
/// its slices. Endpoint ports come from the slices, matched by the Service port's name
/// (the name EndpointSlice ports carry). Without a Service object, a numeric `port` is
/// matched against the slices' port numbers, and a slice with a single port is used as is.
/// Each endpoint comes with where it runs (from the slice that gave its best state).
pub fn resolve<'a>(
    service: Option<&ServicePorts>,
    slices: impl IntoIterator<Item = &'a SliceEntry>,
    port: &ServicePort,
) -> Vec<(Endpoint, Place)> {
    let name = service.and_then(|s| s.port_name(port));
    if service.is_some() && name.is_none() {
        return Vec::new(); // the Service has no such port
    }
    let mut best: HashMap<SocketAddr, (EndpointState, &Place)> = HashMap::new();
    let mut order: Vec<SocketAddr> = Vec::new();
    for slice in slices {
        let target = match name {
            Some(name) => slice.ports.iter().find(|(n, _)| n == name).map(|(_, p)| *p),
            None => match port {
                ServicePort::Number(n) => slice
                    .ports
                    .iter()
                    .find(|(_, p)| p == n)
                    .or_else(|| (slice.ports.len() == 1).then(|| &slice.ports[0]))
                    .map(|(_, p)| *p),
                ServicePort::Name(want) => {
                    slice.ports.iter().find(|(n, _)| n == want).map(|(_, p)| *p)
                }
            },
        };
        let Some(target) = target else { continue };
        for (ip, state, place) in &slice.endpoints {
            let addr = SocketAddr::new(*ip, target);
            match best.get_mut(&addr) {
                Some(s) => {
                    if better(s.0, *state) != s.0 {
                        *s = (*state, place);
                    }
                }
                None => {
                    best.insert(addr, (*state, place));
                    order.push(addr);
                }
            }
        }
    }
    // Stable order (by address) so every rebuild gives the same rotation.
    order.sort();
    order
        .into_iter()
        .map(|addr| {
            let (state, place) = best[&addr];
            let e = Endpoint {
                addr: addr.into(),
                weight: 1,
                state,
            };
            (e, place.clone())
        })
        .collect()
}

fn better(a: EndpointState, b: EndpointState) -> EndpointState {
    let rank = |s| match s {
        EndpointState::Ready => 2,
        EndpointState::Terminating => 1,
        EndpointState::NotServing => 0,
    };
    if rank(b) > rank(a) {
        b
    } else {
        a
    }
}

fn port_number(p: i32) -> Option<u16> {
    u16::try_from(p).ok().filter(|p| *p != 0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{
        EndpointAddress, EndpointPort as CorePort, EndpointSubset, ServiceSpec,
    };
    use k8s_openapi::api::discovery::v1::{
        Endpoint as SliceEndpoint, EndpointConditions, EndpointPort,
    };
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
    use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

    /// `(ip, ready, serving, terminating)`.
    type Conditions<'a> = (&'a str, Option<bool>, Option<bool>, Option<bool>);

    fn slice(service: &str, ports: &[(&str, i32)], eps: &[Conditions<'_>]) -> EndpointSlice {
        EndpointSlice {
            address_type: "IPv4".into(),
            metadata: ObjectMeta {
                name: Some(format!("{service}-abc")),
                namespace: Some("apisix".into()),
                labels: Some([(SERVICE_NAME_LABEL.to_string(), service.to_string())].into()),
                ..Default::default()
            },
            ports: Some(
                ports
                    .iter()
                    .map(|(n, p)| EndpointPort {
                        name: Some(n.to_string()),
                        port: Some(*p),
                        ..Default::default()
                    })
                    .collect(),
            ),
            endpoints: eps
                .iter()
                .map(|(ip, ready, serving, terminating)| SliceEndpoint {
                    addresses: vec![ip.to_string()],
                    conditions: Some(EndpointConditions {
                        ready: *ready,
                        serving: *serving,
                        terminating: *terminating,
                    }),
                    ..Default::default()
                })
                .collect(),
        }
    }

    fn service(ports: &[(&str, i32, i32)]) -> Service {
        Service {
            spec: Some(ServiceSpec {
                ports: Some(
                    ports
                        .iter()
                        .map(|(n, p, t)| k8s_openapi::api::core::v1::ServicePort {
                            name: (!n.is_empty()).then(|| n.to_string()),
                            port: *p,
                            target_port: Some(IntOrString::Int(*t)),
                            ..Default::default()
                        })
                        .collect(),
                ),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    fn addrs(eps: &[(Endpoint, Place)]) -> Vec<(String, EndpointState)> {
        eps.iter()
            .map(|(e, _)| (e.addr.to_string(), e.state))
            .collect()
    }

    #[test]
    fn slice_conditions_map_to_states() {
        let s = slice(
            "httpbin",
            &[("", 8080)],
            &[
                ("10.0.0.1", None, None, None),
                ("10.0.0.2", Some(true), Some(true), Some(false)),
                ("10.0.0.3", Some(false), Some(true), Some(true)),
                ("10.0.0.4", Some(false), Some(false), Some(true)),
                ("10.0.0.5", Some(false), None, None),
            ],
        );
        let e = SliceEntry::from_slice(&s).unwrap();
        assert_eq!(e.service, "httpbin");
        let states: Vec<_> = e.endpoints.iter().map(|(_, s, _)| *s).collect();
        use EndpointState::*;
        assert_eq!(states, [Ready, Ready, Terminating, NotServing, NotServing]);
    }

    #[test]
    fn service_port_maps_to_the_slices_target_port_by_name() {
        // The seed: Service port 80 → container port 8080, single unnamed port.
        let svc = ServicePorts::from_service(&service(&[("", 80, 8080)]));
        let e = SliceEntry::from_slice(&slice(
            "httpbin",
            &[("", 8080)],
            &[("10.0.0.1", None, None, None)],
        ))
        .unwrap();
        let eps = resolve(Some(&svc), [&e], &ServicePort::Number(80));
        assert_eq!(
            addrs(&eps),
            [("10.0.0.1:8080".to_string(), EndpointState::Ready)]
        );
        // Named ports pick their own target.
        let svc =
            ServicePorts::from_service(&service(&[("http", 80, 8080), ("metrics", 9090, 9091)]));
        let e = SliceEntry::from_slice(&slice(
            "s",
            &[("metrics", 9091), ("http", 8080)],
            &[("10.0.0.1", None, None, None)],
        ))
        .unwrap();
        assert_eq!(
            addrs(&resolve(
                Some(&svc),
                [&e],
                &ServicePort::Name("metrics".into())
            ))[0]
                .0,
            "10.0.0.1:9091"
        );
        assert_eq!(
            addrs(&resolve(Some(&svc), [&e], &ServicePort::Number(80)))[0].0,
            "10.0.0.1:8080"
        );
        assert!(resolve(Some(&svc), [&e], &ServicePort::Number(81)).is_empty());
    }

    #[test]
    fn slices_merge_and_duplicates_collapse_to_the_best_state() {
        let a = SliceEntry::from_slice(&slice(
            "s",
            &[("", 80)],
            &[
                ("10.0.0.2", Some(false), Some(true), Some(true)),
                ("10.0.0.1", None, None, None),
            ],
        ))
        .unwrap();
        let b = SliceEntry::from_slice(&slice(
            "s",
            &[("", 80)],
            &[
                ("10.0.0.2", Some(true), None, None),
                ("10.0.0.3", None, None, None),
            ],
        ))
        .unwrap();
        let eps = resolve(None, [&a, &b], &ServicePort::Number(80));
        assert_eq!(
            addrs(&eps),
            [
                ("10.0.0.1:80".to_string(), EndpointState::Ready),
                ("10.0.0.2:80".to_string(), EndpointState::Ready),
                ("10.0.0.3:80".to_string(), EndpointState::Ready)
            ]
        );
    }

    #[test]
    fn core_endpoints_addresses_are_ready_and_not_ready_addresses_are_out() {
        let ep = Endpoints {
            metadata: ObjectMeta {
                name: Some("httpbin".into()),
                ..Default::default()
            },
            subsets: Some(vec![EndpointSubset {
                addresses: Some(vec![EndpointAddress {
                    ip: "10.0.0.1".into(),
                    ..Default::default()
                }]),
                not_ready_addresses: Some(vec![EndpointAddress {
                    ip: "10.0.0.2".into(),
                    ..Default::default()
                }]),
                ports: Some(vec![CorePort {
                    port: 8080,
                    ..Default::default()
                }]),
            }]),
        };
        let entries = SliceEntry::from_endpoints(&ep);
        let svc = ServicePorts::from_service(&service(&[("", 80, 8080)]));
        let eps = resolve(Some(&svc), &entries, &ServicePort::Number(80));
        assert_eq!(
            addrs(&eps),
            [
                ("10.0.0.1:8080".to_string(), EndpointState::Ready),
                ("10.0.0.2:8080".to_string(), EndpointState::NotServing)
            ]
        );
    }

    #[test]
    fn odd_objects_are_skipped_not_fatal() {
        let mut s = slice("s", &[("", 80)], &[("not-an-ip", None, None, None)]);
        assert!(SliceEntry::from_slice(&s).unwrap().endpoints.is_empty());
        s.metadata.labels = None;
        assert!(SliceEntry::from_slice(&s).is_none());
        let mut s = slice("s", &[("", 80)], &[]);
        s.address_type = "FQDN".into();
        assert!(SliceEntry::from_slice(&s).is_none());
    }
}
