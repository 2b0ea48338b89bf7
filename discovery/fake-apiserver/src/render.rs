//! Response representations: `Accept` negotiation, plain JSON lists, `Table`s with kubectl's
//! printer columns (KUBE-API.md §7), and `PartialObjectMetadata`. Pure; runs on the server's
//! runtime thread.

use serde_json::{json, Value};

use crate::kind::Kind;
use crate::status::StatusError;

/// What the client asked for in `Accept`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Format {
    /// Plain objects and `…List`s.
    Json,
    /// `meta.k8s.io/v1` `Table` (kubectl's human-readable output).
    Table(IncludeObject),
    /// `PartialObjectMetadata(List)` (kube's metadata watchers).
    Metadata,
}

/// `includeObject` for Tables: what each row's `object` holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum IncludeObject {
    None,
    Metadata,
    Object,
}

impl IncludeObject {
    pub(crate) fn parse(value: Option<&str>) -> Result<IncludeObject, StatusError> {
        match value.unwrap_or("") {
            "" | "Metadata" => Ok(IncludeObject::Metadata),
            "None" => Ok(IncludeObject::None),
            "Object" => Ok(IncludeObject::Object),
            other => Err(StatusError::bad_request(format!(
                "includeObject: Unsupported value: \"{other}\": supported values: \"Metadata\", \"None\", \"Object\""
            ))),
        }
    }
}

/// Picks the first representation in `Accept` that is served; plain JSON when absent.
pub(crate) fn negotiate(
    accept: Option<&str>,
    include: IncludeObject,
) -> Result<Format, StatusError> {
    let Some(accept) = accept.filter(|a| !a.trim().is_empty()) else {
        return Ok(Format::Json);
    };
    for clause in accept.split(',') {
        let mut parts = clause.split(';').map(str::trim);
        let media = parts.next().unwrap_or_default().to_ascii_lowercase();
        let (mut as_, mut g, mut v) = ("", "", "");
        for param in parts {
            match param.split_once('=') {
                Some(("as", x)) => as_ = x,
                Some(("g", x)) => g = x,
                Some(("v", x)) => v = x,
                _ => {}
            }
        }
        if !matches!(media.as_str(), "application/json" | "application/*" | "*/*") {
            continue;
        }
        let meta_group = g == "meta.k8s.io" && matches!(v, "v1" | "v1beta1");
        match as_ {
            "" => return Ok(Format::Json),
            "Table" if meta_group => return Ok(Format::Table(include)),
            "PartialObjectMetadata" | "PartialObjectMetadataList" if meta_group => {
                return Ok(Format::Metadata)
            }
            _ => {}
        }
    }
    Err(StatusError::not_acceptable(accept))
}

/// A list object: `{"kind":"…List","apiVersion":…,"metadata":{…},"items":[…]}`.
pub(crate) fn list(kind: Kind, format: Format, items: &[&Value], metadata: Value) -> Value {
    match format {
        Format::Json => json!({
            "kind": kind.list_kind(),
            "apiVersion": kind.api_version(),
            "metadata": metadata,
            "items": items.iter().map(|o| without_type(o)).collect::<Vec<_>>(),
        }),
        Format::Metadata => json!({
            "kind": "PartialObjectMetadataList",
            "apiVersion": "meta.k8s.io/v1",
            "metadata": metadata,
            "items": items.iter().map(|o| partial_metadata(o)).collect::<Vec<_>>(),
        }),
        Format::Table(include) => table(kind, items, metadata, true, include),
    }
}

/// One object as a watch event or GET returns it.
pub(crate) fn object(kind: Kind, format: Format, obj: &Value, rv: u64, first: bool) -> Value {
    match format {
        Format::Json => obj.clone(),
        Format::Metadata => partial_metadata(obj),
        Format::Table(include) => table(
            kind,
            &[obj],
            json!({"resourceVersion": rv.to_string()}),
            first,
            include,
        ),
    }
}

