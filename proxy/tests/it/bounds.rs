//! Timeouts and resource bounds on real sockets: the header timeout is a deadline for the
//! whole head (a byte-a-second client is cut off), the body timeout is between reads
//! (a slow, steady body is fine) within a deadline for the whole body (a body trickled a
//! byte at a time is cut), an upstream that stops reading a request body is cut
//! after its write timeout, the per-worker connection limit pauses accepting, and a
//! client that never reads a large response does not hold up another on the same worker.

use std::io::{BufReader, Read, Write};
use std::net::Shutdown;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use strait::echo::pattern_matches;

use crate::support::{get, read_head, Client, Harness, RawBackend, SETTLE};

fn template(extra: &str) -> String {
    format!(
        "
{extra}
services:
  - {{name: s, upstream: a}}
upstreams:
  - name: a
    nodes: [{{address: '{{b0}}'}}]
    retry_body_bytes: 0
    timeouts: {{write: 300ms}}
"
    )
}

/// Writes a byte every 100 ms on `c` until its response arrives (or [`SETTLE`] after
/// `began`); the response and the time from `began` it took.
fn dribbled(c: &mut Client, began: Instant) -> (crate::support::client::Response, Duration) {
    let stop = Arc::new(AtomicBool::new(false));
    let mut writer = c.writer();
    let dribble = {
        let stop = stop.clone();
        thread::spawn(move || {
            while !stop.load(Ordering::SeqCst) && began.elapsed() < SETTLE {
                if writer.write_all(b"a").is_err() {
                    break;
                }
                thread::park_timeout(Duration::from_millis(100));
            }
        })
    };
    let resp = c.response(false);
    let took = began.elapsed();
    stop.store(true, Ordering::SeqCst);
    dribble.join().unwrap();
    (resp, took)
}

#[test]
fn a_head_dribbled_a_byte_at_a_time_gets_408_at_the_header_deadline() {
    let h = Harness::start(
        &["127.0.12.20"],
        &template("http: {client_header_timeout: 500ms, keepalive_timeout: 10s}"),
    );
    let mut c = h.client();
    let began = Instant::now();
    c.send(b"GET / HTTP/1.1\r\nHost: t.test\r\nX-Slow: ");
    // A byte every 100 ms: each read comes well within any per-read timeout.
    let (resp, took) = dribbled(&mut c, began);
    assert_eq!(resp.status, 408);
    assert!(resp.connection_has("close"));
    assert!(took >= Duration::from_millis(450), "cut off after {took:?}");
    assert!(took < Duration::from_secs(5), "cut off after {took:?}");
    assert_eq!(h.backends[0].requests_served(), 0);
}

#[test]
fn a_body_arriving_slowly_but_steadily_outlives_the_body_timeout() {
    let h = Harness::start(
        &["127.0.12.21"],
        &template("http: {client_body_timeout: 400ms}"),
    );
    let mut c = h.client();
    let began = Instant::now();
    c.send(b"POST /anything HTTP/1.1\r\nHost: t.test\r\nContent-Length: 8\r\n\r\n");
    // 8 bytes 150 ms apart: 1.2 s in all, each gap well under the timeout.
    for b in b"abcdefgh" {
        thread::park_timeout(Duration::from_millis(150));
        c.send(&[*b]);
    }
    let resp = c.response(false);
    assert_eq!(resp.status, 200, "{}", resp.text());
    assert_eq!(resp.json()["data"], "abcdefgh");
    assert!(began.elapsed() >= Duration::from_millis(400));
}

