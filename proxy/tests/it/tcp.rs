//! `protocol: tcp` listeners: large transfers both ways compared by checksum, half-closes
//! in each direction, many concurrent connections spread round-robin, connect failures
//! (refused, timed out) retried on the next endpoint, endpoints leaving during a transfer
//! (the transfer completes; `drain_timeout` cuts what is left), the idle timeout and the
//! bound on a blocked write, the graceful stop, and a discovery-backed upstream that no
//! HTTP service refers to.
//!
//! Runs on: the test threads; the gateway's workers and the backends on their own
//! threads. Addresses 127.0.9.x are this module's.

use std::io::{Read, Write};
use std::net::Shutdown;
use std::sync::mpsc::{self, Receiver};
use std::sync::{Arc, Barrier, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use strait_fake_apiserver::{FakeApiServer, Options};

use crate::support::kube::{service, slice};
use crate::support::tcp::{echo, echo_at, pattern, sink, source, Conn, Sum};
use crate::support::{
    dead_addr, eventually, wait_refused, FullBacklog, Harness, RawBackend, SETTLE,
};

/// A `tcp` listener named `tcp` in front of upstream `db` over `nodes` (YAML flow list
/// items, e.g. `{address: '{b0}'}`); `listener` and `upstream` add keys to each.
fn template(nodes: &str, listener: &str, upstream: &str) -> String {
    format!(
        "
listeners:
  - {{name: tcp, address: '127.0.0.1:0', protocol: tcp, upstream: db{listener}}}
upstreams:
  - name: db
    nodes: [{nodes}]
{upstream}"
    )
}

/// Echo backends A on `ips[0]` and B on `ips[1]` (with what each connection read), and a
/// gateway of `workers` in front of both, A first; `listener` adds keys to the listener.
fn pair(ips: [&str; 2], workers: usize, listener: &str) -> (Harness, [Backend; 2]) {
    let backends = ips.map(echo);
    let addrs: Vec<_> = backends.iter().map(|(b, _)| b.addr()).collect();
    let yaml = format!(
        "workers: {workers}\n{}",
        template("{address: '{b0}'}, {address: '{b1}'}", listener, "")
    );
    (Harness::with_addrs(&yaml, &addrs), backends)
}

/// A backend and the checksums of what its connections read.
type Backend = (RawBackend, Receiver<Sum>);

#[test]
fn a_large_transfer_both_ways_arrives_intact() {
    let (backend, seen) = echo("127.0.9.1");
    let h = Harness::with_addrs(&template("{address: '{b0}'}", "", ""), &[backend.addr()]);
    let mut c = Conn::open(h.addr);
    assert_eq!(c.backend, backend.addr());
    // 64 MiB up while the same 64 MiB comes back down: more than every buffer on the way.
    let data = pattern(1, 64 << 20);
    let sent = Sum::of(&data);
    let mut writer = c.stream.try_clone().unwrap();
    let upload = thread::spawn(move || {
        writer.write_all(&data).unwrap();
        writer.shutdown(Shutdown::Write).unwrap();
    });
    let received = Sum::read_to_end(&mut c.reader).unwrap();
    upload.join().unwrap();
    assert_eq!(received, sent, "what came back differs from what was sent");
    let seen = seen
        .recv_timeout(SETTLE)
        .expect("the backend connection ends");
    assert_eq!(
        seen, sent,
        "what the backend got differs from what was sent"
    );
}

#[test]
fn a_client_half_close_reaches_the_backend_and_its_answer_still_comes_back() {
    let (backend, seen) = sink("127.0.9.2");
    let h = Harness::with_addrs(&template("{address: '{b0}'}", "", ""), &[backend.addr()]);
    let mut c = Conn::open(h.addr);
    let data = pattern(2, 8 << 20);
    c.stream.write_all(&data).unwrap();
    c.stream.shutdown(Shutdown::Write).unwrap();
    // The sink answers only once it saw the end of the upload.
    let mut answer = String::new();
    c.reader.read_to_string(&mut answer).unwrap();
    let sum = Sum::of(&data);
    assert_eq!(answer, format!("{:x} {}\n", sum.hash, sum.len));
    assert_eq!(seen.recv_timeout(SETTLE).unwrap(), sum);
}

#[test]
fn a_backend_half_close_reaches_the_client_which_can_still_send() {
    let (backend, seen) = source("127.0.9.3", 3, 8 << 20);
    let h = Harness::with_addrs(&template("{address: '{b0}'}", "", ""), &[backend.addr()]);
    let mut c = Conn::open(h.addr);
    // The download ends with the backend's half-close...
    let got = Sum::read_to_end(&mut c.reader).unwrap();
    assert_eq!(got, Sum::of(&pattern(3, 8 << 20)));
    // ...and the upload still flows after it.
    let late = pattern(4, 1 << 20);
    c.stream.write_all(&late).unwrap();
    c.stream.shutdown(Shutdown::Write).unwrap();
    let seen = seen
        .recv_timeout(SETTLE)
        .expect("the backend got the client's bytes");
    assert_eq!(seen, Sum::of(&late));
    assert!(c.closed(), "the proxy closes once both sides closed");
}

#[test]
fn many_concurrent_connections_are_spread_round_robin_over_the_endpoints() {
    const CONNECTIONS: usize = 128;
    let (h, [(a, a_seen), (b, b_seen)]) = pair(["127.0.9.4", "127.0.9.5"], 2, "");
    let all_open = Arc::new(Barrier::new(CONNECTIONS));
    let addr = h.addr;
    let clients: Vec<_> = (0..CONNECTIONS)
        .map(|i| {
            let all_open = all_open.clone();
            thread::spawn(move || {
                let mut c = Conn::open(addr);
                // Every connection is open at once before any sends.
                all_open.wait();
                let data = pattern(100 + i as u64, 256 << 10);
                for chunk in data.chunks(16 << 10) {
                    c.echo(chunk);
                }
                c.stream.shutdown(Shutdown::Write).unwrap();
                assert!(
                    c.closed(),
                    "connection {i}: the backend's close comes through"
                );
                c.backend
            })
        })
        .collect();
    let mut to_a = 0;
    for t in clients {
        let backend = t.join().unwrap();
        if backend == a.addr() {
            to_a += 1;
        } else {
            assert_eq!(backend, b.addr());
        }
    }
    let to_b = CONNECTIONS - to_a;
    // Each worker alternates between the two: at most one apart per worker.
    assert!(to_a.abs_diff(to_b) <= 2, "{to_a} to A, {to_b} to B");
    assert_eq!((a.accepted(), b.accepted()), (to_a, to_b));
    // Each backend connection saw its client's whole upload.
    for (seen, n) in [(a_seen, to_a), (b_seen, to_b)] {
        for _ in 0..n {
            let s = seen
                .recv_timeout(SETTLE)
                .expect("every backend connection ends");
            assert_eq!(s.len, 256 << 10);
        }
    }
}

#[test]
fn a_refused_connect_is_retried_on_the_next_endpoint() {
    let dead = dead_addr("127.0.9.6");
    let (live, _seen) = echo("127.0.9.7");
    // One worker: its round-robin starts on the first node, the dead one.
    let h = Harness::with_addrs(
        &template("{address: '{b0}'}, {address: '{b1}'}", "", ""),
        &[dead, live.addr()],
    );
    for i in 0..10 {
        let mut c = Conn::open(h.addr);
        assert_eq!(c.backend, live.addr(), "connection {i}");
        c.echo(b"ping");
    }
    assert_eq!(live.accepted(), 10);
}

#[test]
fn a_connect_timeout_is_retried_on_the_next_endpoint() {
    let Some(stuck) = FullBacklog::start("127.0.9.8") else {
        eprintln!("skipped: could not fill an accept queue to make connects time out");
        return;
    };
    let (live, _seen) = echo("127.0.9.9");
    let h = Harness::with_addrs(
        &template(
            "{address: '{b0}'}, {address: '{b1}'}",
            "",
            "    timeouts: {connect: 200ms}\n",
        ),
        &[stuck.addr, live.addr()],
    );
    let began = Instant::now();
    let mut c = Conn::open(h.addr);
    let took = began.elapsed();
    assert_eq!(c.backend, live.addr());
    assert!(
        took >= Duration::from_millis(190),
        "connected after {took:?}"
    );
    c.echo(b"ping");
}

#[test]
fn a_connection_no_endpoint_takes_is_closed_without_a_byte() {
    let dead = dead_addr("127.0.9.10");
    let h = Harness::with_addrs(&template("{address: '{b0}'}", "", ""), &[dead]);
    let err = Conn::try_open(h.addr).err().expect("no backend greets");
    assert!(
        matches!(
            err.kind(),
            std::io::ErrorKind::UnexpectedEof | std::io::ErrorKind::ConnectionReset
        ),
        "{err}"
    );
}

#[test]
fn an_endpoint_removed_during_a_transfer_gets_no_new_connection_and_the_transfer_completes() {
    let (a, a_seen) = echo("127.0.9.11");
    let (b, _b_seen) = echo("127.0.9.12");
    let mut h = Harness::with_addrs(
        &template("{address: '{b0}'}", "", ""),
        &[a.addr(), b.addr()],
    );
    let mut c = Conn::open(h.addr);
    assert_eq!(c.backend, a.addr());
    let data = pattern(5, 16 << 20);
    let (first, second) = data.split_at(data.len() / 2);
    let mut writer = c.stream.try_clone().unwrap();
    let first = first.to_vec();
    let upload = thread::spawn(move || writer.write_all(&first).map(|()| writer));
    let mut received = vec![0u8; data.len() / 2];
    c.reader.read_exact(&mut received).unwrap();
    let mut writer = upload.join().unwrap().unwrap();

    h.set_endpoints("db", &[b.addr()]);
    // From here on every worker sends new connections to B only.
    for i in 0..5 {
        assert_eq!(Conn::open(h.addr).backend, b.addr(), "connection {i}");
    }
    assert_eq!(a.accepted(), 1);
    // The transfer to A goes on to its end (drain_timeout is 5m by default).
    let rest = second.to_vec();
    let upload = thread::spawn(move || {
        writer.write_all(&rest).unwrap();
        writer.shutdown(Shutdown::Write).unwrap();
    });
    c.reader.read_to_end(&mut received).unwrap();
    upload.join().unwrap();
    assert_eq!(Sum::of(&received), Sum::of(&data));
    assert_eq!(a_seen.recv_timeout(SETTLE).unwrap(), Sum::of(&data));
}

#[test]
fn a_connection_to_a_removed_endpoint_is_closed_once_the_drain_timeout_passed() {
    let (mut h, [(a, a_seen), (b, _)]) =
        pair(["127.0.9.13", "127.0.9.14"], 1, ", drain_timeout: 400ms");
    let mut to_a = Conn::open(h.addr);
    let mut to_b = Conn::open(h.addr);
    assert_eq!((to_a.backend, to_b.backend), (a.addr(), b.addr()));

    h.set_endpoints("db", &[b.addr()]);
    let left = Instant::now();
    // Within the drain timeout the connection still works.
    to_a.echo(b"still here");
    assert!(to_a.closed(), "the connection to A is closed");
    let after = left.elapsed();
    assert!(
        after >= Duration::from_millis(350),
        "closed after {after:?}"
    );
    assert_eq!(a_seen.recv_timeout(SETTLE).unwrap(), Sum::of(b"still here"));
    // The connection to B, whose endpoint stayed, is untouched.
    to_b.echo(b"fine");
}

#[test]
fn an_endpoint_back_before_its_drain_timeout_keeps_its_connections() {
    let (mut h, [(a, _), (b, _)]) = pair(["127.0.9.15", "127.0.9.16"], 1, ", drain_timeout: 400ms");
    let mut c = Conn::open(h.addr);
    assert_eq!(c.backend, a.addr());
    h.set_endpoints("db", &[b.addr()]);
    h.set_endpoints("db", &[a.addr(), b.addr()]);
    let back = Instant::now();
    // Past the drain timeout of the first departure, the connection still echoes.
    while back.elapsed() < Duration::from_millis(800) {
        c.echo(b"x");
        thread::park_timeout(Duration::from_millis(50));
    }
}

#[test]
fn an_idle_connection_is_closed_after_the_idle_timeout() {
    let (backend, seen) = echo("127.0.9.17");
    let h = Harness::with_addrs(
        &template("{address: '{b0}'}", ", idle_timeout: 300ms", ""),
        &[backend.addr()],
    );
    let mut c = Conn::open(h.addr);
    // Traffic keeps it open past the timeout.
    let began = Instant::now();
    let idle = loop {
        c.echo(b"x");
        let last = Instant::now();
        if began.elapsed() >= Duration::from_millis(600) {
            break last;
        }
        thread::park_timeout(Duration::from_millis(50));
    };
    assert!(c.closed(), "the idle connection is closed");
    let after = idle.elapsed();
    assert!(
        after >= Duration::from_millis(250),
        "closed after {after:?}"
    );
    seen.recv_timeout(SETTLE)
        .expect("the backend connection is closed");
}

#[test]
fn a_write_blocked_for_the_idle_timeout_ends_the_connection_while_the_other_way_flows() {
    // The backend pushes data the client never reads, and reads what the client sends.
    let (ended_tx, ended) = mpsc::channel();
    let ended_tx = Mutex::new(ended_tx);
    let backend = RawBackend::start("127.0.9.22", move |mut stream, _| {
        let mut reader = stream.try_clone().unwrap();
        let uploads = thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while let Ok(1..) = reader.read(&mut buf) {}
        });
        let chunk = pattern(7, 64 << 10);
        while stream.write_all(&chunk).is_ok() {}
        uploads.join().unwrap();
        let _ = ended_tx.lock().unwrap().send(Instant::now());
    });
    let h = Harness::with_addrs(
        &template("{address: '{b0}'}", ", idle_timeout: 300ms", ""),
        &[backend.addr()],
    );
    let mut client = std::net::TcpStream::connect(h.addr).unwrap();
    let began = Instant::now();
    // A byte every 50 ms: the connection is never idle, only its download is stuck.
    let ended = loop {
        if let Ok(at) = ended.try_recv() {
            break at;
        }
        assert!(began.elapsed() < SETTLE, "the connection was not closed");
        let _ = client.write_all(b"x");
        thread::park_timeout(Duration::from_millis(50));
    };
    let after = ended - began;
    assert!(
        after >= Duration::from_millis(300),
        "closed after {after:?}"
    );
}

