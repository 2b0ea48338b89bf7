//! Stopping and restarting the real `strait` binary: SIGTERM drains and exits 0, a second
//! SIGTERM (or SIGINT) exits at once, and three upgrades in a row (a new process on the
//! same listener and admin ports, ready on its own admin socket, then the old one
//! stopped) under load refuse no connection and fail no request.
//!
//! Runs on: the test threads (load clients on threads of their own); the gateways are
//! child processes, the backends in-process. Addresses 127.0.7.x are this module's.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::process::{start_with_workers, Running};
use crate::support::{echo, eventually, get, wait_refused, Client, GatedBackend, SETTLE};

/// One upstream for every host, over `backend`, listening on `listen`.
fn config(listen: &str, shutdown: &str, backend: SocketAddr) -> String {
    format!(
        "
listeners:
  - {{name: http, address: '{listen}'}}
shutdown: {shutdown}
services:
  - {{name: s, upstream: a}}
upstreams:
  - {{name: a, nodes: [{{address: '{backend}'}}]}}
"
    )
}

/// Waits until the child's log has a line containing `needle`.
fn wait_log(run: &Running, needle: &str) {
    let deadline = Instant::now() + SETTLE;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match run.log().recv_timeout(left) {
            Ok(line) if line.contains(needle) => return,
            Ok(_) => {}
            Err(_) => panic!("no log line with {needle:?} within {SETTLE:?}"),
        }
    }
}

#[test]
fn sigterm_lets_the_request_in_flight_finish_then_exits_0() {
    let backend = GatedBackend::start("127.0.7.2");
    let mut run = start_with_workers(
        "drain.yaml",
        &config(
            "127.0.7.3:0",
            "{delay: 200ms, timeout: 10s}",
            backend.backend.addr(),
        ),
        1,
    );
    let mut busy = Client::connect(run.addr);
    busy.send(get("pt.test", "/hold").as_bytes());
    backend.wait_held();

    run.child.signal("TERM");
    // The worker closed its listener: it is draining.
    wait_refused(run.addr);
    assert!(
        run.child.exited().is_none(),
        "strait exited with a request in flight"
    );
    backend.release.send(()).unwrap();
    let resp = busy.response(false);
    assert_eq!((resp.status, resp.text().as_str()), (200, "held"));
    assert!(resp.connection_has("close"), "{:?}", resp.headers);
    assert!(busy.closed());
    let exit = run.child.wait_exit();
    assert!(exit.success(), "{exit:?}");
}

#[test]
fn a_second_sigterm_during_a_long_shutdown_delay_exits_at_once() {
    let backend = echo("127.0.7.4");
    let mut run = start_with_workers(
        "second.yaml",
        &config("127.0.7.5:0", "{delay: 30s, timeout: 30s}", backend.addr()),
        1,
    );
    run.child.signal("TERM");
    wait_log(&run, "graceful stop: readiness off");
    // Still serving during the delay.
    let resp = Client::connect(run.addr).request(&get("st.test", "/"));
    assert_eq!(resp.status, 200);
    let second = Instant::now();
    run.child.signal("TERM");
    let exit = run.child.wait_exit();
    let took = second.elapsed();
    assert!(exit.code().is_some(), "killed by a signal: {exit:?}");
    assert!(took < Duration::from_secs(5), "exited {took:?} after it");
}

#[test]
fn sigint_stops_at_once_despite_a_long_shutdown_delay() {
    let backend = echo("127.0.7.6");
    let mut run = start_with_workers(
        "sigint.yaml",
        &config("127.0.7.7:0", "{delay: 30s, timeout: 30s}", backend.addr()),
        1,
    );
    let mut idle = Client::connect(run.addr);
    assert_eq!(idle.request(&get("si.test", "/")).status, 200);
    let sent = Instant::now();
    run.child.signal("INT");
    let exit = run.child.wait_exit();
    let took = sent.elapsed();
    assert!(exit.code().is_some(), "killed by a signal: {exit:?}");
    assert!(
        took < Duration::from_secs(5),
        "exited {took:?} after SIGINT"
    );
    assert!(idle.closed());
}

// === restart under load ===

/// What the load clients saw.
#[derive(Default)]
struct Tally {
    /// 200 responses.
    ok: AtomicUsize,
    /// 200 responses to requests started after the old process exited.
    ok_after_exit: AtomicUsize,
    /// Connects refused.
    refused: AtomicUsize,
    /// New connections closed or reset before any response byte.
    reset: AtomicUsize,
    /// Anything else: other statuses, timeouts, torn responses, a retry failing.
    failed: AtomicUsize,
    /// Reused keep-alive connections closed before any response byte, retried once on a
    /// new connection (what HTTP clients do).
    retries: AtomicUsize,
    /// The first few failures, for the assertion message.
    errors: Mutex<Vec<String>>,
}

impl Tally {
    fn note(&self, counter: &AtomicUsize, error: String) {
        counter.fetch_add(1, Ordering::SeqCst);
        let mut errors = self.errors.lock().unwrap();
        if errors.len() < 10 {
            errors.push(error);
        }
    }
}

