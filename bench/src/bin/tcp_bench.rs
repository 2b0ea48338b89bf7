//! Question: how does strait proxy plain TCP (`protocol: tcp` listeners, issue 6) compared
//! with HAProxy in TCP mode, on loopback, with the same number of worker threads? For one
//! large stream each way: MiB/s and the proxy's CPU time per MiB. For many short
//! connections (connect, 64 bytes up, 64 bytes down, close): connections/s, p50 and p99
//! of one connection's time, and the proxy's CPU time per connection. For idle
//! connections (a database pool's): the proxy's resident memory per connection.
//!
//! Inputs: one backend in this process (one thread per concurrent connection, on the load
//! core) speaking a tiny protocol: `D` + a length → it sends that many bytes and closes;
//! `U` → it reads to EOF and answers the byte count; `S` + 63 bytes → it answers 64 bytes
//! and closes; `H` → it holds the connection open, idle. In front of it, both running
//! throughout and both pinned to the proxy
//! cores with taskset:
//! - strait: `strait run`, `workers: N`, one `protocol: tcp` listener, one static upstream,
//!   admin off (64 KiB buffers per direction, the listener's defaults);
//! - HAProxy: `nbthread N`, `mode tcp`, one `listen` section with the backend as its one
//!   server, timeouts 5s connect / 1h client and server, everything else its defaults
//!   (16 KiB buffers, no splicing).
//!
//! Each round runs strait then HAProxy (a warm-up, then the download, the upload and the
//! short connections phase, the load from this process on the load core); a proxy's CPU
//! time is utime + stime from `/proc/PID/stat` over each phase. Ratios are strait/HAProxy
//! within a round; the report gives every run, and the median ratios. After the rounds,
//! `--idle` connections are opened through each proxy (one byte each, then idle) and its
//! `VmRSS` (`/proc/PID/status`) read before and after; kernel socket buffers are not in it.
//!
//! Output: a table on stdout and in `bench/results/tcp-<timestamp>.txt`; configs and proxy
//! logs in the directory of the same name.
//!
//! Run: `bench/wrk/tcp.sh` (installs haproxy, builds, runs this), or
//! `cargo run --release -p strait-bench --bin tcp-bench -- --help`.

use std::fmt::Write as _;
use std::fs::{self, File};
use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context, Result};
use clap::{Parser, ValueEnum};
use strait_bench::{
    find_program, machine_lines, pin_to, strait_binary, version, workspace_root, CpuClock, CpuTime,
    ResultPaths,
};

/// A short connection's request and answer size.
const SHORT: usize = 64;
/// Read and write size of the load and the backend.
const CHUNK: usize = 256 * 1024;
/// Timeout of every socket operation of the load.
const IO_TIMEOUT: Duration = Duration::from_secs(20);

