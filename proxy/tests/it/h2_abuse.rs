//! HTTP/2 floods, each from a raw client writing the attack's frames: rapid reset
//! (CVE-2023-44487), a CONTINUATION flood, SETTINGS, PING and empty-DATA floods, and a
//! client that starves its window. Each abusive connection is ended (GOAWAY, or its
//! starved streams reset) while a neighbour on the same worker is served.
//!
//! Runs on: the test threads; the gateway in process with one worker, so the abuser and
//! the neighbour share it.

use std::net::SocketAddr;
use std::process::Command;
use std::time::Duration;

use crate::support::h2raw::{self, frame, request_block, RawH2};
use crate::support::{metric, Harness};

const CONFIG: &str = "http:
  client_body_timeout: 1s
  http2: {max_control_frames: 200}
services:
  - {name: s, upstream: u}
upstreams:
  - {name: u, nodes: [{address: '{b0}'}]}
";

/// The status curl gets for `GET /get` over h2c, with `extra` arguments.
fn h2c_status(addr: SocketAddr, extra: &[&str]) -> String {
    let out = Command::new("curl")
        .args([
            "-s",
            "--max-time",
            "5",
            "--http2-prior-knowledge",
            "-o",
            "/dev/null",
        ])
        .args(["-w", "%{http_code}"])
        .args(extra)
        .arg(format!("http://{addr}/get"))
        .output()
        .expect("curl runs");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A neighbour's request on its own connection, while the abuse goes on.
fn neighbour_served(addr: SocketAddr) {
    assert_eq!(h2c_status(addr, &[]), "200", "the neighbour is served");
}

/// Runs `attack` (frames written back to back) on a raw connection; the GOAWAY code the
/// gateway ends it with.
fn abuse(
    h: &Harness,
    frames: impl Fn(u32) -> Vec<u8> + Send + 'static,
    rounds: u32,
) -> Option<u32> {
    let addr = h.addr;
    let mut c = RawH2::connect(addr, &[]);
    // Read while writing, as a client that keeps the gateway's writes flowing.
    let mut reader = c.reader();
    let watcher = std::thread::spawn(move || reader.goaway(Duration::from_secs(10)));
    let attacker = std::thread::spawn(move || {
        for i in 0..rounds {
            if !c.send(&frames(i)) {
                break;
            }
        }
    });
    neighbour_served(h.addr);
    let code = watcher.join().unwrap();
    attacker.join().unwrap();
    neighbour_served(h.addr);
    code
}

#[test]
fn rapid_reset_and_control_frame_floods_end_the_abusive_connection_with_goaway() {
    let h = Harness::start(&["127.0.16.41"], CONFIG);
    let admin = h.gateway_ref().admin_addr().unwrap();
    let block = request_block("GET", "a.test", "/get");

    // Rapid reset: open a stream and cancel it at once, over and over.
    let rapid = abuse(
        &h,
        move |i| {
            let id = 2 * i + 1;
            let mut f = frame(
                h2raw::HEADERS,
                h2raw::END_HEADERS | h2raw::END_STREAM,
                id,
                &block,
            );
            f.extend(frame(h2raw::RST_STREAM, 0, id, &8u32.to_be_bytes()));
            f
        },
        20_000,
    );
    assert_eq!(rapid, Some(h2raw::ENHANCE_YOUR_CALM), "rapid reset");

    let settings = abuse(&h, |_| frame(h2raw::SETTINGS, 0, 0, &[]), 20_000);
    assert_eq!(settings, Some(h2raw::ENHANCE_YOUR_CALM), "SETTINGS flood");

    let ping = abuse(
        &h,
        |i| frame(h2raw::PING, 0, 0, &u64::from(i).to_be_bytes()),
        20_000,
    );
    assert_eq!(ping, Some(h2raw::ENHANCE_YOUR_CALM), "PING flood");

    let post = request_block("POST", "a.test", "/post");
    let empty = abuse(
        &h,
        move |i| {
            let mut f = Vec::new();
            if i == 0 {
                f.extend(frame(h2raw::HEADERS, h2raw::END_HEADERS, 1, &post));
            }
            f.extend(frame(h2raw::DATA, 0, 1, &[]));
            f
        },
        20_000,
    );
    assert_eq!(empty, Some(h2raw::ENHANCE_YOUR_CALM), "empty DATA flood");
    // SETTINGS and PING floods are strait's to catch (h2 only paces them); rapid reset and
    // empty DATA may be caught by h2's own limits (max_pending_resets, max_local_resets)
    // first, whichever reads them first.
    let closes = metric(admin, "strait_http2_flood_closes_total");
    assert!((2..=4).contains(&closes), "{closes}");
}

#[test]
fn a_continuation_flood_is_cut_off() {
    let h = Harness::start(&["127.0.16.42"], CONFIG);
    // A header block that never ends: HEADERS without END_HEADERS, then CONTINUATIONs.
    let block = request_block("GET", "a.test", "/get");
    let junk = vec![0x40u8; 16_000];
    let code = abuse(
        &h,
        move |i| {
            if i == 0 {
                frame(h2raw::HEADERS, 0, 1, &block)
            } else {
                frame(h2raw::CONTINUATION, 0, 1, &junk)
            }
        },
        10_000,
    );
    // h2 refuses the oversized block (a GOAWAY, or the connection closes outright).
    assert!(
        code.is_some_and(|c| c != 0),
        "GOAWAY with an error: {code:?}"
    );
}

#[test]
fn a_client_that_starves_its_window_gets_its_streams_reset_and_neighbours_are_served() {
    let h = Harness::start(&["127.0.16.43"], CONFIG);
    // SETTINGS_INITIAL_WINDOW_SIZE = 0: the gateway may send no response byte.
    let mut c = RawH2::connect(h.addr, &[(0x4, 0)]);
    let block = request_block("GET", "a.test", "/bytes/1000000");
    for i in 0..10u32 {
        assert!(c.send(&frame(
            h2raw::HEADERS,
            h2raw::END_HEADERS | h2raw::END_STREAM,
            2 * i + 1,
            &block
        )));
    }
    neighbour_served(h.addr);
    // Each starved stream is reset once client_body_timeout (1s) passes without progress.
    let mut reset = std::collections::BTreeSet::new();
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while reset.len() < 10 && std::time::Instant::now() < deadline {
        let frames = c.frames(Duration::from_millis(100));
        reset.extend(
            frames
                .iter()
                .filter(|f| f.0 == h2raw::RST_STREAM)
                .map(|f| f.2),
        );
    }
    assert_eq!(reset.len(), 10, "every starved stream is reset: {reset:?}");
    neighbour_served(h.addr);
}

#[test]
fn streams_beyond_max_concurrent_streams_are_refused_and_a_huge_header_list_gets_431() {
    let h = Harness::start(
        &["127.0.16.44"],
        "http:\n  http2: {max_concurrent_streams: 2, max_header_list_size: 8192}\nservices:\n  - {name: s, upstream: u}\nupstreams:\n  - {name: u, nodes: [{address: '{b0}'}]}\n",
    );
    let mut c = RawH2::connect(h.addr, &[]);
    c.ack_settings();
    // Five slow requests at once on a connection allowed two.
    let block = request_block("GET", "a.test", "/delay/300");
    for i in 0..5u32 {
        let f = frame(
            h2raw::HEADERS,
            h2raw::END_HEADERS | h2raw::END_STREAM,
            2 * i + 1,
            &block,
        );
        assert!(c.send(&f));
    }
    const REFUSED_STREAM: u32 = 0x7;
    let refused = |f: &[(u8, u8, u32, Vec<u8>)]| -> Vec<u32> {
        f.iter()
            .filter(|f| f.0 == h2raw::RST_STREAM && f.3[..4] == REFUSED_STREAM.to_be_bytes())
            .map(|f| f.2)
            .collect()
    };
    let answered = |f: &[(u8, u8, u32, Vec<u8>)]| -> Vec<u32> {
        let mut ids: Vec<u32> = f
            .iter()
            .filter(|f| f.0 == h2raw::HEADERS)
            .map(|f| f.2)
            .collect();
        ids.sort();
        ids
    };
    let frames = c.frames_until(Duration::from_secs(5), |f| {
        refused(f).len() + answered(f).len() >= 5
    });
    assert_eq!(
        refused(&frames),
        [5, 7, 9],
        "streams over the limit refused"
    );
    assert_eq!(answered(&frames), [1, 3], "the two within it answered");

    let big = format!("X-Big: {}", "b".repeat(10_000));
    assert_eq!(h2c_status(h.addr, &["-H", &big]), "431");
}
