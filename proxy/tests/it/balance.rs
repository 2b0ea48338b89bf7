//! Smarter picks through the data plane with real backends: `least_request` against an
//! endpoint ten times slower (and round-robin for contrast), `consistent_hash` keeping a
//! key on one endpoint across workers, connections and gateway replicas and moving only
//! the keys of an endpoint that leaves, and outlier detection ejecting an endpoint that
//! keeps answering 5xx or timing out.
//!
//! Runs on: the test threads; the gateway in process, backends on threads.

use std::collections::HashMap;
use std::io::{BufReader, Write};
use std::net::SocketAddr;
use std::time::Duration;

use crate::support::raw::{read_head, RawBackend};
use crate::support::{get, metric, Client, Harness};

/// A keep-alive backend answering every request after `delay` with `status` and its
/// `name` as the body.
fn backend(ip: &str, name: &'static str, delay: Duration, status: u16) -> RawBackend {
    RawBackend::start(ip, move |stream, _| {
        let mut reader = BufReader::new(stream.try_clone().unwrap());
        let mut out = stream;
        while read_head(&mut reader).is_some() {
            std::thread::sleep(delay);
            let resp = format!(
                "HTTP/1.1 {status} X\r\nContent-Length: {}\r\n\r\n{name}",
                name.len()
            );
            if out.write_all(resp.as_bytes()).is_err() {
                return;
            }
        }
    })
}

/// Answers per backend name for `clients` keep-alive clients sending `each` requests at
/// once.
fn spread(addr: SocketAddr, clients: usize, each: usize) -> HashMap<String, usize> {
    let threads: Vec<_> = (0..clients)
        .map(|_| {
            std::thread::spawn(move || {
                let mut c = Client::connect(addr);
                (0..each)
                    .map(|_| c.request(&get("a.test", "/")).text())
                    .collect::<Vec<_>>()
            })
        })
        .collect();
    let mut counts = HashMap::new();
    for t in threads {
        for name in t.join().unwrap() {
            *counts.entry(name).or_default() += 1;
        }
    }
    counts
}

fn two_speeds(balance: &str, ips: [&str; 3]) -> (Harness, RawBackend, RawBackend) {
    let fast = backend(ips[0], "fast", Duration::from_millis(2), 200);
    let slow = backend(ips[1], "slow", Duration::from_millis(20), 200);
    let h = Harness::with_addrs(
        &format!(
            "listeners:\n  - {{name: http, address: '{}:0'}}\nservices:\n  - {{name: s, upstream: u}}\nupstreams:\n  - {{name: u, balance: {balance}, nodes: [{{address: '{{b0}}'}}, {{address: '{{b1}}'}}]}}\n",
            ips[2]
        ),
        &[fast.addr(), slow.addr()],
    );
    (h, fast, slow)
}

#[test]
fn least_request_sends_a_small_share_to_an_endpoint_ten_times_slower() {
    let (h, _fast, _slow) = two_speeds("least_request", ["127.0.17.1", "127.0.17.2", "127.0.17.3"]);
    let counts = spread(h.addr, 16, 20);
    let slow = counts.get("slow").copied().unwrap_or(0) as f64 / 320.0;
    assert!(
        slow < 0.25,
        "least_request: slow share {slow:.2} ({counts:?})"
    );

    // Round-robin, the same load: half to each.
    let (h, _fast, _slow) = two_speeds("round_robin", ["127.0.17.4", "127.0.17.5", "127.0.17.6"]);
    let counts = spread(h.addr, 16, 20);
    let rr = counts.get("slow").copied().unwrap_or(0) as f64 / 320.0;
    assert!(rr > 0.4, "round_robin: slow share {rr:.2} ({counts:?})");
    eprintln!("slow endpoint's share: least_request {slow:.2}, round_robin {rr:.2}");
}

const HASHED: &str = "workers: 2\nservices:\n  - {name: s, upstream: u}\nupstreams:\n  - name: u\n    balance: consistent_hash\n    hash: {key: header, name: X-User}\n    nodes: [{address: '{b0}'}, {address: '{b1}'}, {address: '{b2}'}]\n";