/// Why an exchange failed.
enum Failure {
    Refused(String),
    /// Closed or reset before any response byte (the request may not have been read).
    NoResponse(String),
    Other(String),
}

/// Timeout of each load client's connect, read and write.
const LOAD_IO_TIMEOUT: Duration = Duration::from_secs(10);

fn connect(addr: SocketAddr) -> Result<TcpStream, Failure> {
    let stream = TcpStream::connect_timeout(&addr, LOAD_IO_TIMEOUT).map_err(|e| {
        if e.kind() == std::io::ErrorKind::ConnectionRefused {
            Failure::Refused(e.to_string())
        } else {
            Failure::Other(format!("connect: {e}"))
        }
    })?;
    stream.set_read_timeout(Some(LOAD_IO_TIMEOUT)).unwrap();
    stream.set_write_timeout(Some(LOAD_IO_TIMEOUT)).unwrap();
    stream.set_nodelay(true).unwrap();
    Ok(stream)
}

/// Sends `request` and reads a 200 response with a Content-Length body; `Ok(true)` when
/// the response closes the connection. Errors do not panic: they are counted.
fn exchange(stream: &mut TcpStream, request: &[u8]) -> Result<bool, Failure> {
    if let Err(e) = stream.write_all(request) {
        return Err(Failure::NoResponse(format!("write: {e}")));
    }
    let mut buf = Vec::with_capacity(1024);
    let mut piece = [0u8; 4096];
    let head_end = loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
        match stream.read(&mut piece) {
            Ok(0) if buf.is_empty() => return Err(Failure::NoResponse("EOF".into())),
            Ok(0) => return Err(Failure::Other("EOF in the response head".into())),
            Ok(n) => buf.extend_from_slice(&piece[..n]),
            Err(e)
                if buf.is_empty()
                    && matches!(
                        e.kind(),
                        std::io::ErrorKind::ConnectionReset | std::io::ErrorKind::ConnectionAborted
                    ) =>
            {
                return Err(Failure::NoResponse(format!("read: {e}")))
            }
            Err(e) => return Err(Failure::Other(format!("read the head: {e}"))),
        }
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).to_ascii_lowercase();
    let status = head.split(' ').nth(1).unwrap_or_default().to_owned();
    let header = |name: &str| {
        head.lines()
            .find_map(|l| l.strip_prefix(name).map(|v| v.trim().to_owned()))
    };
    let length: usize = header("content-length:")
        .and_then(|v| v.parse().ok())
        .ok_or_else(|| Failure::Other(format!("no Content-Length: {head:?}")))?;
    let close = header("connection:").is_some_and(|v| v.contains("close"));
    while buf.len() < head_end + length {
        match stream.read(&mut piece) {
            Ok(0) => return Err(Failure::Other("EOF in the body".into())),
            Ok(n) => buf.extend_from_slice(&piece[..n]),
            Err(e) => return Err(Failure::Other(format!("read the body: {e}"))),
        }
    }
    if status != "200" {
        let body = String::from_utf8_lossy(&buf[head_end..]);
        return Err(Failure::Other(format!("status {status}: {body}")));
    }
    Ok(close)
}

/// A load client: one request after another until `stop`, on a new connection each time
/// or on a keep-alive connection (reconnecting after a `Connection: close`, and retrying
/// once on a new connection when a reused one closes before any response byte).
fn load(addr: SocketAddr, keep_alive: bool, stop: &AtomicBool, exited: &AtomicBool, t: &Tally) {
    let request: &[u8] = if keep_alive {
        b"GET /anything HTTP/1.1\r\nHost: restart.test\r\n\r\n"
    } else {
        b"GET /anything HTTP/1.1\r\nHost: restart.test\r\nConnection: close\r\n\r\n"
    };
    let mut conn: Option<TcpStream> = None;
    while !stop.load(Ordering::SeqCst) {
        let after_exit = exited.load(Ordering::SeqCst);
        let reused = conn.is_some();
        let mut stream = match conn.take() {
            Some(s) => s,
            None => match connect(addr) {
                Ok(s) => s,
                Err(Failure::Refused(e)) => {
                    t.note(&t.refused, e);
                    continue;
                }
                Err(Failure::NoResponse(e) | Failure::Other(e)) => {
                    t.note(&t.failed, e);
                    continue;
                }
            },
        };
        let mut result = exchange(&mut stream, request);
        if reused {
            if let Err(Failure::NoResponse(_)) = result {
                t.retries.fetch_add(1, Ordering::SeqCst);
                result = connect(addr).and_then(|mut s| {
                    let r = exchange(&mut s, request);
                    stream = s;
                    r
                });
            }
        }
        match result {
            Ok(close) => {
                t.ok.fetch_add(1, Ordering::SeqCst);
                if after_exit {
                    t.ok_after_exit.fetch_add(1, Ordering::SeqCst);
                }
                if keep_alive && !close {
                    conn = Some(stream);
                }
            }
            Err(Failure::Refused(e)) => t.note(&t.refused, e),
            Err(Failure::NoResponse(e)) if !reused => {
                t.note(&t.reset, format!("new connection: {e}"))
            }
            Err(Failure::NoResponse(e) | Failure::Other(e)) => t.note(&t.failed, e),
        }
    }
}

