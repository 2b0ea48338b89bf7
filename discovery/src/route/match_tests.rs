//! The route model's matching order, conditions and rewrites.

use super::*;
use crate::spec::{Backend, ValueCondition, ValueMatch};

fn svc(prefix: &str, routes: Vec<RouteSpec>) -> ServiceSpec {
    ServiceSpec {
        name: "s".into(),
        hosts: vec!["h".into()],
        path_prefix: prefix.into(),
        upstream: Some("u".into()),
        routes,
    }
}

fn r(name: &str, path: &str, kind: PathMatch) -> RouteSpec {
    RouteSpec {
        name: name.into(),
        path: path.into(),
        path_match: kind,
        ..RouteSpec::default()
    }
}

fn cond(name: &str, value: ValueCondition) -> ValueMatch {
    ValueMatch {
        name: name.into(),
        value,
    }
}

fn compile(services: &[ServiceSpec]) -> Router {
    Router::compile(services, |n| {
        ["u", "v1", "v2"]
            .iter()
            .position(|x| *x == n)
            .map(|i| i as u32)
    })
    .unwrap()
}

/// The route name for a request with these headers and query.
fn pick(router: &Router, path: &str, query: &str, headers: &[(&str, &str)]) -> String {
    let headers: Vec<(String, Vec<u8>)> = headers
        .iter()
        .map(|(n, v)| (n.to_string(), v.as_bytes().to_vec()))
        .collect();
    let get = |n: &str| {
        headers
            .iter()
            .find(|(k, _)| k == n)
            .map(|(_, v)| v.as_slice())
    };
    let req = Request {
        host: "h",
        path,
        query,
        method: "GET",
        headers: &get,
    };
    match router.route(&req, &mut router.caches()) {
        RouteMatch::Found(e) => e.route.to_string(),
        other => format!("{other:?}"),
    }
}

#[test]
fn exact_then_regex_then_longest_prefix() {
    let router = compile(&[svc(
        "/",
        vec![
            r("prefix", "/api", PathMatch::Prefix),
            r("regex", "/api/v[0-9]+/.*", PathMatch::Regex),
            r("exact", "/api/v1/health", PathMatch::Exact),
            r("root", "/", PathMatch::Prefix),
        ],
    )]);
    assert_eq!(pick(&router, "/api/v1/health", "", &[]), "exact");
    assert_eq!(pick(&router, "/api/v1/health/x", "", &[]), "regex");
    assert_eq!(pick(&router, "/api/v2/users", "", &[]), "regex");
    assert_eq!(pick(&router, "/api/vx/users", "", &[]), "prefix");
    assert_eq!(pick(&router, "/apiv", "", &[]), "root");
    // Anchored: a regex must match the whole path.
    assert_eq!(pick(&router, "/x/api/v2/users", "", &[]), "root");
}

#[test]
fn regexes_are_relative_to_the_service_prefix() {
    let router = compile(&[svc(
        "/v1.0",
        vec![r("items", "/items/[0-9]+|/things", PathMatch::Regex)],
    )]);
    assert_eq!(pick(&router, "/v1.0/items/7", "", &[]), "items");
    assert_eq!(pick(&router, "/v1.0/things", "", &[]), "items");
    assert_eq!(pick(&router, "/things", "", &[]), "NotFound");
    assert_eq!(
        pick(&router, "/v1x0/items/7", "", &[]),
        "NotFound",
        "the prefix is literal"
    );
}

