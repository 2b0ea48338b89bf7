//! Forwarding: request and response headers, HTTP/1.0 clients, bodies in both directions
//! (Content-Length, chunked, close-delimited; MiB to tens of MiB, checked against the
//! echo backend's deterministic pattern), HEAD/204/304, `Expect: 100-continue`,
//! `Connection: close` and pipelining.

use std::io::{BufReader, Read, Write};
use std::net::TcpStream;
use std::sync::{mpsc, Mutex};
use std::thread;

use strait::echo::{pattern_bytes, pattern_matches};

use crate::support::client::Stream;
use crate::support::{get, read_head, Client, Framing, Harness, RawBackend, IO_TIMEOUT};

/// Any host → upstream `a` ({b0}); host `rewrite.test` → `{b0}` with `pass_host:
/// rewrite`; host `node.test` → `{b0}` with `pass_host: node`. No body size limit: these
/// tests stream bodies of tens of MiB (the limits are `hostile.rs`'s).
const ONE: &str = "
http:
  max_request_body_bytes: 0
services:
  - name: rewrite
    hosts: [rewrite.test]
    upstream: rewritten
  - name: node
    hosts: [node.test]
    upstream: by-node
  - name: any
    upstream: a
upstreams:
  - {name: a, nodes: [{address: '{b0}'}]}
  - name: rewritten
    nodes: [{address: '{b0}'}]
    pass_host: rewrite
    upstream_host: internal.svc:8443
  - name: by-node
    nodes: [{address: '{b0}'}]
    pass_host: node
";

fn one(ip: &str) -> Harness {
    Harness::start(&[ip], ONE)
}

#[test]
fn x_forwarded_for_is_replaced_from_an_untrusted_peer_and_proto_and_host_are_set() {
    let h = one("127.0.3.2");
    let mut c = h.client();
    let resp = c.request(
        "GET /anything HTTP/1.1\r\nHost: fw.test\r\nX-Forwarded-For: 10.1.2.3\r\n\
         X-Forwarded-Proto: https\r\nX-Forwarded-Host: evil.test\r\n\r\n",
    );
    let headers = &resp.json()["headers"];
    // No `trusted_proxies`: what the client wrote is not believed.
    assert_eq!(headers["X-Forwarded-For"], "127.0.0.1");
    assert_eq!(headers["X-Forwarded-Proto"], "http");
    assert_eq!(headers["X-Forwarded-Host"], "fw.test");
    assert_eq!(headers["Host"], "fw.test");

    // Without one: just the client address.
    let resp = c.request(&get("fw.test", "/anything"));
    assert_eq!(resp.json()["headers"]["X-Forwarded-For"], "127.0.0.1");
}

/// A backend that answers every request with an empty 200 and hands each request head
/// to the test (also used by `routes.rs`).
pub(crate) fn capturing_backend(ip: &str) -> (RawBackend, mpsc::Receiver<String>) {
    let (tx, rx) = mpsc::channel();
    let tx = Mutex::new(tx);
    let backend = RawBackend::start(ip, move |stream, _| {
        let mut reader = BufReader::new(stream.try_clone().unwrap());
        let mut stream = stream;
        while let Some(head) = read_head(&mut reader) {
            let _ = tx.lock().unwrap().send(head);
            let _ = stream.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n");
        }
    });
    (backend, rx)
}

/// The values of header `name` in a raw head.
pub(crate) fn fields<'h>(head: &'h str, name: &str) -> Vec<&'h str> {
    head.lines()
        .filter_map(|l| l.split_once(':'))
        .filter(|(n, _)| n.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.trim())
        .collect()
}

#[test]
fn the_upstream_request_head_is_rewritten_as_specified() {
    let (backend, heads) = capturing_backend("127.0.3.27");
    let h = Harness::with_addrs(ONE, &[backend.addr()]);
    let mut c = h.client();
    let resp = c.request(
        "GET /path?q=1 HTTP/1.0\r\nHost: head.test\r\nConnection: keep-alive\r\n\
         Accept: */*\r\n\r\n",
    );
    assert_eq!(resp.status, 200);
    let head = heads.recv_timeout(IO_TIMEOUT).unwrap();
    // The upstream request is HTTP/1.1 whatever the client spoke, keeps the target,
    // and carries one Host.
    assert!(head.starts_with("GET /path?q=1 HTTP/1.1\r\n"), "{head}");
    assert_eq!(fields(&head, "host"), ["head.test"]);
    assert_eq!(fields(&head, "accept"), ["*/*"]);
    assert_eq!(fields(&head, "connection"), Vec::<&str>::new());
    assert_eq!(fields(&head, "x-forwarded-for"), ["127.0.0.1"]);
    assert_eq!(fields(&head, "x-forwarded-proto"), ["http"]);
    assert_eq!(fields(&head, "x-forwarded-host"), ["head.test"]);
}