#[test]
fn a_graceful_stop_stops_accepting_and_ends_open_tcp_connections_at_the_timeout() {
    let (backend, seen) = echo("127.0.9.18");
    let mut h = Harness::with_addrs(
        &template(
            "{address: '{b0}'}",
            "",
            "shutdown: {delay: 0s, timeout: 500ms}\n",
        ),
        &[backend.addr()],
    );
    let mut c = Conn::open(h.addr);
    let began = Instant::now();
    h.gateway().begin_shutdown();
    wait_refused(h.addr);
    // Open connections go on until the timeout.
    c.echo(b"draining");
    assert!(
        h.gateway_ref().wait_stopped(SETTLE),
        "the workers did not exit"
    );
    let took = began.elapsed();
    assert!(took >= Duration::from_millis(500), "stopped after {took:?}");
    assert!(c.closed());
    seen.recv_timeout(SETTLE)
        .expect("the backend connection is closed");
}

#[test]
fn a_reload_that_drops_a_tcp_listeners_upstream_is_refused() {
    let (backend, _seen) = echo("127.0.9.19");
    let mut h = Harness::with_addrs(&template("{address: '{b0}'}", "", ""), &[backend.addr()]);
    let yaml = "listeners: [{name: http, address: '127.0.0.1:0'}]\n\
                upstreams: [{name: other, nodes: [{address: '127.0.9.19:1'}]}]\n\
                services: [{name: s, upstream: other}]\n";
    let err = h
        .gateway()
        .reload(strait::config::Config::from_yaml(yaml).unwrap())
        .expect_err("the reload is refused");
    assert!(err.to_string().contains("upstream \"db\""), "{err}");
    Conn::open(h.addr).echo(b"still routed");
}

