//! The resource kinds the fake API server serves, and their names on the wire (kind, plural,
//! group, version, list kind, scope). Pure data; used from every thread.

/// A resource kind the fake API server knows.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Kind {
    /// core/v1 `Endpoints` (namespaced).
    Endpoints,
    /// core/v1 `Service` (namespaced).
    Service,
    /// core/v1 `Namespace` (cluster-scoped).
    Namespace,
    /// discovery.k8s.io/v1 `EndpointSlice` (namespaced).
    EndpointSlice,
    /// core/v1 `Secret` (namespaced): the TLS certificates of listeners.
    Secret,
    /// core/v1 `Node` (cluster-scoped): the zone label of the gateway's node.
    Node,
}

impl Kind {
    /// Every kind, in discovery order.
    pub const ALL: [Kind; 6] = [
        Kind::Endpoints,
        Kind::Namespace,
        Kind::Node,
        Kind::Secret,
        Kind::Service,
        Kind::EndpointSlice,
    ];

    /// The `kind` field, e.g. `EndpointSlice`.
    pub fn name(self) -> &'static str {
        match self {
            Kind::Endpoints => "Endpoints",
            Kind::Service => "Service",
            Kind::Namespace => "Namespace",
            Kind::EndpointSlice => "EndpointSlice",
            Kind::Secret => "Secret",
            Kind::Node => "Node",
        }
    }

    /// The resource name in paths, e.g. `endpointslices`.
    pub fn plural(self) -> &'static str {
        match self {
            Kind::Endpoints => "endpoints",
            Kind::Service => "services",
            Kind::Namespace => "namespaces",
            Kind::EndpointSlice => "endpointslices",
            Kind::Secret => "secrets",
            Kind::Node => "nodes",
        }
    }

    /// The singular resource name, as discovery reports it.
    pub fn singular(self) -> &'static str {
        match self {
            Kind::Endpoints => "endpoints",
            Kind::Service => "service",
            Kind::Namespace => "namespace",
            Kind::EndpointSlice => "endpointslice",
            Kind::Secret => "secret",
            Kind::Node => "node",
        }
    }

    /// kubectl short names.
    pub fn short_names(self) -> &'static [&'static str] {
        match self {
            Kind::Endpoints => &["ep"],
            Kind::Service => &["svc"],
            Kind::Namespace => &["ns"],
            Kind::Node => &["no"],
            Kind::EndpointSlice | Kind::Secret => &[],
        }
    }

    /// API group; `""` for core.
    pub fn group(self) -> &'static str {
        match self {
            Kind::EndpointSlice => "discovery.k8s.io",
            _ => "",
        }
    }

    /// The `apiVersion` field, e.g. `discovery.k8s.io/v1`.
    pub fn api_version(self) -> &'static str {
        match self {
            Kind::EndpointSlice => "discovery.k8s.io/v1",
            _ => "v1",
        }
    }

    /// The list kind, e.g. `EndpointSliceList`.
    pub fn list_kind(self) -> &'static str {
        match self {
            Kind::Endpoints => "EndpointsList",
            Kind::Service => "ServiceList",
            Kind::Namespace => "NamespaceList",
            Kind::EndpointSlice => "EndpointSliceList",
            Kind::Secret => "SecretList",
            Kind::Node => "NodeList",
        }
    }

    /// Whether objects live in a namespace.
    pub fn namespaced(self) -> bool {
        !matches!(self, Kind::Namespace | Kind::Node)
    }

    /// `endpointslices.discovery.k8s.io` / `endpoints`, as error messages name a resource.
    pub fn qualified_plural(self) -> String {
        match self.group() {
            "" => self.plural().to_string(),
            group => format!("{}.{group}", self.plural()),
        }
    }

    /// Finds a kind by `apiVersion` + `kind` (as in an object).
    pub fn from_type(api_version: &str, kind: &str) -> Option<Kind> {
        Kind::ALL
            .into_iter()
            .find(|k| k.api_version() == api_version && k.name() == kind)
    }

    /// Finds a kind by its kind name, plural or short name, case-insensitively
    /// (`EndpointSlice`, `endpointslices`, `ep`…).
    pub fn lookup(name: &str) -> Option<Kind> {
        Kind::ALL.into_iter().find(|k| {
            k.name().eq_ignore_ascii_case(name)
                || k.plural().eq_ignore_ascii_case(name)
                || k.singular().eq_ignore_ascii_case(name)
                || k.short_names().iter().any(|s| s.eq_ignore_ascii_case(name))
        })
    }

    /// Finds a kind by path segments: group/version (`""`/`v1` for core) and plural.
    pub(crate) fn from_path(group: &str, version: &str, plural: &str) -> Option<Kind> {
        Kind::ALL
            .into_iter()
            .find(|k| k.group() == group && version == "v1" && k.plural() == plural)
    }
}

impl std::fmt::Display for Kind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}