#[test]
fn host_is_passed_rewritten_or_set_to_the_node_per_upstream() {
    let h = one("127.0.3.3");
    let resp = h.get("Pass.Test:81", "/anything");
    assert_eq!(resp.json()["headers"]["Host"], "Pass.Test:81");

    let resp = h.get("rewrite.test", "/anything");
    let json = resp.json();
    assert_eq!(json["headers"]["Host"], "internal.svc:8443");
    assert_eq!(json["headers"]["X-Forwarded-Host"], "rewrite.test");
    assert_eq!(json["url"], "http://internal.svc:8443/anything");

    let resp = h.get("node.test", "/anything");
    let json = resp.json();
    assert_eq!(json["headers"]["Host"], h.backend_name(0).as_str());
    assert_eq!(json["headers"]["X-Forwarded-Host"], "node.test");
    // Exactly one Host goes upstream.
    assert!(!json["headers"]["Host"].as_str().unwrap().contains(','));
}

#[test]
fn hop_by_hop_request_headers_are_not_forwarded() {
    let h = one("127.0.3.4");
    let mut c = h.client();
    let resp = c.request(
        "GET /anything HTTP/1.1\r\nHost: hop.test\r\n\
         Connection: keep-alive, X-Secret, x-other\r\nX-Secret: 1\r\nX-Other: 2\r\n\
         Keep-Alive: timeout=5\r\nTE: trailers\r\nTrailer: X-T\r\nProxy-Connection: keep-alive\r\n\
         Upgrade: h2c\r\nX-End-To-End: kept\r\n\r\n",
    );
    assert_eq!(resp.status, 200);
    let headers = resp.json()["headers"].as_object().unwrap().clone();
    for name in [
        "Connection",
        "X-Secret",
        "X-Other",
        "Keep-Alive",
        "TE",
        "Te",
        "Trailer",
        "Proxy-Connection",
        "Upgrade",
    ] {
        assert!(
            !headers.contains_key(name),
            "{name} was forwarded: {headers:?}"
        );
    }
    assert_eq!(headers["X-End-To-End"], "kept");
    // The connection is still a keep-alive one.
    assert_eq!(c.request(&get("hop.test", "/")).status, 200);
}

#[test]
fn hop_by_hop_response_headers_are_not_forwarded() {
    let backend = RawBackend::start("127.0.3.5", |stream, _| {
        let mut reader = BufReader::new(stream.try_clone().unwrap());
        let mut stream = stream;
        while read_head(&mut reader).is_some() {
            let _ = stream.write_all(
                b"HTTP/1.1 200 OK\r\nConnection: X-Private\r\nX-Private: secret\r\n\
                  Keep-Alive: timeout=5, max=100\r\nProxy-Connection: keep-alive\r\n\
                  Upgrade: h2c\r\nX-Public: yes\r\nContent-Length: 2\r\n\r\nok",
            );
        }
    });
    let h = Harness::with_addrs(ONE, &[backend.addr()]);
    let mut c = h.client();
    for _ in 0..2 {
        let resp = c.request(&get("hop.test", "/"));
        assert_eq!(resp.status, 200);
        assert_eq!(resp.body, b"ok");
        assert_eq!(resp.header("x-public"), Some("yes"));
        for name in ["X-Private", "Keep-Alive", "Proxy-Connection", "Upgrade"] {
            assert_eq!(resp.header(name), None, "{name} reached the client");
        }
        assert!(
            resp.header("connection")
                .is_none_or(|v| !v.contains("X-Private")),
            "{:?}",
            resp.headers
        );
    }
}

#[test]
fn http_1_0_client_without_keep_alive_gets_a_response_then_a_close() {
    let h = one("127.0.3.6");
    let mut c = h.client();
    let resp = c.request("GET /anything HTTP/1.0\r\nHost: old.test\r\n\r\n");
    assert_eq!(resp.status, 200);
    assert_eq!(resp.json()["url"], "http://old.test/anything");
    assert!(!resp.connection_has("keep-alive"));
    assert!(c.closed());
}

#[test]
fn http_1_0_client_with_keep_alive_keeps_its_connection() {
    let h = one("127.0.3.7");
    let mut c = h.client();
    let local = c.local_addr();
    for i in 0..3 {
        let resp = c.request(&format!(
            "GET /bytes/{} HTTP/1.0\r\nHost: old.test\r\nConnection: keep-alive\r\n\r\n",
            1000 * i
        ));
        assert_eq!(resp.status, 200);
        assert!(resp.connection_has("keep-alive"), "{:?}", resp.headers);
        assert_eq!(resp.framing, Framing::Length(1000 * i));
        assert!(pattern_matches(0, &resp.body));
    }
    assert_eq!(c.local_addr(), local);
}

#[test]
fn http_1_0_client_gets_a_chunked_upstream_response_de_chunked_and_close_delimited() {
    let h = one("127.0.3.8");
    let mut c = h.client();
    let n = 300_000;
    let resp = c.request(&format!(
        "GET /stream-bytes/{n}?chunk_size=1000 HTTP/1.0\r\nHost: old.test\r\nConnection: keep-alive\r\n\r\n"
    ));
    assert_eq!(resp.status, 200);
    assert_eq!(resp.header("transfer-encoding"), None);
    assert_eq!(resp.framing, Framing::Close);
    assert_eq!(resp.body.len(), n);
    assert!(
        pattern_matches(0, &resp.body),
        "body differs from the pattern"
    );
    // The upstream connection ended cleanly and is reused for the next client.
    let resp = h.get("again.test", "/anything");
    assert_eq!(resp.status, 200);
    assert_eq!(h.backends[0].connections_accepted(), 1);
}

