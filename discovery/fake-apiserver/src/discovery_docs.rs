//! The discovery documents kubectl reads before it lists anything: `/version`, `/api`,
//! `/api/v1`, `/apis`, `/apis/discovery.k8s.io`, `/apis/discovery.k8s.io/v1`. Always the legacy
//! (unaggregated) format: kubectl asks for aggregated discovery with `application/json` as a
//! fallback and reads the legacy format when the response's Content-Type says so. Pure; runs
//! on the server's runtime thread.

use serde_json::{json, Value};

use crate::kind::Kind;

/// The Kubernetes version the fake server claims (matches k8s-openapi's `v1_33` feature).
pub(crate) const VERSION_MINOR: &str = "33";

/// A discovery document, by request path; `None` if the path is not one.
pub(crate) fn document(path: &[&str], server_address: &str) -> Option<Value> {
    Some(match path {
        ["version"] => json!({
            "major": "1",
            "minor": VERSION_MINOR,
            "gitVersion": format!("v1.{VERSION_MINOR}.0-strait-fake"),
            "gitCommit": "0000000000000000000000000000000000000000",
            "gitTreeState": "clean",
            "buildDate": "2025-01-01T00:00:00Z",
            "goVersion": "go1.24.0",
            "compiler": "gc",
            "platform": "linux/amd64",
        }),
        ["api"] => json!({
            "kind": "APIVersions",
            "versions": ["v1"],
            "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0", "serverAddress": server_address}],
        }),
        ["api", "v1"] => resource_list(""),
        ["apis"] => json!({
            "kind": "APIGroupList",
            "apiVersion": "v1",
            "groups": [group("discovery.k8s.io")],
        }),
        ["apis", "discovery.k8s.io"] => {
            let mut g = group("discovery.k8s.io");
            g["kind"] = json!("APIGroup");
            g["apiVersion"] = json!("v1");
            g
        }
        ["apis", "discovery.k8s.io", "v1"] => resource_list("discovery.k8s.io"),
        _ => return None,
    })
}

fn group(name: &str) -> Value {
    let version = json!({"groupVersion": format!("{name}/v1"), "version": "v1"});
    json!({"name": name, "versions": [version], "preferredVersion": version})
}

fn resource_list(group: &str) -> Value {
    let group_version = if group.is_empty() {
        "v1".to_string()
    } else {
        format!("{group}/v1")
    };
    let resources: Vec<Value> = Kind::ALL
        .into_iter()
        .filter(|k| k.group() == group)
        .map(|k| {
            let mut r = json!({
                "name": k.plural(),
                "singularName": k.singular(),
                "namespaced": k.namespaced(),
                "kind": k.name(),
                "verbs": ["get", "list", "watch"],
            });
            if !k.short_names().is_empty() {
                r["shortNames"] = json!(k.short_names());
            }
            if k == Kind::Service {
                r["categories"] = json!(["all"]);
            }
            r
        })
        .collect();
    json!({
        "kind": "APIResourceList",
        "apiVersion": "v1",
        "groupVersion": group_version,
        "resources": resources,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn group_resource_list_names_endpointslices_with_read_verbs() {
        let doc = document(&["apis", "discovery.k8s.io", "v1"], "x").unwrap();
        assert_eq!(doc["groupVersion"], "discovery.k8s.io/v1");
        assert_eq!(doc["resources"][0]["name"], "endpointslices");
        assert_eq!(
            doc["resources"][0]["verbs"],
            json!(["get", "list", "watch"])
        );
        let core = document(&["api", "v1"], "x").unwrap();
        let names: Vec<&str> = core["resources"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r["name"].as_str().unwrap())
            .collect();
        assert_eq!(
            names,
            ["endpoints", "namespaces", "nodes", "secrets", "services"]
        );
        assert!(document(&["apis", "apps", "v1"], "x").is_none());
    }
}
