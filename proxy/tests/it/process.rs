//! The real `strait` binary as a child process: `strait check` on good and bad files,
//! `strait run` serving, stopping on SIGTERM, and 1 GiB streamed each way with the
//! process's RSS measured from /proc.
//!
//! The child is killed by a drop guard, so a failing test leaves no process behind.

use std::io::Write;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Output, Stdio};
use std::sync::mpsc;
use std::time::Instant;

use strait::echo::pattern_matches;

use crate::support::child::{signal, strait, ChildProcess};
use crate::support::{driver_line, echo, get, Client, Framing, SETTLE};

/// Writes `text` to a file of its own under cargo's temporary directory for tests.
pub(crate) fn temp_file(name: &str, text: &str) -> PathBuf {
    let path = PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("it-{}-{name}", std::process::id()));
    std::fs::write(&path, text).unwrap();
    path
}

/// Runs `strait` with `args` to completion, with a deadline (then it is killed).
fn run_to_end(args: &[&str]) -> Output {
    let child = strait()
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let pid = child.id();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    match rx.recv_timeout(SETTLE) {
        Ok(out) => out.unwrap(),
        Err(_) => {
            let _ = signal(pid, "KILL");
            panic!("strait {args:?} did not finish in {SETTLE:?}");
        }
    }
}

const GOOD: &str = "
workers: 1
listeners:
  - name: http
    address: 127.0.0.1:0
services:
  - name: sd-app
    hosts: [sd.httpbin.org]
    path_prefix: /v1
    upstream: httpbin
    routes:
      - name: anything
        path: /anything
        strip_prefix: true
      - name: bytes
        path: /bytes
        strip_prefix: true
upstreams:
  - name: httpbin
    nodes:
      - address: '{b0}'
";

#[test]
fn check_accepts_a_good_file_and_exits_0() {
    let path = temp_file("good.yaml", &GOOD.replace("{b0}", "127.0.0.2:8080"));
    let out = run_to_end(&["check", path.to_str().unwrap()]);
    assert!(out.status.success(), "{out:?}");
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("ok"),
        "{out:?}"
    );
}

#[test]
fn check_refuses_a_bad_file_naming_the_field_and_the_line() {
    let bad = GOOD
        .replace("{b0}", "127.0.0.2:8080")
        .replace("    upstream: httpbin\n", "    upstream: nowhere\n");
    let path = temp_file("bad.yaml", &bad);
    let out = run_to_end(&["check", path.to_str().unwrap()]);
    assert!(!out.status.success(), "{out:?}");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("services[0].upstream"), "{stderr}");
    assert!(stderr.contains("line 10"), "{stderr}");
    assert!(stderr.contains("nowhere"), "{stderr}");

    let path = temp_file(
        "typo.yaml",
        &GOOD.replace(
            "strip_prefix: true\n      - name: bytes",
            "strip_prefx: true\n      - name: bytes",
        ),
    );
    let out = run_to_end(&["check", path.to_str().unwrap()]);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("services[0].routes[0].strip_prefx"),
        "{stderr}"
    );
    assert!(stderr.contains("line 14"), "{stderr}");
}