/// A free port on `ip`: bound and released at once (the IP is this test's own).
fn free_port(ip: &str) -> u16 {
    let listener = TcpListener::bind(format!("{ip}:0")).unwrap();
    listener.local_addr().unwrap().port()
}

/// Whether `strait probe --socket SOCKET /readyz` says ready (exit 0).
fn probe_ready(socket: &std::path::Path) -> bool {
    crate::support::child::strait()
        .args(["probe", "--socket", socket.to_str().unwrap(), "/readyz"])
        .output()
        .is_ok_and(|o| o.status.success())
}

#[test]
fn three_upgrades_in_a_row_refuse_no_connection_and_fail_no_request() {
    // As on the host network: every process binds the same listener and admin ports
    // (SO_REUSEPORT); each answers its own probe on its own admin socket (a pod's own
    // filesystem), so a probe means the process it asks.
    const CLIENTS: usize = 16;
    const UPGRADES: usize = 3;
    let backend = echo("127.0.7.10");
    let listen = format!("127.0.7.11:{}", free_port("127.0.7.11"));
    let admin = format!("127.0.7.11:{}", free_port("127.0.7.11"));
    let dir = std::path::PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("it-{}-upgrades", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let generation = |g: usize| {
        let socket = dir.join(format!("admin-{g}.sock"));
        let yaml = format!(
            "admin: {{listen: '{admin}', socket: '{}'}}\n{}",
            socket.display(),
            config(&listen, "{delay: 200ms, timeout: 5s}", backend.addr())
        );
        let run = start_with_workers(&format!("upgrade-{g}.yaml"), &yaml, 2);
        eventually("the new process ready on its own socket", || {
            probe_ready(&socket).then_some(())
        });
        run
    };
    let mut old = generation(0);
    let addr = old.addr;

    let stop = Arc::new(AtomicBool::new(false));
    let exited = Arc::new(AtomicBool::new(false));
    let tally = Arc::new(Tally::default());
    let clients: Vec<_> = (0..CLIENTS)
        .map(|i| {
            let (stop, exited, tally) = (stop.clone(), exited.clone(), tally.clone());
            std::thread::spawn(move || load(addr, i % 2 == 1, &stop, &exited, &tally))
        })
        .collect();
    let ok = |n: usize| {
        let tally = tally.clone();
        move || (tally.ok.load(Ordering::SeqCst) >= n).then_some(())
    };
    eventually("the load running through the first process", ok(200));

    for g in 1..=UPGRADES {
        // The new process starts beside the old one (same listener and admin ports) and
        // turns ready; only then is the old one stopped.
        let new = generation(g);
        assert_eq!(new.addr, addr);
        let before = tally.ok.load(Ordering::SeqCst);
        eventually("more load with both processes", ok(before + 200));
        old.child.signal("TERM");
        let exit = old.child.wait_exit();
        assert!(exit.success(), "process {}: {exit:?}", g - 1);
        exited.store(true, Ordering::SeqCst);
        let before = tally.ok.load(Ordering::SeqCst);
        eventually("load served by the new process alone", ok(before + 200));
        old = new;
    }
    stop.store(true, Ordering::SeqCst);
    for c in clients {
        c.join().unwrap();
    }
    old.child.signal("TERM");
    let exit = old.child.wait_exit();
    assert!(exit.success(), "the last process: {exit:?}");
    std::fs::remove_dir_all(&dir).ok();

    let migrate = std::fs::read_to_string("/proc/sys/net/ipv4/tcp_migrate_req")
        .map_or_else(|_| "unknown".to_owned(), |s| s.trim().to_owned());
    let n = |c: &AtomicUsize| c.load(Ordering::SeqCst);
    eprintln!(
        "{UPGRADES} upgrades: {} requests ok ({} after the first old process exited), {} refused, {} new \
         connections reset before a response, {} failed, {} keep-alive retries; \
         net.ipv4.tcp_migrate_req={migrate}",
        n(&tally.ok),
        n(&tally.ok_after_exit),
        n(&tally.refused),
        n(&tally.reset),
        n(&tally.failed),
        n(&tally.retries),
    );
    let errors = tally.errors.lock().unwrap().clone();
    assert_eq!(n(&tally.refused), 0, "refused connections: {errors:#?}");
    // Without tcp_migrate_req the kernel resets a connection that lands on the old
    // process's socket between its last accept and its close (CONFIG.md "shutdown"); with
    // it (./dev test sets it), the connection moves to the new process's socket.
    let window = if migrate == "1" { 0 } else { 2 };
    assert!(
        n(&tally.reset) <= window,
        "new connections reset (tcp_migrate_req={migrate}, at most {window} allowed): {errors:#?}"
    );
    assert_eq!(n(&tally.failed), 0, "failed requests: {errors:#?}");
    assert!(n(&tally.ok_after_exit) > 0);
}
