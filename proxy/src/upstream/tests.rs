//! Tests of the per-worker upstream state: picks, swaps, passive health, departures.

use std::time::Duration;

use super::*;
use strait_discovery::spec::*;
use strait_discovery::{Endpoint, EndpointState, TableBuilder};

fn snapshot(weights: &[u32]) -> Arc<Snapshot> {
    let nodes = weights
        .iter()
        .enumerate()
        .map(|(i, w)| NodeSpec {
            addr: format!("127.0.0.{}:80", i + 2).parse().unwrap(),
            weight: *w,
        })
        .collect();
    let spec = Spec {
        registries: Vec::new(),
        tls_secrets: Vec::new(),
        node: Default::default(),
        services: vec![],
        upstreams: vec![UpstreamSpec {
            name: "u".into(),
            source: UpstreamSource::Static(nodes),
            settings: UpstreamSettings::default(),
        }],
    };
    TableBuilder::try_new(spec)
        .unwrap()
        .snapshot(Instant::now())
}

#[test]
fn round_robin_skips_tried_endpoints_and_carries_cursors_across_swaps() {
    let table = Table::new(snapshot(&[1, 1, 1]), (0, 1), Default::default());
    let v = table.view();
    let picks: Vec<_> = (0..4)
        .map(|_| {
            v.pick(0, &[], &Health::default(), Instant::now())
                .unwrap()
                .addr
                .to_string()
        })
        .collect();
    assert_eq!(
        picks,
        [
            "127.0.0.2:80",
            "127.0.0.3:80",
            "127.0.0.4:80",
            "127.0.0.2:80"
        ]
    );
    let tried = ["127.0.0.3:80".parse().unwrap()];
    assert_eq!(
        v.pick(0, &tried, &Health::default(), Instant::now())
            .unwrap()
            .addr
            .to_string(),
        "127.0.0.4:80"
    );
    assert_eq!(v.attempts(0), 3);
    let (v2, departed) = table.swap(snapshot(&[1, 1, 1]));
    assert!(departed.is_empty());
    assert_eq!(
        v2.pick(0, &[], &Health::default(), Instant::now())
            .unwrap()
            .addr
            .to_string(),
        "127.0.0.2:80"
    );
}

#[test]
fn endpoints_that_left_rotation_are_reported_once_per_swap() {
    let table = Table::new(snapshot(&[1, 1, 1]), (0, 1), Default::default());
    let (_, departed) = table.swap(snapshot(&[1, 0]));
    let mut departed: Vec<String> = departed.iter().map(|a| a.to_string()).collect();
    departed.sort();
    assert_eq!(departed, ["127.0.0.3:80", "127.0.0.4:80"]);
}

#[test]
fn weights_shape_the_rotation() {
    let table = Table::new(snapshot(&[3, 1]), (0, 1), Default::default());
    let v = table.view();
    let n2 = (0..400)
        .filter(|_| {
            v.pick(0, &[], &Health::default(), Instant::now())
                .unwrap()
                .addr
                .to_string()
                == "127.0.0.2:80"
        })
        .count();
    assert_eq!(n2, 300);
}

fn addr(i: u8) -> EndpointAddr {
    format!("127.0.0.{i}:80").parse().unwrap()
}

#[test]
fn consecutive_connect_failures_eject_for_a_doubling_backoff() {
    let table = Table::new(snapshot(&[1, 1, 1, 1]), (0, 1), Default::default());
    let v = table.view();
    let up = &v.snapshot.upstreams[0];
    let h = Health::default();
    let t0 = Instant::now();
    assert_eq!(h.failure(addr(2), up, t0), Verdict::Kept);
    assert_eq!(h.failure(addr(2), up, t0), Verdict::Kept);
    assert_eq!(
        h.failure(addr(2), up, t0),
        Verdict::Ejected(Duration::from_secs(5))
    );
    let picks: Vec<_> = (0..6)
        .map(|_| v.pick(0, &[], &h, t0).unwrap().addr)
        .collect();
    assert!(
        !picks.contains(&addr(2)),
        "ejected endpoint picked: {picks:?}"
    );
    // Back after the ejection; one more failure ejects it for twice as long.
    let t1 = t0 + Duration::from_secs(5);
    assert!(!h.is_ejected(addr(2), t1));
    assert_eq!(
        h.failure(addr(2), up, t1),
        Verdict::Ejected(Duration::from_secs(10))
    );
    // A success ends the streak and the backoff.
    h.success(addr(2));
    assert_eq!(h.ejected_count(), 0);
    assert_eq!(h.failure(addr(2), up, t1), Verdict::Kept);
}

