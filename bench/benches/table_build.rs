//! Question: how long does the discovery thread take to turn discovered state into a
//! snapshot, for a big cluster, and how much memory does that table hold?
//!
//! Inputs: 10,000 Services × 10 ready endpoints each (one EndpointSlice and one Service
//! object per Service, Service port 80 → target 8080), one discovery-backed upstream per
//! Service, as the discovery thread holds them after a first list.
//! - `full_build`: every upstream resolved from the registry state, set into the table
//!   builder, and a snapshot made (what the first sync costs). Target < 50 ms.
//! - `one_service_changed`: one EndpointSlice changes; its upstream is rebuilt and a new
//!   snapshot published, sharing the other 9,999 upstreams. Target < 1 ms.
//! - memory: bytes live after building the table (state + builder + snapshot), counted
//!   by a global allocator wrapper and printed once. Target < 100 MiB.
//!
//! Issue 3, item 8.

use std::alloc::{GlobalAlloc, Layout, System};
use std::hint::black_box;
use std::sync::atomic::{AtomicIsize, Ordering};
use std::time::Instant;

use criterion::{criterion_group, criterion_main, Criterion};
use strait_discovery::convert::{ServicePorts, SliceEntry};
use strait_discovery::spec::*;
use strait_discovery::state::{Kind, Object, RegistryState};
use strait_discovery::{EndpointState, TableBuilder, UpstreamStatus};

/// Counts live heap bytes (benchmark-only; the gateway uses the system allocator as is).
struct Counting;

static LIVE: AtomicIsize = AtomicIsize::new(0);

// SAFETY: delegates every call to the system allocator unchanged; only counts sizes.
#[allow(unsafe_code)]
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        LIVE.fetch_add(layout.size() as isize, Ordering::Relaxed);
        // SAFETY: same contract as the caller's.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        LIVE.fetch_sub(layout.size() as isize, Ordering::Relaxed);
        // SAFETY: same contract as the caller's.
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        LIVE.fetch_add(
            new_size as isize - layout.size() as isize,
            Ordering::Relaxed,
        );
        // SAFETY: same contract as the caller's.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static ALLOC: Counting = Counting;

const SERVICES: usize = 10_000;
const ENDPOINTS: usize = 10;

fn service_name(i: usize) -> String {
    format!("svc-{i:05}")
}

fn slice(i: usize, generation: u8) -> Object {
    let endpoints = (0..ENDPOINTS)
        .map(|e| {
            let ip = std::net::Ipv4Addr::new(10, generation, (i / 256) as u8, (i % 256) as u8);
            let ip = std::net::IpAddr::V4(std::net::Ipv4Addr::from(
                u32::from(ip).wrapping_add((e as u32) << 24),
            ));
            (ip, EndpointState::Ready, Default::default())
        })
        .collect();
    Object::Slice {
        namespace: "prod".into(),
        name: format!("{}-abc", service_name(i)),
        entries: vec![SliceEntry {
            service: service_name(i),
            ports: vec![("http".into(), 8080)],
            endpoints,
        }],
    }
}

fn service(i: usize) -> Object {
    let svc = k8s_openapi::api::core::v1::Service {
        metadata: k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta {
            name: Some(service_name(i)),
            namespace: Some("prod".into()),
            ..Default::default()
        },
        spec: Some(k8s_openapi::api::core::v1::ServiceSpec {
            ports: Some(vec![k8s_openapi::api::core::v1::ServicePort {
                name: Some("http".into()),
                port: 80,
                target_port: Some(
                    k8s_openapi::apimachinery::pkg::util::intstr::IntOrString::Int(8080),
                ),
                ..Default::default()
            }]),
            ..Default::default()
        }),
        ..Default::default()
    };
    Object::Service {
        namespace: "prod".into(),
        name: service_name(i),
        ports: ServicePorts::from_service(&svc),
    }
}

fn spec() -> Spec {
    Spec {
        services: Vec::new(),
        registries: Vec::new(),
        tls_secrets: Vec::new(),
        node: Default::default(),
        upstreams: (0..SERVICES)
            .map(|i| UpstreamSpec {
                name: service_name(i),
                source: UpstreamSource::Discovery(DiscoveryRef {
                    registry: "k".into(),
                    namespace: "prod".into(),
                    service: service_name(i),
                    port: ServicePort::Number(80),
                }),
                settings: UpstreamSettings::default(),
            })
            .collect(),
    }
}

fn state() -> RegistryState {
    let mut s = RegistryState::default();
    for kind in [Kind::Endpoints, Kind::Services] {
        s.init(kind);
    }
    for i in 0..SERVICES {
        s.init_apply(slice(i, 0));
        s.init_apply(service(i));
    }
    s.init_done(Kind::Endpoints);
    s.init_done(Kind::Services);
    s
}

/// Resolves every upstream from the state and makes a snapshot.
fn full_build(state: &RegistryState, builder: &mut TableBuilder) -> usize {
    for i in 0..SERVICES {
        let name = service_name(i);
        let eps = state.endpoints("prod", &name, &ServicePort::Number(80));
        builder.set_discovered(&name, eps, UpstreamStatus::Ready);
    }
    builder.snapshot(Instant::now()).upstreams.len()
}

fn benches(c: &mut Criterion) {
    let before = LIVE.load(Ordering::Relaxed);
    let state = state();
    let mut builder = TableBuilder::try_new(spec()).expect("valid spec");
    let snapshot = {
        full_build(&state, &mut builder);
        builder.snapshot(Instant::now())
    };
    let bytes = LIVE.load(Ordering::Relaxed) - before;
    eprintln!(
        "table_build memory: {SERVICES} services x {ENDPOINTS} endpoints: {:.1} MiB live (state + builder + snapshot v{})",
        bytes as f64 / (1024.0 * 1024.0),
        snapshot.version.0
    );
    assert_eq!(snapshot.upstreams[0].endpoints.len(), ENDPOINTS);
    drop(snapshot);

    let mut group = c.benchmark_group("table_build");
    group.sample_size(20);
    group.bench_function("full_build_10k_services_x_10_endpoints", |b| {
        b.iter(|| black_box(full_build(&state, &mut builder)))
    });
    let mut state = state;
    let mut flip = 0u8;
    group.sample_size(100);
    group.bench_function("one_service_changed_republished", |b| {
        b.iter(|| {
            flip = flip.wrapping_add(1);
            let changed = state.apply(slice(4242, flip));
            let (ns, name) = &changed[0];
            let eps = state.endpoints(ns, name, &ServicePort::Number(80));
            builder.set_discovered(name, eps, UpstreamStatus::Ready);
            black_box(builder.snapshot(Instant::now()))
        })
    });
    group.finish();
}

criterion_group!(table_build, benches);
criterion_main!(table_build);
