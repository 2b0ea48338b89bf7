//! Locality through the data plane, with pods discovered through the fake API server: the
//! gateway knows its node (`node.name`) and reads its zone from its Node's
//! `topology.kubernetes.io/zone` label; `prefer: node` sends every request to the pod on
//! its node, falls back to its zone's pods when that one is not ready, then to any pod,
//! and comes back; picks are counted by locality and `/debug/snapshot` shows each
//! endpoint's.
//!
//! Runs on: the test threads; the gateway in process, pods on threads.

use std::collections::BTreeSet;
use std::net::SocketAddr;

use serde_json::Value;
use strait_fake_apiserver::{FakeApiServer, Options};

use crate::active_health::Pod;
use crate::support::{eventually, get, metric, Client, Harness};

/// `(ip, node, zone, ready)`.
type PodAt<'a> = (&'a str, &'a str, &'a str, bool);

fn slice(port: u16, pods: &[PodAt<'_>]) -> String {
    let mut y = format!("apiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata:\n  name: web-1\n  namespace: apisix\n  labels:\n    kubernetes.io/service-name: web\naddressType: IPv4\nports:\n- {{name: http, port: {port}, protocol: TCP}}\nendpoints:\n");
    for (ip, node, zone, ready) in pods {
        y.push_str(&format!(
            "- addresses: [{ip}]\n  conditions: {{ready: {ready}}}\n  nodeName: {node}\n  zone: {zone}\n"
        ));
    }
    y
}

/// The pods answering 12 requests on one keep-alive connection.
fn answering(addr: SocketAddr) -> BTreeSet<String> {
    let mut c = Client::connect(addr);
    (0..12)
        .map(|_| c.request(&get("a.test", "/")).text())
        .collect()
}

fn names(list: &[&str]) -> BTreeSet<String> {
    list.iter().map(|s| s.to_string()).collect()
}

#[test]
fn prefer_node_then_zone_then_any_with_the_zone_read_from_the_node() {
    let api = FakeApiServer::start(Options::default());
    let here = Pod::start("127.0.20.1:0".parse().unwrap(), "here");
    let port = here.backend.addr().port();
    let at = |ip: &str| -> SocketAddr { format!("{ip}:{port}").parse().unwrap() };
    let _zone = Pod::start(at("127.0.20.2"), "zone");
    let _far = Pod::start(at("127.0.20.3"), "far");
    api.apply_yaml("apiVersion: v1\nkind: Node\nmetadata:\n  name: node-1\n  labels: {topology.kubernetes.io/zone: zone-a}\n");
    api.apply_yaml(&format!("apiVersion: v1\nkind: Service\nmetadata: {{name: web, namespace: apisix}}\nspec:\n  ports:\n  - {{name: http, port: 80, targetPort: {port}}}\n"));
    let pods = |here_ready: bool, zone_ready: bool| {
        slice(
            port,
            &[
                ("127.0.20.1", "node-1", "zone-a", here_ready),
                ("127.0.20.2", "node-2", "zone-a", zone_ready),
                ("127.0.20.3", "node-3", "zone-b", true),
            ],
        )
    };
    api.apply_yaml(&pods(true, true));
    let h = Harness::with_addrs(
        &format!(
            "listeners:\n  - {{name: http, address: '127.0.20.4:0'}}\nnode: {{name: node-1}}\nregistries:\n  - {{name: k, server: {url}, token: {token}}}\nservices:\n  - {{name: s, upstream: web}}\nupstreams:\n  - name: web\n    discovery: {{registry: k, namespace: apisix, service: web, port: 80}}\n    locality: {{prefer: node}}\n",
            url = api.url(),
            token = api.token(),
        ),
        &[],
    );
    let admin = h.gateway_ref().admin_addr().unwrap();
    let snapshot = || -> Value {
        Client::connect(admin)
            .request(&get("admin", "/debug/snapshot"))
            .json()
    };
    eventually("the zone read from the Node", || {
        (snapshot()["node"]["zone"] == "zone-a").then_some(())
    });
    assert!(api
        .requests()
        .iter()
        .any(|r| r.path.ends_with("/api/v1/nodes/node-1")));
    let s = snapshot();
    assert_eq!(s["node"]["name"], "node-1");
    let localities: Vec<(String, String)> = s["upstreams"][0]["endpoints"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            (
                e["node"].as_str().unwrap().to_owned(),
                e["locality"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    assert_eq!(
        localities,
        [
            ("node-1".to_string(), "node".to_string()),
            ("node-2".into(), "zone".into()),
            ("node-3".into(), "any".into())
        ]
    );
    assert_eq!(answering(h.addr), names(&["here"]));

    // The pod on this node turns not ready: this zone's pod takes over.
    api.apply_yaml(&pods(false, true));
    eventually("the zone's pod serving", || {
        (answering(h.addr) == names(&["zone"])).then_some(())
    });
    // No pod in this zone: any.
    api.apply_yaml(&pods(false, false));
    eventually("the far pod serving", || {
        (answering(h.addr) == names(&["far"])).then_some(())
    });
    let m = |tier: &str| {
        metric(
            admin,
            &format!("strait_upstream_picks_total{{upstream=\"web\",locality=\"{tier}\"}}"),
        )
    };
    assert!(m("node") >= 12 && m("zone") >= 12 && m("any") >= 12);
    assert_eq!(
        metric(
            admin,
            "strait_upstream_locality{upstream=\"web\",locality=\"any\"}"
        ),
        1
    );
    // Back on this node when its pod is ready again.
    api.apply_yaml(&pods(true, false));
    eventually("this node's pod serving again", || {
        (answering(h.addr) == names(&["here"])).then_some(())
    });
}
