//! The harness shared by every test module: an in-process gateway in front of echo
//! backends ([`harness`]), a raw HTTP/1.1 client ([`client`]), hand-written misbehaving
//! backends ([`raw`]) and [`eventually`] for conditions that settle asynchronously.
//! For the end-to-end tests: `strait` child processes ([`child`]), echo pod processes
//! ([`pod`]), the seed's discovery config and Kubernetes objects ([`kube`]) and a load
//! generator ([`load`]). For `tcp` listeners: byte streams, checksums and greeting
//! backends ([`tcp`]).
//!
//! Runs on: the test threads. Real sockets on 127.0.0.x, timeouts on every socket,
//! deadlines instead of sleeps.

pub(crate) mod child;
pub(crate) mod client;
pub(crate) mod grpc;
pub(crate) mod h2raw;
pub(crate) mod harness;
pub(crate) mod kube;
pub(crate) mod load;
pub(crate) mod pod;
pub(crate) mod raw;
pub(crate) mod tcp;

use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

pub(crate) use client::{get, Client, Framing, IO_TIMEOUT};
pub(crate) use harness::{driver_line, echo, Harness};
pub(crate) use raw::{dead_addr, read_head, FullBacklog, GatedBackend, RawBackend};

/// How long an "eventually" condition may take to become true.
/// Held by the tests that bind the seed's fixed pod addresses (127.0.0.2–4:8080): the
/// seed example and `strait demo`, which must not run at once.
pub(crate) static SEED_PODS: std::sync::Mutex<()> = std::sync::Mutex::new(());

pub(crate) const SETTLE: Duration = Duration::from_secs(10);

/// Calls `probe` until it returns `Some`, failing the test after [`SETTLE`]. For
/// conditions that settle asynchronously (a published snapshot reaching the workers).
pub(crate) fn eventually<T>(what: &str, mut probe: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + SETTLE;
    loop {
        if let Some(v) = probe() {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        // A short pause between probes, not a synchronisation: the deadline decides.
        std::thread::park_timeout(Duration::from_millis(2));
    }
}

/// The value of the metric line `series` (e.g. `strait_ready`, or a name with its
/// labels) in the admin server's `/metrics`; fails the test when it is missing.
pub(crate) fn metric(admin: SocketAddr, series: &str) -> u64 {
    let m = Client::connect(admin)
        .request(&get("admin", "/metrics"))
        .text();
    let prefix = format!("{series} ");
    m.lines()
        .find_map(|l| l.strip_prefix(&prefix))
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no {series} in\n{m}"))
}

/// Waits until connecting to `addr` is refused: every listener on it has closed. A
/// connection that still succeeds meanwhile is closed at once.
pub(crate) fn wait_refused(addr: SocketAddr) {
    eventually(
        &format!("connections to {addr} to be refused"),
        || match TcpStream::connect_timeout(&addr, Duration::from_secs(1)) {
            Ok(_) => None,
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => Some(()),
            // Reset: the listener closed with the connection still in its queue (with
            // net.ipv4.tcp_migrate_req=1, after moving it to a sibling that closed too).
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::TimedOut | std::io::ErrorKind::ConnectionReset
                ) =>
            {
                None
            }
            Err(e) => panic!("connect to {addr}: {e}"),
        },
    );
}