#[test]
fn check_of_a_missing_file_fails() {
    let out = run_to_end(&["check", "/nonexistent/strait.yaml"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("/nonexistent/strait.yaml"));
}

/// A running `strait run` child and the address it listens on.
pub(crate) struct Running {
    pub(crate) child: ChildProcess,
    pub(crate) addr: SocketAddr,
}

impl Running {
    /// The child's stderr (its log), line by line.
    pub(crate) fn log(&self) -> &mpsc::Receiver<String> {
        self.child.log.as_ref().expect("stderr is piped")
    }
}

/// Starts `strait run --config FILE --workers 1` and waits for its "listening" line.
fn start(name: &str, yaml: &str) -> Running {
    start_with_workers(name, yaml, 1)
}

/// Starts `strait run --config FILE --workers N` and waits for its "listening" line.
pub(crate) fn start_with_workers(name: &str, yaml: &str, workers: usize) -> Running {
    // Any free admin port: tests run at once, and the restart test runs two gateways.
    let admin = if yaml.contains("admin:") {
        ""
    } else {
        "admin: {listen: '127.0.0.1:0'}\n"
    };
    let path = temp_file(name, &format!("{}{admin}{yaml}", driver_line()));
    let child = ChildProcess::spawn(
        strait()
            .args(["run", "--config", path.to_str().unwrap()])
            .args(["--workers", &workers.to_string()])
            .stderr(Stdio::piped()),
    );
    // "strait listening on 127.0.0.1:PORT (http), …"
    let rest = child.line_after("strait listening on ");
    let addr = rest.split_whitespace().next().unwrap().parse().unwrap();
    Running { child, addr }
}

#[test]
fn run_serves_the_seed_example() {
    let backend = echo("127.0.5.2");
    let run = start(
        "serve.yaml",
        &GOOD.replace("{b0}", &backend.addr().to_string()),
    );
    let mut c = Client::connect(run.addr);
    let resp = c.request(&get("sd.httpbin.org", "/v1/anything"));
    assert_eq!(resp.status, 200);
    assert_eq!(resp.json()["url"], "http://sd.httpbin.org/anything");
    assert_eq!(resp.backend(), backend.addr().to_string());
    assert_eq!(c.request(&get("sd.httpbin.org", "/nothing")).status, 404);
}

#[test]
fn run_stops_cleanly_on_sigterm() {
    let backend = echo("127.0.5.3");
    let mut run = start(
        "term.yaml",
        &GOOD.replace("{b0}", &backend.addr().to_string()),
    );
    assert_eq!(
        Client::connect(run.addr)
            .request(&get("sd.httpbin.org", "/v1/anything"))
            .status,
        200
    );
    run.child.signal("TERM");
    let exit = run.child.wait_exit();
    assert!(exit.success(), "{exit:?}");
}

/// A field of /proc/PID/status in KiB.
fn status_kib(pid: u32, field: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = status
        .lines()
        .find(|l| l.starts_with(field))
        .unwrap_or_else(|| panic!("{field} in /proc/{pid}/status"));
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

/// Resets the peak RSS (VmHWM) of `pid` to its current RSS; false where not allowed.
fn reset_peak_rss(pid: u32) -> bool {
    std::fs::OpenOptions::new()
        .write(true)
        .open(format!("/proc/{pid}/clear_refs"))
        .and_then(|mut f| f.write_all(b"5"))
        .is_ok()
}

/// Streams `len` bytes up with Content-Length to `/v1/anything` (the echo backend only
/// counts a large body) and checks the count it reports.
fn upload(c: &mut Client, len: u64) {
    c.send(
        format!(
            "POST /v1/anything HTTP/1.1\r\nHost: sd.httpbin.org\r\nContent-Length: {len}\r\n\r\n"
        )
        .as_bytes(),
    );
    let piece = vec![b'x'; 1024 * 1024];
    let mut left = len;
    while left > 0 {
        let n = left.min(piece.len() as u64) as usize;
        c.send(&piece[..n]);
        left -= n as u64;
    }
    let resp = c.response(false);
    assert_eq!(resp.status, 200);
    assert_eq!(resp.json()["body_length"], len);
}

/// Streams `len` bytes down from `/v1/bytes/LEN`, checking them against the pattern
/// piece by piece.
fn download(c: &mut Client, len: u64) {
    c.send(get("sd.httpbin.org", &format!("/v1/bytes/{len}")).as_bytes());
    let mut resp = c.read_head();
    assert_eq!(resp.status, 200);
    let mut got = 0u64;
    let mut same = true;
    c.read_body(&mut resp, false, |data| {
        same &= pattern_matches(got, data);
        got += data.len() as u64;
    });
    assert_eq!(resp.framing, Framing::Length(len));
    assert_eq!(got, len);
    assert!(same, "the download differs from the pattern");
}

#[test]
fn run_streams_a_1_gib_upload_and_a_1_gib_download_without_growing_rss() {
    const GIB: u64 = 1 << 30;
    const LIMIT_KIB: u64 = 8 * 1024;
    let backend = echo("127.0.5.4");
    // No body size limit for the 1 GiB upload.
    let yaml = format!(
        "http:\n  max_request_body_bytes: 0\n{}",
        GOOD.replace("{b0}", &backend.addr().to_string())
    );
    let run = start("gib.yaml", &yaml);
    let pid = run.child.pid();
    let mut c = Client::connect(run.addr);
    // Warm-up: buffers, pool and allocator reach their steady state.
    upload(&mut c, 16 << 20);
    download(&mut c, 16 << 20);
    let peak_known = reset_peak_rss(pid);
    let before = status_kib(pid, "VmRSS");

    let started = Instant::now();
    upload(&mut c, GIB);
    let up = started.elapsed();
    let after_up = status_kib(pid, "VmRSS");
    let started = Instant::now();
    download(&mut c, GIB);
    let down = started.elapsed();
    let after = status_kib(pid, "VmRSS");
    let peak = status_kib(pid, "VmHWM");
    eprintln!(
        "1 GiB up in {up:?}, down in {down:?}; VmRSS {before} KiB → {after_up} KiB → {after} KiB, \
         peak {peak} KiB{}",
        if peak_known {
            ""
        } else {
            " (peak not reset: includes warm-up)"
        }
    );
    assert!(
        after_up.saturating_sub(before) < LIMIT_KIB,
        "RSS grew {} KiB during the upload",
        after_up - before
    );
    assert!(
        after.saturating_sub(before) < LIMIT_KIB,
        "RSS grew {} KiB",
        after - before
    );
    if peak_known {
        assert!(
            peak.saturating_sub(before) < LIMIT_KIB,
            "peak RSS {} KiB above the start",
            peak - before
        );
    }
    // The connection is still in sync after 2 GiB.
    assert_eq!(
        c.request(&get("sd.httpbin.org", "/v1/anything")).status,
        200
    );
}

/// A connection to `addr` from `source` (any port), with [`Client`]'s timeouts.
fn connect_from(source: std::net::IpAddr, addr: SocketAddr) -> std::net::TcpStream {
    use socket2::{Domain, Protocol, Socket, Type};
    let socket = Socket::new(Domain::IPV4, Type::STREAM, Some(Protocol::TCP)).unwrap();
    socket
        .bind(&SocketAddr::new(source, 0).into())
        .unwrap_or_else(|e| panic!("bind {source}: {e}"));
    socket
        .connect_timeout(&addr.into(), crate::support::IO_TIMEOUT)
        .unwrap_or_else(|e| panic!("connect from {source}: {e}"));
    let stream: std::net::TcpStream = socket.into();
    stream
        .set_read_timeout(Some(crate::support::IO_TIMEOUT))
        .unwrap();
    stream
}

/// Raises this process's soft limit on open files to `want` (the children it spawns
/// inherit it); false when the hard limit is lower.
#[allow(unsafe_code)]
fn raise_nofile(want: u64) -> bool {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: `lim` is a valid, writable rlimit for the duration of the call.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } != 0 || lim.rlim_max < want {
        return false;
    }
    if lim.rlim_cur >= want {
        return true;
    }
    lim.rlim_cur = want;
    // SAFETY: `lim` is a valid rlimit, its soft limit within its hard one.
    unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &lim) == 0 }
}

