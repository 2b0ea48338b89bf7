//! Question: how long does a worker take to route one request (`Router::lookup`: Host →
//! exact map, then `*.suffix` wildcards longest first, then path prefix and method), and
//! how does that grow with the number of services in the config?
//!
//! Inputs: routers compiled with `Router::compile` from 1, 100 and 10,000 services. Service
//! `i` answers for `svc{i}.example.com` under `/v1` with two routes (`/anything` with
//! `strip_prefix`, `/admin` limited to GET); every tenth service (and service 0) also
//! answers for a wildcard `*.w{i}.example.com`, so the routers hold 1, 10 and 1,000
//! wildcards. Lookups: an exact host in the middle of the table (`GET
//! /v1/anything/x`), a host matched by the middle wildcard, and a miss (an unknown host:
//! exact miss plus a scan of every wildcard, then 404). Hosts carry a `:port` as clients
//! send them. Precedent: sozu's router benchmarks (lookup cost against table size).

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};
use strait_discovery::route::{MethodSet, RouteMatch, Router};
use strait_discovery::spec::{RouteSpec, ServiceSpec};

fn route(name: &str, path: &str, strip: bool, methods: &[&str]) -> RouteSpec {
    RouteSpec {
        name: name.into(),
        path: path.into(),
        strip_prefix: strip,
        methods: MethodSet::try_from_names(methods.iter().copied()).expect("known methods"),
        upstream: None,
        max_body_bytes: None,
        stream_idle_timeout: None,
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
        for (case, host, hit) in cases {
            // Check the case is what it claims before timing it.
            let m = router.lookup(host, "/v1/anything/x", "GET");
            assert_eq!(
                matches!(m, RouteMatch::Found(_)),
                hit,
                "{case} at {n} services: {m:?}"
            );
            g.bench_with_input(BenchmarkId::new(case, n), &host, |b, host| {
                b.iter(|| {
                    match router.lookup(
                        black_box(host),
                        black_box("/v1/anything/x"),
                        black_box("GET"),
                    ) {
                        RouteMatch::Found(e) => e.upstream,
                        RouteMatch::MethodNotAllowed(_) => 1,
                        RouteMatch::NotFound => 2,
                    }
                })
            });
        }
    }
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