#[derive(Parser)]
#[command(about = "plain TCP through strait and HAProxy: one large stream, many short connections")]
struct Args {
    /// Rounds; each runs every proxy once.
    #[arg(long, default_value_t = 3)]
    rounds: usize,
    /// MiB of each stream (download, then upload).
    #[arg(long, default_value_t = 2048)]
    stream_mib: u64,
    /// Length of the short connections phase.
    #[arg(long, default_value = "5s", value_parser = humantime::parse_duration)]
    duration: Duration,
    /// Concurrent short-connection clients (threads).
    #[arg(long, default_value_t = 32)]
    clients: usize,
    /// Idle connections opened through each proxy for the memory figure (0: none).
    #[arg(long, default_value_t = 2000)]
    idle: usize,
    /// Worker threads of each proxy (strait `workers`, HAProxy `nbthread`).
    #[arg(long, default_value_t = 1)]
    workers: usize,
    /// CPUs of the proxies (a taskset list).
    #[arg(long, default_value = "0")]
    proxy_cpus: String,
    /// Core of this process: the load and the backend.
    #[arg(long, default_value_t = 1)]
    load_core: usize,
    /// strait's I/O driver.
    #[arg(long, value_enum, default_value_t = Driver::Auto)]
    driver: Driver,
    /// Proxies to run, in this order, within each round.
    #[arg(long, value_delimiter = ',', default_value = "strait,haproxy")]
    proxies: Vec<Kind>,
    #[arg(long, default_value = "127.0.0.51:28100")]
    backend: SocketAddr,
    #[arg(long, default_value = "127.0.0.52:28101")]
    strait_addr: SocketAddr,
    #[arg(long, default_value = "127.0.0.53:28102")]
    haproxy_addr: SocketAddr,
    /// The strait binary (default: `strait` beside this binary, else
    /// `$CARGO_TARGET_DIR/release/strait`).
    #[arg(long)]
    strait_bin: Option<PathBuf>,
    /// Where the result file and raw directory go (default: bench/results).
    #[arg(long)]
    results_dir: Option<PathBuf>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Driver {
    Auto,
    IoUring,
    Legacy,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Kind {
    Strait,
    Haproxy,
}

impl Kind {
    fn name(self) -> &'static str {
        match self {
            Kind::Strait => "strait",
            Kind::Haproxy => "haproxy",
        }
    }
}

fn main() -> Result<()> {
    let args = Args::parse();
    ensure!(args.rounds > 0, "--rounds must be at least 1");
    ensure!(args.clients > 0, "--clients must be at least 1");
    ensure!(args.workers > 0, "--workers must be at least 1");
    for a in [args.backend, args.strait_addr, args.haproxy_addr] {
        ensure!(
            a.ip().is_loopback(),
            "{a} is not a loopback address (the load stays on this machine)"
        );
    }
    // The load, the backend and their threads on the load core.
    pin_to(args.load_core, "tcp-bench");
    let root = workspace_root();
    let strait_bin = strait_binary(args.strait_bin.as_deref())?;
    let haproxy_bin =
        find_program("haproxy").context("haproxy not found (apt-get install haproxy)")?;
    find_program("taskset").context("taskset not found (apt-get install util-linux)")?;
    let paths = ResultPaths::create(args.results_dir.as_deref(), "tcp")?;
    let raw = paths.raw.clone();

    let mut header = String::from("strait vs HAProxy, plain TCP on loopback (tcp-bench)\n");
    header.push_str(&machine_lines(&root));
    let _ = writeln!(header, "haproxy:  {}", version(&haproxy_bin, "-v"));
    let _ = writeln!(
        header,
        "setup:    {} worker thread(s) each, proxies on CPUs {}, load + backend on core {}; strait driver {:?}",
        args.workers, args.proxy_cpus, args.load_core, args.driver
    );
    let _ = writeln!(
        header,
        "phases:   download and upload of {} MiB on one connection each; short connections for {:?} from {} clients ({SHORT} B each way, then close)",
        args.stream_mib, args.duration, args.clients
    );
    eprint!("{header}");

    let held = start_backend(args.backend, args.clients + 4)?;
    let cpu = CpuClock::new();
    let mut proxies = Vec::new();
    for kind in &args.proxies {
        let p = match kind {
            Kind::Strait => start_strait(&args, &strait_bin, &raw)?,
            Kind::Haproxy => start_haproxy(&args, &haproxy_bin, &raw)?,
        };
        warm_up(&p, &args)?;
        proxies.push(p);
    }
    let mut rows = Vec::new();
    for round in 1..=args.rounds {
        for p in &mut proxies {
            eprintln!("round {round}: {} ...", p.kind.name());
            let run = run_phases(p, &args, &cpu)
                .with_context(|| format!("round {round}, {}", p.kind.name()))?;
            eprintln!("  {}", run.line(round, p.kind));
            rows.push((round, p.kind, run));
        }
    }
    let mut idle = Vec::new();
    if args.idle > 0 {
        for p in &proxies {
            eprintln!(
                "idle: {} connections through {} ...",
                args.idle,
                p.kind.name()
            );
            let kb = idle_memory(p, args.idle, &held)
                .with_context(|| format!("idle connections through {}", p.kind.name()))?;
            eprintln!("  {kb:.1} KB per idle connection");
            idle.push((p.kind, kb));
        }
    }
    let mut report = format!("{header}\n{}", report(&rows, &args));
    if !idle.is_empty() {
        let _ = writeln!(
            report,
            "\nidle connections: proxy VmRSS growth with {} open, per connection",
            args.idle
        );
        for (kind, kb) in &idle {
            let _ = writeln!(report, "{:<8} {kb:>8.1} KB", kind.name());
        }
    }
    print!("{report}");
    paths.write_summary(&report)?;
    Ok(())
}

// === The backend ===

/// Connections the backend holds open (`H`).
type Held = Arc<Mutex<Vec<TcpStream>>>;

/// Serves the bench protocol on `addr` with `threads` threads sharing the listener.
fn start_backend(addr: SocketAddr, threads: usize) -> Result<Held> {
    let listener = TcpListener::bind(addr).with_context(|| format!("backend on {addr}"))?;
    let held = Held::default();
    for _ in 0..threads {
        let l = listener.try_clone()?;
        let held = held.clone();
        thread::spawn(move || {
            let data = vec![0x5au8; CHUNK];
            let mut buf = vec![0u8; CHUNK];
            for stream in l.incoming().flatten() {
                if let Ok(Some(s)) = serve_backend(stream, &data, &mut buf) {
                    held.lock().unwrap_or_else(|e| e.into_inner()).push(s);
                }
            }
        });
    }
    Ok(held)
}

/// Serves one connection; returns it when it is to be held open.
fn serve_backend(
    mut s: TcpStream,
    data: &[u8],
    buf: &mut [u8],
) -> std::io::Result<Option<TcpStream>> {
    s.set_nodelay(true)?;
    s.set_read_timeout(Some(IO_TIMEOUT))?;
    s.set_write_timeout(Some(IO_TIMEOUT))?;
    let mut cmd = [0u8; 1];
    s.read_exact(&mut cmd)?;
    match cmd[0] {
        b'D' => {
            let mut len = [0u8; 8];
            s.read_exact(&mut len)?;
            let mut left = u64::from_le_bytes(len);
            while left > 0 {
                let n = left.min(data.len() as u64) as usize;
                s.write_all(&data[..n])?;
                left -= n as u64;
            }
        }
        b'U' => {
            let mut total = 0u64;
            loop {
                match s.read(buf)? {
                    0 => break,
                    n => total += n as u64,
                }
            }
            s.write_all(&total.to_le_bytes())?;
        }
        b'S' => {
            s.read_exact(&mut buf[..SHORT - 1])?;
            s.write_all(&data[..SHORT])?;
        }
        b'H' => return Ok(Some(s)),
        _ => {}
    }
    Ok(None)
}

// === The proxies ===

struct Proxy {
    kind: Kind,
    child: Child,
    addr: SocketAddr,
}

impl Drop for Proxy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start_strait(args: &Args, bin: &Path, raw: &Path) -> Result<Proxy> {
    let driver = match args.driver {
        Driver::Auto => "auto",
        Driver::IoUring => "io_uring",
        Driver::Legacy => "legacy",
    };
    let config = format!(
        "workers: {workers}
driver: {driver}
admin: {{enabled: false}}
listeners:
  - {{name: tcp, address: '{addr}', protocol: tcp, upstream: backend}}
upstreams:
  - {{name: backend, nodes: [{{address: '{backend}'}}]}}
",
        workers = args.workers,
        addr = args.strait_addr,
        backend = args.backend,
    );
    let path = raw.join("strait.yaml");
    fs::write(&path, config)?;
    let mut cmd = Command::new(bin);
    cmd.arg("run").arg("--config").arg(&path);
    spawn(Kind::Strait, args, cmd, args.strait_addr, raw)
}

fn start_haproxy(args: &Args, bin: &Path, raw: &Path) -> Result<Proxy> {
    let config = format!(
        "global
    nbthread {workers}
    maxconn 5000

defaults
    mode tcp
    timeout connect 5s
    timeout client 1h
    timeout server 1h

listen tcp
    bind {addr}
    server backend {backend}
",
        workers = args.workers,
        addr = args.haproxy_addr,
        backend = args.backend,
    );
    let path = raw.join("haproxy.cfg");
    fs::write(&path, config)?;
    let mut cmd = Command::new(bin);
    cmd.arg("-db").arg("-f").arg(&path);
    spawn(Kind::Haproxy, args, cmd, args.haproxy_addr, raw)
}

/// Starts `cmd` on the proxy CPUs (taskset execs it: the child's PID is the proxy's),
/// its output in `raw/<kind>.log`, and waits until a short connection through it works.
fn spawn(kind: Kind, args: &Args, cmd: Command, addr: SocketAddr, raw: &Path) -> Result<Proxy> {
    let log = File::create(raw.join(format!("{}.log", kind.name())))?;
    let child = Command::new("taskset")
        .arg("-c")
        .arg(&args.proxy_cpus)
        .arg(cmd.get_program())
        .args(cmd.get_args())
        .env("STRAIT_LOG", "warn")
        .stdout(log.try_clone()?)
        .stderr(log)
        .spawn()
        .with_context(|| format!("starting {}", kind.name()))?;
    let proxy = Proxy { kind, child, addr };
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match short_connection(addr) {
            Ok(_) => return Ok(proxy),
            Err(e) if Instant::now() > deadline => {
                bail!("{} at {addr} does not proxy: {e}", kind.name())
            }
            Err(_) => thread::park_timeout(Duration::from_millis(50)),
        }
    }
}