/// A BOOKMARK event's object (KUBE-API.md §4): type, and metadata with only the version.
pub(crate) fn bookmark(kind: Kind, format: Format, rv: u64, initial_events_end: bool) -> Value {
    let mut metadata = json!({"resourceVersion": rv.to_string(), "creationTimestamp": null});
    if initial_events_end {
        metadata["annotations"] = json!({"k8s.io/initial-events-end": "true"});
    }
    match format {
        Format::Json => {
            json!({"kind": kind.name(), "apiVersion": kind.api_version(), "metadata": metadata})
        }
        Format::Metadata => {
            json!({"kind": "PartialObjectMetadata", "apiVersion": "meta.k8s.io/v1", "metadata": metadata})
        }
        Format::Table(_) => json!({"kind": "Table", "apiVersion": "meta.k8s.io/v1",
            "metadata": {"resourceVersion": rv.to_string()}, "columnDefinitions": null, "rows": []}),
    }
}

/// An item as lists carry it: without `kind`/`apiVersion` (*observed* upstream).
fn without_type(obj: &Value) -> Value {
    let mut v = obj.clone();
    if let Some(m) = v.as_object_mut() {
        m.remove("kind");
        m.remove("apiVersion");
    }
    v
}

fn partial_metadata(obj: &Value) -> Value {
    json!({
        "kind": "PartialObjectMetadata",
        "apiVersion": "meta.k8s.io/v1",
        "metadata": obj.get("metadata").cloned().unwrap_or_else(|| json!({})),
    })
}

// === Tables ===

fn column(name: &str, type_: &str, format: &str, priority: u32, description: &str) -> Value {
    json!({"name": name, "type": type_, "format": format, "description": description, "priority": priority})
}

fn columns(kind: Kind) -> Vec<Value> {
    let name = column(
        "Name",
        "string",
        "name",
        0,
        "Name must be unique within a namespace.",
    );
    let age = column("Age", "string", "", 0, "CreationTimestamp is a timestamp representing the server time when this object was created.");
    match kind {
        Kind::EndpointSlice => vec![
            name,
            column("AddressType", "string", "", 0, "addressType specifies the type of address carried by this EndpointSlice."),
            column("Ports", "string", "", 0, "ports specifies the list of network ports exposed by each endpoint in this slice."),
            column("Endpoints", "string", "", 0, "endpoints is a list of unique endpoints in this slice."),
            age,
        ],
        Kind::Endpoints => vec![
            name,
            column("Endpoints", "string", "", 0, "Endpoints is the list of endpoints."),
            age,
        ],
        Kind::Service => vec![
            name,
            column("Type", "string", "", 0, "Type determines how the Service is exposed."),
            column("Cluster-IP", "string", "", 0, "clusterIP is the IP address of the service."),
            column("External-IP", "string", "", 0, "externalIPs is a list of IP addresses for which nodes in the cluster will also accept traffic for this service."),
            column("Port(s)", "string", "", 0, "The list of ports that are exposed by this service."),
            age,
            column("Selector", "string", "", 1, "Route service traffic to pods with label keys and values matching this selector."),
        ],
        Kind::Namespace => vec![
            name,
            column("Status", "string", "", 0, "The status of the namespace"),
            age,
        ],
        Kind::Node => vec![
            name,
            column("Zone", "string", "", 0, "The topology.kubernetes.io/zone label."),
            age,
        ],
        Kind::Secret => vec![
            name,
            column("Type", "string", "", 0, "Used to facilitate programmatic handling of secret data."),
            column("Data", "integer", "", 0, "Data contains the secret data."),
            age,
        ],
    }
}

fn table(
    kind: Kind,
    items: &[&Value],
    metadata: Value,
    with_columns: bool,
    include: IncludeObject,
) -> Value {
    let now = jiff::Timestamp::now();
    let rows: Vec<Value> = items
        .iter()
        .map(|obj| {
            let mut row = json!({"cells": cells(kind, obj, now)});
            match include {
                IncludeObject::None => {}
                IncludeObject::Metadata => row["object"] = partial_metadata(obj),
                IncludeObject::Object => row["object"] = (*obj).clone(),
            }
            row
        })
        .collect();
    json!({
        "kind": "Table",
        "apiVersion": "meta.k8s.io/v1",
        "metadata": metadata,
        "columnDefinitions": if with_columns { json!(columns(kind)) } else { Value::Null },
        "rows": rows,
    })
}

fn str_at<'a>(v: &'a Value, pointer: &str) -> &'a str {
    v.pointer(pointer)
        .and_then(Value::as_str)
        .unwrap_or_default()
}

fn array_at<'a>(v: &'a Value, pointer: &str) -> &'a [Value] {
    v.pointer(pointer)
        .and_then(Value::as_array)
        .map(Vec::as_slice)
        .unwrap_or_default()
}

