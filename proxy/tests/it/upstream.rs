//! Upstreams: weighted round-robin, the keep-alive pool, pooled connections the upstream
//! closed, dead endpoints, 502/503/504 with their reasons, endpoint changes, and two
//! workers both accepting.

use std::io::{BufReader, Write};
use std::sync::mpsc;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use strait::worker::DriverKind;

use crate::support::{dead_addr, eventually, get, read_head, FullBacklog, Harness, RawBackend};

const THREE: &str = "
services:
  - name: s
    upstream: a
upstreams:
  - name: a
    nodes:
      - address: '{b0}'
      - address: '{b1}'
      - address: '{b2}'
";

#[test]
fn three_requests_reach_three_backends_in_turn() {
    let h = Harness::start(&["127.0.4.2", "127.0.4.3", "127.0.4.4"], THREE);
    let seen: Vec<String> = (0..6).map(|_| h.get("rr.test", "/").backend()).collect();
    let want: Vec<String> = (0..6).map(|i| h.backend_name(i % 3)).collect();
    assert_eq!(seen, want);
    // Round-robin is per request, not per connection.
    let mut c = h.client();
    let seen: Vec<String> = (0..3)
        .map(|_| c.request(&get("rr.test", "/")).backend())
        .collect();
    assert_eq!(seen, want[..3]);
}

#[test]
fn weights_three_to_one_split_forty_requests_thirty_to_ten() {
    let h = Harness::start(
        &["127.0.4.5", "127.0.4.6"],
        "
services:
  - {name: s, upstream: a}
upstreams:
  - name: a
    nodes:
      - {address: '{b0}', weight: 3}
      - {address: '{b1}', weight: 1}
",
    );
    let mut c = h.client();
    let mut first = 0;
    for _ in 0..40 {
        if c.request(&get("w.test", "/")).backend() == h.backend_name(0) {
            first += 1;
        }
    }
    assert_eq!((first, 40 - first), (30, 10));
    assert_eq!(h.backends[0].requests_served(), 30);
    assert_eq!(h.backends[1].requests_served(), 10);
}

#[test]
fn a_weight_of_zero_takes_a_node_out_of_rotation() {
    let h = Harness::start(
        &["127.0.4.7", "127.0.4.8"],
        "
services:
  - {name: s, upstream: a}
upstreams:
  - name: a
    nodes:
      - {address: '{b0}', weight: 0}
      - {address: '{b1}', weight: 2}
",
    );
    for _ in 0..6 {
        assert_eq!(h.get("z.test", "/").backend(), h.backend_name(1));
    }
    assert_eq!(h.backends[0].requests_served(), 0);
}

const ONE: &str = "
services:
  - {name: s, upstream: a}
upstreams:
  - {name: a, nodes: [{address: '{b0}'}]}
";

#[test]
fn fifty_requests_on_one_client_connection_use_one_upstream_connection() {
    let h = Harness::start(&["127.0.4.9"], ONE);
    let mut c = h.client();
    for i in 0..50 {
        let resp = c.request(&get("ka.test", &format!("/anything/{i}")));
        assert_eq!(resp.status, 200);
    }
    assert_eq!(h.backends[0].requests_served(), 50);
    assert_eq!(h.backends[0].connections_accepted(), 1);
}

#[test]
fn sequential_client_connections_on_one_worker_share_one_upstream_connection() {
    let h = Harness::start(&["127.0.4.10"], ONE);
    for i in 0..20 {
        let mut c = h.client();
        for j in 0..3 {
            let resp = c.request(&get("ka.test", &format!("/anything/{i}/{j}")));
            assert_eq!(resp.status, 200);
        }
    }
    assert_eq!(h.backends[0].requests_served(), 60);
    assert_eq!(h.backends[0].connections_accepted(), 1);
}