/// An unmeasured second of short connections and a small stream each way.
fn warm_up(p: &Proxy, args: &Args) -> Result<()> {
    short_phase(p.addr, args.clients, Duration::from_secs(1))?;
    download(p.addr, 64 << 20)?;
    upload(p.addr, 64 << 20)?;
    Ok(())
}

// === The load ===

/// One proxy's figures in one round.
struct Run {
    down: Stream,
    up: Stream,
    short: Short,
}

/// One stream: its speed and the proxy's CPU time over it.
struct Stream {
    mib_s: f64,
    cpu: CpuTime,
    mib: f64,
}

impl Stream {
    fn cpu_us_per_mib(&self) -> f64 {
        self.cpu.total().as_secs_f64() * 1e6 / self.mib
    }
}

/// The short connections phase.
struct Short {
    done: u64,
    errors: u64,
    per_s: f64,
    p50_us: u32,
    p99_us: u32,
    cpu: CpuTime,
}

impl Short {
    fn cpu_us_per_conn(&self) -> f64 {
        self.cpu.total().as_secs_f64() * 1e6 / self.done.max(1) as f64
    }
}

impl Run {
    fn line(&self, round: usize, kind: Kind) -> String {
        format!(
            "{round:<5} {:<7} {:>9.0} {:>8.1} {:>9.0} {:>8.1} {:>9.0} {:>7} {:>7} {:>8.1} {:>6}",
            kind.name(),
            self.down.mib_s,
            self.down.cpu_us_per_mib(),
            self.up.mib_s,
            self.up.cpu_us_per_mib(),
            self.short.per_s,
            self.short.p50_us,
            self.short.p99_us,
            self.short.cpu_us_per_conn(),
            self.short.errors,
        )
    }
}