#[test]
fn ejection_never_takes_the_last_endpoints_and_a_fully_ejected_upstream_still_picks() {
    let table = Table::new(snapshot(&[1, 1]), (0, 1), Default::default());
    let v = table.view();
    let up = &v.snapshot.upstreams[0];
    let h = Health::default();
    let now = Instant::now();
    for _ in 0..3 {
        h.failure(addr(2), up, now);
    }
    assert!(h.is_ejected(addr(2), now));
    for _ in 0..10 {
        assert_eq!(
            h.failure(addr(3), up, now),
            Verdict::Kept,
            "the last one stays"
        );
    }
    // Panic mode: with every candidate ejected or tried, the ejected one is used.
    let tried = [addr(3)];
    assert_eq!(v.pick(0, &tried, &h, now).unwrap().addr, addr(2));
    // Endpoints that leave the table are forgotten.
    h.forget(&[addr(2)]);
    assert_eq!(h.ejected_count(), 0);
}

#[test]
fn a_departure_reaches_every_watcher_of_its_endpoint_and_the_last_one_cleans_up() {
    let d = Departures::default();
    let w1 = d.watch(addr(2));
    let w2 = d.watch(addr(2));
    let other = d.watch(addr(4));
    assert_eq!(d.watched(), 2);
    drop(w2);
    assert_eq!(d.watched(), 2, "w1 still watches 127.0.0.2");
    let now = Instant::now();
    d.depart(&[addr(2), addr(3)], now);
    assert_eq!(d.watched(), 1, "only 127.0.0.4 is left");
    let mut rt = monoio::RuntimeBuilder::<monoio::LegacyDriver>::new()
        .build()
        .unwrap();
    assert_eq!(rt.block_on(w1.departed()), now);
    // Back in the table and watched anew: the old watcher's end leaves the new entry.
    let w3 = d.watch(addr(2));
    drop(w1);
    assert_eq!(d.watched(), 2);
    drop(w3);
    drop(other);
    assert_eq!(d.watched(), 0);
}

#[test]
fn an_endpoint_that_turns_terminating_leaves_rotation_while_others_are_ready() {
    let spec = |states: [EndpointState; 2]| {
        let mut builder = TableBuilder::try_new(Spec {
            registries: Vec::new(),
            tls_secrets: Vec::new(),
            node: Default::default(),
            services: vec![],
            upstreams: vec![UpstreamSpec {
                name: "u".into(),
                source: UpstreamSource::Static(Vec::new()),
                settings: UpstreamSettings::default(),
            }],
        })
        .unwrap();
        let eps = (0..2)
            .map(|i| Endpoint {
                addr: addr(2 + i as u8),
                weight: 1,
                state: states[i],
            })
            .collect();
        builder.set_endpoints("u", eps, strait_discovery::UpstreamStatus::Ready);
        builder.snapshot(Instant::now())
    };
    let table = Table::new(
        spec([EndpointState::Ready, EndpointState::Ready]),
        (0, 1),
        Default::default(),
    );
    let (v, departed) = table.swap(spec([EndpointState::Ready, EndpointState::Terminating]));
    assert_eq!(departed, [addr(3)]);
    assert!(!v.sends_to(addr(3)));
    // With no ready endpoint left, the terminating one takes traffic again.
    let (v, departed) = table.swap(spec([
        EndpointState::NotServing,
        EndpointState::Terminating,
    ]));
    assert_eq!(departed, [addr(2)]);
    assert_eq!(
        v.pick(0, &[], &Health::default(), Instant::now())
            .unwrap()
            .addr,
        addr(3)
    );
}

#[test]
fn applying_a_snapshot_closes_idle_connections_forgets_health_and_departs_watchers_of_what_left() {
    let mut rt = monoio::RuntimeBuilder::<monoio::LegacyDriver>::new()
        .enable_timer()
        .build()
        .unwrap();
    rt.block_on(async {
        // A real connection to pool: the endpoint's address is what the pool keys by.
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let stream = monoio::net::TcpStream::connect_addr(listener.local_addr().unwrap())
            .await
            .unwrap();
        let u = Upstreams::new(snapshot(&[1, 1, 1, 1]), (0, 1), Default::default());
        let gone = addr(3);
        let settings = PoolSettings::default();
        let now = Instant::now();
        u.pool.put(
            UpstreamConn {
                stream: crate::transport::UpstreamStream::Tcp(stream),
                addr: gone,
                tls: 0,
                requests: 0,
                reused: false,
            },
            &settings,
            now,
        );
        let up = u.table.view().snapshot.upstreams[0].clone();
        for _ in 0..3 {
            u.health.failure(gone, &up, now);
        }
        assert_eq!((u.pool.idle_count(), u.health.ejected_count()), (1, 1));
        let watch = u.departures.watch(gone);

        let applied = u.apply(snapshot(&[1, 0, 1, 1]), now);
        assert_eq!(applied.departed, [gone]);
        assert!(
            Rc::ptr_eq(&applied.view, &u.table.view()),
            "new requests use it"
        );
        assert_eq!(
            u.pool.idle_count(),
            0,
            "the idle connection to it is closed"
        );
        assert_eq!(
            u.health.ejected_count(),
            0,
            "its passive health is forgotten"
        );
        assert_eq!(
            watch.departed().await,
            now,
            "its tcp connections start draining"
        );
    });
}