#[test]
fn header_and_query_conditions_and_their_order() {
    let mut canary = r("canary", "/api", PathMatch::Prefix);
    canary.headers = vec![cond("x-canary", ValueCondition::Exact("true".into()))];
    let mut beta = r("beta", "/api", PathMatch::Prefix);
    beta.headers = vec![
        cond("x-canary", ValueCondition::Present),
        cond("x-user", ValueCondition::Regex("[a-c].*".into())),
    ];
    let mut debug = r("debug", "/api", PathMatch::Prefix);
    debug.query = vec![cond("debug", ValueCondition::Exact("1".into()))];
    // Listed least specific first: the order comes from the conditions, not the list.
    let router = compile(&[svc(
        "/",
        vec![r("api", "/api", PathMatch::Prefix), debug, canary, beta],
    )]);
    assert_eq!(pick(&router, "/api/x", "", &[]), "api");
    assert_eq!(
        pick(&router, "/api/x", "", &[("x-canary", "true")]),
        "canary"
    );
    assert_eq!(pick(&router, "/api/x", "", &[("x-canary", "no")]), "api");
    assert_eq!(
        pick(
            &router,
            "/api/x",
            "",
            &[("x-canary", "true"), ("x-user", "bob")]
        ),
        "beta"
    );
    assert_eq!(
        pick(
            &router,
            "/api/x",
            "",
            &[("x-canary", "1"), ("x-user", "dave")]
        ),
        "api",
        "the regex must match the whole value"
    );
    assert_eq!(pick(&router, "/api/x", "a=2&debug=1", &[]), "debug");
    assert_eq!(pick(&router, "/api/x", "debug=10", &[]), "api");
    // Header conditions rank above query conditions.
    assert_eq!(
        pick(&router, "/api/x", "debug=1", &[("x-canary", "true")]),
        "canary"
    );
}

#[test]
fn a_method_mismatch_after_conditions_match_is_405() {
    let mut post = r("post", "/a", PathMatch::Exact);
    post.methods = MethodSet::try_from_names(["POST"]).unwrap();
    post.headers = vec![cond("x-k", ValueCondition::Present)];
    let router = compile(&[svc("/", vec![post])]);
    assert_eq!(pick(&router, "/a", "", &[]), "NotFound");
    assert!(pick(&router, "/a", "", &[("x-k", "1")]).starts_with("MethodNotAllowed"));
}

#[test]
fn rewrites_replace_the_prefix_or_the_whole_path_and_keep_the_query() {
    let mut pre = r("pre", "/old", PathMatch::Prefix);
    pre.filters.rewrite = Some(Rewrite::Prefix("/new".into()));
    let mut root = r("root", "/gone", PathMatch::Prefix);
    root.filters.rewrite = Some(Rewrite::Prefix("/".into()));
    let mut full = r("full", "/f", PathMatch::Prefix);
    full.filters.rewrite = Some(Rewrite::Full("/index.html".into()));
    let router = compile(&[svc("/", vec![pre, root, full])]);
    let rw = |path: &str, target: &str| match router.lookup("h", path, "GET") {
        RouteMatch::Found(e) => e.rewrite(target).into_owned(),
        other => panic!("{other:?}"),
    };
    assert_eq!(rw("/old/x", "/old/x?q=1"), "/new/x?q=1");
    assert_eq!(rw("/old", "/old"), "/new");
    assert_eq!(rw("/gone/a/b", "/gone/a/b"), "/a/b");
    assert_eq!(rw("/gone", "/gone?z"), "/?z");
    assert_eq!(rw("/f/deep", "/f/deep?x=1"), "/index.html?x=1");
}

#[test]
fn weighted_backends_get_a_smooth_schedule() {
    let mut split = r("split", "/", PathMatch::Prefix);
    split.backends = vec![
        Backend {
            upstream: "v1".into(),
            weight: 90,
        },
        Backend {
            upstream: "v2".into(),
            weight: 10,
        },
    ];
    let router = compile(&[svc("/", vec![split])]);
    let RouteMatch::Found(e) = router.lookup("h", "/", "GET") else {
        panic!()
    };
    assert_eq!(&*e.backends, [1, 2]);
    assert_eq!(e.schedule.len(), 10);
    assert_eq!(e.schedule.iter().filter(|i| **i == 1).count(), 1);
    assert_eq!(e.upstream, 1);
}

#[test]
fn a_bad_regex_is_a_compile_error_naming_the_route() {
    let err = Router::compile(&[svc("/", vec![r("bad", "/a(", PathMatch::Regex)])], |_| {
        Some(0)
    })
    .unwrap_err();
    assert!(matches!(err, CompileError::Regex { route, .. } if route == "bad"));
}