#[test]
fn head_response_has_headers_but_no_body() {
    let h = one("127.0.3.9");
    let mut c = h.client();
    let resp = c.request("HEAD /bytes/1000 HTTP/1.1\r\nHost: head.test\r\n\r\n");
    assert_eq!(resp.status, 200);
    assert_eq!(resp.header("content-length"), Some("1000"));
    let resp = c.request("HEAD /stream-bytes/1000 HTTP/1.1\r\nHost: head.test\r\n\r\n");
    assert_eq!(resp.status, 200);
    // Had a body followed either head, this would read it as a status line.
    let resp = c.request(&get("head.test", "/anything/after"));
    assert_eq!(resp.json()["url"], "http://head.test/anything/after");
    assert_eq!(h.backends[0].connections_accepted(), 1);
}

#[test]
fn responses_204_and_304_carry_no_body() {
    let h = one("127.0.3.10");
    let mut c = h.client();
    for code in [204, 304, 204] {
        let resp = c.request(&get("nb.test", &format!("/status/{code}")));
        assert_eq!(resp.status, code);
        assert_eq!(resp.header("transfer-encoding"), None, "{code}");
        if code == 204 {
            assert_eq!(
                resp.header("content-length"),
                None,
                "a 204 has no Content-Length"
            );
        }
    }
    // Still in sync: no stray bytes after the bodiless responses.
    let resp = c.request(&get("nb.test", "/anything/next"));
    assert_eq!(resp.json()["url"], "http://nb.test/anything/next");
}

#[test]
fn a_204_with_a_stray_body_from_the_upstream_does_not_reach_the_client() {
    // The upstream wrongly sends a body after 204: the client must not see it as the
    // start of the next response.
    let backend = RawBackend::start("127.0.3.11", |stream, _| {
        let mut reader = BufReader::new(stream.try_clone().unwrap());
        let mut stream = stream;
        while let Some(head) = read_head(&mut reader) {
            let resp: &[u8] = if head.starts_with("GET /nocontent") {
                b"HTTP/1.1 204 No Content\r\nContent-Length: 5\r\n\r\n"
            } else {
                b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"
            };
            let _ = stream.write_all(resp);
        }
    });
    let h = Harness::with_addrs(ONE, &[backend.addr()]);
    let mut c = h.client();
    let resp = c.request(&get("nb.test", "/nocontent"));
    assert_eq!(resp.status, 204);
    let resp = c.request(&get("nb.test", "/next"));
    assert_eq!(resp.status, 200);
    assert_eq!(resp.body, b"ok");
}

#[test]
fn expect_100_continue_gets_100_then_the_final_response() {
    let h = one("127.0.3.12");
    let mut c = h.client();
    c.send(
        b"POST /anything HTTP/1.1\r\nHost: ex.test\r\nContent-Length: 11\r\n\
          Expect: 100-continue\r\n\r\n",
    );
    let interim = c.read_head();
    assert_eq!(
        interim.status, 100,
        "an interim 100 before the body is sent"
    );
    c.send(b"hello world");
    let resp = c.response(false);
    assert_eq!(resp.status, 200);
    let json = resp.json();
    assert_eq!(json["data"], "hello world");
    assert!(json["headers"].get("Expect").is_none() || json["headers"]["Expect"] == "100-continue");
    // The connection is in sync afterwards.
    assert_eq!(c.request(&get("ex.test", "/")).status, 200);
}

#[test]
fn expect_100_continue_with_the_body_sent_at_once_gets_one_final_response() {
    let h = one("127.0.3.13");
    let mut c = h.client();
    let resp = c.request(
        "PUT /anything HTTP/1.1\r\nHost: ex.test\r\nContent-Length: 3\r\n\
         Expect: 100-continue\r\n\r\nabc",
    );
    assert_eq!(resp.status, 200);
    assert_eq!(resp.json()["data"], "abc");
    assert!(resp.interim.iter().all(|s| *s == 100));
    assert_eq!(c.request(&get("ex.test", "/")).status, 200);
}

