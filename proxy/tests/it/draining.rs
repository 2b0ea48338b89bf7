//! Endpoints leaving and failing, and the gateway itself stopping: requests in flight to a
//! removed endpoint, terminating endpoints, safe retries with held bodies (and what the
//! access log says about them), passive health, and the in-process graceful stop.
//!
//! Runs on: the test threads; the gateway's workers, echo backends and hand-written
//! backends on their own threads. Addresses 127.0.6.x are this module's.

use std::io::BufReader;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use socket2::SockRef;
use strait_discovery::{Endpoint, EndpointState};

use crate::support::{
    dead_addr, echo, eventually, get, read_head, wait_refused, GatedBackend, Harness, RawBackend,
    SETTLE,
};

/// One upstream `a` for every host, over `{b0}` and `{b1}`; `extra` adds keys to it.
fn two(extra: &str) -> String {
    format!(
        "
services:
  - {{name: s, upstream: a}}
upstreams:
  - name: a
    nodes: [{{address: '{{b0}}'}}, {{address: '{{b1}}'}}]
{extra}"
    )
}

/// An access-log file of this test process, named `name`, removed if it exists.
pub(crate) fn access_log(name: &str) -> PathBuf {
    let path = PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("it-{}-{name}.log", std::process::id()));
    let _ = std::fs::remove_file(&path);
    path
}

/// The `access_log:` block writing to `path`.
pub(crate) fn access_log_block(path: &std::path::Path) -> String {
    format!(
        "access_log:\n  enabled: true\n  path: '{}'\n",
        path.display()
    )
}

/// Waits until the access log at `path` has `n` lines and returns them.
pub(crate) fn log_lines(path: &std::path::Path, n: usize) -> Vec<String> {
    let text = eventually(&format!("{n} access-log lines"), || {
        let text = std::fs::read_to_string(path).ok()?;
        (text.lines().count() >= n).then_some(text)
    });
    text.lines().map(str::to_owned).collect()
}

/// The `upstream_addr` and `upstream_status` lists of an access-log line: the fields
/// after the quoted user agent, before the upstream time and the request id (see
/// `access_log.rs`).
pub(crate) fn attempts(line: &str) -> (Vec<String>, Vec<String>) {
    let rest = &line[line.rfind('"').expect("a quoted user agent") + 1..];
    let mut fields: Vec<&str> = rest.split_whitespace().collect();
    fields.pop(); // the request id
    fields.pop(); // the upstream time
    let fields: Vec<&str> = fields.iter().map(|f| f.trim_end_matches(',')).collect();
    let addrs = fields
        .iter()
        .filter(|f| f.contains(':'))
        .map(|f| (*f).to_owned());
    let statuses = fields
        .iter()
        .filter(|f| !f.contains(':'))
        .map(|f| (*f).to_owned());
    (addrs.collect(), statuses.collect())
}

/// A backend that reads a request head, then closes the connection without answering;
/// with `reset`, the close is an RST (linger 0).
fn hang_up(ip: &str, reset: bool) -> RawBackend {
    RawBackend::start(ip, move |stream, _| {
        let mut reader = BufReader::new(stream.try_clone().unwrap());
        if read_head(&mut reader).is_some() && reset {
            SockRef::from(&stream)
                .set_linger(Some(Duration::ZERO))
                .unwrap();
        }
    })
}

// === endpoints leaving ===

#[test]
fn a_request_in_flight_to_a_removed_endpoint_completes_and_its_connection_is_closed_not_pooled() {
    let a = GatedBackend::start("127.0.6.2");
    let b = echo("127.0.6.3");
    let mut h = Harness::with_addrs(
        "
workers: 2
services:
  - {name: s, upstream: a}
upstreams:
  - {name: a, nodes: [{address: '{b0}'}]}
",
        &[a.backend.addr(), b.addr()],
    );
    let mut c = h.client();
    c.send(get("rm.test", "/hold").as_bytes());
    a.wait_held();

    h.set_endpoints("a", &[b.addr()]);
    // From the moment set_endpoints returned, every worker sends new requests to B only.
    for i in 0..10 {
        let resp = h.get("rm.test", &format!("/anything/{i}"));
        assert_eq!(resp.status, 200);
        assert_eq!(resp.backend(), b.addr().to_string(), "request {i}");
    }

    a.release.send(()).unwrap();
    let resp = c.response(false);
    assert_eq!((resp.status, resp.text().as_str()), (200, "held"));
    // The proxy closes the upstream connection instead of pooling it.
    let closed = a
        .closed
        .recv_timeout(SETTLE)
        .expect("the proxy closes its connection to the removed endpoint");
    assert_eq!(closed, 0);
    assert_eq!(a.backend.accepted(), 1);
    // The client connection stays, and its next request goes to B.
    assert_eq!(
        c.request(&get("rm.test", "/")).backend(),
        b.addr().to_string()
    );
    assert_eq!(a.backend.accepted(), 1);
}