#[test]
fn a_body_trickled_a_byte_at_a_time_gets_408_at_the_whole_body_deadline() {
    // retry_body_bytes: 0 streams the body; a second case holds it (retry_body_bytes on).
    for (ip, hold) in [("127.0.12.23", "0"), ("127.0.12.24", "65536")] {
        let h = Harness::start(
            &[ip],
            &template("http: {client_body_timeout: 5s, client_body_total_timeout: 600ms}")
                .replace("retry_body_bytes: 0", &format!("retry_body_bytes: {hold}")),
        );
        let mut c = h.client();
        let began = Instant::now();
        c.send(b"POST /anything HTTP/1.1\r\nHost: t.test\r\nContent-Length: 1000\r\n\r\n");
        // A byte every 100 ms: each read well within the 5 s between reads.
        let (resp, took) = dribbled(&mut c, began);
        assert_eq!(resp.status, 408, "hold {hold}: {}", resp.text());
        assert!(resp.connection_has("close"));
        assert!(took >= Duration::from_millis(550), "cut off after {took:?}");
        assert!(took < Duration::from_secs(4), "cut off after {took:?}");
    }
}

#[test]
fn an_upstream_that_stops_reading_a_request_body_is_cut_after_its_write_timeout() {
    // Reads the head, then nothing until the test says so; then reads to the close.
    let (release_tx, release) = mpsc::channel::<()>();
    let (read_tx, read) = mpsc::channel::<u64>();
    let release = Mutex::new(release);
    let read_tx = Mutex::new(read_tx);
    let backend = RawBackend::start("127.0.12.22", move |stream, _| {
        let mut reader = BufReader::new(stream);
        if read_head(&mut reader).is_none() {
            return;
        }
        let _ = release.lock().unwrap().recv_timeout(SETTLE);
        let mut total = 0u64;
        let mut buf = [0u8; 64 * 1024];
        while let Ok(n @ 1..) = reader.read(&mut buf) {
            total += n as u64;
        }
        let _ = read_tx.lock().unwrap().send(total);
    });
    let h = Harness::with_addrs(
        &template("http: {max_request_body_bytes: 0}"),
        &[backend.addr()],
    );
    let mut c = h.client();
    let len: u64 = 256 << 20;
    c.send(
        format!("POST /up HTTP/1.1\r\nHost: t.test\r\nContent-Length: {len}\r\n\r\n").as_bytes(),
    );
    let began = Instant::now();
    let mut writer = c.writer();
    let upload = thread::spawn(move || {
        let piece = vec![b'x'; 64 * 1024];
        for _ in 0..len / piece.len() as u64 {
            if writer.write_all(&piece).is_err() {
                break;
            }
        }
    });
    // The proxy gives up on the stalled upstream: a 504, or (when the proxy's close
    // with the upload still arriving resets the connection first) just the end.
    match c.try_response(false) {
        Ok(resp) => assert_eq!(resp.status, 504, "{}", resp.text()),
        Err(e) => assert_eq!(e.kind(), std::io::ErrorKind::ConnectionReset, "{e}"),
    }
    let took = began.elapsed();
    assert!(took < Duration::from_secs(5), "ended after {took:?}");
    let _ = c.writer().shutdown(Shutdown::Both);
    upload.join().unwrap();
    release_tx.send(()).unwrap();
    let got = read
        .recv_timeout(SETTLE)
        .expect("the upstream connection is closed");
    assert!(got < len, "the upstream read {got} of {len} bytes");
}

#[test]
fn at_the_connection_limit_accepting_pauses_until_a_connection_closes() {
    let h = Harness::start(
        &["127.0.12.23"],
        &template("http: {max_connections_per_worker: 2}"),
    );
    let mut first = h.client();
    assert_eq!(first.request(&get("t.test", "/")).status, 200);
    let mut second = h.client();
    assert_eq!(second.request(&get("t.test", "/")).status, 200);
    // The kernel completes the third connection, but the worker does not take it.
    let mut third = h.client();
    third.send(get("t.test", "/anything/third").as_bytes());
    let waiting = third.writer();
    waiting
        .set_read_timeout(Some(Duration::from_millis(300)))
        .unwrap();
    let mut byte = [0u8; 1];
    let err = (&waiting)
        .read(&mut byte)
        .expect_err("no answer at the limit");
    assert!(
        matches!(
            err.kind(),
            std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
        ),
        "{err}"
    );
    waiting
        .set_read_timeout(Some(crate::support::IO_TIMEOUT))
        .unwrap();
    // The others are still served meanwhile.
    assert_eq!(second.request(&get("t.test", "/")).status, 200);
    drop(first);
    let resp = third.response(false);
    assert_eq!(resp.status, 200);
    assert_eq!(resp.json()["url"], "http://t.test/anything/third");
}