/// Uploads `len` pattern bytes to `/echo` on `c` (chunked in pieces of `piece` bytes, or
/// with Content-Length) from a second thread, and checks the echoed body against the
/// pattern while reading it.
pub(crate) fn echo_upload<S: Stream>(c: &mut Client<S>, len: usize, chunked: bool, piece: usize) {
    let mut writer = c.writer();
    let upload = thread::spawn(move || {
        let framing = if chunked {
            "Transfer-Encoding: chunked".to_owned()
        } else {
            format!("Content-Length: {len}")
        };
        writer
            .write_all(
                format!("POST /echo HTTP/1.1\r\nHost: up.test\r\n{framing}\r\n\r\n").as_bytes(),
            )
            .unwrap();
        let mut buf = vec![0u8; piece];
        let mut offset = 0;
        while offset < len {
            let n = piece.min(len - offset);
            pattern_bytes(offset as u64, &mut buf[..n]);
            if chunked {
                writer.write_all(format!("{n:x}\r\n").as_bytes()).unwrap();
                writer.write_all(&buf[..n]).unwrap();
                writer.write_all(b"\r\n").unwrap();
            } else {
                writer.write_all(&buf[..n]).unwrap();
            }
            offset += n;
        }
        if chunked {
            writer.write_all(b"0\r\n\r\n").unwrap();
        }
    });
    let mut resp = c.read_head();
    assert_eq!(resp.status, 200);
    let mut got = 0u64;
    let mut same = true;
    c.read_body(&mut resp, false, |data| {
        same &= pattern_matches(got, data);
        got += data.len() as u64;
    });
    upload.join().unwrap();
    assert_eq!(got, len as u64, "echoed length");
    assert!(same, "the echoed body differs from the upload");
}

#[test]
fn chunked_upload_is_streamed_to_the_upstream_byte_for_byte() {
    let h = one("127.0.3.14");
    let mut c = h.client();
    echo_upload(&mut c, 4 * 1024 * 1024 + 7, true, 100_003);
    // Tiny chunks too, and the connection is in sync afterwards.
    echo_upload(&mut c, 10_000, true, 7);
    assert_eq!(c.request(&get("up.test", "/")).status, 200);
    assert_eq!(h.backends[0].connections_accepted(), 1);
}

#[test]
fn content_length_upload_is_streamed_to_the_upstream_byte_for_byte() {
    let h = one("127.0.3.15");
    let mut c = h.client();
    echo_upload(&mut c, 4 * 1024 * 1024 + 13, false, 65_536);
    echo_upload(&mut c, 1, false, 1);
    assert_eq!(c.request(&get("up.test", "/")).status, 200);
    assert_eq!(h.backends[0].connections_accepted(), 1);
}

#[test]
fn content_length_body_reaches_the_upstream_intact() {
    let h = one("127.0.3.16");
    let mut c = h.client();
    let mut body = vec![0u8; 50_000];
    pattern_bytes(0, &mut body);
    let body = body.iter().map(|b| b'a' + b % 26).collect::<Vec<u8>>();
    c.send(
        format!(
            "POST /anything HTTP/1.1\r\nHost: b.test\r\nContent-Length: {}\r\n\r\n",
            body.len()
        )
        .as_bytes(),
    );
    c.send(&body);
    let resp = c.response(false);
    let json = resp.json();
    assert_eq!(json["body_length"], body.len());
    assert_eq!(json["data"].as_str().unwrap().as_bytes(), &body[..]);
}

#[test]
fn a_50_mib_download_matches_the_pattern() {
    let h = one("127.0.3.17");
    let mut c = h.client();
    let n: u64 = 50 * 1024 * 1024;
    c.send(get("dl.test", &format!("/bytes/{n}")).as_bytes());
    let mut resp = c.read_head();
    assert_eq!(resp.status, 200);
    let mut got = 0u64;
    let mut same = true;
    c.read_body(&mut resp, false, |data| {
        same &= pattern_matches(got, data);
        got += data.len() as u64;
    });
    assert_eq!(resp.framing, Framing::Length(n));
    assert_eq!(got, n);
    assert!(same, "the download differs from the pattern");
    assert_eq!(c.request(&get("dl.test", "/")).status, 200);
}

#[test]
fn a_chunked_download_passes_through_to_a_1_1_client() {
    let h = one("127.0.3.18");
    let mut c = h.client();
    let resp = c.request(&get("dl.test", "/stream-bytes/100000?chunk_size=1000"));
    assert_eq!(resp.status, 200);
    assert!(matches!(resp.framing, Framing::Chunked(_)));
    assert_eq!(resp.body.len(), 100_000);
    assert!(pattern_matches(0, &resp.body));
    assert_eq!(c.request(&get("dl.test", "/")).status, 200);
    assert_eq!(h.backends[0].connections_accepted(), 1);
}

#[test]
fn close_delimited_upstream_response_reaches_a_1_1_client_chunked_and_the_connection_stays() {
    let h = one("127.0.3.19");
    let mut c = h.client();
    let local = c.local_addr();
    let n = 1_000_000;
    let resp = c.request(&get("cd.test", &format!("/close-delimited/{n}")));
    assert_eq!(resp.status, 200);
    assert!(
        matches!(resp.framing, Framing::Chunked(_)),
        "{:?}",
        resp.headers
    );
    assert!(!resp.connection_has("close"), "{:?}", resp.headers);
    assert_eq!(resp.body.len(), n);
    assert!(pattern_matches(0, &resp.body));
    // The client connection is still usable.
    let resp = c.request(&get("cd.test", "/anything"));
    assert_eq!(resp.status, 200);
    assert_eq!(c.local_addr(), local);
    // An empty close-delimited body too.
    let resp = c.request(&get("cd.test", "/close-delimited/0"));
    assert_eq!(resp.status, 200);
    assert!(resp.body.is_empty());
    assert_eq!(c.request(&get("cd.test", "/")).status, 200);
}