fn endpoint(addr: SocketAddr, state: EndpointState) -> Endpoint {
    Endpoint {
        addr: addr.into(),
        weight: 1,
        state,
    }
}

#[test]
fn a_terminating_endpoint_gets_no_request_while_another_is_ready_and_takes_over_when_none_is() {
    let mut h = Harness::start(&["127.0.6.4", "127.0.6.5"], &two(""));
    let (ready, terminating) = (h.backends[0].addr(), h.backends[1].addr());
    let published = h.gateway().set_endpoints(
        "a",
        vec![
            endpoint(ready, EndpointState::Ready),
            endpoint(terminating, EndpointState::Terminating),
        ],
    );
    assert!(published.is_some());
    let mut c = h.client();
    for i in 0..10 {
        let resp = if i % 2 == 0 {
            c.request(&get("t.test", "/"))
        } else {
            h.get("t.test", "/")
        };
        assert_eq!(resp.backend(), ready.to_string(), "request {i}");
    }
    assert_eq!(h.backends[1].requests_served(), 0);

    // The ready one stops serving: the terminating one is all that is left, and serves.
    h.gateway().set_endpoints(
        "a",
        vec![
            endpoint(ready, EndpointState::NotServing),
            endpoint(terminating, EndpointState::Terminating),
        ],
    );
    let served_before = h.backends[0].requests_served();
    for i in 0..10 {
        let resp = if i % 2 == 0 {
            c.request(&get("t.test", "/"))
        } else {
            h.get("t.test", "/")
        };
        assert_eq!(resp.status, 200);
        assert_eq!(resp.backend(), terminating.to_string(), "request {i}");
    }
    assert_eq!(h.backends[0].requests_served(), served_before);
    assert_eq!(h.backends[1].requests_served(), 10);
}

// === safe retries ===

#[test]
fn a_get_the_upstream_drops_unanswered_is_retried_elsewhere_and_a_post_is_a_502() {
    for (reset, ips) in [
        (false, ["127.0.6.6", "127.0.6.7"]),
        (true, ["127.0.6.8", "127.0.6.9"]),
    ] {
        let bad = hang_up(ips[0], reset);
        let good = echo(ips[1]);
        let h = Harness::with_addrs(&two(""), &[bad.addr(), good.addr()]);
        let mut c = h.client();
        for i in 0..4 {
            let resp = c.request(&get("rt.test", &format!("/anything/{i}")));
            assert_eq!(resp.status, 200, "reset {reset}, GET {i}: {}", resp.text());
            assert_eq!(resp.backend(), good.addr().to_string());
        }
        assert!(
            bad.accepted() >= 2,
            "the failing endpoint was tried (reset {reset})"
        );
        // A POST that reached the failing endpoint is not sent again.
        let mut failed = 0;
        for i in 0..4 {
            let (accepted, served) = (bad.accepted(), good.requests_served());
            let resp = c.request(
                "POST /anything HTTP/1.1\r\nHost: rt.test\r\nContent-Length: 4\r\n\r\ndata",
            );
            if bad.accepted() > accepted {
                assert_eq!(resp.status, 502, "reset {reset}, POST {i}: {}", resp.text());
                assert!(resp.text().contains("closed"), "{:?}", resp.text());
                assert_eq!(good.requests_served(), served, "POST {i} was retried");
                failed += 1;
            } else {
                assert_eq!(resp.status, 200, "reset {reset}, POST {i}: {}", resp.text());
            }
        }
        assert!(failed >= 1, "no POST reached the failing endpoint");
        // The client connection survived the 502s.
        assert_eq!(c.request(&get("rt.test", "/")).status, 200);
    }
}

/// `n` bytes of printable text, different at every offset within a line.
fn text_body(n: usize) -> String {
    (0..n).map(|i| (b'a' + (i % 26) as u8) as char).collect()
}

/// `body` in chunked encoding, in pieces of `piece` bytes.
fn chunked(body: &str, piece: usize) -> String {
    let mut out = String::new();
    for part in body.as_bytes().chunks(piece) {
        out.push_str(&format!("{:x}\r\n", part.len()));
        out.push_str(std::str::from_utf8(part).unwrap());
        out.push_str("\r\n");
    }
    out.push_str("0\r\n\r\n");
    out
}