/// The backend that answered each user, each on a new connection (so on either worker).
fn owners(addr: SocketAddr, users: usize) -> Vec<String> {
    (0..users)
        .map(|u| {
            let req = format!("GET / HTTP/1.1\r\nHost: a.test\r\nX-User: user-{u}\r\n\r\n");
            let first = Client::connect(addr).request(&req).json()["backend"].to_string();
            let again = Client::connect(addr).request(&req).json()["backend"].to_string();
            assert_eq!(first, again, "user-{u} stays on one endpoint");
            first
        })
        .collect()
}

#[test]
fn consistent_hash_keeps_a_key_on_one_endpoint_everywhere_and_moves_only_a_leavers_keys() {
    let mut h = Harness::start(&["127.0.17.11", "127.0.17.12", "127.0.17.13"], HASHED);
    let before = owners(h.addr, 60);
    let mut used: Vec<&String> = before.iter().collect();
    used.sort();
    used.dedup();
    assert_eq!(used.len(), 3, "keys spread over the three endpoints");

    // Another replica with the same endpoints maps every key the same way.
    let replica = Harness::with_addrs(HASHED, &h.addrs.clone());
    assert_eq!(owners(replica.addr, 60), before, "every replica agrees");

    // Endpoint 2 leaves: its keys move, the others' stay.
    let gone = h.addrs[2].to_string();
    let kept = [h.addrs[0], h.addrs[1]];
    h.set_endpoints("u", &kept);
    let after = owners(h.addr, 60);
    let mut moved = 0;
    for (b, a) in before.iter().zip(&after) {
        if b.contains(&gone) {
            moved += 1;
            assert!(!a.contains(&gone));
        } else {
            assert_eq!(a, b, "a key of a remaining endpoint stays");
        }
    }
    assert!(
        moved > 0 && moved < 35,
        "only the leaver's keys move: {moved} of 60"
    );
}

#[test]
fn outlier_detection_ejects_an_endpoint_that_keeps_answering_5xx_or_timing_out() {
    let bad = backend("127.0.17.21", "bad", Duration::ZERO, 500);
    let good = backend("127.0.17.22", "good", Duration::ZERO, 200);
    let hung = backend("127.0.17.23", "hung", Duration::from_secs(30), 200);
    let h = Harness::with_addrs(
        "listeners:\n  - {name: http, address: '127.0.17.20:0'}\nservices:\n  - {name: s, hosts: [a.test], upstream: u}\n  - {name: t, hosts: [t.test], upstream: t}\nupstreams:\n  - {name: u, outlier: {consecutive_5xx: 3}, nodes: [{address: '{b0}'}, {address: '{b1}'}]}\n  - {name: t, outlier: {consecutive_gateway_errors: 2}, timeouts: {response_header: 200ms}, nodes: [{address: '{b2}'}, {address: '{b1}'}]}\n",
        &[bad.addr(), good.addr(), hung.addr()],
    );
    let admin = h.gateway_ref().admin_addr().unwrap();
    let mut c = Client::connect(h.addr);
    let statuses: Vec<u16> = (0..30)
        .map(|_| c.request(&get("a.test", "/")).status)
        .collect();
    let errors = statuses.iter().filter(|s| **s == 500).count();
    assert_eq!(errors, 3, "three 5xx in a row eject it: {statuses:?}");
    assert!(statuses[10..].iter().all(|s| *s == 200));
    assert_eq!(
        metric(
            admin,
            "strait_upstream_outlier_ejections_total{upstream=\"u\",reason=\"5xx\"}"
        ),
        1
    );

    // Timeouts (504: a request sent may have been processed, so it is not retried);
    // after two in a row the hung endpoint is out and requests stop waiting for it.
    let statuses: Vec<u16> = (0..12)
        .map(|_| Client::connect(h.addr).request(&get("t.test", "/")).status)
        .collect();
    assert_eq!(
        statuses.iter().filter(|s| **s == 504).count(),
        2,
        "{statuses:?}"
    );
    assert!(statuses[4..].iter().all(|s| *s == 200), "{statuses:?}");
    assert_eq!(
        metric(
            admin,
            "strait_upstream_outlier_ejections_total{upstream=\"t\",reason=\"gateway\"}"
        ),
        1
    );
    assert!(
        hung.accepted() <= 2,
        "the hung endpoint took {} connections",
        hung.accepted()
    );
}
