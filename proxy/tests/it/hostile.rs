//! Hostile and malformed input at the edge: a table of requests, each with the status
//! the gateway must answer and whether the connection survives, sent whole and then one
//! byte per write; a slow or garbage-sending client must not hold up another client on
//! the same worker; malformed upstream responses become 502 and their upstream
//! connection is not reused.

use std::io::{BufReader, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use crate::support::{get, read_head, Client, Harness, RawBackend};

/// Small limits so that the table stays small: a 256-byte request line, a 1 KiB head,
/// 10 header fields, a 64-byte body.
const LIMITS: &str = "
http:
  max_request_line_bytes: 256
  max_request_head_bytes: 1024
  max_headers: 10
  max_request_body_bytes: 64
services:
  - name: any
    upstream: a
upstreams:
  - {name: a, nodes: [{address: '{b0}'}]}
";

/// What happens to the client connection after the response.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Fate {
    /// Another request on it is answered.
    Kept,
    /// The gateway closes it.
    Closed,
}
use Fate::{Closed, Kept};

/// One row: a name, the raw bytes, the status and the connection's fate.
type Case = (&'static str, Vec<u8>, u16, Fate);

fn case(name: &'static str, raw: &str, status: u16, fate: Fate) -> Case {
    (name, raw.as_bytes().to_vec(), status, fate)
}

fn bytes_case(name: &'static str, raw: &[u8], status: u16, fate: Fate) -> Case {
    (name, raw.to_vec(), status, fate)
}

const H: &str = "Host: h.test\r\n";

fn table() -> Vec<Case> {
    let long_target = format!("/{}", "a".repeat(250));
    let many_headers: String = (0..11).map(|i| format!("X-H{i}: v\r\n")).collect();
    let big_header = format!("X-Big: {}\r\n", "b".repeat(1000));
    vec![
        // Well-formed edges: answered and kept.
        case("plain GET", &format!("GET /anything HTTP/1.1\r\n{H}\r\n"), 200, Kept),
        case("empty lines before the request line", &format!("\r\n\r\nGET /anything HTTP/1.1\r\n{H}\r\n"), 200, Kept),
        case("identical Content-Length repeated", &format!("POST /anything HTTP/1.1\r\n{H}Content-Length: 5\r\nContent-Length: 5\r\n\r\nhello"), 200, Kept),
        case("chunked body with an extension and a trailer", &format!("POST /anything HTTP/1.1\r\n{H}Transfer-Encoding: chunked\r\n\r\n5;a=b\r\nhello\r\n0\r\nX-T: 1\r\n\r\n"), 200, Kept),
        case("Content-Length exactly at the body limit", &format!("POST /anything HTTP/1.1\r\n{H}Content-Length: 64\r\n\r\n{}", "x".repeat(64)), 200, Kept),
        case("absolute-form target", "GET http://h.test/anything HTTP/1.1\r\nHost: other.test\r\n\r\n", 200, Kept),
        bytes_case("obs-text in a header value", b"GET /anything HTTP/1.1\r\nHost: h.test\r\nX-Latin: caf\xe9\r\n\r\n", 200, Kept),
        case("HTTP/1.0 without Host", "GET /anything HTTP/1.0\r\n\r\n", 200, Closed),
        // Framing conflicts (request smuggling).
        case("Content-Length and Transfer-Encoding", &format!("POST /anything HTTP/1.1\r\n{H}Content-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n"), 400, Closed),
        case("Transfer-Encoding and Content-Length", &format!("POST /anything HTTP/1.1\r\n{H}Transfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\n0\r\n\r\n"), 400, Closed),
        case("differing Content-Length values", &format!("POST /anything HTTP/1.1\r\n{H}Content-Length: 5\r\nContent-Length: 6\r\n\r\nhello!"), 400, Closed),
        case("a Content-Length list in one field", &format!("POST /anything HTTP/1.1\r\n{H}Content-Length: 5, 5\r\n\r\nhello"), 400, Closed),
        case("a signed Content-Length", &format!("POST /anything HTTP/1.1\r\n{H}Content-Length: +5\r\n\r\nhello"), 400, Closed),
        case("a negative Content-Length", &format!("POST /anything HTTP/1.1\r\n{H}Content-Length: -1\r\n\r\n"), 400, Closed),
        case("a hex Content-Length", &format!("POST /anything HTTP/1.1\r\n{H}Content-Length: 0x5\r\n\r\nhello"), 400, Closed),
        case("a Content-Length overflowing u64", &format!("POST /anything HTTP/1.1\r\n{H}Content-Length: 99999999999999999999\r\n\r\n"), 400, Closed),
        case("a final coding that is not chunked", &format!("POST /anything HTTP/1.1\r\n{H}Transfer-Encoding: gzip\r\n\r\n"), 400, Closed),
        case("a coding after chunked", &format!("POST /anything HTTP/1.1\r\n{H}Transfer-Encoding: chunked, gzip\r\n\r\n"), 400, Closed),
        case("a second Transfer-Encoding field after chunked", &format!("POST /anything HTTP/1.1\r\n{H}Transfer-Encoding: chunked\r\nTransfer-Encoding: identity\r\n\r\n"), 400, Closed),
        case("a near-miss chunked", &format!("POST /anything HTTP/1.1\r\n{H}Transfer-Encoding: xchunked\r\n\r\n"), 400, Closed),
        case("an unsupported coding before chunked", &format!("POST /anything HTTP/1.1\r\n{H}Transfer-Encoding: identity, chunked\r\n\r\n0\r\n\r\n"), 501, Closed),
        case("gzip before chunked", &format!("POST /anything HTTP/1.1\r\n{H}Transfer-Encoding: gzip, chunked\r\n\r\n0\r\n\r\n"), 501, Closed),
        case("Transfer-Encoding in HTTP/1.0", "POST /anything HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", 400, Closed),
        // Chunk framing.
        case("a chunk size that is not hex", &format!("POST /anything HTTP/1.1\r\n{H}Transfer-Encoding: chunked\r\n\r\ng\r\n"), 400, Closed),
        case("a chunk size with leading zeros", &format!("POST /anything HTTP/1.1\r\n{H}Transfer-Encoding: chunked\r\n\r\n00000000000000005\r\nhello\r\n0\r\n\r\n"), 200, Kept),
        case("a chunk size over 64 bits", &format!("POST /anything HTTP/1.1\r\n{H}Transfer-Encoding: chunked\r\n\r\n10000000000000000\r\nx\r\n0\r\n\r\n"), 400, Closed),
        case("a chunk size of 65 hex digits", &format!("POST /anything HTTP/1.1\r\n{H}Transfer-Encoding: chunked\r\n\r\n{}1\r\nx\r\n0\r\n\r\n", "0".repeat(64)), 400, Closed),
        case("a chunk size line ended by a bare LF", &format!("POST /anything HTTP/1.1\r\n{H}Transfer-Encoding: chunked\r\n\r\n5\nhello\r\n0\r\n\r\n"), 400, Closed),
        case("chunk data not followed by CRLF", &format!("POST /anything HTTP/1.1\r\n{H}Transfer-Encoding: chunked\r\n\r\n5\r\nhelloX\r\n0\r\n\r\n"), 400, Closed),
        case("a control byte in a chunk extension", &format!("POST /anything HTTP/1.1\r\n{H}Transfer-Encoding: chunked\r\n\r\n5;a\x01\r\nhello\r\n0\r\n\r\n"), 400, Closed),
        case("a bare LF in a chunk extension", &format!("POST /anything HTTP/1.1\r\n{H}Transfer-Encoding: chunked\r\n\r\n5;a\nhello\r\n0\r\n\r\n"), 400, Closed),
        case("a missing chunk size", &format!("POST /anything HTTP/1.1\r\n{H}Transfer-Encoding: chunked\r\n\r\n\r\n"), 400, Closed),
        case("whitespace after a chunk size", &format!("POST /anything HTTP/1.1\r\n{H}Transfer-Encoding: chunked\r\n\r\n5 \r\nhello\r\n0\r\n\r\n"), 400, Closed),
        case("a bare LF ending the chunked body", &format!("POST /anything HTTP/1.1\r\n{H}Transfer-Encoding: chunked\r\n\r\n0\r\n\n"), 400, Closed),
        case("a NUL in a trailer", &format!("POST /anything HTTP/1.1\r\n{H}Transfer-Encoding: chunked\r\n\r\n0\r\nX-T: a\x00\r\n\r\n"), 400, Closed),
        // Expectations.
        case("an expectation other than 100-continue", &format!("POST /anything HTTP/1.1\r\n{H}Content-Length: 5\r\nExpect: 200-ok\r\n\r\nhello"), 417, Closed),
        // Body limits.
        case("a Content-Length over the body limit", &format!("POST /anything HTTP/1.1\r\n{H}Content-Length: 65\r\n\r\n"), 413, Closed),
        case("Expect: 100-continue over the body limit", &format!("POST /anything HTTP/1.1\r\n{H}Content-Length: 1000\r\nExpect: 100-continue\r\n\r\n"), 413, Closed),
        case("chunks adding up past the body limit", &format!("POST /anything HTTP/1.1\r\n{H}Transfer-Encoding: chunked\r\n\r\n28\r\n{}\r\n28\r\n", "y".repeat(40)), 413, Closed),
        case("the largest chunk size", &format!("POST /anything HTTP/1.1\r\n{H}Transfer-Encoding: chunked\r\n\r\nffffffffffffffff\r\n"), 413, Closed),
        // Header fields.
        case("obs-fold", &format!("GET /anything HTTP/1.1\r\n{H}X-A: a\r\n b\r\n\r\n"), 400, Closed),
        case("a space before the colon", "GET /anything HTTP/1.1\r\nHost : h.test\r\n\r\n", 400, Closed),
        case("a tab before the colon", "GET /anything HTTP/1.1\r\nHost\t: h.test\r\n\r\n", 400, Closed),
        case("a NUL in a header value", &format!("GET /anything HTTP/1.1\r\n{H}X-A: a\x00b\r\n\r\n"), 400, Closed),
        case("a bare CR in a header value", &format!("GET /anything HTTP/1.1\r\n{H}X-A: a\rb\r\n\r\n"), 400, Closed),
        case("a DEL in a header value", &format!("GET /anything HTTP/1.1\r\n{H}X-A: a\x7fb\r\n\r\n"), 400, Closed),
        case("a header line ended by a bare LF", &format!("GET /anything HTTP/1.1\r\nX-A: a\n{H}\r\n"), 400, Closed),
        case("a request line ended by a bare LF", &format!("GET /anything HTTP/1.1\n{H}\r\n"), 400, Closed),
        case("a NUL in a header name", &format!("GET /anything HTTP/1.1\r\n{H}X-\x00A: a\r\n\r\n"), 400, Closed),
        case("an empty header name", &format!("GET /anything HTTP/1.1\r\n{H}: a\r\n\r\n"), 400, Closed),
        case("a header line without a colon", &format!("GET /anything HTTP/1.1\r\n{H}X-A\r\n\r\n"), 400, Closed),
        case("no Host on HTTP/1.1", "GET /anything HTTP/1.1\r\n\r\n", 400, Closed),
        case("two Host fields", &format!("GET /anything HTTP/1.1\r\n{H}{H}\r\n"), 400, Closed),
        case("a Host with a space", "GET /anything HTTP/1.1\r\nHost: h.test x\r\n\r\n", 400, Closed),
        case("a Host with userinfo", "GET /anything HTTP/1.1\r\nHost: u@h.test\r\n\r\n", 400, Closed),
        // Request line.
        case("HTTP/2.0", &format!("GET /anything HTTP/2.0\r\n{H}\r\n"), 505, Closed),
        case("HTTP/3.0", &format!("GET /anything HTTP/3.0\r\n{H}\r\n"), 505, Closed),
        // Another minor digit of HTTP/1 is served as HTTP/1.1 (RFC 9110 §2.5).
        case("HTTP/1.2", &format!("GET /anything HTTP/1.2\r\n{H}\r\n"), 200, Kept),
        case("HTTP/1.9", &format!("GET /anything HTTP/1.9\r\n{H}\r\n"), 200, Kept),
        case("a lower-case version", &format!("GET /anything http/1.1\r\n{H}\r\n"), 400, Closed),
        case("a version with a trailing byte", &format!("GET /anything HTTP/1.1x\r\n{H}\r\n"), 400, Closed),
        case("a two-digit minor version", &format!("GET /anything HTTP/1.12\r\n{H}\r\n"), 400, Closed),
        case("a space inside the target", &format!("GET /any thing HTTP/1.1\r\n{H}\r\n"), 400, Closed),
        case("HTTP/0.9 (no version)", "GET /anything\r\n\r\n", 400, Closed),
        case("asterisk-form", &format!("OPTIONS * HTTP/1.1\r\n{H}\r\n"), 400, Closed),
        case("authority-form outside CONNECT", &format!("GET h.test:80 HTTP/1.1\r\n{H}\r\n"), 400, Closed),
        // CONNECT: no route here names it; and what every CONNECT must be.
        case("CONNECT without a route naming it", "CONNECT h.test:443 HTTP/1.1\r\nHost: h.test:443\r\n\r\n", 405, Closed),
        case("CONNECT with a body", "CONNECT h.test:443 HTTP/1.1\r\nHost: h.test:443\r\nContent-Length: 5\r\n\r\nhello", 400, Closed),
        case("CONNECT with a chunked body", "CONNECT h.test:443 HTTP/1.1\r\nHost: h.test:443\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", 400, Closed),
        case("CONNECT with an origin-form target", &format!("CONNECT /anything HTTP/1.1\r\n{H}\r\n"), 400, Closed),
        case("CONNECT with an absolute-form target", "CONNECT http://h.test:443/ HTTP/1.1\r\nHost: h.test:443\r\n\r\n", 400, Closed),
        case("CONNECT without a port", "CONNECT h.test HTTP/1.1\r\nHost: h.test\r\n\r\n", 400, Closed),
        case("CONNECT to port 0", "CONNECT h.test:0 HTTP/1.1\r\nHost: h.test:0\r\n\r\n", 400, Closed),
        case("CONNECT with a Host naming another authority", "CONNECT h.test:443 HTTP/1.1\r\nHost: other.test:443\r\n\r\n", 400, Closed),
        case("absolute-form without a host", &format!("GET http:///anything HTTP/1.1\r\n{H}\r\n"), 400, Closed),
        case("a relative target", &format!("GET anything HTTP/1.1\r\n{H}\r\n"), 400, Closed),
        case("two spaces in the request line", &format!("GET  /anything HTTP/1.1\r\n{H}\r\n"), 400, Closed),
        case("a separator in the method", &format!("G(T /anything HTTP/1.1\r\n{H}\r\n"), 400, Closed),
        case("a control byte in the target", &format!("GET /any\x01thing HTTP/1.1\r\n{H}\r\n"), 400, Closed),
        case("a path climbing above the root", &format!("GET /../etc/passwd HTTP/1.1\r\n{H}\r\n"), 400, Closed),
        case("an encoded dot segment", &format!("GET /a/%2e%2e/b HTTP/1.1\r\n{H}\r\n"), 400, Closed),
        bytes_case("binary garbage", b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03\r\n\r\n", 400, Closed),
        // Size limits.
        case("a request line over the limit", &format!("GET {long_target} HTTP/1.1\r\n{H}\r\n"), 414, Closed),
        case("a request line over the limit, unfinished", &format!("GET {long_target}{long_target}"), 414, Closed),
        case("a head over the limit", &format!("GET /anything HTTP/1.1\r\n{H}{big_header}\r\n"), 431, Closed),
        case("more header fields than the limit", &format!("GET /anything HTTP/1.1\r\n{H}{many_headers}\r\n"), 431, Closed),
    ]
}

/// How a case's bytes are written.
#[derive(Debug, Clone, Copy)]
enum Sending {
    Whole,
    /// One byte per write (each may be read by the gateway on its own).
    ByteByByte,
}

/// Sends `raw` and returns the status and the connection's fate. A write that fails
/// (the gateway answered early and closed) ends the sending.
fn run(addr: SocketAddr, raw: &[u8], how: Sending) -> (u16, Fate) {
    let mut c = Client::connect(addr);
    match how {
        Sending::Whole => {
            let _ = c.try_send(raw);
        }
        Sending::ByteByByte => {
            for b in raw {
                if c.try_send(std::slice::from_ref(b)).is_err() {
                    break;
                }
            }
        }
    }
    let resp = c
        .try_response(false)
        .unwrap_or_else(|e| panic!("no response ({how:?}): {e}"));
    let fate = if resp.connection_has("close") {
        assert!(
            c.closed(),
            "Connection: close, but the connection stayed open"
        );
        Closed
    } else {
        let next = c.request(&get("h.test", "/anything"));
        assert_eq!(next.status, 200, "the kept connection's next request");
        Kept
    };
    (resp.status, fate)
}

#[test]
fn hostile_requests_get_their_status_and_connection_fate_whole_or_byte_by_byte() {
    let h = Harness::start(&["127.0.12.1"], LIMITS);
    let table = table();
    assert!(table.len() >= 40, "{} cases", table.len());
    let mut failures = Vec::new();
    for (name, raw, status, fate) in &table {
        for how in [Sending::Whole, Sending::ByteByByte] {
            let got = run(h.addr, raw, how);
            if got != (*status, *fate) {
                failures.push(format!(
                    "{name} ({how:?}): expected {status} {fate:?}, got {} {:?}",
                    got.0, got.1
                ));
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// Runs `n` GETs on one connection, returning the slowest.
fn slowest_of(addr: SocketAddr, n: usize) -> Duration {
    let mut c = Client::connect(addr);
    let mut slowest = Duration::ZERO;
    for _ in 0..n {
        let start = Instant::now();
        let resp = c.request(&get("h.test", "/anything"));
        assert_eq!(resp.status, 200);
        slowest = slowest.max(start.elapsed());
    }
    slowest
}

#[test]
fn a_slow_or_garbage_client_does_not_hold_up_another_on_the_same_worker() {
    let h = Harness::start(&["127.0.12.2"], LIMITS);
    let addr = h.addr;
    let stop = Arc::new(AtomicBool::new(false));
    // A slowloris: one header byte every 5 ms, never ending its head.
    let slow = {
        let stop = stop.clone();
        thread::spawn(move || {
            let mut s = TcpStream::connect(addr).unwrap();
            s.set_nodelay(true).unwrap();
            s.write_all(b"GET /anything HTTP/1.1\r\nHost: h.test\r\nX-Slow: ")
                .unwrap();
            while !stop.load(Ordering::SeqCst) {
                if s.write_all(b"a").is_err() {
                    break;
                }
                // Pacing of the misbehaving client, not a synchronisation.
                thread::park_timeout(Duration::from_millis(5));
            }
        })
    };
    // Garbage: connections that send junk as fast as they can until refused.
    let garbage = {
        let stop = stop.clone();
        thread::spawn(move || {
            let junk = vec![b'%'; 64 * 1024];
            while !stop.load(Ordering::SeqCst) {
                let Ok(mut s) = TcpStream::connect(addr) else {
                    continue;
                };
                while s.write_all(&junk).is_ok() && !stop.load(Ordering::SeqCst) {}
            }
        })
    };
    // Meanwhile, a well-behaved client on the same (only) worker.
    let slowest = slowest_of(addr, 200);
    stop.store(true, Ordering::SeqCst);
    slow.join().unwrap();
    garbage.join().unwrap();
    assert!(
        slowest < Duration::from_millis(500),
        "a request took {slowest:?} next to the misbehaving clients"
    );
}

/// Malformed responses, each sent in one write (so the whole of it is read with the
/// head, before anything goes to the client).
fn bad_responses() -> Vec<(&'static str, Vec<u8>)> {
    let many: String = (0..130).map(|i| format!("X-H{i}: v\r\n")).collect();
    [
        ("Content-Length and Transfer-Encoding", "HTTP/1.1 200 OK\r\nContent-Length: 2\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nok\r\n0\r\n\r\n".to_owned()),
        ("differing Content-Length values", "HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Length: 3\r\n\r\nok!".to_owned()),
        ("a Content-Length that is not a number", "HTTP/1.1 200 OK\r\nContent-Length: two\r\n\r\nok".to_owned()),
        ("a bare LF", "HTTP/1.1 200 OK\nContent-Length: 2\r\n\r\nok".to_owned()),
        ("a NUL in a header value", "HTTP/1.1 200 OK\r\nX-A: a\x00b\r\nContent-Length: 2\r\n\r\nok".to_owned()),
        ("a space before the colon", "HTTP/1.1 200 OK\r\nContent-Length : 2\r\n\r\nok".to_owned()),
        ("obs-fold", "HTTP/1.1 200 OK\r\nX-A: a\r\n b\r\nContent-Length: 2\r\n\r\nok".to_owned()),
        ("a status code below 100", "HTTP/1.1 099 Odd\r\nContent-Length: 2\r\n\r\nok".to_owned()),
        ("a status code above 599", "HTTP/1.1 600 Odd\r\nContent-Length: 2\r\n\r\nok".to_owned()),
        ("HTTP/2.0", "HTTP/2.0 200 OK\r\nContent-Length: 2\r\n\r\nok".to_owned()),
        ("a chunk size that is not hex", "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nok\r\n0\r\n\r\n".to_owned()),
        ("a chunk not followed by CRLF", "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nokX\r\n0\r\n\r\n".to_owned()),
        ("more than 128 header fields", format!("HTTP/1.1 200 OK\r\n{many}Content-Length: 2\r\n\r\nok")),
    ]
    .into_iter()
    .map(|(name, raw)| (name, raw.into_bytes()))
    .collect()
}

#[test]
fn malformed_responses_are_502_and_their_upstream_connection_is_not_reused() {
    let cases = bad_responses();
    // Each request the backend sees, as (connection number, request line).
    let (tx, seen) = mpsc::channel::<(usize, String)>();
    let tx = Mutex::new(tx);
    let responses = cases.clone();
    let backend = RawBackend::start("127.0.12.3", move |stream, n| {
        let mut reader = BufReader::new(stream.try_clone().unwrap());
        let mut stream = stream;
        while let Some(head) = read_head(&mut reader) {
            let line = head.lines().next().unwrap_or_default().to_owned();
            let _ = tx.lock().unwrap().send((n, line.clone()));
            let reply = match line.strip_prefix("GET /bad/") {
                Some(rest) => {
                    let i: usize = rest.split(' ').next().unwrap().parse().unwrap();
                    responses[i].1.clone()
                }
                None => b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok".to_vec(),
            };
            if stream.write_all(&reply).is_err() {
                return;
            }
        }
    });
    let h = Harness::with_addrs(LIMITS, &[backend.addr()]);
    let mut c = h.client();
    for (i, (name, _)) in cases.iter().enumerate() {
        let resp = c.request(&get("h.test", &format!("/bad/{i}")));
        assert_eq!(resp.status, 502, "{name}");
        let (bad_conn, line) = seen.recv_timeout(Duration::from_secs(10)).unwrap();
        assert!(line.starts_with(&format!("GET /bad/{i} ")), "{line}");
        // The client connection is kept; the upstream one is not.
        let resp = c.request(&get("h.test", "/ok"));
        assert_eq!(resp.status, 200, "{name}: the next request");
        let (ok_conn, _) = seen.recv_timeout(Duration::from_secs(10)).unwrap();
        assert_ne!(
            ok_conn, bad_conn,
            "{name}: the connection that sent a malformed response was reused"
        );
    }
}

#[test]
fn a_route_can_lower_or_lift_the_body_limit() {
    let h = Harness::start(
        &["127.0.12.4"],
        "
http:
  max_request_body_bytes: 64
services:
  - name: any
    upstream: a
    routes:
      - {name: small, path: /small, max_body_bytes: 8}
      - {name: free, path: /free, max_body_bytes: 0}
      - {name: default, path: /default}
upstreams:
  - {name: a, nodes: [{address: '{b0}'}]}
",
    );
    let post = |path: &str, n: usize| {
        let body = "z".repeat(n);
        let mut c = h.client();
        c.request(&format!(
            "POST {path} HTTP/1.1\r\nHost: h.test\r\nContent-Length: {n}\r\n\r\n{body}"
        ))
        .status
    };
    assert_eq!(post("/small", 8), 200);
    assert_eq!(post("/small", 9), 413);
    assert_eq!(post("/default", 64), 200);
    assert_eq!(post("/default", 65), 413);
    assert_eq!(post("/free", 100_000), 200);
}
