//! Chunked trailers: a response's trailer fields reach a client that said `TE: trailers`
//! and are dropped for one that did not (the body's framing stays whole); a request's
//! trailers reach the upstream as they came.

use std::io::{BufRead, BufReader, Write};
use std::sync::{mpsc, Mutex};

use crate::support::{Client, Harness, RawBackend, IO_TIMEOUT};

/// A backend answering every request with a chunked body and a trailer field, after
/// handing the request (head and chunked body, raw) to the test.
fn trailing_backend(ip: &str) -> (RawBackend, mpsc::Receiver<String>) {
    let (tx, rx) = mpsc::channel();
    let tx = Mutex::new(tx);
    let backend = RawBackend::start(ip, move |stream, _| {
        let mut reader = BufReader::new(stream.try_clone().unwrap());
        let mut stream = stream;
        loop {
            let mut raw = String::new();
            // The head, then a chunked body up to its final empty line, if it has one.
            let mut chunked = false;
            loop {
                let mut line = String::new();
                if reader.read_line(&mut line).unwrap_or(0) == 0 {
                    return;
                }
                chunked |= line
                    .to_ascii_lowercase()
                    .starts_with("transfer-encoding: chunked");
                raw.push_str(&line);
                if line == "\r\n" {
                    break;
                }
            }
            if chunked {
                let mut seen_last = false;
                loop {
                    let mut line = String::new();
                    if reader.read_line(&mut line).unwrap_or(0) == 0 {
                        return;
                    }
                    raw.push_str(&line);
                    if seen_last && line == "\r\n" {
                        break;
                    }
                    seen_last |= line == "0\r\n";
                }
            }
            let _ = tx.lock().unwrap().send(raw);
            let _ = stream.write_all(
                b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nTrailer: X-Checksum\r\n\r\n\
                  5\r\nhello\r\n0\r\nX-Checksum: abc123\r\n\r\n",
            );
        }
    });
    (backend, rx)
}

/// The raw bytes of the response to `request` on a new connection, read to its close.
fn raw_answer(addr: std::net::SocketAddr, request: &str) -> String {
    let mut c = Client::connect(addr);
    c.send(request.as_bytes());
    String::from_utf8_lossy(&c.read_to_close()).into_owned()
}

#[test]
fn response_trailers_reach_only_a_client_that_accepts_them() {
    let (backend, requests) = trailing_backend("127.0.23.10");
    let h = Harness::with_addrs(
        "services:\n  - {name: s, upstream: u}\nupstreams:\n  - {name: u, nodes: [{address: '{b0}'}]}\n",
        &[backend.addr()],
    );
    let plain = raw_answer(
        h.addr,
        "GET / HTTP/1.1\r\nHost: t.test\r\nConnection: close\r\n\r\n",
    );
    assert!(
        plain.ends_with("\r\n\r\n5\r\nhello\r\n0\r\n\r\n"),
        "{plain:?}"
    );
    assert!(!plain.contains("X-Checksum: abc123"), "{plain:?}");
    let accepting = raw_answer(
        h.addr,
        "GET / HTTP/1.1\r\nHost: t.test\r\nTE: trailers\r\nConnection: close, TE\r\n\r\n",
    );
    assert!(
        accepting.ends_with("5\r\nhello\r\n0\r\nX-Checksum: abc123\r\n\r\n"),
        "{accepting:?}"
    );

    // A request's trailers go to the upstream.
    let mut c = Client::connect(h.addr);
    let resp = c.request(
        "POST / HTTP/1.1\r\nHost: t.test\r\nTransfer-Encoding: chunked\r\n\r\n\
         3\r\nabc\r\n0\r\nX-Request-Sum: 42\r\n\r\n",
    );
    assert_eq!(resp.status, 200);
    let _ = requests.recv_timeout(IO_TIMEOUT).unwrap();
    let _ = requests.recv_timeout(IO_TIMEOUT).unwrap();
    let posted = requests.recv_timeout(IO_TIMEOUT).unwrap();
    assert!(
        posted.ends_with("3\r\nabc\r\n0\r\nX-Request-Sum: 42\r\n\r\n"),
        "{posted:?}"
    );
}