/// `a,b,c + N more...`, `<unset>` when empty (kubectl's `listWithMoreString`).
fn list_with_more(all: Vec<String>, empty: &str) -> String {
    const MAX: usize = 3;
    if all.is_empty() {
        return empty.to_string();
    }
    let shown = all[..all.len().min(MAX)].join(",");
    if all.len() > MAX {
        format!("{shown} + {} more...", all.len() - MAX)
    } else {
        shown
    }
}

fn cells(kind: Kind, obj: &Value, now: jiff::Timestamp) -> Vec<Value> {
    let name = json!(str_at(obj, "/metadata/name"));
    let age = json!(age(str_at(obj, "/metadata/creationTimestamp"), now));
    match kind {
        Kind::EndpointSlice => {
            let ports = array_at(obj, "/ports")
                .iter()
                .map(|p| {
                    match (
                        p.get("port").and_then(Value::as_i64),
                        p.get("name").and_then(Value::as_str),
                    ) {
                        (Some(n), _) => n.to_string(),
                        (None, Some(name)) if !name.is_empty() => name.to_string(),
                        _ => "*".to_string(),
                    }
                })
                .collect();
            let addresses = array_at(obj, "/endpoints")
                .iter()
                .flat_map(|e| array_at(e, "/addresses"))
                .filter_map(Value::as_str)
                .map(str::to_string)
                .collect();
            vec![
                name,
                json!(str_at(obj, "/addressType")),
                json!(list_with_more(ports, "<unset>")),
                json!(list_with_more(addresses, "<unset>")),
                age,
            ]
        }
        Kind::Endpoints => vec![name, json!(format_endpoints(obj)), age],
        Kind::Service => {
            let ports: Vec<String> = array_at(obj, "/spec/ports")
                .iter()
                .map(|p| {
                    let port = p.get("port").and_then(Value::as_i64).unwrap_or_default();
                    let proto = p.get("protocol").and_then(Value::as_str).unwrap_or("TCP");
                    match p.get("nodePort").and_then(Value::as_i64) {
                        Some(node) => format!("{port}:{node}/{proto}"),
                        None => format!("{port}/{proto}"),
                    }
                })
                .collect();
            let external: Vec<String> = array_at(obj, "/spec/externalIPs")
                .iter()
                .chain(
                    array_at(obj, "/status/loadBalancer/ingress")
                        .iter()
                        .filter_map(|i| i.get("ip")),
                )
                .filter_map(Value::as_str)
                .map(str::to_string)
                .collect();
            let service_type = str_at(obj, "/spec/type");
            let external = match (external.is_empty(), service_type) {
                (true, "LoadBalancer") => "<pending>".to_string(),
                (true, _) => "<none>".to_string(),
                (false, _) => external.join(","),
            };
            let cluster_ip = match str_at(obj, "/spec/clusterIP") {
                "" => "<none>",
                ip => ip,
            };
            let selector = obj
                .pointer("/spec/selector")
                .and_then(Value::as_object)
                .map(|m| {
                    m.iter()
                        .map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or_default()))
                        .collect::<Vec<_>>()
                        .join(",")
                })
                .filter(|s| !s.is_empty())
                .unwrap_or_else(|| "<none>".to_string());
            vec![
                name,
                json!(service_type),
                json!(cluster_ip),
                json!(external),
                json!(if ports.is_empty() {
                    "<none>".to_string()
                } else {
                    ports.join(",")
                }),
                age,
                json!(selector),
            ]
        }
        Kind::Namespace => vec![name, json!(str_at(obj, "/status/phase")), age],
        Kind::Node => vec![
            name,
            json!(str_at(obj, "/metadata/labels/topology.kubernetes.io~1zone")),
            age,
        ],
        Kind::Secret => {
            let data = obj
                .get("data")
                .and_then(Value::as_object)
                .map_or(0, |d| d.len());
            vec![name, json!(str_at(obj, "/type")), json!(data), age]
        }
    }
}

