//! The router: host groups, prefixes, methods, CONNECT and rewrites.

use super::*;
use crate::spec::RouteSpec;

fn service(name: &str, hosts: &[&str], prefix: &str, routes: Vec<RouteSpec>) -> ServiceSpec {
    ServiceSpec {
        name: name.into(),
        hosts: hosts.iter().map(|h| h.to_string()).collect(),
        path_prefix: prefix.into(),
        upstream: Some(name.into()),
        routes,
    }
}

fn route(name: &str, path: &str, strip: bool, methods: &[&str]) -> RouteSpec {
    RouteSpec {
        name: name.into(),
        path: path.into(),
        strip_prefix: strip,
        methods: MethodSet::try_from_names(methods.iter().copied()).unwrap(),
        ..RouteSpec::default()
    }
}

fn router(services: &[ServiceSpec]) -> Router {
    let names: Vec<&str> = services.iter().map(|s| s.name.as_str()).collect();
    Router::compile(services, |n| {
        names.iter().position(|x| *x == n).map(|i| i as u32)
    })
    .unwrap()
}

fn found<'a>(m: RouteMatch<'a>) -> &'a RouteEntry {
    match m {
        RouteMatch::Found(e) => e,
        other => panic!("expected a route, got {other:?}"),
    }
}

#[test]
fn seed_route_strips_the_service_prefix() {
    let r = router(&[service(
        "sd-app",
        &["sd.httpbin.org"],
        "/v1",
        vec![route("anything", "/anything", true, &[])],
    )]);
    let e = found(r.lookup("sd.httpbin.org", "/v1/anything", "GET"));
    assert_eq!(&*e.route, "anything");
    assert_eq!(e.rewrite("/v1/anything?a=1"), "/anything?a=1");
    assert_eq!(e.rewrite("/v1/anything/x"), "/anything/x");
    assert!(matches!(
        r.lookup("sd.httpbin.org", "/v1/anythingelse", "GET"),
        RouteMatch::NotFound
    ));
    assert!(matches!(
        r.lookup("sd.httpbin.org", "/anything", "GET"),
        RouteMatch::NotFound
    ));
    assert!(matches!(
        r.lookup("other.org", "/v1/anything", "GET"),
        RouteMatch::NotFound
    ));
}

#[test]
fn host_matching_is_exact_then_wildcard_then_default_ignoring_case_and_port() {
    let r = router(&[
        service("exact", &["a.example.com"], "/", vec![]),
        service("wild", &["*.example.com"], "/", vec![]),
        service("deeper", &["*.b.example.com"], "/", vec![]),
        service("any", &[], "/", vec![]),
    ]);
    let svc = |h: &str| found(r.lookup(h, "/", "GET")).service.to_string();
    assert_eq!(svc("a.example.com"), "exact");
    assert_eq!(svc("A.Example.COM:8080"), "exact");
    assert_eq!(svc("x.example.com"), "wild");
    assert_eq!(svc("x.y.example.com"), "wild");
    assert_eq!(svc("x.b.example.com"), "deeper");
    assert_eq!(svc("example.com"), "any");
    assert_eq!(svc("[::1]:80"), "any");
    assert_eq!(svc(""), "any");
    assert_eq!(svc("é.example.com"), "wild");
}

#[test]
fn longest_prefix_wins_and_methods_give_405_with_allow() {
    let r = router(&[service(
        "s",
        &["h"],
        "/",
        vec![
            route("all", "/", false, &[]),
            route("read", "/items", false, &["GET", "HEAD"]),
            route("write", "/items", false, &["POST"]),
            route("admin", "/admin", false, &["DELETE"]),
        ],
    )]);
    assert_eq!(&*found(r.lookup("h", "/items/1", "GET")).route, "read");
    assert_eq!(&*found(r.lookup("h", "/items", "POST")).route, "write");
    // A longer prefix that refuses the method falls back to a shorter one that allows it.
    assert_eq!(&*found(r.lookup("h", "/items", "PUT")).route, "all");
    assert_eq!(&*found(r.lookup("h", "/other", "PUT")).route, "all");
    let r = router(&[service(
        "s",
        &["h"],
        "/",
        vec![route("admin", "/admin", false, &["DELETE", "GET"])],
    )]);
    match r.lookup("h", "/admin", "POST") {
        RouteMatch::MethodNotAllowed(set) => {
            assert_eq!(set.names().collect::<Vec<_>>(), ["GET", "DELETE"])
        }
        other => panic!("expected 405, got {other:?}"),
    }
}

#[test]
fn connect_goes_to_the_first_route_naming_it_whatever_its_path() {
    let r = router(&[
        service(
            "tunnels",
            &["t.example.com"],
            "/",
            vec![
                route("any", "/", false, &[]),
                route("long", "/a/b", false, &["GET"]),
                route("first", "/x", false, &["CONNECT"]),
                route("second", "/", false, &["CONNECT", "GET"]),
            ],
        ),
        service("plain", &["p.example.com"], "/", vec![]),
        service(
            "read",
            &["r.example.com"],
            "/",
            vec![
                route("r", "/r", false, &["GET", "HEAD"]),
                route("w", "/w", false, &["POST"]),
            ],
        ),
    ]);
    // Longest prefix first (lookup order): "/x" before "/".
    let e = found(r.lookup_connect("T.example.com:443"));
    assert_eq!(&*e.route, "first");
    assert!(matches!(
        r.lookup_connect("nowhere.test:443"),
        RouteMatch::NotFound
    ));
    let allow = |authority: &str| match r.lookup_connect(authority) {
        RouteMatch::MethodNotAllowed(set) => set.names().collect::<Vec<_>>(),
        other => panic!("expected 405, got {other:?}"),
    };
    // An "any method" route does not take CONNECT, and does not list it.
    assert_eq!(
        allow("p.example.com:443"),
        ["GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS", "TRACE"]
    );
    assert_eq!(allow("r.example.com:80"), ["GET", "HEAD", "POST"]);
    // An ordinary request passes over a CONNECT-only route, to the route of the
    // next path that names its method (before the one taking any).
    assert_eq!(
        &*found(r.lookup("t.example.com", "/x", "GET")).route,
        "second"
    );
    assert_eq!(&*found(r.lookup("t.example.com", "/x", "PUT")).route, "any");
    assert!(!MethodSet::ANY.names_method("CONNECT"));
    assert!(MethodSet::ANY.allows("CONNECT"));
}

#[test]
fn prefix_matches_only_at_segment_boundaries() {
    assert!(prefix_matches("/api", "/api"));
    assert!(prefix_matches("/api", "/api/"));
    assert!(prefix_matches("/api", "/api/v"));
    assert!(!prefix_matches("/api", "/apiv"));
    assert!(prefix_matches("/api/", "/api/v"));
    assert!(prefix_matches("/", "/anything"));
}

#[test]
fn stripping_to_nothing_leaves_a_slash() {
    let r = router(&[service(
        "s",
        &[],
        "/v1",
        vec![route("root", "/", true, &[])],
    )]);
    let e = found(r.lookup("x", "/v1", "GET"));
    assert_eq!(e.rewrite("/v1"), "/");
    assert_eq!(e.rewrite("/v1?x=1"), "/?x=1");
}