/// A `PUT /anything` of `body`, with Content-Length or chunked in 4 KiB pieces.
fn put(body: &str, is_chunked: bool) -> String {
    if is_chunked {
        format!(
            "PUT /anything HTTP/1.1\r\nHost: rb.test\r\nTransfer-Encoding: chunked\r\n\r\n{}",
            chunked(body, 4096)
        )
    } else {
        format!(
            "PUT /anything HTTP/1.1\r\nHost: rb.test\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        )
    }
}

#[test]
fn a_put_body_reset_by_the_first_endpoint_is_replayed_whole_to_the_second() {
    let bad = hang_up("127.0.6.10", true);
    let good = echo("127.0.6.11");
    let h = Harness::with_addrs(&two(""), &[bad.addr(), good.addr()]);
    let body = text_body(10 * 1024);
    let mut c = h.client();
    for (i, is_chunked) in [false, true, false, true].into_iter().enumerate() {
        let accepted = bad.accepted();
        let resp = c.request(&put(&body, is_chunked));
        assert_eq!(resp.status, 200, "PUT {i}: {}", resp.text());
        let json = resp.json();
        assert_eq!(json["backend"], good.addr().to_string());
        assert_eq!(json["body_length"], body.len(), "PUT {i}");
        assert!(json["data"] == body.as_str(), "PUT {i}: the body differs");
        assert_eq!(
            bad.accepted(),
            accepted + 1,
            "PUT {i} went to the reset one first"
        );
    }
}

#[test]
fn a_body_larger_than_retry_body_bytes_is_not_replayed() {
    let bad = hang_up("127.0.6.12", true);
    let good = echo("127.0.6.13");
    let h = Harness::with_addrs(
        &two("    retry_body_bytes: 1024\n"),
        &[bad.addr(), good.addr()],
    );
    let body = text_body(10 * 1024);
    let mut failed = 0;
    for (i, is_chunked) in [false, true, false, true, false, true]
        .into_iter()
        .enumerate()
    {
        let (accepted, served) = (bad.accepted(), good.requests_served());
        // A new connection each time: a 502 mid-body closes the client connection.
        let resp = h.client().request(&put(&body, is_chunked));
        if bad.accepted() > accepted {
            assert_eq!(resp.status, 502, "PUT {i}: {}", resp.text());
            assert_eq!(good.requests_served(), served, "PUT {i} was replayed");
            failed += 1;
        } else {
            assert_eq!(resp.status, 200, "PUT {i}: {}", resp.text());
            assert_eq!(resp.json()["body_length"], body.len());
        }
    }
    assert!(failed >= 2, "too few PUTs reached the failing endpoint");
}

#[test]
fn the_access_log_lists_every_attempt_of_a_request() {
    let bad = hang_up("127.0.6.14", false);
    let good = echo("127.0.6.15");
    let path = access_log("attempts");
    let h = Harness::with_addrs(
        &format!("{}{}", access_log_block(&path), two("")),
        &[bad.addr(), good.addr()],
    );
    let (bad_addr, good_addr) = (bad.addr().to_string(), good.addr().to_string());
    let mut c = h.client();
    // Round-robin over [bad, good], each request starting one step further: the GET
    // meets the failing endpoint first, so does the POST after it.
    let resp = c.request(&get("al.test", "/anything"));
    assert_eq!(resp.status, 200);
    let resp = c.request("POST /anything HTTP/1.1\r\nHost: al.test\r\nContent-Length: 1\r\n\r\nx");
    assert_eq!(resp.status, 502);
    let lines = log_lines(&path, 2);
    assert_eq!(lines.len(), 2, "{lines:#?}");
    assert!(
        lines[0].contains("\"GET /anything HTTP/1.1\" 200"),
        "{}",
        lines[0]
    );
    assert_eq!(
        attempts(&lines[0]),
        (
            vec![bad_addr.clone(), good_addr.clone()],
            vec!["502".to_owned(), "200".to_owned()]
        ),
        "{}",
        lines[0]
    );
    assert!(
        lines[1].contains("\"POST /anything HTTP/1.1\" 502"),
        "{}",
        lines[1]
    );
    assert_eq!(
        attempts(&lines[1]),
        (vec![bad_addr], vec!["502".to_owned()]),
        "{}",
        lines[1]
    );
    let _ = std::fs::remove_file(&path);
}

#[test]
fn expect_100_continue_with_a_held_body_gets_one_100_and_a_200_even_when_retried() {
    let bad = hang_up("127.0.6.16", true);
    let good = echo("127.0.6.17");
    let h = Harness::with_addrs(&two(""), &[bad.addr(), good.addr()]);
    let mut c = h.client();
    for i in 0..2 {
        let accepted = bad.accepted();
        c.send(
            b"PUT /anything HTTP/1.1\r\nHost: ex.test\r\nContent-Length: 11\r\n\
              Expect: 100-continue\r\n\r\n",
        );
        assert_eq!(c.read_head().status, 100, "PUT {i}: a 100 before the body");
        c.send(b"hello world");
        let resp = c.response(false);
        assert_eq!(resp.status, 200, "PUT {i}: {}", resp.text());
        assert!(
            resp.interim.is_empty(),
            "PUT {i}: a second 100: {:?}",
            resp.interim
        );
        assert_eq!(resp.json()["data"], "hello world");
        assert_eq!(resp.backend(), good.addr().to_string());
        assert_eq!(
            bad.accepted(),
            accepted + 1,
            "PUT {i} met the reset one first"
        );
    }
    assert_eq!(c.request(&get("ex.test", "/")).status, 200);
}

// === passive health ===

/// A long first ejection, so that a slow machine cannot see it end within a test. (Block
/// style: `{b…` would read as a harness placeholder.)
const LONG_EJECTION: &str = "    passive_health:\n      base_ejection: 1m\n";

/// `requests` GETs on one connection, each of which must succeed.
fn get_ok(h: &Harness, requests: usize) {
    let mut c = h.client();
    for i in 0..requests {
        let resp = c.request(&get("ph.test", &format!("/anything/{i}")));
        assert_eq!(resp.status, 200, "request {i}: {}", resp.text());
    }
}

#[test]
fn an_endpoint_refusing_three_connects_in_a_row_is_no_longer_tried() {
    let dead = dead_addr("127.0.6.18");
    let live = echo("127.0.6.19");
    let path = access_log("ejected");
    let h = Harness::with_addrs(
        &format!(
            "{}{}",
            access_log_block(&path),
            // A long ejection, so a slow machine cannot see it end within the test.
            two(LONG_EJECTION)
        ),
        &[dead, live.addr()],
    );
    get_ok(&h, 3);
    let lines = log_lines(&path, 3);
    for line in &lines {
        let (addrs, _) = attempts(line);
        assert_eq!(addrs, [dead.to_string(), live.addr().to_string()], "{line}");
    }
    get_ok(&h, 10);
    let lines = log_lines(&path, 13);
    for line in &lines[3..] {
        let (addrs, statuses) = attempts(line);
        assert_eq!(addrs, [live.addr().to_string()], "{line}");
        assert_eq!(statuses, ["200"], "{line}");
    }
    let _ = std::fs::remove_file(&path);
}

#[test]
fn with_consecutive_failures_0_a_dead_endpoint_keeps_being_tried() {
    let dead = dead_addr("127.0.6.20");
    let live = echo("127.0.6.21");
    let path = access_log("never-ejected");
    let h = Harness::with_addrs(
        &format!(
            "{}{}",
            access_log_block(&path),
            two("    passive_health: {consecutive_failures: 0}\n")
        ),
        &[dead, live.addr()],
    );
    get_ok(&h, 13);
    let lines = log_lines(&path, 13);
    let tried = lines
        .iter()
        .filter(|l| attempts(l).0.contains(&dead.to_string()))
        .count();
    assert_eq!(tried, 13, "{lines:#?}");
    let _ = std::fs::remove_file(&path);
}

#[test]
fn an_upstream_whose_only_endpoint_is_dead_keeps_answering_502_not_503() {
    // Alone from the start.
    let dead = dead_addr("127.0.6.22");
    let h = Harness::with_addrs(
        "
services:
  - {name: s, upstream: a}
upstreams:
  - name: a
    nodes: [{address: '{b0}'}]
    passive_health:
      base_ejection: 1m
",
        &[dead],
    );
    let mut c = h.client();
    for i in 0..8 {
        let resp = c.request(&get("pd.test", "/"));
        assert_eq!(resp.status, 502, "request {i}: {}", resp.text());
        assert!(
            resp.text().contains("could not connect"),
            "{:?}",
            resp.text()
        );
    }

    // Ejected while another endpoint was there, then left alone by a table change: the
    // ejection is ignored rather than failing the request with 503.
    let dead = dead_addr("127.0.6.23");
    let live = echo("127.0.6.24");
    let mut h = Harness::with_addrs(&two(LONG_EJECTION), &[dead, live.addr()]);
    get_ok(&h, 6);
    let served = live.requests_served();
    h.set_endpoints("a", &[dead]);
    let mut c = h.client();
    for i in 0..4 {
        let resp = c.request(&get("pd.test", "/"));
        assert_eq!(resp.status, 502, "request {i}: {}", resp.text());
        assert!(
            resp.text().contains("could not connect"),
            "{:?}",
            resp.text()
        );
    }
    assert_eq!(live.requests_served(), served);
}

// === graceful stop ===

/// A gateway listening on `listen` (`ip:0`) with `shutdown` (a YAML mapping) and one
/// upstream over `backend`; `extra` goes first (e.g. `workers: 2`).
fn stopping(extra: &str, listen: &str, shutdown: &str, backend: SocketAddr) -> Harness {
    let yaml = format!(
        "
{extra}
listeners:
  - {{name: http, address: '{listen}'}}
shutdown: {shutdown}
services:
  - {{name: s, upstream: a}}
upstreams:
  - {{name: a, nodes: [{{address: '{{b0}}'}}]}}
"
    );
    Harness::with_addrs(&yaml, &[backend])
}

#[test]
fn a_graceful_stop_serves_through_the_delay_then_refuses_closes_idle_and_finishes_busy_ones() {
    let backend = GatedBackend::start("127.0.6.25");
    let mut h = stopping(
        "workers: 2",
        "127.0.6.26:0",
        "{delay: 300ms, timeout: 20s}",
        backend.backend.addr(),
    );
    eventually("the gateway to be ready", || {
        h.gateway_ref().ready().then_some(())
    });
    let mut idle = h.client();
    let resp = idle.request(&get("gs.test", "/"));
    assert_eq!(resp.status, 200);
    assert!(!resp.connection_has("close"));
    let mut busy = h.client();
    busy.send(get("gs.test", "/hold").as_bytes());
    backend.wait_held();

    let began = Instant::now();
    h.gateway().begin_shutdown();
    assert!(!h.gateway_ref().ready(), "readiness turns off at once");
    // A connection made during the delay is served.
    let resp = h.get("gs.test", "/");
    assert_eq!((resp.status, resp.text().as_str()), (200, "ok"));

    // After the delay, new connections are refused.
    wait_refused(h.addr);
    let refused_after = began.elapsed();
    assert!(
        refused_after >= Duration::from_millis(300),
        "refused {refused_after:?} after the stop began, before the 300 ms delay"
    );
    // The idle keep-alive connection is closed by the gateway.
    assert!(
        idle.closed(),
        "the idle connection got bytes instead of a close"
    );

    // The request in flight completes, says `Connection: close`, and the connection ends.
    backend.release.send(()).unwrap();
    let resp = busy.response(false);
    assert_eq!((resp.status, resp.text().as_str()), (200, "held"));
    assert!(resp.connection_has("close"), "{:?}", resp.headers);
    assert!(busy.closed());
    // The last connection gone, the workers exit long before the 20 s timeout.
    assert!(
        h.gateway_ref().wait_stopped(SETTLE),
        "the workers did not exit after the last connection closed"
    );
}

#[test]
fn a_connection_accepted_before_the_stop_gets_its_first_request_answered() {
    let backend = echo("127.0.6.29");
    let mut h = stopping(
        "",
        "127.0.6.30:0",
        "{delay: 0s, timeout: 20s}",
        backend.addr(),
    );
    // Connected (and accepted) before the stop; the request comes after the listener
    // closed.
    let mut early = h.client();
    h.gateway().begin_shutdown();
    wait_refused(h.addr);
    let resp = early.request(&get("fr.test", "/anything"));
    assert_eq!(resp.status, 200);
    assert!(resp.connection_has("close"), "{:?}", resp.headers);
    assert!(early.closed());
    assert!(h.gateway_ref().wait_stopped(SETTLE));
}

#[test]
fn a_request_outliving_the_shutdown_timeout_is_cut_when_the_timeout_passes() {
    let backend = echo("127.0.6.27");
    let mut h = stopping(
        "",
        "127.0.6.28:0",
        "{delay: 0s, timeout: 300ms}",
        backend.addr(),
    );
    let mut c = h.client();
    c.send(get("to.test", "/delay/5000").as_bytes());
    // The proxy connected upstream: the request is in flight.
    eventually("the request to reach the backend", || {
        (backend.connections_accepted() == 1).then_some(())
    });
    let began = Instant::now();
    h.gateway().begin_shutdown();
    assert!(
        h.gateway_ref().wait_stopped(SETTLE),
        "the workers did not exit"
    );
    let took = began.elapsed();
    assert!(took >= Duration::from_millis(300), "stopped after {took:?}");
    assert!(
        took < Duration::from_millis(4_000),
        "stopped after {took:?}: the timeout did not cut the 5 s request"
    );
    // The client's connection is closed, with no response.
    assert_eq!(c.read_to_close(), b"");
}
