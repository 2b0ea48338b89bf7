//! Question: what does choosing an upstream endpoint cost a worker per request (weighted
//! round-robin over the snapshot's precomputed schedule, advancing the worker's own `Cell`
//! cursor, no atomics, no `tried` list on the first attempt)?
//!
//! Inputs: one static upstream of 3 and of 100 endpoints (127.0.0.x addresses), with
//! equal weights (all 1) and unequal weights (endpoint `i` weighs `1 + i % 5`, so 1..5).
//! Snapshots are built with `TableBuilder::try_new(spec)?.snapshot(now)`; each iteration
//! is `Table::new(snapshot, (0, 1)).view().pick(0, &[], &health, now)` (no endpoint ejected), with the view taken once (as a
//! request holds it) and the cursor carried across iterations. A second case passes a
//! one-address `tried` list, as a retry after a failed connect does. `by_algorithm` picks
//! with each `balance` (equal weights; `consistent_hash` with a fresh key hash per
//! iteration, `least_request` with no request in flight).
//! Precedent: pingora-load-balancing's `benches` (selection cost per algorithm and size).

use std::hint::black_box;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};
use strait::upstream::{Health, Table};
use strait_discovery::spec::{
    Balance, HashKey, NodeSpec, Spec, UpstreamSettings, UpstreamSource, UpstreamSpec,
};
use strait_discovery::{EndpointAddr, Snapshot, TableBuilder};

fn addr(i: usize) -> EndpointAddr {
    SocketAddr::from(([127, 0, (i / 250) as u8, (i % 250 + 2) as u8], 8080)).into()
}

fn snapshot(n: usize, weight: impl Fn(usize) -> u32) -> Arc<Snapshot> {
    snapshot_with(n, weight, Balance::RoundRobin)
}

fn snapshot_with(n: usize, weight: impl Fn(usize) -> u32, balance: Balance) -> Arc<Snapshot> {
    let nodes = (0..n)
        .map(|i| NodeSpec {
            addr: addr(i),
            weight: weight(i),
        })
        .collect();
    let spec = Spec {
        registries: Vec::new(),
        tls_secrets: Vec::new(),
        node: Default::default(),
        services: vec![],
        upstreams: vec![UpstreamSpec {
            name: "up".into(),
            source: UpstreamSource::Static(nodes),
            settings: UpstreamSettings {
                balance,
                ..UpstreamSettings::default()
            },
        }],
    };
    TableBuilder::try_new(spec)
        .expect("spec builds")
        .snapshot(Instant::now())
}

fn bench(c: &mut Criterion) {
    let mut g = c.benchmark_group("balance_pick");
    for n in [3usize, 100] {
        for (weights, snap) in [
            ("equal", snapshot(n, |_| 1)),
            ("unequal", snapshot(n, |i| 1 + (i % 5) as u32)),
        ] {
            let table = Table::new(snap, (0, 1), Default::default());
            let view = table.view();
            let health = Health::default();
            let now = Instant::now();
            assert!(view.pick(0, &[], &health, now).is_some());
            g.bench_function(BenchmarkId::new(format!("{weights}_weights"), n), |b| {
                b.iter(|| view.pick(black_box(0), black_box(&[]), &health, now))
            });
            let tried = [addr(0)];
            g.bench_function(
                BenchmarkId::new(format!("{weights}_weights_retry"), n),
                |b| b.iter(|| view.pick(black_box(0), black_box(&tried), &health, now)),
            );
        }
    }
    g.finish();
    let mut g = c.benchmark_group("balance_pick/by_algorithm");
    for n in [3usize, 100] {
        for (name, balance) in [
            ("round_robin", Balance::RoundRobin),
            ("random", Balance::Random),
            ("least_request", Balance::LeastRequest),
            ("consistent_hash", Balance::ConsistentHash(HashKey::Path)),
        ] {
            let table = Table::new(snapshot_with(n, |_| 1, balance), (0, 1), Default::default());
            let view = table.view();
            let health = Health::new(1);
            let now = Instant::now();
            let mut key = 0u64;
            g.bench_function(BenchmarkId::new(name, n), |b| {
                b.iter(|| {
                    key = key.wrapping_add(0x9e37_79b9_7f4a_7c15);
                    view.pick_for(black_box(0), black_box(&[]), &health, now, Some(key))
                })
            });
        }
    }
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