#[test]
fn connection_close_from_the_client_closes_after_the_response() {
    let h = one("127.0.3.20");
    let mut c = h.client();
    let resp = c.request("GET /anything HTTP/1.1\r\nHost: cc.test\r\nConnection: close\r\n\r\n");
    assert_eq!(resp.status, 200);
    assert!(resp.connection_has("close"));
    assert!(c.closed());
    // The upstream connection is kept: the close was the client's.
    assert_eq!(h.get("cc.test", "/").status, 200);
    assert_eq!(h.backends[0].connections_accepted(), 1);
}

#[test]
fn connection_close_from_the_upstream_does_not_leak_into_the_client_connection() {
    let backend = RawBackend::start("127.0.3.21", |stream, _| {
        let mut reader = BufReader::new(stream.try_clone().unwrap());
        let mut stream = stream;
        if read_head(&mut reader).is_some() {
            let _ = stream
                .write_all(b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 2\r\n\r\nok");
        }
    });
    let h = Harness::with_addrs(ONE, &[backend.addr()]);
    let mut c = h.client();
    for _ in 0..3 {
        let resp = c.request(&get("uc.test", "/"));
        assert_eq!(resp.status, 200);
        assert_eq!(resp.body, b"ok");
    }
    // Each request needed a new upstream connection (the upstream closes each).
    assert_eq!(backend.accepted(), 3);
}

#[test]
fn pipelined_requests_on_one_connection_are_answered_in_order() {
    let h = one("127.0.3.22");
    let mut c = h.client();
    let mut batch = String::new();
    for i in 0..5 {
        batch.push_str(&get("pipe.test", &format!("/anything/{i}")));
        if i == 2 {
            batch.push_str(
                "POST /anything/post HTTP/1.1\r\nHost: pipe.test\r\nContent-Length: 4\r\n\r\nbody",
            );
        }
    }
    batch.push_str("HEAD /bytes/10 HTTP/1.1\r\nHost: pipe.test\r\n\r\n");
    batch.push_str(&get("pipe.test", "/bytes/10"));
    c.send(batch.as_bytes());
    for i in 0..5 {
        let resp = c.response(false);
        assert_eq!(resp.json()["url"], format!("http://pipe.test/anything/{i}"));
        if i == 2 {
            let resp = c.response(false);
            let json = resp.json();
            assert_eq!(json["url"], "http://pipe.test/anything/post");
            assert_eq!(json["data"], "body");
        }
    }
    let resp = c.response(true);
    assert_eq!(resp.header("content-length"), Some("10"));
    let resp = c.response(false);
    assert!(resp.body.len() == 10 && pattern_matches(0, &resp.body));
}

#[test]
fn a_request_split_into_single_bytes_is_forwarded() {
    let h = one("127.0.3.23");
    let mut c = h.client();
    let raw = b"POST /anything/slow HTTP/1.1\r\nHost: slow.test\r\nContent-Length: 5\r\n\r\nhello";
    for b in raw {
        c.send(&[*b]);
    }
    let resp = c.response(false);
    assert_eq!(resp.json()["data"], "hello");
}

#[test]
fn a_malformed_request_gets_400_and_a_close() {
    let h = one("127.0.3.24");
    for raw in [
        "GET / HTTP/1.1\r\n\r\n",
        "GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n",
        "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n",
        "NOT HTTP\r\n\r\n",
    ] {
        let mut c = h.client();
        let resp = c.request(raw);
        assert_eq!(resp.status, 400, "{raw:?}");
        assert!(resp.connection_has("close"), "{raw:?}");
        assert!(c.closed(), "{raw:?}");
    }
    assert_eq!(h.backends[0].requests_served(), 0);
}

#[test]
fn the_client_closing_mid_download_leaves_the_proxy_serving() {
    let h = one("127.0.3.25");
    {
        let mut s = TcpStream::connect(h.addr).unwrap();
        s.write_all(get("x.test", "/bytes/104857600").as_bytes())
            .unwrap();
        let mut buf = [0u8; 4096];
        let _ = s.read(&mut buf).unwrap();
    } // closed with most of the body unread
    let resp = h.get("x.test", "/anything");
    assert_eq!(resp.status, 200);
}

#[test]
fn interim_responses_from_the_upstream_reach_a_1_1_client_only() {
    let backend = RawBackend::start("127.0.3.28", |stream, _| {
        let mut reader = BufReader::new(stream.try_clone().unwrap());
        let mut stream = stream;
        while read_head(&mut reader).is_some() {
            let _ = stream.write_all(
                b"HTTP/1.1 103 Early Hints\r\nLink: </style.css>; rel=preload\r\n\r\n\
                  HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok",
            );
        }
    });
    let h = Harness::with_addrs(ONE, &[backend.addr()]);
    let mut c = h.client();
    c.send(get("hints.test", "/").as_bytes());
    let hints = c.read_head();
    assert_eq!(hints.status, 103);
    assert_eq!(hints.header("link"), Some("</style.css>; rel=preload"));
    let resp = c.response(false);
    assert_eq!((resp.status, resp.body.as_slice()), (200, &b"ok"[..]));

    let mut c = h.client();
    let resp = c.request("GET / HTTP/1.0\r\nHost: hints.test\r\n\r\n");
    assert_eq!(resp.status, 200);
    assert!(resp.interim.is_empty(), "no 1xx for an HTTP/1.0 client");
    assert_eq!(resp.body, b"ok");
}

#[test]
fn a_response_head_arriving_byte_by_byte_is_parsed() {
    let backend = RawBackend::start("127.0.3.29", |stream, _| {
        stream.set_nodelay(true).unwrap();
        let mut reader = BufReader::new(stream.try_clone().unwrap());
        let mut stream = stream;
        while read_head(&mut reader).is_some() {
            for b in b"HTTP/1.1 200 OK\r\nX-Slow: yes\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n" {
                let _ = stream.write_all(&[*b]);
            }
        }
    });
    let h = Harness::with_addrs(ONE, &[backend.addr()]);
    let mut c = h.client();
    for _ in 0..2 {
        let resp = c.request(&get("slow.test", "/"));
        assert_eq!(resp.status, 200);
        assert_eq!(resp.header("x-slow"), Some("yes"));
        assert_eq!(resp.body, b"abc");
    }
    assert_eq!(backend.accepted(), 1);
}

#[test]
fn chunk_extensions_and_trailers_survive_both_ways() {
    let backend = RawBackend::start("127.0.3.30", |stream, _| {
        let mut reader = BufReader::new(stream.try_clone().unwrap());
        let mut stream = stream;
        while read_head(&mut reader).is_some() {
            let _ = stream.write_all(
                b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n\
                  4;name=value\r\nwiki\r\n5\r\npedia\r\n0\r\nX-Checksum: 1\r\n\r\n",
            );
        }
    });
    let h = Harness::with_addrs(ONE, &[backend.addr()]);
    let mut c = h.client();
    let resp = c.request(&get("tr.test", "/"));
    assert_eq!(resp.body, b"wikipedia");
    let resp = c.request(&get("tr.test", "/"));
    assert_eq!(resp.body, b"wikipedia", "in sync after the trailers");
    // To an HTTP/1.0 client: de-chunked, trailers dropped.
    let mut c = h.client();
    let resp = c.request("GET / HTTP/1.0\r\nHost: tr.test\r\n\r\n");
    assert_eq!(resp.framing, Framing::Close);
    assert_eq!(resp.body, b"wikipedia");

    // A chunked upload with extensions and trailers reaches the echo backend intact.
    let echo = crate::support::echo("127.0.3.31");
    let h = Harness::with_addrs(ONE, &[echo.addr()]);
    let mut c = h.client();
    let resp = c.request(
        "POST /anything HTTP/1.1\r\nHost: tr.test\r\nTransfer-Encoding: chunked\r\n\r\n\
         5;ext=1\r\nhello\r\n7\r\n, world\r\n0\r\nX-Trailer: t\r\n\r\n",
    );
    assert_eq!(resp.json()["data"], "hello, world");
    assert_eq!(c.request(&get("tr.test", "/")).status, 200);
}

#[test]
fn a_request_followed_by_a_half_close_still_gets_its_response() {
    let h = one("127.0.3.32");
    let mut c = h.client();
    c.send(get("hc.test", "/anything/half").as_bytes());
    c.writer().shutdown(std::net::Shutdown::Write).unwrap();
    let resp = c.response(false);
    assert_eq!(resp.json()["url"], "http://hc.test/anything/half");
}

#[test]
fn an_early_upstream_answer_to_an_upload_reaches_the_client() {
    // The upstream refuses a large upload at once (413 + close), then half-closes and
    // discards the body as it arrives (as a careful server does, so that its close does
    // not become a reset).
    let backend = RawBackend::start("127.0.3.33", |stream, _| {
        let mut reader = BufReader::new(stream.try_clone().unwrap());
        let mut stream = stream;
        if read_head(&mut reader).is_some() {
            let _ = stream.write_all(
                b"HTTP/1.1 413 Content Too Large\r\nConnection: close\r\nContent-Length: 8\r\n\r\ntoo big\n",
            );
            let _ = stream.shutdown(std::net::Shutdown::Write);
            let _ = std::io::copy(&mut reader, &mut std::io::sink());
        }
    });
    let h = Harness::with_addrs(ONE, &[backend.addr()]);
    let mut c = h.client();
    let len = 32 * 1024 * 1024;
    let mut writer = c.writer();
    let upload = thread::spawn(move || {
        let _ = writer.write_all(
            format!("POST /upload HTTP/1.1\r\nHost: up.test\r\nContent-Length: {len}\r\n\r\n")
                .as_bytes(),
        );
        let piece = vec![b'x'; 64 * 1024];
        let mut left = len;
        while left > 0 {
            if writer.write_all(&piece).is_err() {
                break; // the proxy stopped reading: fine
            }
            left -= piece.len();
        }
    });
    let resp = c.response(false);
    let _ = upload.join();
    assert_eq!(resp.status, 413, "{}", resp.text());
    assert_eq!(resp.body, b"too big\n");
}

#[test]
fn the_access_log_has_a_line_per_request_naming_the_upstream() {
    let backend = crate::support::echo("127.0.3.34");
    let path = std::path::PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("it-{}-access.log", std::process::id()));
    let _ = std::fs::remove_file(&path);
    let template = format!(
        "access_log:\n  enabled: true\n  path: '{}'\n{ONE}",
        path.display()
    );
    let h = Harness::with_addrs(&template, &[backend.addr()]);
    let mut c = h.client();
    c.request("GET /anything/logged?x=1 HTTP/1.1\r\nHost: log.test\r\nUser-Agent: it/1\r\n\r\n");
    c.request("GET /status/418 HTTP/1.1\r\nHost: log.test\r\n\r\n");
    let log = crate::support::eventually("two access-log lines", || {
        let text = std::fs::read_to_string(&path).ok()?;
        (text.lines().count() >= 2).then_some(text)
    });
    let lines: Vec<&str> = log.lines().collect();
    assert_eq!(lines.len(), 2, "{log}");
    let upstream = backend.addr().to_string();
    for (line, want) in [
        (
            lines[0],
            [
                "127.0.0.1",
                "log.test",
                "\"GET /anything/logged?x=1 HTTP/1.1\" 200",
                "\"it/1\"",
                &upstream,
            ],
        ),
        (
            lines[1],
            [
                "127.0.0.1",
                "log.test",
                "\"GET /status/418 HTTP/1.1\" 418",
                "\"-\"",
                &upstream,
            ],
        ),
    ] {
        for w in want {
            assert!(line.contains(w), "{w:?} not in {line:?}");
        }
    }
    let _ = std::fs::remove_file(&path);
}