const ROW_HEADER: &str =
    "round proxy    down_MiB/s us/MiB   up_MiB/s us/MiB    conn/s  p50_us  p99_us us/conn errors";

fn run_phases(p: &mut Proxy, args: &Args, cpu: &CpuClock) -> Result<Run> {
    let pid = p.child.id();
    let clock = |what: &str| {
        cpu.read(pid)
            .with_context(|| format!("{} exited ({what})", p.kind.name()))
    };
    let bytes = args.stream_mib << 20;
    let mib = args.stream_mib as f64;
    let before = clock("before the download")?;
    let took = download(p.addr, bytes)?;
    let after = clock("after the download")?;
    let down = Stream {
        mib_s: mib / took.as_secs_f64(),
        cpu: after.since(before),
        mib,
    };
    let took = upload(p.addr, bytes)?;
    let before = after;
    let after = clock("after the upload")?;
    let up = Stream {
        mib_s: mib / took.as_secs_f64(),
        cpu: after.since(before),
        mib,
    };
    let before = after;
    let (mut times, errors, took) = short_phase(p.addr, args.clients, args.duration)?;
    let after = clock("after the short connections")?;
    times.sort_unstable();
    let pct = |q: f64| {
        times
            .get(((times.len() as f64 * q) as usize).min(times.len().saturating_sub(1)))
            .copied()
            .unwrap_or(0)
    };
    let short = Short {
        done: times.len() as u64,
        errors,
        per_s: times.len() as f64 / took.as_secs_f64(),
        p50_us: pct(0.50),
        p99_us: pct(0.99),
        cpu: after.since(before),
    };
    Ok(Run { down, up, short })
}

