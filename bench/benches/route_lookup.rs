//! Question: how long does a worker take to route one request (`Router::lookup`: Host →
//! exact map, then `*.suffix` wildcards longest first, then path prefix and method), and
//! how does that grow with the number of services in the config? And on one host with
//! 1,000 routes mixing regex paths and header matches (issue 17)?
//!
//! Inputs: routers compiled with `Router::compile` from 1, 100 and 10,000 services. Service
//! `i` answers for `svc{i}.example.com` under `/v1` with two routes (`/anything` with
//! `strip_prefix`, `/admin` limited to GET); every tenth service (and service 0) also
//! answers for a wildcard `*.w{i}.example.com`, so the routers hold 1, 10 and 1,000
//! wildcards. Lookups: an exact host in the middle of the table (`GET
//! /v1/anything/x`), a host matched by the middle wildcard, and a miss (an unknown host:
//! exact miss plus a scan of every wildcard, then 404). Hosts carry a `:port` as clients
//! send them. Precedent: sozu's router benchmarks (lookup cost against table size).
//!
//! `mixed_1000`: one host, 1,000 routes: 250 regex paths (`/r{i}/[0-9]+/items`), 250
//! prefixes each with a header match (`x-tenant: t{i}`), 250 exact paths, 250 prefixes
//! with a regex header match; lookups of a late regex route, a header-matched prefix, and
//! a miss that runs every regex. Every lookup goes through `Router::route` with one
//! `Caches` made beforehand, as a worker does.

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};
use strait_discovery::route::{Caches, MethodSet, Request, RouteMatch, Router};
use strait_discovery::spec::{PathMatch, RouteSpec, ServiceSpec, ValueCondition, ValueMatch};

fn route(name: &str, path: &str, strip: bool, methods: &[&str]) -> RouteSpec {
    RouteSpec {
        name: name.into(),
        path: path.into(),
        strip_prefix: strip,
        methods: MethodSet::try_from_names(methods.iter().copied()).expect("known methods"),
        ..RouteSpec::default()
    }
}

/// One service on `mixed.example.com` with 1,000 routes of four kinds.
fn mixed() -> Vec<ServiceSpec> {
    let header = |value: ValueCondition| {
        vec![ValueMatch {
            name: "x-tenant".into(),
            value,
        }]
    };
    let routes = (0..1000)
        .map(|i| {
            let name = format!("r{i}");
            match i % 4 {
                0 => RouteSpec {
                    name,
                    path: format!("/r{i}/[0-9]+/items"),
                    path_match: PathMatch::Regex,
                    ..RouteSpec::default()
                },
                1 => RouteSpec {
                    name,
                    path: format!("/h{i}"),
                    headers: header(ValueCondition::Exact(format!("t{i}"))),
                    ..RouteSpec::default()
                },
                2 => RouteSpec {
                    name,
                    path: format!("/e{i}/exact"),
                    path_match: PathMatch::Exact,
                    ..RouteSpec::default()
                },
                _ => RouteSpec {
                    name,
                    path: format!("/x{i}"),
                    headers: header(ValueCondition::Regex(format!("t{i}-[a-z]+"))),
                    ..RouteSpec::default()
                },
            }
        })
        .collect();
    vec![ServiceSpec {
        name: "mixed".into(),
        hosts: vec!["mixed.example.com".into()],
        path_prefix: "/".into(),
        upstream: Some("up".into()),
        routes,
    }]
}

/// Routes one request as a worker does: with its own regex caches.
fn route_with<'r>(
    router: &'r Router,
    caches: &mut Caches,
    host: &str,
    path: &str,
    tenant: Option<&'static [u8]>,
) -> RouteMatch<'r> {
    let headers = move |name: &str| if name == "x-tenant" { tenant } else { None };
    let req = Request {
        host,
        path,
        query: "",
        method: "GET",
        headers: &headers,
    };
    router.route(&req, caches)
}

fn outcome(m: RouteMatch<'_>) -> u32 {
    match m {
        RouteMatch::Found(e) => e.stats,
        RouteMatch::MethodNotAllowed(_) => u32::MAX - 1,
        RouteMatch::NotFound => u32::MAX,
    }
}

fn services(n: usize) -> Vec<ServiceSpec> {
    (0..n)
        .map(|i| {
            let mut hosts = vec![format!("svc{i}.example.com")];
            if i % 10 == 0 {
                hosts.push(format!("*.w{i}.example.com"));
            }
            ServiceSpec {
                name: format!("svc{i}"),
                hosts,
                path_prefix: "/v1".into(),
                upstream: Some("up".into()),
                routes: vec![
                    route("anything", "/anything", true, &[]),
                    route("admin", "/admin", false, &["GET"]),
                ],
            }
        })
        .collect()
}

fn bench(c: &mut Criterion) {
    let mut g = c.benchmark_group("route_lookup");
    for n in [1usize, 100, 10_000] {
        let router = Router::compile(&services(n), |_| Some(0)).expect("router compiles");
        let mid = n / 2;
        let exact = format!("svc{mid}.example.com:8080");
        let wildcard = format!("app.w{}.example.com:8080", mid / 10 * 10);
        let cases = [
            ("exact_host", exact.as_str(), true),
            ("wildcard_host", wildcard.as_str(), true),
            ("miss", "nope.example.org:8080", false),
        ];
        let mut caches = router.caches();
        for (case, host, hit) in cases {
            // Check the case is what it claims before timing it.
            let m = route_with(&router, &mut caches, host, "/v1/anything/x", None);
            assert_eq!(
                matches!(m, RouteMatch::Found(_)),
                hit,
                "{case} at {n} services: {m:?}"
            );
            g.bench_with_input(BenchmarkId::new(case, n), &host, |b, host| {
                b.iter(|| {
                    outcome(route_with(
                        &router,
                        &mut caches,
                        black_box(host),
                        black_box("/v1/anything/x"),
                        None,
                    ))
                })
            });
        }
    }
    let router = Router::compile(&mixed(), |_| Some(0)).expect("router compiles");
    let mut caches = router.caches();
    let host = "mixed.example.com";
    // (case, path, the x-tenant header, the route expected)
    type Case = (
        &'static str,
        &'static str,
        Option<&'static [u8]>,
        Option<&'static str>,
    );
    let cases: [Case; 4] = [
        ("regex_path", "/r996/42/items", None, Some("r996")),
        ("header_exact", "/h501/x", Some(b"t501"), Some("r501")),
        ("header_regex", "/x999/y", Some(b"t999-abc"), Some("r999")),
        ("miss", "/nothing/here", Some(b"t1"), None),
    ];
    for (case, path, tenant, want) in cases {
        let m = route_with(&router, &mut caches, host, path, tenant);
        let got = match m {
            RouteMatch::Found(e) => Some(&*e.route),
            _ => None,
        };
        assert_eq!(got, want, "mixed_1000 {case}");
        g.bench_function(BenchmarkId::new("mixed_1000", case), |b| {
            b.iter(|| {
                outcome(route_with(
                    &router,
                    &mut caches,
                    black_box(host),
                    black_box(path),
                    tenant,
                ))
            })
        });
    }
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
