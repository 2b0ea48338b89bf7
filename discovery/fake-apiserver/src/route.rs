//! Request targets: the query string (with kube's leading `?&` quirk) and the path → what is
//! asked for (KUBE-API.md §1). Pure; runs on the server's runtime thread.

use crate::kind::Kind;

/// Decoded query parameters, in order.
#[derive(Debug, Default, Clone)]
pub(crate) struct Query(Vec<(String, String)>);

fn hex(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

/// `application/x-www-form-urlencoded` decoding: `+` is a space, `%XX` a byte.
fn decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < bytes.len() => match (hex(bytes[i + 1]), hex(bytes[i + 2])) {
                (Some(h), Some(l)) => {
                    out.push(h << 4 | l);
                    i += 2;
                }
                _ => out.push(b'%'),
            },
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

impl Query {
    /// Parses a raw query string; empty pairs (`?&limit=1`) are skipped.
    pub(crate) fn parse(raw: &str) -> Query {
        Query(
            raw.split('&')
                .filter(|p| !p.is_empty())
                .map(|p| {
                    let (k, v) = p.split_once('=').unwrap_or((p, ""));
                    (decode(k), decode(v))
                })
                .collect(),
        )
    }

    /// The last value of `name` (as Go's `url.Values.Get` would take the first, both are
    /// the same for well-formed clients).
    pub(crate) fn get(&self, name: &str) -> Option<&str> {
        self.0
            .iter()
            .rev()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    /// A boolean parameter: `true`/`1` is true; absent is `None`.
    pub(crate) fn flag(&self, name: &str) -> Option<bool> {
        self.get(name).map(|v| matches!(v, "true" | "1" | "True"))
    }
}

/// What a path names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Route {
    /// `/healthz`, `/livez`, `/readyz`.
    Health,
    /// A discovery document (`/api`, `/apis/…`, `/version`).
    Discovery,
    /// A collection: all namespaces when `namespace` is `None`.
    Collection {
        kind: Kind,
        namespace: Option<String>,
    },
    /// One object.
    Object {
        kind: Kind,
        namespace: Option<String>,
        name: String,
    },
    NotFound,
}

/// Maps path segments (no empty ones) to a route.
pub(crate) fn route(segments: &[&str]) -> Route {
    match segments {
        ["healthz" | "livez" | "readyz"] => return Route::Health,
        ["version"] | ["api"] | ["apis"] | ["api", "v1"] => return Route::Discovery,
        ["apis", "discovery.k8s.io"] | ["apis", "discovery.k8s.io", "v1"] => {
            return Route::Discovery
        }
        _ => {}
    }
    let (group, version, rest) = match segments {
        ["api", version, rest @ ..] => ("", *version, rest),
        ["apis", group, version, rest @ ..] => (*group, *version, rest),
        _ => return Route::NotFound,
    };
    let kind = |plural: &str| Kind::from_path(group, version, plural);
    match rest {
        ["namespaces", ns, plural] => match kind(plural) {
            Some(k) if k.namespaced() => Route::Collection {
                kind: k,
                namespace: Some(ns.to_string()),
            },
            _ => Route::NotFound,
        },
        ["namespaces", ns, plural, name] => match kind(plural) {
            Some(k) if k.namespaced() => Route::Object {
                kind: k,
                namespace: Some(ns.to_string()),
                name: name.to_string(),
            },
            _ => Route::NotFound,
        },
        [plural] => match kind(plural) {
            Some(k) => Route::Collection {
                kind: k,
                namespace: None,
            },
            None => Route::NotFound,
        },
        [plural, name] => match kind(plural) {
            Some(k) if !k.namespaced() => Route::Object {
                kind: k,
                namespace: None,
                name: name.to_string(),
            },
            _ => Route::NotFound,
        },
        _ => Route::NotFound,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kube_leading_ampersand_and_form_encoding_are_tolerated() {
        let q = Query::parse("&limit=500&labelSelector=app%3Dweb%2Ctier+in+%28a%29&watch=true");
        assert_eq!(q.get("limit"), Some("500"));
        assert_eq!(q.get("labelSelector"), Some("app=web,tier in (a)"));
        assert_eq!(q.flag("watch"), Some(true));
        assert_eq!(q.get("continue"), None);
        assert_eq!(Query::parse("a=%2").get("a"), Some("%2"));
    }

    #[test]
    fn cluster_wide_namespaced_and_object_paths_route() {
        assert_eq!(
            route(&["apis", "discovery.k8s.io", "v1", "endpointslices"]),
            Route::Collection {
                kind: Kind::EndpointSlice,
                namespace: None
            }
        );
        assert_eq!(
            route(&["api", "v1", "namespaces", "prod", "endpoints"]),
            Route::Collection {
                kind: Kind::Endpoints,
                namespace: Some("prod".into())
            }
        );
        assert_eq!(
            route(&["api", "v1", "namespaces", "prod"]),
            Route::Object {
                kind: Kind::Namespace,
                namespace: None,
                name: "prod".into()
            }
        );
        assert_eq!(
            route(&["api", "v1", "namespaces", "prod", "services", "web"]),
            Route::Object {
                kind: Kind::Service,
                namespace: Some("prod".into()),
                name: "web".into()
            }
        );
        assert_eq!(route(&["api", "v1", "pods"]), Route::NotFound);
        assert_eq!(
            route(&["apis", "discovery.k8s.io", "v1beta1", "endpointslices"]),
            Route::NotFound
        );
        assert_eq!(route(&["apis"]), Route::Discovery);
    }
}