/// The figure recorded in bench/README.md ("Idle connections").
#[test]
fn ten_thousand_idle_keep_alive_connections_cost_under_100_mib() {
    use std::io::{BufRead, BufReader, Read};
    const CONNECTIONS: usize = 10_000;
    const LIMIT_KIB: u64 = 100 * 1024;
    // The test's client ends, the suite's other tests and the child's connections.
    if !raise_nofile(CONNECTIONS as u64 + 4096) {
        eprintln!("skipped: the open-files hard limit is below {CONNECTIONS} + 4096");
        return;
    }
    let backend = echo("127.0.12.40");
    let run = start(
        "idle.yaml",
        &GOOD.replace("{b0}", &backend.addr().to_string()),
    );
    let pid = run.child.pid();
    let request = get("sd.httpbin.org", "/v1/anything");
    // Warm-up: the upstream connection, buffers and allocator in their steady state.
    let mut c = Client::connect(run.addr);
    assert_eq!(c.request(&request).status, 200);
    let before = status_kib(pid, "VmRSS");
    // Spread over 127.0.13.x: no source address runs out of ephemeral ports.
    let mut open = Vec::with_capacity(CONNECTIONS);
    let started = Instant::now();
    for i in 0..CONNECTIONS {
        let source = std::net::IpAddr::from([127, 0, 13, 1 + (i / 1000) as u8]);
        let stream = connect_from(source, run.addr);
        (&stream).write_all(request.as_bytes()).unwrap();
        // One response: its head, then Content-Length bytes.
        let mut reader = BufReader::new(stream);
        let mut length = 0;
        let mut line = String::new();
        loop {
            line.clear();
            reader.read_line(&mut line).unwrap();
            if line == "\r\n" {
                break;
            }
            if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                length = v.trim().parse().unwrap();
            }
        }
        assert!(line.len() == 2 && length > 0, "response {i}");
        let mut body = vec![0u8; length];
        reader.read_exact(&mut body).unwrap();
        open.push(reader.into_inner());
    }
    let opened = started.elapsed();
    let after = status_kib(pid, "VmRSS");
    let grew = after.saturating_sub(before);
    eprintln!(
        "{CONNECTIONS} idle keep-alive connections (opened in {opened:?}): VmRSS {before} KiB → \
         {after} KiB, +{grew} KiB, {} bytes each",
        grew * 1024 / CONNECTIONS as u64
    );
    assert!(
        grew < LIMIT_KIB,
        "{CONNECTIONS} idle connections cost {grew} KiB"
    );
    // Still serving.
    assert_eq!(c.request(&request).status, 200);
    drop(open);
}