#[test]
fn concurrent_clients_are_served_and_the_pool_stays_small() {
    let h = Harness::start(&["127.0.4.11"], ONE);
    let addr = h.addr;
    let threads: Vec<_> = (0..8)
        .map(|t| {
            std::thread::spawn(move || {
                let mut c = crate::support::Client::connect(addr);
                for i in 0..25 {
                    let resp = c.request(&get("cc.test", &format!("/anything/{t}/{i}")));
                    assert_eq!(resp.status, 200);
                    assert_eq!(
                        resp.json()["url"],
                        format!("http://cc.test/anything/{t}/{i}")
                    );
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    assert_eq!(h.backends[0].requests_served(), 200);
    // At most one upstream connection per concurrent client.
    assert!(h.backends[0].connections_accepted() <= 8);
}

#[test]
fn max_requests_per_connection_rotates_upstream_connections() {
    let h = Harness::start(
        &["127.0.4.12"],
        "
services:
  - {name: s, upstream: a}
upstreams:
  - name: a
    nodes: [{address: '{b0}'}]
    keepalive: {max_requests: 3}
",
    );
    let mut c = h.client();
    for _ in 0..9 {
        assert_eq!(c.request(&get("mr.test", "/")).status, 200);
    }
    assert_eq!(h.backends[0].connections_accepted(), 3);
}

#[test]
fn max_idle_zero_disables_the_pool() {
    let h = Harness::start(
        &["127.0.4.13"],
        "
services:
  - {name: s, upstream: a}
upstreams:
  - name: a
    nodes: [{address: '{b0}'}]
    keepalive: {max_idle: 0}
",
    );
    let mut c = h.client();
    for _ in 0..4 {
        assert_eq!(c.request(&get("mi.test", "/")).status, 200);
    }
    assert_eq!(h.backends[0].connections_accepted(), 4);
}

/// Answers every request on a connection with a keep-alive 200 naming the connection, then
/// closes the connection after the first answer when `close_after_first`, and reports on
/// `closed` once the close is done.
fn closing_backend(ip: &str, closed: mpsc::Sender<usize>) -> RawBackend {
    let closed = Mutex::new(closed);
    RawBackend::start(ip, move |stream, n| {
        let mut reader = BufReader::new(stream.try_clone().unwrap());
        let mut stream = stream;
        let Some(head) = read_head(&mut reader) else {
            return;
        };
        // Drain a small Content-Length body, if any.
        if let Some(len) = head.lines().find_map(|l| {
            l.to_ascii_lowercase()
                .strip_prefix("content-length:")
                .map(|v| v.trim().parse::<usize>().unwrap())
        }) {
            let mut body = vec![0u8; len];
            std::io::Read::read_exact(&mut reader, &mut body).unwrap();
        }
        let body = format!("conn {n}");
        let _ = stream.write_all(
            format!(
                "HTTP/1.1 200 OK\r\nConnection: keep-alive\r\nContent-Length: {}\r\n\r\n{body}",
                body.len()
            )
            .as_bytes(),
        );
        drop(reader);
        drop(stream); // closed right after answering with keep-alive
        let _ = closed.lock().unwrap().send(n);
    })
}

#[test]
fn an_upstream_closing_its_idle_pooled_connection_does_not_fail_the_next_request() {
    let (tx, rx) = mpsc::channel();
    let backend = closing_backend("127.0.4.14", tx);
    let h = Harness::with_addrs(ONE, &[backend.addr()]);
    let mut c = h.client();
    for i in 0..6 {
        // Alternate GET and a non-idempotent POST with a body: neither may fail.
        let resp = if i % 2 == 0 {
            c.request(&get("pc.test", "/"))
        } else {
            c.request("POST / HTTP/1.1\r\nHost: pc.test\r\nContent-Length: 4\r\n\r\ndata")
        };
        assert_eq!(resp.status, 200, "request {i}: {}", resp.text());
        assert_eq!(
            resp.text(),
            format!("conn {i}"),
            "a fresh connection each time"
        );
        // Wait until the backend has closed, so the next request meets a pooled
        // connection whose close already arrived.
        assert_eq!(rx.recv_timeout(Duration::from_secs(10)).unwrap(), i);
    }
    assert_eq!(backend.accepted(), 6);
}

#[test]
fn a_pooled_connection_closed_as_the_request_arrives_is_retried_on_a_fresh_one() {
    // Connection 0 answers its first request, then closes without answering the second
    // (the upstream's idle close racing the proxy's reuse). Later connections answer all.
    let backend = RawBackend::start("127.0.4.15", |stream, n| {
        let mut reader = BufReader::new(stream.try_clone().unwrap());
        let mut stream = stream;
        let mut served = 0;
        while read_head(&mut reader).is_some() {
            if n == 0 && served == 1 {
                return; // the request was read, never answered
            }
            let body = format!("conn {n}");
            let _ = stream.write_all(
                format!(
                    "HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n{body}",
                    body.len()
                )
                .as_bytes(),
            );
            served += 1;
        }
    });
    let h = Harness::with_addrs(ONE, &[backend.addr()]);
    let mut c = h.client();
    let resp = c.request(&get("rt.test", "/first"));
    assert_eq!((resp.status, resp.text().as_str()), (200, "conn 0"));
    let resp = c.request(&get("rt.test", "/second"));
    assert_eq!(resp.status, 200, "{}", resp.text());
    assert_eq!(resp.text(), "conn 1");
    assert_eq!(backend.accepted(), 2);
}

#[test]
fn a_dead_endpoint_among_live_ones_is_skipped() {
    let a = crate::support::echo("127.0.4.16");
    let b = crate::support::echo("127.0.4.17");
    let dead = dead_addr("127.0.4.18");
    let h = Harness::with_addrs(THREE, &[dead, a.addr(), b.addr()]);
    let mut c = h.client();
    for i in 0..12 {
        let resp = if i % 3 == 0 {
            c.request("POST /anything HTTP/1.1\r\nHost: d.test\r\nContent-Length: 1\r\n\r\nx")
        } else {
            c.request(&get("d.test", "/anything"))
        };
        assert_eq!(resp.status, 200, "request {i}: {}", resp.text());
    }
    assert_eq!(a.requests_served() + b.requests_served(), 12);
    assert!(a.requests_served() >= 4 && b.requests_served() >= 4);
}

#[test]
fn all_endpoints_dead_is_a_502_naming_the_reason() {
    let dead = [dead_addr("127.0.4.19"), dead_addr("127.0.4.20")];
    let h = Harness::with_addrs(
        "
services:
  - {name: s, upstream: a}
upstreams:
  - {name: a, nodes: [{address: '{b0}'}, {address: '{b1}'}]}
",
        &dead,
    );
    let mut c = h.client();
    for _ in 0..2 {
        let resp = c.request(&get("dead.test", "/"));
        assert_eq!(resp.status, 502);
        assert!(
            resp.text().contains("could not connect"),
            "{:?}",
            resp.text()
        );
        assert!(resp.body.len() < 200);
    }
    // A request with a body that was read whole keeps the connection too.
    let resp = c.request("POST / HTTP/1.1\r\nHost: dead.test\r\nContent-Length: 3\r\n\r\nabc");
    assert_eq!(resp.status, 502);
    assert_eq!(c.request(&get("dead.test", "/")).status, 502);
}

#[test]
fn a_backend_that_never_answers_is_a_504_after_the_response_header_timeout() {
    let backend = RawBackend::start("127.0.4.21", |stream, _| {
        let mut reader = BufReader::new(stream);
        // Read whatever comes until the proxy gives up and closes.
        while read_head(&mut reader).is_some() {}
    });
    let h = Harness::with_addrs(
        "
services:
  - {name: s, upstream: a}
upstreams:
  - name: a
    nodes: [{address: '{b0}'}]
    timeouts: {response_header: 300ms}
",
        &[backend.addr()],
    );
    let mut c = h.client();
    let started = Instant::now();
    let resp = c.request(&get("slow.test", "/"));
    let took = started.elapsed();
    assert_eq!(resp.status, 504);
    assert!(resp.text().contains("response head"), "{:?}", resp.text());
    assert!(took >= Duration::from_millis(300), "{took:?}");
    assert!(took < Duration::from_secs(5), "{took:?}");
}

#[test]
fn a_connect_timeout_is_a_504() {
    let Some(full) = FullBacklog::start("127.0.4.22") else {
        eprintln!("skipped: the accept queue could not be filled, no reliable connect timeout");
        return;
    };
    let h = Harness::with_addrs(
        "
services:
  - {name: s, upstream: a}
upstreams:
  - name: a
    nodes: [{address: '{b0}'}]
    timeouts: {connect: 300ms}
",
        &[full.addr],
    );
    let started = Instant::now();
    let resp = h.get("ct.test", "/");
    let took = started.elapsed();
    assert_eq!(resp.status, 504, "{}", resp.text());
    assert!(resp.text().contains("connecting"), "{:?}", resp.text());
    assert!(took < Duration::from_secs(5), "{took:?}");
}

#[test]
fn a_malformed_response_is_a_502_naming_the_reason() {
    let backend = RawBackend::start("127.0.4.23", |stream, n| {
        let mut reader = BufReader::new(stream.try_clone().unwrap());
        let mut stream = stream;
        if read_head(&mut reader).is_some() {
            let bad: &[u8] = if n % 2 == 0 {
                b"HTTP/1.1 200 OK\r\nContent-Length: nope\r\n\r\n"
            } else {
                b"this is not HTTP\r\n\r\n"
            };
            let _ = stream.write_all(bad);
        }
    });
    let h = Harness::with_addrs(ONE, &[backend.addr()]);
    let mut c = h.client();
    for _ in 0..2 {
        let resp = c.request(&get("bad.test", "/"));
        assert_eq!(resp.status, 502);
        assert!(resp.text().contains("malformed"), "{:?}", resp.text());
    }
}

#[test]
fn an_upstream_closing_before_responding_is_a_502() {
    let backend = RawBackend::start("127.0.4.24", |stream, _| {
        let mut reader = BufReader::new(stream);
        let _ = read_head(&mut reader);
    });
    let h = Harness::with_addrs(ONE, &[backend.addr()]);
    let resp = h.get("cl.test", "/");
    assert_eq!(resp.status, 502);
    assert!(resp.text().contains("closed"), "{:?}", resp.text());
}

#[test]
fn an_upstream_dying_mid_body_closes_the_client_connection() {
    let backend = RawBackend::start("127.0.4.25", |stream, _| {
        let mut reader = BufReader::new(stream.try_clone().unwrap());
        let mut stream = stream;
        if read_head(&mut reader).is_some() {
            let _ = stream.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n0123456789");
        }
    });
    let h = Harness::with_addrs(ONE, &[backend.addr()]);
    let mut c = h.client();
    c.send(get("mid.test", "/").as_bytes());
    let resp = c.read_head();
    assert_eq!(resp.status, 200);
    assert_eq!(resp.header("content-length"), Some("100"));
    // The client sees the bytes that came, then a close: never a hang, never a second
    // response.
    assert_eq!(c.read_to_close(), b"0123456789");
}

#[test]
fn an_upstream_stalling_mid_body_is_cut_after_the_read_timeout() {
    let backend = RawBackend::start("127.0.4.26", |stream, _| {
        let mut reader = BufReader::new(stream.try_clone().unwrap());
        let mut stream = stream;
        if read_head(&mut reader).is_some() {
            let _ = stream.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n01234");
            // Stall (the connection stays open) until the proxy closes it.
            while read_head(&mut reader).is_some() {}
        }
    });
    let h = Harness::with_addrs(
        "
services:
  - {name: s, upstream: a}
upstreams:
  - name: a
    nodes: [{address: '{b0}'}]
    timeouts: {read: 300ms}
",
        &[backend.addr()],
    );
    let mut c = h.client();
    let started = Instant::now();
    c.send(get("stall.test", "/").as_bytes());
    assert_eq!(c.read_head().status, 200);
    assert_eq!(c.read_to_close(), b"01234");
    assert!(started.elapsed() < Duration::from_secs(5));
}

#[test]
fn an_upstream_without_endpoints_is_a_503_naming_the_reason() {
    let mut h = Harness::start(&["127.0.4.27"], ONE);
    assert_eq!(h.get("e.test", "/").status, 200);
    h.set_endpoints("a", &[]);
    let mut c = h.client();
    let resp = eventually("the empty endpoint list", || {
        let resp = c.request(&get("e.test", "/"));
        (resp.status != 200).then_some(resp)
    });
    assert_eq!(resp.status, 503);
    assert!(resp.text().contains("no endpoints"), "{:?}", resp.text());
    // The connection is kept, and endpoints coming back are used.
    let b0 = h.backends[0].addr();
    h.set_endpoints("a", &[b0]);
    eventually("the endpoint back", || {
        (c.request(&get("e.test", "/")).status == 200).then_some(())
    });
}

#[test]
fn set_endpoints_sends_new_requests_to_the_new_backend() {
    let mut h = Harness::start(&["127.0.4.28", "127.0.4.29"], ONE);
    let mut c = h.client();
    assert_eq!(c.request(&get("se.test", "/")).backend(), h.backend_name(0));
    let b1 = h.backends[1].addr();
    h.set_endpoints("a", &[b1]);
    eventually("requests reaching the new backend", || {
        (c.request(&get("se.test", "/")).backend() == h.backend_name(1)).then_some(())
    });
    let before = h.backends[0].requests_served();
    for _ in 0..5 {
        assert_eq!(h.get("se.test", "/").backend(), h.backend_name(1));
    }
    assert_eq!(
        h.backends[0].requests_served(),
        before,
        "the old backend gets nothing"
    );
}

#[test]
fn with_two_workers_both_accept_connections() {
    // Evidence that both workers accepted: requests are made strictly one after another,
    // each on a new client connection, and each worker keeps its own keep-alive pool. A
    // worker reuses its one idle upstream connection for every request it serves, so the
    // backend sees exactly one connection per worker that served. SO_REUSEPORT hashes
    // each new connection (distinct source ports) onto one of the two listening sockets:
    // 64 connections all landing on one worker has probability 2^-63.
    let mut h = Harness::start(
        &["127.0.4.30"],
        "
workers: 2
services:
  - {name: s, upstream: a}
upstreams:
  - {name: a, nodes: [{address: '{b0}'}]}
",
    );
    assert_eq!(h.gateway().workers(), 2);
    let drivers = h.gateway().drivers().to_vec();
    assert_eq!(drivers.len(), 2);
    match std::env::var("STRAIT_TEST_DRIVER").as_deref() {
        Ok("legacy") => assert_eq!(drivers, [DriverKind::Legacy; 2]),
        Ok("io_uring") => assert_eq!(drivers, [DriverKind::IoUring; 2]),
        _ => eprintln!("drivers: {drivers:?}"),
    }
    let mut ports = std::collections::HashSet::new();
    for _ in 0..64 {
        let mut c = h.client();
        ports.insert(c.local_addr().port());
        assert_eq!(c.request(&get("two.test", "/")).status, 200);
    }
    assert_eq!(ports.len(), 64);
    assert_eq!(h.backends[0].requests_served(), 64);
    assert_eq!(
        h.backends[0].connections_accepted(),
        2,
        "one pooled upstream connection per worker that served"
    );
}

#[test]
fn idle_connections_to_a_removed_endpoint_are_closed() {
    // The backend reports when the proxy closes its connection.
    let (closed_tx, closed) = mpsc::channel();
    let closed_tx = Mutex::new(closed_tx);
    let old = RawBackend::start("127.0.4.32", move |stream, n| {
        let mut reader = BufReader::new(stream.try_clone().unwrap());
        let mut stream = stream;
        while read_head(&mut reader).is_some() {
            let _ = stream.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\nold");
        }
        let _ = closed_tx.lock().unwrap().send(n);
    });
    let new = crate::support::echo("127.0.4.33");
    let mut h = Harness::with_addrs(ONE, &[old.addr()]);
    assert_eq!(h.get("rm.test", "/").text(), "old");
    h.set_endpoints("a", &[new.addr()]);
    // The pooled connection to the old endpoint is closed by the proxy, not left open
    // until its idle timeout (30 s by default).
    assert_eq!(closed.recv_timeout(Duration::from_secs(5)).unwrap(), 0);
    assert_eq!(h.get("rm.test", "/").backend(), new.addr().to_string());
}

#[test]
fn retries_zero_gives_up_after_one_failed_connect() {
    let live = crate::support::echo("127.0.4.34");
    let dead = dead_addr("127.0.4.35");
    let h = Harness::with_addrs(
        "
services:
  - {name: s, upstream: a}
upstreams:
  - name: a
    nodes: [{address: '{b0}'}, {address: '{b1}'}]
    retries: 0
",
        &[dead, live.addr()],
    );
    let mut c = h.client();
    let statuses: Vec<u16> = (0..4)
        .map(|_| c.request(&get("r0.test", "/")).status)
        .collect();
    assert_eq!(statuses, [502, 200, 502, 200]);
}

#[test]
fn bodiless_204_and_304_responses_keep_the_upstream_connection() {
    let h = Harness::start(&["127.0.4.36"], ONE);
    let mut c = h.client();
    for code in [204, 304, 204, 304] {
        assert_eq!(
            c.request(&get("nb.test", &format!("/status/{code}")))
                .status,
            code
        );
    }
    assert_eq!(c.request(&get("nb.test", "/")).status, 200);
    // The echo backend keeps its connection open after a 204/304 (which end at the
    // blank line): one upstream connection serves all five.
    assert_eq!(h.backends[0].connections_accepted(), 1);
}