#[test]
fn a_client_that_never_reads_a_large_response_does_not_hold_up_another_on_the_worker() {
    let h = Harness::start(&["127.0.12.24"], &template(""));
    let len = 64 << 20;
    // Asks for 64 MiB and reads nothing: the socket buffers on the way fill up and the
    // proxy's write to it blocks.
    let mut hog = h.client();
    hog.send(get("t.test", &format!("/bytes/{len}")).as_bytes());
    // A slow header on the same worker, for good measure.
    let mut slow = h.client();
    slow.send(b"GET / HTTP/1.1\r\nHost: t.te");
    crate::support::eventually("the hog's response to start", || {
        (h.backends[0].requests_served() == 1).then_some(())
    });
    let began = Instant::now();
    for i in 0..20 {
        let mut c = Client::connect(h.addr);
        let resp = c.request(&get("t.test", &format!("/anything/{i}")));
        assert_eq!(resp.status, 200);
        let resp = c.request(&get("t.test", "/bytes/100000"));
        assert!(resp.body.len() == 100_000 && pattern_matches(0, &resp.body));
    }
    let took = began.elapsed();
    assert!(took < Duration::from_secs(3), "40 requests took {took:?}");
    // The hog, reading at last, gets its whole response intact.
    let resp = hog.response(false);
    assert_eq!(resp.body.len(), len);
    assert!(pattern_matches(0, &resp.body));
    slow.send(b"st\r\n\r\n");
    assert_eq!(slow.response(false).status, 200);
}

#[test]
fn a_streamed_chunked_body_that_passes_the_limit_gets_413_and_the_connection_closes() {
    // retry_body_bytes: 0 in the template, so the body streams to the upstream as it comes.
    let h = Harness::start(
        &["127.0.12.30"],
        &template("http: {max_request_body_bytes: 100000}"),
    );
    let mut c = h.client();
    c.send(b"POST /anything HTTP/1.1\r\nHost: t.test\r\nTransfer-Encoding: chunked\r\n\r\n");
    // 16 KiB chunks: the seventh passes 100,000 bytes. Written while the gateway reads.
    let chunk = format!("4000\r\n{}\r\n", "c".repeat(0x4000));
    let mut writer = c.writer();
    let sender = thread::spawn(move || {
        for _ in 0..8 {
            if writer.write_all(chunk.as_bytes()).is_err() {
                break;
            }
        }
    });
    let resp = c.response(false);
    assert_eq!(resp.status, 413, "{}", resp.text());
    assert!(resp.connection_has("close"));
    assert!(c.closed());
    sender.join().unwrap();
    assert_eq!(
        h.backends[0].requests_served(),
        0,
        "the upstream answered a request whose body was cut short"
    );
    // The same body under the limit streams through whole.
    let mut c = h.client();
    let body = "d".repeat(90_000);
    let resp = c.request(&format!(
        "POST /anything HTTP/1.1\r\nHost: t.test\r\nTransfer-Encoding: chunked\r\n\r\n{:x}\r\n{body}\r\n0\r\n\r\n",
        body.len()
    ));
    assert_eq!(resp.status, 200);
    assert_eq!(resp.json()["body_length"], 90_000);
}

#[test]
fn a_streamed_body_that_stalls_gets_408_and_the_connection_closes() {
    let h = Harness::start(
        &["127.0.12.31"],
        &template("http: {client_body_timeout: 300ms}"),
    );
    let mut c = h.client();
    c.send(b"POST /anything HTTP/1.1\r\nHost: t.test\r\nContent-Length: 100\r\n\r\nonly part");
    let resp = c.response(false);
    assert_eq!(resp.status, 408, "{}", resp.text());
    assert!(resp.connection_has("close"));
    assert!(c.closed());
    assert_eq!(h.backends[0].requests_served(), 0);
}
