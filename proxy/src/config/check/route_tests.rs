//! `strait check` on routes (issue 17): what a route may say, and each contradiction
//! refused with its field and line.

use super::from_yaml;

/// A config with upstreams `u` and `v` and one service whose single route is `route`
/// (YAML lines indented for a route item; the route starts at line 10).
fn with_route(route: &str) -> String {
    format!(
        "listeners:\n  - name: http\n    address: 127.0.0.1:9080\n\
         upstreams:\n  - {{name: u, nodes: [{{address: 127.0.0.2:8080}}]}}\n  \
         - {{name: v, nodes: [{{address: 127.0.0.3:8080}}]}}\n\
         services:\n  - name: s\n    routes:\n      - name: r\n{route}"
    )
}

/// The field, line and message of the refusal of `route`.
fn refusal(route: &str) -> (String, Option<usize>, String) {
    let e = from_yaml(&with_route(route)).expect_err("the route must be refused");
    (e.field, e.line, e.message)
}

#[test]
fn a_full_route_is_read() {
    let route = "        path: /api\n        \
                 headers: [{name: X-Canary, value: 'true'}, {name: X-Id, present: true}]\n        \
                 query: [{name: v, regex: '[0-9]+'}]\n        \
                 backends: [{upstream: u, weight: 90}, {upstream: v, weight: 10}]\n        \
                 hash: {key: cookie, name: session}\n        \
                 request_headers: {set: {X-Env: prod}, add: {X-Via: s}, remove: [X-Debug]}\n        \
                 response_headers: {remove: [Server]}\n        \
                 rewrite: {prefix: /v2}\n        \
                 rate_limit: {rate: 100/s, burst: 50, key: client_ip}\n";
    let config = from_yaml(&with_route(route)).expect("the route is valid");
    let r = &config.spec.services[0].routes[0];
    assert_eq!(r.headers.len(), 2);
    assert_eq!(r.headers[0].name, "x-canary");
    assert_eq!(r.backends.len(), 2);
    assert_eq!(r.filters.request_headers.remove, ["x-debug"]);
    let limit = r.rate_limit.as_ref().expect("a rate limit");
    assert_eq!((limit.tokens, limit.burst), (100, 50));
}

#[test]
fn contradictions_are_refused_with_field_and_line() {
    let cases: &[(&str, &str, usize, &str)] = &[
        (
            "        path: '/a(['\n        path_match: regex\n        upstream: u\n",
            "services[0].routes[0].path",
            11,
            "unclosed character class",
        ),
        (
            "        path: /a\n        backends: [{upstream: u, weight: 0}, {upstream: v, weight: 0}]\n",
            "services[0].routes[0].backends",
            12,
            "sum to 0",
        ),
        (
            "        path: /a\n        redirect: {scheme: https}\n        direct_response: {status: 200, body: x}\n",
            "services[0].routes[0].direct_response",
            13,
            "a redirect has no body",
        ),
        (
            "        path: /a\n        redirect: {status: 200}\n",
            "services[0].routes[0].redirect.status",
            12,
            "not a redirect status",
        ),
        (
            "        path: /a\n        upstream: u\n        headers: [{name: X-A, value: b, regex: c}]\n",
            "services[0].routes[0].headers[0]",
            13,
            "",
        ),
        (
            "        path: /a\n        backends: [{upstream: u}]\n        upstream: v\n",
            "services[0].routes[0].backends",
            12,
            "",
        ),
        (
            "        path: /a\n        upstream: u\n        rate_limit: {rate: fast}\n",
            "services[0].routes[0].rate_limit.rate",
            13,
            "100/s",
        ),
        (
            "        path: /a\n        upstream: u\n        request_headers: {set: {Content-Length: '3'}}\n",
            "services[0].routes[0].request_headers.set.Content-Length",
            13,
            "framing",
        ),
    ];
    for (route, field, line, message) in cases {
        let (f, l, m) = refusal(route);
        assert!(f.starts_with(field), "{route}: field {f}, wanted {field}");
        assert_eq!(l, Some(*line), "{route}: {f}: {m}");
        assert!(m.contains(message), "{route}: {m}");
    }
}

#[test]
fn listener_edge_settings_are_checked() {
    let base = "upstreams:\n  - {name: u, nodes: [{address: 127.0.0.2:8080}]}\n\
                services:\n  - {name: s, upstream: u}\n";
    let ok = format!(
        "listeners:\n  - {{name: http, address: 127.0.0.1:9080, trusted_proxies: [10.0.0.0/8, '::1'], proxy_protocol: true}}\n{base}"
    );
    let config = from_yaml(&ok).expect("valid listener");
    assert_eq!(config.listeners[0].trusted_proxies.len(), 2);
    assert!(config.listeners[0].proxy_protocol);
    let bad = format!(
        "listeners:\n  - {{name: http, address: 127.0.0.1:9080, trusted_proxies: [10.0.0.0/33]}}\n{base}"
    );
    let e = from_yaml(&bad).expect_err("a bad CIDR");
    assert!(e.field.starts_with("listeners[0].trusted_proxies"), "{e}");
    assert_eq!(e.line, Some(2));
}
