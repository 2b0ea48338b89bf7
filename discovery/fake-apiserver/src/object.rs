//! Turning an object handed to `apply` into the stored form: checks its type against the
//! k8s-openapi structs, defaults the namespace, and fills the fields upstream's defaulting
//! adds on the wire (`ports[].protocol: TCP`…). Pure; runs on the calling test's thread,
//! before the store lock is taken.

use k8s_openapi::api::core::v1::{Endpoints, Namespace, Node, Secret, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use serde::de::DeserializeOwned;
use serde_json::{json, Map, Value};

use crate::kind::Kind;

/// Why an object was refused by `apply`.
#[derive(Debug, thiserror::Error)]
pub enum ApplyError {
    /// The object did not serialise to JSON.
    #[error("object does not serialise: {0}")]
    Serialize(#[source] serde_json::Error),
    /// A YAML fixture document did not parse.
    #[error("YAML document {index} does not parse: {source}")]
    Yaml {
        /// 0-based document index in the stream.
        index: usize,
        /// The parser's error.
        #[source]
        source: serde_norway::Error,
    },
    /// Not an object with `apiVersion`/`kind` of a served kind.
    #[error("unsupported object type apiVersion={api_version:?} kind={kind:?} (served: v1 Endpoints/Service/Namespace/Secret, discovery.k8s.io/v1 EndpointSlice)")]
    UnsupportedType {
        /// The object's `apiVersion`.
        api_version: String,
        /// The object's `kind`.
        kind: String,
    },
    /// `metadata.name` is missing or empty (`generateName` is not supported).
    #[error("{kind} has no metadata.name")]
    NoName {
        /// The object's kind.
        kind: Kind,
    },
    /// The object does not deserialise as the k8s-openapi type, so a typed client could not read it.
    #[error("{kind} {name:?} is not a valid k8s-openapi object: {source}")]
    Invalid {
        /// The object's kind.
        kind: Kind,
        /// Its name.
        name: String,
        /// The deserialiser's error.
        #[source]
        source: serde_json::Error,
    },
}

/// An object ready for the store: identity plus normalised JSON (with `kind`/`apiVersion`).
#[derive(Debug)]
pub(crate) struct Normalized {
    pub(crate) kind: Kind,
    pub(crate) namespace: String,
    pub(crate) name: String,
    pub(crate) value: Value,
}

impl Normalized {
    /// The store key: `ns/name` (etcd key order), or `name` for cluster-scoped kinds.
    pub(crate) fn key(&self) -> String {
        object_key(self.kind, &self.namespace, &self.name)
    }
}

/// The store key of an object.
pub(crate) fn object_key(kind: Kind, namespace: &str, name: &str) -> String {
    if kind.namespaced() {
        format!("{namespace}/{name}")
    } else {
        name.to_string()
    }
}

fn check_typed<T: DeserializeOwned>(
    kind: Kind,
    name: &str,
    value: &Value,
) -> Result<(), ApplyError> {
    serde_json::from_value::<T>(value.clone())
        .map(drop)
        .map_err(|source| ApplyError::Invalid {
            kind,
            name: name.to_string(),
            source,
        })
}

/// Normalises one object (typed value already turned into JSON).
pub(crate) fn normalize(mut value: Value) -> Result<Normalized, ApplyError> {
    let api_version = value
        .get("apiVersion")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string();
    let kind_name = value
        .get("kind")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string();
    let Some(kind) = Kind::from_type(&api_version, &kind_name) else {
        return Err(ApplyError::UnsupportedType {
            api_version,
            kind: kind_name,
        });
    };
    let Some(obj) = value.as_object_mut() else {
        return Err(ApplyError::NoName { kind });
    };
    let metadata = obj
        .entry("metadata")
        .or_insert_with(|| Value::Object(Map::new()));
    if !metadata.is_object() {
        *metadata = Value::Object(Map::new());
    }
    let name = metadata
        .get("name")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string();
    if name.is_empty() {
        return Err(ApplyError::NoName { kind });
    }
    let namespace = if kind.namespaced() {
        let ns = metadata
            .get("namespace")
            .and_then(Value::as_str)
            .filter(|ns| !ns.is_empty())
            .unwrap_or("default")
            .to_string();
        metadata["namespace"] = Value::String(ns.clone());
        ns
    } else {
        if let Some(m) = metadata.as_object_mut() {
            m.remove("namespace");
        }
        String::new()
    };
    apply_defaults(kind, &name, &mut value);
    match kind {
        Kind::Endpoints => check_typed::<Endpoints>(kind, &name, &value)?,
        Kind::Service => check_typed::<Service>(kind, &name, &value)?,
        Kind::Namespace => check_typed::<Namespace>(kind, &name, &value)?,
        Kind::EndpointSlice => check_typed::<EndpointSlice>(kind, &name, &value)?,
        Kind::Secret => check_typed::<Secret>(kind, &name, &value)?,
        Kind::Node => check_typed::<Node>(kind, &name, &value)?,
    }
    Ok(Normalized {
        kind,
        namespace,
        name,
        value,
    })
}

/// Runs `f` on every element of the array at `pointer`, if there is one.
fn each_mut(value: &mut Value, pointer: &str, mut f: impl FnMut(&mut Map<String, Value>)) {
    if let Some(Value::Array(items)) = value.pointer_mut(pointer) {
        items
            .iter_mut()
            .filter_map(Value::as_object_mut)
            .for_each(&mut f);
    }
}

fn default_field(obj: &mut Map<String, Value>, field: &str, default: Value) {
    if obj.get(field).is_none_or(Value::is_null) {
        obj.insert(field.to_string(), default);
    }
}

/// The defaults upstream's API server fills in and that show up on the wire.
fn apply_defaults(kind: Kind, name: &str, value: &mut Value) {
    match kind {
        Kind::EndpointSlice => {
            if let Some(obj) = value.as_object_mut() {
                default_field(obj, "endpoints", json!([]));
            }
            each_mut(value, "/ports", |port| {
                default_field(port, "protocol", json!("TCP"));
                default_field(port, "name", json!(""));
            });
        }
        Kind::Endpoints => {
            if let Some(Value::Array(subsets)) = value.get_mut("subsets") {
                for subset in subsets {
                    each_mut(subset, "/ports", |port| {
                        default_field(port, "protocol", json!("TCP"));
                    });
                }
            }
        }
        Kind::Service => {
            if let Some(obj) = value.as_object_mut() {
                default_field(obj, "spec", json!({}));
            }
            if let Some(spec) = value.get_mut("spec").and_then(Value::as_object_mut) {
                default_field(spec, "type", json!("ClusterIP"));
                default_field(spec, "sessionAffinity", json!("None"));
            }
            each_mut(value, "/spec/ports", |port| {
                default_field(port, "protocol", json!("TCP"));
                if let Some(p) = port.get("port").cloned() {
                    default_field(port, "targetPort", p);
                }
            });
        }
        Kind::Secret => {
            // `stringData` is write-only: the API server merges it into `data`, base64.
            if let Some(obj) = value.as_object_mut() {
                default_field(obj, "type", json!("Opaque"));
                if let Some(Value::Object(strings)) = obj.remove("stringData") {
                    default_field(obj, "data", json!({}));
                    if let Some(data) = obj.get_mut("data").and_then(Value::as_object_mut) {
                        use base64::Engine;
                        for (k, v) in strings {
                            let text = v.as_str().unwrap_or_default();
                            let encoded = base64::engine::general_purpose::STANDARD.encode(text);
                            data.insert(k, json!(encoded));
                        }
                    }
                }
            }
        }
        Kind::Node => {
            if let Some(meta) = value.get_mut("metadata").and_then(Value::as_object_mut) {
                default_field(meta, "labels", json!({}));
                if let Some(labels) = meta.get_mut("labels").and_then(Value::as_object_mut) {
                    labels
                        .entry("kubernetes.io/hostname")
                        .or_insert_with(|| json!(name));
                }
            }
        }
        Kind::Namespace => {
            if let Some(obj) = value.as_object_mut() {
                default_field(obj, "spec", json!({"finalizers": ["kubernetes"]}));
                default_field(obj, "status", json!({"phase": "Active"}));
            }
            if let Some(meta) = value.get_mut("metadata").and_then(Value::as_object_mut) {
                default_field(meta, "labels", json!({}));
                if let Some(labels) = meta.get_mut("labels").and_then(Value::as_object_mut) {
                    labels
                        .entry("kubernetes.io/metadata.name")
                        .or_insert_with(|| json!(name));
                }
            }
        }
    }
}

/// Parses a multi-document YAML stream into JSON objects, skipping empty documents.
pub(crate) fn parse_yaml_stream(yaml: &str) -> Result<Vec<Value>, ApplyError> {
    use serde::Deserialize;
    let mut out = Vec::new();
    for (index, doc) in serde_norway::Deserializer::from_str(yaml).enumerate() {
        let value = Value::deserialize(doc).map_err(|source| ApplyError::Yaml { index, source })?;
        match value {
            Value::Null => {}
            Value::Object(ref o) if o.get("kind").and_then(Value::as_str) == Some("List") => {
                if let Some(Value::Array(items)) = o.get("items") {
                    out.extend(items.iter().cloned());
                }
            }
            other => out.push(other),
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoint_slice_gets_namespace_and_port_defaults() {
        let n = normalize(json!({
            "apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
            "metadata": {"name": "web-1"}, "addressType": "IPv4",
            "ports": [{"port": 8080}]
        }))
        .unwrap();
        assert_eq!(n.kind, Kind::EndpointSlice);
        assert_eq!(n.key(), "default/web-1");
        assert_eq!(n.value["ports"][0]["protocol"], "TCP");
        assert_eq!(n.value["ports"][0]["name"], "");
        assert_eq!(n.value["endpoints"], json!([]));
    }

    #[test]
    fn objects_of_unserved_or_malformed_types_are_refused() {
        assert!(matches!(
            normalize(json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p"}})),
            Err(ApplyError::UnsupportedType { .. })
        ));
        assert!(matches!(
            normalize(json!({"apiVersion": "v1", "kind": "Endpoints", "metadata": {}})),
            Err(ApplyError::NoName { .. })
        ));
        assert!(matches!(
            normalize(
                json!({"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
                "metadata": {"name": "x"}, "addressType": 4})
            ),
            Err(ApplyError::Invalid { .. })
        ));
    }

    #[test]
    fn yaml_streams_split_into_documents_and_lists() {
        let docs = parse_yaml_stream(
            "---\napiVersion: v1\nkind: Namespace\nmetadata: {name: a}\n---\n---\n\
             apiVersion: v1\nkind: List\nitems:\n- {apiVersion: v1, kind: Namespace, metadata: {name: b}}\n",
        )
        .unwrap();
        assert_eq!(docs.len(), 2);
        assert_eq!(docs[1]["metadata"]["name"], "b");
    }
}