const SHORT_CLIENT_TIMEOUTS: &str = "
http:
  client_header_timeout: 300ms
  client_body_timeout: 300ms
  keepalive_timeout: 300ms
  max_request_head_bytes: 4096
  max_headers: 20
services:
  - {name: any, upstream: a}
upstreams:
  - {name: a, nodes: [{address: '{b0}'}]}
";

#[test]
fn an_idle_keep_alive_client_is_closed_after_the_keepalive_timeout() {
    let h = Harness::start(&["127.0.3.35"], SHORT_CLIENT_TIMEOUTS);
    let mut c = h.client();
    assert_eq!(c.request(&get("t.test", "/")).status, 200);
    let started = std::time::Instant::now();
    assert!(c.closed(), "closed without a response");
    let idle = started.elapsed();
    assert!(idle >= std::time::Duration::from_millis(250), "{idle:?}");
}

#[test]
fn a_request_head_that_stalls_gets_408() {
    let h = Harness::start(&["127.0.3.36"], SHORT_CLIENT_TIMEOUTS);
    let mut c = h.client();
    c.send(b"GET / HTTP/1.1\r\nHost: t.test\r\n");
    let resp = c.response(false);
    assert_eq!(resp.status, 408);
    assert!(resp.connection_has("close"));
    assert!(c.closed());
    assert_eq!(h.backends[0].requests_served(), 0);
}

