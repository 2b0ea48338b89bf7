//! The Kubernetes side of the end-to-end tests: the seed's discovery config pointed at a
//! fake API server, and the Service and EndpointSlice objects applied to it.
//!
//! Runs on: the test thread. Pure string building; nothing here talks to the server.

use strait_fake_apiserver::FakeApiServer;

/// The seed's configuration, pointed at `api`: registry `my-k8s-cluster`, upstream
/// `httpbin` by discovery, service `sd.httpbin.org` with prefix `/v1` and the route
/// `/anything` (prefix stripped).
pub(crate) fn seed_config(api: &FakeApiServer, enabled: bool) -> String {
    format!(
        "registries:
  - name: my-k8s-cluster
    server: {url}
    token: {token}
    namespaces: ^apisix$
    enabled: {enabled}
upstreams:
  - name: httpbin
    discovery: {{registry: my-k8s-cluster, namespace: apisix, service: httpbin, port: 80}}
services:
  - name: sd-app
    hosts: [sd.httpbin.org]
    path_prefix: /v1
    upstream: httpbin
    routes:
      - name: anything
        path: /anything
        strip_prefix: true
",
        url = api.url(),
        token = api.token(),
    )
}

/// An EndpointSlice of Service `httpbin` in `apisix` with `(ip, ready, serving,
/// terminating)` endpoints on `port`.
pub(crate) fn slice(port: u16, eps: &[(&str, bool, bool, bool)]) -> String {
    let mut y = format!(
        "apiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata:\n  name: httpbin-abc12\n  namespace: apisix\n  labels:\n    kubernetes.io/service-name: httpbin\naddressType: IPv4\nports:\n- {{name: http, port: {port}, protocol: TCP}}\nendpoints:\n"
    );
    for (ip, r, s, t) in eps {
        y.push_str(&format!(
            "- addresses: [{ip}]\n  conditions: {{ready: {r}, serving: {s}, terminating: {t}}}\n"
        ));
    }
    y
}

/// Service `httpbin` in `apisix`: port 80 → target port `port`.
pub(crate) fn service(port: u16) -> String {
    format!("apiVersion: v1\nkind: Service\nmetadata: {{name: httpbin, namespace: apisix}}\nspec:\n  ports:\n  - {{name: http, port: 80, targetPort: {port}}}\n")
}