/// kubectl's `formatEndpoints`: `ip:port` per address and port, at most 3 shown.
fn format_endpoints(obj: &Value) -> String {
    let subsets = array_at(obj, "/subsets");
    if subsets.is_empty() {
        return "<none>".to_string();
    }
    let mut all = Vec::new();
    for ss in subsets {
        let ips: Vec<&str> = array_at(ss, "/addresses")
            .iter()
            .map(|a| str_at(a, "/ip"))
            .collect();
        let ports = array_at(ss, "/ports");
        if ports.is_empty() {
            all.extend(ips.iter().map(|ip| ip.to_string()));
            continue;
        }
        for port in ports {
            let p = port.get("port").and_then(Value::as_i64).unwrap_or_default();
            all.extend(ips.iter().map(|ip| match ip.contains(':') {
                true => format!("[{ip}]:{p}"),
                false => format!("{ip}:{p}"),
            }));
        }
    }
    list_with_more(all, "")
}

/// kubectl's `HumanDuration` of the time since `created`.
fn age(created: &str, now: jiff::Timestamp) -> String {
    let Ok(created) = created.parse::<jiff::Timestamp>() else {
        return "<unknown>".to_string();
    };
    human_duration(now.as_second() - created.as_second())
}

fn human_duration(seconds: i64) -> String {
    if seconds < -1 {
        return "<invalid>".to_string();
    }
    let s = seconds.max(0);
    if s < 120 {
        return format!("{s}s");
    }
    let minutes = s / 60;
    if minutes < 10 {
        return match s % 60 {
            0 => format!("{minutes}m"),
            sec => format!("{minutes}m{sec}s"),
        };
    }
    if minutes < 180 {
        return format!("{minutes}m");
    }
    let hours = minutes / 60;
    if hours < 8 {
        return match minutes % 60 {
            0 => format!("{hours}h"),
            m => format!("{hours}h{m}m"),
        };
    }
    if hours < 48 {
        return format!("{hours}h");
    }
    if hours < 24 * 8 {
        return match hours % 24 {
            0 => format!("{}d", hours / 24),
            h => format!("{}d{h}h", hours / 24),
        };
    }
    if hours < 24 * 365 * 2 {
        return format!("{}d", hours / 24);
    }
    let years = hours / 24 / 365;
    if hours < 24 * 365 * 8 {
        return match (hours / 24) % 365 {
            0 => format!("{years}y"),
            d => format!("{years}y{d}d"),
        };
    }
    format!("{years}y")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kubectl_accept_header_gets_a_table_and_plain_clients_get_json() {
        let kubectl = "application/json;as=Table;v=v1;g=meta.k8s.io,application/json;as=Table;v=v1beta1;g=meta.k8s.io,application/json";
        assert_eq!(
            negotiate(Some(kubectl), IncludeObject::Metadata).unwrap(),
            Format::Table(IncludeObject::Metadata)
        );
        assert_eq!(
            negotiate(None, IncludeObject::Metadata).unwrap(),
            Format::Json
        );
        assert_eq!(
            negotiate(
                Some("application/vnd.kubernetes.protobuf,application/json"),
                IncludeObject::Metadata
            )
            .unwrap(),
            Format::Json
        );
        assert_eq!(
            negotiate(
                Some("application/json;as=PartialObjectMetadataList;g=meta.k8s.io;v=v1"),
                IncludeObject::Metadata
            )
            .unwrap(),
            Format::Metadata
        );
        assert!(negotiate(
            Some("application/vnd.kubernetes.protobuf"),
            IncludeObject::Metadata
        )
        .is_err());
    }

    #[test]
    fn endpoint_slice_rows_use_kubectl_printer_columns() {
        let slice = json!({"metadata": {"name": "web-abc", "creationTimestamp": "2020-01-01T00:00:00Z"},
            "addressType": "IPv4", "ports": [{"port": 8080, "name": "http"}],
            "endpoints": [{"addresses": ["10.0.0.1"]}, {"addresses": ["10.0.0.2"]}, {"addresses": ["10.0.0.3"]}, {"addresses": ["10.0.0.4"]}]});
        let now = "2020-01-01T00:05:30Z".parse().unwrap();
        let cells = cells(Kind::EndpointSlice, &slice, now);
        assert_eq!(
            cells,
            vec![
                json!("web-abc"),
                json!("IPv4"),
                json!("8080"),
                json!("10.0.0.1,10.0.0.2,10.0.0.3 + 1 more..."),
                json!("5m30s")
            ]
        );
    }

    #[test]
    fn human_durations_match_kubectl() {
        assert_eq!(human_duration(5), "5s");
        assert_eq!(human_duration(600), "10m");
        assert_eq!(human_duration(3 * 3600 + 60), "3h1m");
        assert_eq!(human_duration(3 * 86400), "3d");
    }
}