#[test]
fn a_request_body_that_stalls_closes_the_connection() {
    let h = Harness::start(&["127.0.3.37"], SHORT_CLIENT_TIMEOUTS);
    let mut c = h.client();
    c.send(b"POST /anything HTTP/1.1\r\nHost: t.test\r\nContent-Length: 100\r\n\r\nonly part");
    // Whatever was started, the connection ends: no hang, no success.
    let rest = c.read_to_close();
    assert!(
        !String::from_utf8_lossy(&rest).starts_with("HTTP/1.1 200"),
        "{rest:?}"
    );
}

#[test]
fn an_oversized_request_head_gets_431() {
    let h = Harness::start(&["127.0.3.38"], SHORT_CLIENT_TIMEOUTS);
    let mut c = h.client();
    let big = "a".repeat(5000);
    let resp = c.request(&format!(
        "GET / HTTP/1.1\r\nHost: t.test\r\nX-Big: {big}\r\n\r\n"
    ));
    assert_eq!(resp.status, 431);
    let mut c = h.client();
    let many: String = (0..30).map(|i| format!("X-H{i}: v\r\n")).collect();
    let resp = c.request(&format!("GET / HTTP/1.1\r\nHost: t.test\r\n{many}\r\n"));
    assert_eq!(resp.status, 431);
    assert_eq!(h.backends[0].requests_served(), 0);
}

#[test]
fn an_oversized_response_head_is_a_502() {
    let backend = RawBackend::start("127.0.3.39", |stream, _| {
        let mut reader = BufReader::new(stream.try_clone().unwrap());
        let mut stream = stream;
        if read_head(&mut reader).is_some() {
            let big = "b".repeat(100 * 1024);
            let _ = stream.write_all(
                format!("HTTP/1.1 200 OK\r\nX-Big: {big}\r\nContent-Length: 0\r\n\r\n").as_bytes(),
            );
        }
    });
    let h = Harness::with_addrs(ONE, &[backend.addr()]);
    let resp = h.get("big.test", "/");
    assert_eq!(resp.status, 502);
}

