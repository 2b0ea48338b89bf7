//! Upgrade and tunnels: a WebSocket-like upgrade answered with 101 is tunnelled both
//! ways (bytes sent with the request and the 101 included), half-closes pass through,
//! an idle tunnel is closed after `http.tunnel_idle_timeout`, a graceful stop ends a
//! tunnel at its timeout, a non-101 answer is an ordinary response. CONNECT tunnels are
//! `connect.rs`'s.

use std::io::{BufReader, Write};
use std::net::{Shutdown, TcpStream};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use crate::support::raw::echo_then_bye;
use crate::support::{get, read_head, Harness, RawBackend, SETTLE};

const UPGRADE: &str = "GET /chat HTTP/1.1\r\nHost: ws.test\r\nConnection: keep-alive, Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n";

fn template(http: &str) -> String {
    format!(
        "
{http}
services:
  - {{name: s, upstream: a}}
upstreams:
  - {{name: a, nodes: [{{address: '{{b0}}'}}]}}
"
    )
}

/// A backend that answers an upgrade request with 101 (and `hi` in the same write),
/// then echoes every byte until the proxy half-closes, then writes `bye` and closes.
/// The request head it got goes to `heads`; `closed` learns when its connection ended.
fn websocket_echo(ip: &str) -> (RawBackend, mpsc::Receiver<String>, mpsc::Receiver<()>) {
    let (heads_tx, heads) = mpsc::channel();
    let (closed_tx, closed) = mpsc::channel();
    let heads_tx = std::sync::Mutex::new(heads_tx);
    let closed_tx = std::sync::Mutex::new(closed_tx);
    let backend = RawBackend::start(ip, move |stream, _| {
        let mut reader = BufReader::new(stream.try_clone().unwrap());
        let mut stream = stream;
        let Some(head) = read_head(&mut reader) else {
            return;
        };
        let _ = heads_tx.lock().unwrap().send(head);
        stream
            .write_all(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n\r\nhi")
            .unwrap();
        echo_then_bye(&mut reader, &mut stream, &closed_tx);
    });
    (backend, heads, closed)
}

#[test]
fn a_websocket_upgrade_is_tunnelled_both_ways_after_the_101() {
    let (backend, heads, _closed) = websocket_echo("127.0.12.1");
    let h = Harness::with_addrs(&template(""), &[backend.addr()]);
    let mut c = h.client();
    // Bytes right behind the request head travel with it.
    c.send(format!("{UPGRADE}early").as_bytes());
    let resp = c.read_head();
    assert_eq!(resp.status, 101);
    assert_eq!(resp.header("upgrade"), Some("websocket"));
    assert!(resp.connection_has("upgrade"), "{:?}", resp.headers);
    assert!(resp.header("sec-websocket-accept").is_some());
    // What the backend sent with its 101, then the echo of the early bytes.
    assert_eq!(c.read_exact(7), b"hiearly");
    let head = heads.recv_timeout(SETTLE).unwrap();
    assert!(head.contains("\r\nUpgrade: websocket\r\n"), "{head}");
    assert!(head.contains("\r\nConnection: upgrade\r\n"), "{head}");
    assert!(head.contains("Sec-WebSocket-Key: "), "{head}");

    c.send(b"hello");
    assert_eq!(c.read_exact(5), b"hello");
    // 4 MiB both ways at once: more than any buffer on the way holds.
    let data: Vec<u8> = (0..4 << 20).map(|i: u32| (i % 251) as u8).collect();
    let mut writer = c.writer();
    let sent = data.clone();
    let upload = thread::spawn(move || writer.write_all(&sent).unwrap());
    assert!(c.read_exact(data.len()) == data, "the echo differs");
    upload.join().unwrap();
}

#[test]
fn a_half_close_passes_through_the_tunnel_and_the_other_side_can_still_send() {
    let (backend, _heads, closed) = websocket_echo("127.0.12.2");
    let h = Harness::with_addrs(&template(""), &[backend.addr()]);
    let mut c = h.client();
    c.send(UPGRADE.as_bytes());
    assert_eq!(c.read_head().status, 101);
    c.send(b"ping");
    c.writer().shutdown(Shutdown::Write).unwrap();
    // The backend saw the client's half-close (it says bye only then), and its bytes
    // and its own close still reach the client.
    assert_eq!(c.read_to_close(), b"hipingbye");
    closed
        .recv_timeout(SETTLE)
        .expect("the upstream connection is closed");
}

#[test]
fn an_idle_tunnel_is_closed_after_the_tunnel_idle_timeout() {
    let (backend, _heads, closed) = websocket_echo("127.0.12.3");
    let h = Harness::with_addrs(
        &template("http: {tunnel_idle_timeout: 300ms}"),
        &[backend.addr()],
    );
    let mut c = h.client();
    c.send(UPGRADE.as_bytes());
    assert_eq!(c.read_head().status, 101);
    assert_eq!(c.read_exact(2), b"hi");
    // Traffic keeps it open past the timeout.
    let began = Instant::now();
    // When the last byte came back: the idle time runs from there.
    let mut idle = Instant::now();
    while began.elapsed() < Duration::from_millis(600) {
        thread::park_timeout(Duration::from_millis(50));
        c.send(b"x");
        assert_eq!(c.read_exact(1), b"x");
        idle = Instant::now();
    }
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
fn a_graceful_stop_ends_an_open_tunnel_at_the_shutdown_timeout() {
    let (backend, _heads, closed) = websocket_echo("127.0.12.4");
    let mut h = Harness::with_addrs(
        &template("shutdown: {delay: 0s, timeout: 300ms}"),
        &[backend.addr()],
    );
    let mut c = h.client();
    c.send(UPGRADE.as_bytes());
    assert_eq!(c.read_head().status, 101);
    assert_eq!(c.read_exact(2), b"hi");
    let began = Instant::now();
    h.gateway().begin_shutdown();
    assert!(
        h.gateway_ref().wait_stopped(SETTLE),
        "the workers did not exit"
    );
    let took = began.elapsed();
    assert!(took >= Duration::from_millis(300), "stopped after {took:?}");
    assert_eq!(c.read_to_close(), b"");
    closed
        .recv_timeout(SETTLE)
        .expect("the upstream connection is closed");
}

#[test]
fn an_upgrade_answered_without_101_is_an_ordinary_response_on_a_kept_connection() {
    let h = Harness::start(&["127.0.12.5"], &template(""));
    let mut c = h.client();
    let resp = c.request(&UPGRADE.replace("/chat", "/anything/ws"));
    assert_eq!(resp.status, 200);
    assert!(!resp.connection_has("close"));
    let resp = c.request(&get("ws.test", "/anything/next"));
    assert_eq!(resp.status, 200);
    assert_eq!(resp.json()["url"], "http://ws.test/anything/next");
}

#[test]
fn a_101_to_a_request_that_did_not_ask_to_upgrade_is_a_502() {
    let backend = RawBackend::start("127.0.12.7", |stream, _| {
        let mut reader = BufReader::new(stream.try_clone().unwrap());
        let mut stream: TcpStream = stream;
        if read_head(&mut reader).is_some() {
            let _ = stream.write_all(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: x\r\n\r\n");
        }
    });
    let h = Harness::with_addrs(&template(""), &[backend.addr()]);
    let resp = h.get("ws.test", "/");
    assert_eq!(resp.status, 502);
}