fn connect(addr: SocketAddr) -> std::io::Result<TcpStream> {
    let s = TcpStream::connect_timeout(&addr, IO_TIMEOUT)?;
    s.set_nodelay(true)?;
    s.set_read_timeout(Some(IO_TIMEOUT))?;
    s.set_write_timeout(Some(IO_TIMEOUT))?;
    Ok(s)
}

/// Asks for `bytes` and reads them to the backend's close; the time from connect to EOF.
fn download(addr: SocketAddr, bytes: u64) -> Result<Duration> {
    let began = Instant::now();
    let mut s = connect(addr)?;
    let mut req = vec![b'D'];
    req.extend_from_slice(&bytes.to_le_bytes());
    s.write_all(&req)?;
    let mut buf = vec![0u8; CHUNK];
    let mut got = 0u64;
    loop {
        match s.read(&mut buf)? {
            0 => break,
            n => got += n as u64,
        }
    }
    let took = began.elapsed();
    ensure!(got == bytes, "download: {got} of {bytes} bytes arrived");
    Ok(took)
}

/// Sends `bytes`, half-closes, and reads the backend's count; the time from connect to
/// the count.
fn upload(addr: SocketAddr, bytes: u64) -> Result<Duration> {
    let began = Instant::now();
    let mut s = connect(addr)?;
    s.write_all(b"U")?;
    let data = vec![0xa5u8; CHUNK];
    let mut left = bytes;
    while left > 0 {
        let n = left.min(CHUNK as u64) as usize;
        s.write_all(&data[..n])?;
        left -= n as u64;
    }
    s.shutdown(Shutdown::Write)?;
    let mut count = [0u8; 8];
    s.read_exact(&mut count)?;
    let took = began.elapsed();
    let got = u64::from_le_bytes(count);
    ensure!(
        got == bytes,
        "upload: the backend got {got} of {bytes} bytes"
    );
    Ok(took)
}

/// One short connection: connect, 64 bytes up, 64 bytes down, the close read.
fn short_connection(addr: SocketAddr) -> std::io::Result<Duration> {
    let began = Instant::now();
    let mut s = connect(addr)?;
    let mut req = [b'q'; SHORT];
    req[0] = b'S';
    s.write_all(&req)?;
    let mut answer = [0u8; SHORT + 1];
    let mut got = 0;
    loop {
        match s.read(&mut answer[got..])? {
            0 => break,
            n => got += n,
        }
        if got > SHORT {
            return Err(std::io::Error::other("more than the answer"));
        }
    }
    if got != SHORT {
        return Err(std::io::Error::other(format!(
            "{got} of {SHORT} answer bytes"
        )));
    }
    Ok(began.elapsed())
}

/// `clients` threads making short connections for `duration`: each one's time in µs,
/// the errors, and the phase's length.
fn short_phase(
    addr: SocketAddr,
    clients: usize,
    duration: Duration,
) -> Result<(Vec<u32>, u64, Duration)> {
    let stop = Arc::new(AtomicBool::new(false));
    let began = Instant::now();
    let threads: Vec<_> = (0..clients)
        .map(|_| {
            let stop = stop.clone();
            thread::spawn(move || {
                let mut times = Vec::new();
                let mut errors = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    match short_connection(addr) {
                        Ok(t) => times.push(u32::try_from(t.as_micros()).unwrap_or(u32::MAX)),
                        Err(_) => errors += 1,
                    }
                }
                (times, errors)
            })
        })
        .collect();
    while began.elapsed() < duration {
        thread::park_timeout(duration - began.elapsed());
    }
    stop.store(true, Ordering::Relaxed);
    let mut all = Vec::new();
    let mut errors = 0;
    for t in threads {
        let (times, e) = t
            .join()
            .map_err(|_| anyhow::anyhow!("a client thread panicked"))?;
        all.extend(times);
        errors += e;
    }
    Ok((all, errors, began.elapsed()))
}