#[test]
fn a_post_with_content_length_0_keeps_its_length_upstream() {
    let (backend, heads) = capturing_backend("127.0.3.40");
    let h = Harness::with_addrs(ONE, &[backend.addr()]);
    let resp = h
        .client()
        .request("POST /form HTTP/1.1\r\nHost: cl.test\r\nContent-Length: 0\r\n\r\n");
    assert_eq!(resp.status, 200);
    let head = heads.recv_timeout(IO_TIMEOUT).unwrap();
    // RFC 9110 §8.6: a POST normally carries Content-Length even when it is 0; some
    // servers answer 411 Length Required without it.
    assert_eq!(
        fields(&head, "content-length"),
        ["0"],
        "upstream head:\n{head}"
    );
}

#[test]
fn an_http_1_0_keep_alive_client_is_told_keep_alive_on_the_proxys_own_replies() {
    let h = one("127.0.3.41");
    let mut c = h.client();
    let resp =
        c.request("GET /anything HTTP/1.0\r\nHost: old.test\r\nConnection: keep-alive\r\n\r\n");
    assert!(
        resp.connection_has("keep-alive"),
        "proxied: {:?}",
        resp.headers
    );
    let h = Harness::start(
        &["127.0.3.42"],
        "
services:
  - {name: only, hosts: [only.test], upstream: a}
upstreams:
  - {name: a, nodes: [{address: '{b0}'}]}
",
    );
    let mut c = h.client();
    let resp = c.request("GET / HTTP/1.0\r\nHost: other.test\r\nConnection: keep-alive\r\n\r\n");
    assert_eq!(resp.status, 404);
    // Without `Connection: keep-alive` an HTTP/1.0 client must assume the close.
    assert!(resp.connection_has("keep-alive"), "404: {:?}", resp.headers);
}

#[test]
fn requests_pipelined_behind_large_bodies_are_kept_and_answered_in_order() {
    let h = one("127.0.3.43");
    let mut c = h.client();
    let len = 300_000;
    let mut body = vec![0u8; len];
    pattern_bytes(0, &mut body);
    let mut batch = Vec::new();
    batch.extend_from_slice(
        format!("POST /echo HTTP/1.1\r\nHost: pl.test\r\nContent-Length: {len}\r\n\r\n").as_bytes(),
    );
    batch.extend_from_slice(&body);
    batch.extend_from_slice(get("pl.test", "/anything/after-length").as_bytes());
    batch.extend_from_slice(
        b"POST /echo HTTP/1.1\r\nHost: pl.test\r\nTransfer-Encoding: chunked\r\n\r\n",
    );
    for piece in body.chunks(70_001) {
        batch.extend_from_slice(format!("{:x}\r\n", piece.len()).as_bytes());
        batch.extend_from_slice(piece);
        batch.extend_from_slice(b"\r\n");
    }
    batch.extend_from_slice(b"0\r\n\r\n");
    batch.extend_from_slice(get("pl.test", &format!("/bytes/{len}")).as_bytes());
    batch.extend_from_slice(get("pl.test", "/anything/last").as_bytes());
    let mut writer = c.writer();
    let upload = thread::spawn(move || writer.write_all(&batch).unwrap());
    for (i, check) in ["echo", "after-length", "echo", "bytes", "last"]
        .iter()
        .enumerate()
    {
        let resp = c.response(false);
        assert_eq!(resp.status, 200, "response {i}");
        match *check {
            "echo" | "bytes" => {
                assert_eq!(resp.body.len(), len, "response {i}");
                assert!(pattern_matches(0, &resp.body), "response {i}");
            }
            path => {
                assert_eq!(
                    resp.json()["url"],
                    format!("http://pl.test/anything/{path}")
                );
            }
        }
    }
    upload.join().unwrap();
}

#[test]
fn many_concurrent_connections_with_bodies_both_ways_on_two_workers() {
    let h = Harness::start(
        &["127.0.3.44", "127.0.3.45"],
        "
workers: 2
services:
  - {name: any, upstream: a}
upstreams:
  - {name: a, nodes: [{address: '{b0}'}, {address: '{b1}'}]}
",
    );
    let addr = h.addr;
    let clients: Vec<_> = (0..40)
        .map(|t| {
            thread::spawn(move || {
                let mut c = Client::connect(addr);
                for i in 0..3 {
                    let len = 50_000 + t * 1000 + i;
                    echo_upload(&mut c, len, (t + i) % 2 == 0, 16_384);
                    let resp = c.request(&get("many.test", &format!("/stream-bytes/{len}")));
                    assert!(resp.body.len() == len && pattern_matches(0, &resp.body));
                }
            })
        })
        .collect();
    for client in clients {
        client.join().unwrap();
    }
    let served = h.backends[0].requests_served() + h.backends[1].requests_served();
    assert_eq!(served, 40 * 3 * 2);
}
