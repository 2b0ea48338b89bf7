//! CONNECT: refused with 405 and `Allow` unless a route names it, 404 for a host no service
//! answers for; a route that names it tunnels bytes both ways (early bytes and half-closes
//! included) to its own upstream, never to the authority the request names; a dead
//! endpoint is retried on the next; connect failures are 502/504; the access log records
//! the CONNECT and its 200.
//!
//! Runs on: the test threads; the gateway's workers and the TCP backends on their own
//! threads. Addresses 127.0.13.20–29 are this module's (127.0.13.1–10 are the client
//! sources of `process.rs`).

use std::io::Write;
use std::net::{Shutdown, TcpStream};
use std::sync::{mpsc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use crate::draining::{access_log, access_log_block, attempts, log_lines};
use crate::support::raw::echo_then_bye;
use crate::support::{dead_addr, Client, FullBacklog, Harness, RawBackend, SETTLE};

/// `tunnel.test`: a web route and a CONNECT route on one upstream, `{b0}`; any other host
/// goes nowhere.
const TUNNELS: &str = "
services:
  - name: tunnels
    hosts: [tunnel.test]
    upstream: t
    routes:
      - {name: web, path: /, methods: [GET]}
      - {name: tcp, path: /tcp, methods: [connect]}
upstreams:
  - {name: t, nodes: [{address: '{b0}'}]}
";

const ESTABLISHED: &str = "HTTP/1.1 200 Connection Established\r\n\r\n";

fn connect_head(authority: &str) -> String {
    format!("CONNECT {authority} HTTP/1.1\r\nHost: {authority}\r\n\r\n")
}

/// A TCP (not HTTP) backend: echoes every byte until the proxy half-closes, then writes
/// `bye` and half-closes too. `closed` learns when the proxy closed its connection.
fn tcp_echo(ip: &str) -> (RawBackend, mpsc::Receiver<()>) {
    let (closed_tx, closed) = mpsc::channel();
    let closed_tx = Mutex::new(closed_tx);
    let backend = RawBackend::start(ip, move |mut stream: TcpStream, _| {
        let mut to = stream.try_clone().unwrap();
        echo_then_bye(&mut stream, &mut to, &closed_tx);
    });
    (backend, closed)
}

/// Opens a tunnel with `head` (plus `early` bytes in the same write) and checks the 200:
/// no content, so no framing header.
fn open(c: &mut Client, head: &str, early: &[u8]) {
    let mut raw = head.as_bytes().to_vec();
    raw.extend_from_slice(early);
    c.send(&raw);
    let resp = c.read_head();
    assert_eq!(
        (resp.status, resp.reason.as_str()),
        (200, "Connection Established")
    );
    assert!(resp.headers.is_empty(), "{:?}", resp.headers);
}

#[test]
fn connect_gets_405_with_allow_and_a_close_unless_a_route_names_it() {
    let h = Harness::start(
        &["127.0.13.20"],
        "
services:
  - {name: any, upstream: a}
  - name: read
    hosts: [read.test]
    upstream: a
    routes:
      - {name: r, path: /r, methods: [GET, HEAD]}
      - {name: w, path: /w, methods: [POST]}
upstreams:
  - {name: a, nodes: [{address: '{b0}'}]}
",
    );
    // A route for any method does not take CONNECT (it is no forward proxy).
    let mut c = h.client();
    let resp = c.request(&connect_head("example.com:443"));
    assert_eq!(resp.status, 405);
    assert_eq!(
        resp.header("allow"),
        Some("GET, HEAD, POST, PUT, DELETE, PATCH, OPTIONS, TRACE")
    );
    assert!(resp.connection_has("close"));
    assert!(c.closed());
    // The host's routes' methods, whatever their paths; a request pipelined behind the
    // refused CONNECT is not read.
    let mut c = h.client();
    let resp = c.request(&format!(
        "{}GET /r HTTP/1.1\r\nHost: read.test\r\n\r\n",
        connect_head("read.test:443")
    ));
    assert_eq!(resp.status, 405);
    assert_eq!(resp.header("allow"), Some("GET, HEAD, POST"));
    assert!(resp.connection_has("close"));
    assert!(c.closed());
    assert_eq!(h.backends[0].requests_served(), 0);
}

#[test]
fn a_connect_to_a_host_no_service_answers_for_gets_404_and_a_close() {
    let (backend, _closed) = tcp_echo("127.0.13.21");
    let h = Harness::with_addrs(TUNNELS, &[backend.addr()]);
    let mut c = h.client();
    let resp = c.request(&connect_head("elsewhere.test:443"));
    assert_eq!(resp.status, 404);
    assert!(resp.connection_has("close"));
    assert!(c.closed());
    assert_eq!(backend.accepted(), 0);
}

#[test]
fn a_configured_connect_is_tunnelled_both_ways_with_its_early_bytes_and_half_close() {
    let (backend, closed) = tcp_echo("127.0.13.22");
    let h = Harness::with_addrs(TUNNELS, &[backend.addr()]);
    let mut c = h.client();
    // Bytes right behind the head go upstream first, and no HTTP head before them: the
    // echo sends back exactly what reached the backend.
    open(&mut c, &connect_head("tunnel.test:5432"), b"early");
    assert_eq!(c.read_exact(5), b"early");
    c.send(b"hello");
    assert_eq!(c.read_exact(5), b"hello");
    // 2 MiB both ways at once: more than any buffer on the way holds.
    let data: Vec<u8> = (0..2 << 20).map(|i: u32| (i % 251) as u8).collect();
    let mut writer = c.writer();
    let sent = data.clone();
    let upload = thread::spawn(move || writer.write_all(&sent).unwrap());
    assert!(c.read_exact(data.len()) == data, "the echo differs");
    upload.join().unwrap();
    // The client's half-close reaches the backend (it says bye only then), and the
    // backend's bytes and its own close still reach the client.
    c.send(b"ping");
    c.writer().shutdown(Shutdown::Write).unwrap();
    assert_eq!(c.read_to_close(), b"pingbye");
    closed
        .recv_timeout(SETTLE)
        .expect("the upstream connection is closed");
}

#[test]
fn an_http10_connect_without_host_is_tunnelled_and_idles_out() {
    let (backend, closed) = tcp_echo("127.0.13.23");
    let h = Harness::with_addrs(
        &format!("http: {{tunnel_idle_timeout: 300ms}}\n{TUNNELS}"),
        &[backend.addr()],
    );
    let mut c = h.client();
    open(&mut c, "CONNECT tunnel.test:22 HTTP/1.0\r\n\r\n", b"");
    c.send(b"x");
    assert_eq!(c.read_exact(1), b"x");
    let idle = Instant::now();
    assert_eq!(c.read_to_close(), b"", "closed without more bytes");
    let after = idle.elapsed();
    assert!(
        after >= Duration::from_millis(250),
        "closed after {after:?}"
    );
    closed
        .recv_timeout(SETTLE)
        .expect("the upstream connection is closed");
}

#[test]
fn a_connect_goes_to_the_routes_upstream_not_to_the_authority_it_names() {
    let (backend, _closed) = tcp_echo("127.0.13.24");
    // A listener at the very address the CONNECT names: it must see nothing.
    let decoy = RawBackend::start("127.0.13.25", |_, _| {});
    let h = Harness::with_addrs(
        "
services:
  - name: any
    upstream: t
    routes:
      - {name: tcp, path: /, methods: [CONNECT]}
upstreams:
  - {name: t, nodes: [{address: '{b0}'}]}
",
        &[backend.addr()],
    );
    let mut c = h.client();
    open(&mut c, &connect_head(&decoy.addr().to_string()), b"");
    c.send(b"where");
    assert_eq!(c.read_exact(5), b"where");
    assert_eq!(backend.accepted(), 1);
    assert_eq!(decoy.accepted(), 0);
}

#[test]
fn a_connect_meeting_a_dead_endpoint_is_retried_on_the_next_and_logged() {
    let dead = dead_addr("127.0.13.26");
    let (backend, _closed) = tcp_echo("127.0.13.27");
    let path = access_log("connect");
    let h = Harness::with_addrs(
        &format!(
            "{}
services:
  - name: s
    hosts: [t.test]
    upstream: a
    routes:
      - {{name: tcp, path: /, methods: [CONNECT]}}
upstreams:
  - name: a
    nodes: [{{address: '{{b0}}'}}, {{address: '{{b1}}'}}]
    retries: 1
    passive_health: {{consecutive_failures: 0}}
",
            access_log_block(&path)
        ),
        &[dead, backend.addr()],
    );
    // Round-robin over [dead, live]: each CONNECT meets the dead endpoint first (nothing
    // is ejected), and its retry reaches the live one.
    for _ in 0..2 {
        let mut c = h.client();
        open(&mut c, &connect_head("t.test:443"), b"");
        c.send(b"again");
        assert_eq!(c.read_exact(5), b"again");
    }
    // Logged at the 200, while the tunnel is open: the request line, the status, the
    // bytes of the 200, and both attempts (the tunnelled one has no upstream status).
    let lines = log_lines(&path, 2);
    for line in &lines {
        assert!(
            line.contains(&format!(
                "\"CONNECT t.test:443 HTTP/1.1\" 200 {} ",
                ESTABLISHED.len()
            )),
            "{line}"
        );
        assert_eq!(
            attempts(line),
            (
                vec![dead.to_string(), backend.addr().to_string()],
                vec!["502".to_owned(), "-".to_owned()]
            ),
            "{line}"
        );
    }
    let _ = std::fs::remove_file(&path);
}

#[test]
fn a_connect_whose_endpoints_fail_gets_502_or_504_and_a_close() {
    let template = |timeout: &str| {
        format!(
            "
services:
  - name: s
    upstream: a
    routes:
      - {{name: tcp, path: /, methods: [CONNECT]}}
upstreams:
  - name: a
    nodes: [{{address: '{{b0}}'}}]
    timeouts: {{connect: {timeout}}}
"
        )
    };
    let h = Harness::with_addrs(&template("5s"), &[dead_addr("127.0.13.28")]);
    let mut c = h.client();
    let resp = c.request(&format!("{}early", connect_head("t.test:443")));
    assert_eq!(resp.status, 502, "{}", resp.text());
    assert!(resp.connection_has("close"));
    assert!(c.closed());

    let Some(full) = FullBacklog::start("127.0.13.29") else {
        eprintln!("skipped: the accept queue could not be filled, no reliable connect timeout");
        return;
    };
    let h = Harness::with_addrs(&template("300ms"), &[full.addr]);
    let mut c = h.client();
    let started = Instant::now();
    let resp = c.request(&connect_head("t.test:443"));
    assert_eq!(resp.status, 504, "{}", resp.text());
    assert!(resp.connection_has("close"));
    assert!(started.elapsed() < Duration::from_secs(5));
}