/// Pods `ips` greeting and echoing on one port (a Service's target port), and that port.
fn pods(ips: &[&str]) -> (Vec<RawBackend>, u16) {
    let (first, _) = echo(ips[0]);
    let port = first.addr().port();
    let mut all = vec![first];
    for ip in &ips[1..] {
        all.push(echo_at(format!("{ip}:{port}").parse().unwrap()).0);
    }
    (all, port)
}

#[test]
fn a_discovery_backed_upstream_used_only_by_a_tcp_listener_follows_its_endpoint_slice() {
    let api = FakeApiServer::start(Options::default());
    let (pods, port) = pods(&["127.0.9.20", "127.0.9.21"]);
    api.apply_yaml(&service(port));
    api.apply_yaml(&slice(port, &[("127.0.9.20", true, true, false)]));
    // No service refers to the upstream: only the tcp listener does.
    let h = Harness::with_addrs(
        &format!(
            "workers: 2
registries:
  - {{name: k, server: '{url}', token: {token}}}
listeners:
  - {{name: tcp, address: '127.0.0.1:0', protocol: tcp, upstream: db}}
upstreams:
  - name: db
    discovery: {{registry: k, namespace: apisix, service: httpbin, port: 80}}
",
            url = api.url(),
            token = api.token(),
        ),
        &[],
    );
    // Until discovery synced, the upstream has no endpoint and connections are closed.
    let mut old = eventually("a connection to reach the pod", || {
        Conn::try_open(h.addr).ok()
    });
    assert_eq!(old.backend, pods[0].addr());

    // A rolling update: the second pod in, the first out.
    api.apply_yaml(&slice(
        port,
        &[
            ("127.0.9.20", false, false, true),
            ("127.0.9.21", true, true, false),
        ],
    ));
    // Until each worker swapped in the new table, a connection may still meet one that
    // closes it (no endpoint yet): retried like any other miss.
    eventually("new connections to go to the new pod", || {
        Conn::try_open(h.addr)
            .ok()
            .filter(|c| c.backend == pods[1].addr())
            .map(|_| ())
    });
    let status = h.gateway_ref().status();
    assert!(
        status.wait_applied(status.version(), SETTLE),
        "every worker swaps in the table"
    );
    let to_old = pods[0].accepted();
    for i in 0..10 {
        assert_eq!(Conn::open(h.addr).backend, pods[1].addr(), "connection {i}");
    }
    assert_eq!(
        pods[0].accepted(),
        to_old,
        "no new connection to the old pod"
    );
    // The connection to the old pod goes on (drain_timeout is 5m by default).
    let data = pattern(6, 4 << 20);
    let mut writer = old.stream.try_clone().unwrap();
    let sent = data.clone();
    let upload = thread::spawn(move || writer.write_all(&sent).unwrap());
    let mut back = vec![0u8; data.len()];
    old.reader.read_exact(&mut back).unwrap();
    upload.join().unwrap();
    assert_eq!(Sum::of(&back), Sum::of(&data));
}