/// Opens `n` connections through `p`, each sending `H`, waits until the backend holds
/// them all, and returns the growth of the proxy's `VmRSS` per connection, in KB.
fn idle_memory(p: &Proxy, n: usize, held: &Held) -> Result<f64> {
    let rss = || -> Result<u64> {
        let status = fs::read_to_string(format!("/proc/{}/status", p.child.id()))?;
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .context("no VmRSS")
    };
    let lock = || held.lock().unwrap_or_else(|e| e.into_inner());
    lock().clear();
    let before = rss()?;
    let mut conns = Vec::with_capacity(n);
    for _ in 0..n {
        let mut s = connect(p.addr)?;
        s.write_all(b"H")?;
        conns.push(s);
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    while lock().len() < n {
        ensure!(
            Instant::now() < deadline,
            "only {} of {n} connections reached the backend",
            lock().len()
        );
        thread::park_timeout(Duration::from_millis(10));
    }
    let after = rss()?;
    drop(conns);
    lock().clear();
    Ok(after.saturating_sub(before) as f64 / n as f64)
}

// === Report ===

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    match v.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => v[n / 2],
        n => (v[n / 2 - 1] + v[n / 2]) / 2.0,
    }
}

fn report(rows: &[(usize, Kind, Run)], args: &Args) -> String {
    let mut r = String::new();
    let _ = writeln!(r, "{ROW_HEADER}");
    for (round, kind, run) in rows {
        let _ = writeln!(r, "{}", run.line(*round, *kind));
    }
    // Ratios strait / HAProxy within each round.
    type Metric = (&'static str, fn(&Run) -> f64);
    let metrics: [Metric; 8] = [
        ("download MiB/s", |x| x.down.mib_s),
        ("download CPU us/MiB", |x| x.down.cpu_us_per_mib()),
        ("upload MiB/s", |x| x.up.mib_s),
        ("upload CPU us/MiB", |x| x.up.cpu_us_per_mib()),
        ("short conn/s", |x| x.short.per_s),
        ("short p50", |x| f64::from(x.short.p50_us)),
        ("short p99", |x| f64::from(x.short.p99_us)),
        ("short CPU us/conn", |x| x.short.cpu_us_per_conn()),
    ];
    let find = |round: usize, kind: Kind| {
        rows.iter()
            .find(|(r, k, _)| *r == round && *k == kind)
            .map(|(_, _, run)| run)
    };
    let _ = writeln!(
        r,
        "\nstrait / haproxy, per round, and the median over {} round(s)",
        args.rounds
    );
    for (name, f) in metrics {
        let ratios: Vec<f64> = (1..=args.rounds)
            .filter_map(|round| {
                let s = find(round, Kind::Strait)?;
                let h = find(round, Kind::Haproxy)?;
                Some(f(s) / f(h))
            })
            .collect();
        if ratios.is_empty() {
            continue;
        }
        let each: Vec<String> = ratios.iter().map(|x| format!("{x:.2}")).collect();
        let _ = writeln!(
            r,
            "{name:<22} {:>6.2}   ({})",
            median(ratios.clone()),
            each.join(" ")
        );
    }
    for kind in [Kind::Strait, Kind::Haproxy] {
        let runs: Vec<&Run> = rows
            .iter()
            .filter(|(_, k, _)| *k == kind)
            .map(|(_, _, run)| run)
            .collect();
        if runs.is_empty() {
            continue;
        }
        let med = |f: fn(&Run) -> f64| median(runs.iter().map(|x| f(x)).collect());
        let _ = writeln!(
            r,
            "median {:<8} down {:.0} MiB/s ({:.1} us/MiB), up {:.0} MiB/s ({:.1} us/MiB), {:.0} conn/s ({:.1} us/conn, p99 {:.0} us)",
            kind.name(),
            med(|x| x.down.mib_s),
            med(|x| x.down.cpu_us_per_mib()),
            med(|x| x.up.mib_s),
            med(|x| x.up.cpu_us_per_mib()),
            med(|x| x.short.per_s),
            med(|x| x.short.cpu_us_per_conn()),
            med(|x| f64::from(x.short.p99_us)),
        );
    }
    r
}
