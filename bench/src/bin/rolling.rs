//! Question: what does a client see while the upstream's pods are replaced one by one, through
//! strait following Kubernetes discovery, and through nginx with a static upstream list that is
//! edited and reloaded? Requests, errors (non-2xx/3xx and wrk's socket errors by kind), p50,
//! p99, max and req/s of a `wrk -t1 -c32 --latency` run during which `--rolls` rolls happen
//! (issue 4, item 8).
//!
//! Inputs: 3 replicas, each a real process, `strait echo --listen 127.0.0.x:PORT` (x from 200
//! up, one address per pod, the same port); the strait binary `$CARGO_TARGET_DIR/release/strait`.
//! - strait: `strait run --config FILE`, one worker, `access_log` off, one upstream found
//!   through a registry pointing at the fake API server, which this process runs
//!   ([`strait_fake_apiserver`], the real list/watch protocol).
//! - nginx: `worker_processes 1`, a static `upstream` block with the current pods
//!   (`keepalive 64`), `proxy_next_upstream error timeout` (its default).
//!
//! A roll, as a Deployment with `maxSurge: 1, maxUnavailable: 0` does it: a new pod starts;
//! strait: its endpoint is applied not ready, then ready once it listens; the oldest pod's
//! endpoint turns terminating (ready false, serving true), then not serving, then leaves the
//! slice. nginx: once the new pod listens, the upstream list is rewritten (new in, oldest out)
//! and `nginx -s reload` sent. Then the old process gets SIGTERM after `--grace` (variant
//! `graceful`), or SIGKILL at once (variant `harsh`). Steps are `--step` apart. Rolls start
//! evenly spread over the wrk run (at `duration * i / (rolls + 1)`). An extra variant, `crash`
//! (not run by default), SIGKILLs the old pod while it is still in rotation, before the slice
//! changes or the reload: what a crash or a lost node looks like to the proxy.
//!
//! Cores: wrk, the pods and this process (API server, roll driver) on `--load-core`, the proxy
//! on `--proxy-core`, via taskset (strait pins its one worker inside that mask).
//!
//! Output: a table on stdout and in `bench/results/rolling-<timestamp>.txt`, with the raw wrk
//! output, configs, proxy logs and each run's roll timeline in the directory of the same name.
//!
//! Run: `bench/wrk/rolling.sh` (installs wrk and nginx, builds, runs this), or
//! `cargo run --release -p strait-bench --bin rolling -- --help`.
//!
//! Files: this one (arguments, the run, pods), `rolling/proxies.rs` (strait and nginx, how a
//! roll reaches each, probes), `rolling/report.rs` (wrk output, proxy logs, the report).

// A binary's root resolves modules beside itself (src/bin/); these live in src/bin/rolling/.
#[path = "rolling/proxies.rs"]
mod proxies;
#[path = "rolling/report.rs"]
mod report;

use std::collections::{BTreeMap, VecDeque};
use std::fmt::Write as _;
use std::fs;
use std::io::{BufRead, BufReader};
use std::net::{Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::process::{Child, ChildStdout, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{ensure, Context, Result};
use clap::{Parser, ValueEnum};
use strait_bench::{find_program, pin_to, strait_binary, workspace_root, ResultPaths};

use proxies::{final_backends, wait_serving, NginxRig, Proxy, StraitRig};
use report::{machine_header, nginx_log_summary, report, strait_log_summary, WrkResult};

/// Host header every request carries (the strait service matches it).
const HOST: &str = "roll.test";
/// The namespace and Service the strait upstream discovers.
const NAMESPACE: &str = "bench";
const SERVICE: &str = "web";
/// Replicas of the Deployment.
const REPLICAS: usize = 3;
/// Pods get 127.0.0.FIRST_POD_IP.. (wrapping within POD_IPS addresses).
const FIRST_POD_IP: u8 = 200;
const POD_IPS: u8 = 50;

#[derive(Parser)]
#[command(about = "wrk through strait and nginx while the upstream's pods are rolled")]
struct Args {
    /// Rolls (pod replacements) per wrk run.
    #[arg(long, default_value_t = 5)]
    rolls: usize,
    /// Length of each wrk run.
    #[arg(long, default_value = "20s", value_parser = humantime::parse_duration)]
    duration: Duration,
    /// Graceful variant: time between the old pod leaving the slice / the reload and its SIGTERM.
    #[arg(long, default_value = "1s", value_parser = humantime::parse_duration)]
    grace: Duration,
    /// Time between two steps of a roll (endpoint condition changes; new pod listening → reload).
    #[arg(long, default_value = "200ms", value_parser = humantime::parse_duration)]
    step: Duration,
    /// Variants to run, in this order.
    #[arg(long, value_delimiter = ',', default_value = "graceful,harsh")]
    variants: Vec<Variant>,
    /// Shorthand for `--variants harsh`.
    #[arg(long, conflicts_with = "variants")]
    harsh: bool,
    /// Proxies to run, in this order, within each variant.
    #[arg(long, value_delimiter = ',', default_value = "strait,nginx")]
    proxies: Vec<ProxyKind>,
    /// Repeat everything this many times.
    #[arg(long, default_value_t = 1)]
    rounds: usize,
    /// wrk connections (`-c`); wrk runs one thread.
    #[arg(long, default_value_t = 32)]
    connections: usize,
    /// Core of the proxy.
    #[arg(long, default_value_t = 0)]
    proxy_core: usize,
    /// Core of wrk, the pods and this process.
    #[arg(long, default_value_t = 1)]
    load_core: usize,
    /// Port every pod listens on.
    #[arg(long, default_value_t = 28090)]
    pod_port: u16,
    /// Where strait listens.
    #[arg(long, default_value = "127.0.0.42:28091")]
    strait_addr: SocketAddr,
    /// Where nginx listens.
    #[arg(long, default_value = "127.0.0.43:28092")]
    nginx_addr: SocketAddr,
    /// The strait binary (default: `strait` beside this binary, else
    /// `$CARGO_TARGET_DIR/release/strait`).
    #[arg(long)]
    strait_bin: Option<PathBuf>,
    /// Where the result file and raw directory go.
    #[arg(long)]
    results_dir: Option<PathBuf>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Variant {
    /// The old process gets SIGTERM `--grace` after leaving the slice / the reload.
    Graceful,
    /// The old process gets SIGKILL as soon as it leaves the slice / the reload is sent.
    Harsh,
    /// Not a roll Kubernetes does: the oldest pod is SIGKILLed while still ready (a crash, a
    /// lost node), then the slice / upstream list catches up as in a roll. Off by default.
    Crash,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum ProxyKind {
    Strait,
    Nginx,
}

impl Variant {
    fn name(self) -> &'static str {
        match self {
            Variant::Graceful => "graceful",
            Variant::Harsh => "harsh",
            Variant::Crash => "crash",
        }
    }
}

impl ProxyKind {
    fn name(self) -> &'static str {
        match self {
            ProxyKind::Strait => "strait",
            ProxyKind::Nginx => "nginx",
        }
    }
}

/// Everything a run needs that does not change between runs.
struct Setup {
    args: Args,
    strait_bin: PathBuf,
    nginx_bin: PathBuf,
    root: PathBuf,
    /// The directory with every run's raw output.
    raw: PathBuf,
    /// The next pod address (index into 127.0.0.FIRST_POD_IP..).
    next_ip: u8,
}

fn main() -> Result<()> {
    let mut args = Args::parse();
    if args.harsh {
        args.variants = vec![Variant::Harsh];
    }
    ensure!(args.rounds > 0, "--rounds must be at least 1");
    ensure!(args.connections > 0, "--connections must be at least 1");
    // The API server thread and this one share the load core with wrk and the pods.
    pin_to(args.load_core, "rolling");
    let root = workspace_root();
    let strait_bin = strait_binary(args.strait_bin.as_deref())?;
    let nginx_bin = find_program("nginx").context("nginx not found (apt-get install nginx)")?;
    find_program("wrk").context("wrk not found (apt-get install wrk)")?;
    find_program("taskset").context("taskset not found (apt-get install util-linux)")?;
    let paths = ResultPaths::create(args.results_dir.as_deref(), "rolling")?;
    let raw = paths.raw.clone();
    let mut setup = Setup {
        args,
        strait_bin,
        nginx_bin,
        root,
        raw,
        next_ip: 0,
    };

    let header = machine_header(&setup);
    eprint!("{header}");
    let mut rows = Vec::new();
    for round in 1..=setup.args.rounds {
        for variant in setup.args.variants.clone() {
            for proxy in setup.args.proxies.clone() {
                eprintln!("round {round}: {} {} ...", variant.name(), proxy.name());
                let row = run_one(&mut setup, round, variant, proxy).with_context(|| {
                    format!("round {round} {} {}", variant.name(), proxy.name())
                })?;
                eprintln!("  {}", row.line());
                rows.push(row);
            }
        }
    }
    let report = format!("{header}\n{}", report(&setup, &rows));
    print!("{report}");
    paths.write_summary(&report)?;
    Ok(())
}

// === One run ===

/// One wrk run through one proxy with rolls.
struct Row {
    round: usize,
    variant: Variant,
    proxy: ProxyKind,
    wrk: WrkResult,
    /// Rolls that ended after wrk did (their tail was not under load).
    late_rolls: usize,
    /// Backends answering after the last roll, if not exactly the last three pods.
    final_check: Option<String>,
    /// The proxy's own warnings and errors during the run, counted by message.
    proxy_log: BTreeMap<String, usize>,
}

impl Row {
    fn line(&self) -> String {
        let w = &self.wrk;
        format!(
            "{:<5} {:<8} {:<6} {:>10} {:>7} {:>7} {:>7} {:>5} {:>5} {:>7} {:>9.0} {:>9.0} {:>10.0} {:>10.1}",
            self.round,
            self.variant.name(),
            self.proxy.name(),
            w.requests,
            w.errors(),
            w.non2xx,
            w.connect,
            w.read,
            w.write,
            w.timeout,
            w.p50_us,
            w.p99_us,
            w.max_us,
            w.rps
        )
    }
}

const ROW_HEADER: &str = "round variant  proxy    requests  errors  non2xx connect  read write timeout    p50_us    p99_us     max_us      req/s";

fn run_one(setup: &mut Setup, round: usize, variant: Variant, kind: ProxyKind) -> Result<Row> {
    let (rolls, duration, grace) = (setup.args.rolls, setup.args.duration, setup.args.grace);
    let dir = setup
        .raw
        .join(format!("round{round}-{}-{}", variant.name(), kind.name()));
    fs::create_dir_all(&dir)?;
    let mut pods = VecDeque::new();
    for _ in 0..REPLICAS {
        let addr = next_pod_addr(setup);
        let mut pod = Pod::spawn(setup, addr)?;
        pod.wait_listening()?;
        pods.push_back(pod);
    }
    let mut proxy = match kind {
        ProxyKind::Strait => Proxy::Strait(Box::new(StraitRig::start(setup, &pods, &dir)?)),
        ProxyKind::Nginx => Proxy::Nginx(NginxRig::start(setup, &pods, &dir)?),
    };
    let addr = proxy.addr();
    wait_serving(addr, &pods, Duration::from_secs(30))?;

    let wrk = Command::new("taskset")
        .arg("-c")
        .arg(setup.args.load_core.to_string())
        .arg("wrk")
        .args(["-t1", &format!("-c{}", setup.args.connections)])
        .arg(format!("-d{}s", duration.as_secs_f64()))
        .args(["--latency", "-H", &format!("Host: {HOST}")])
        .arg(format!("http://{addr}/"))
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .context("starting wrk")?;
    let mut timeline = Timeline::new();
    timeline.note("wrk started");
    let mut late_rolls = 0;
    for i in 1..=rolls {
        sleep_until(timeline.start + duration.mul_f64(i as f64 / (rolls + 1) as f64));
        timeline.note(&format!("roll {i} begins"));
        let new = next_pod_addr(setup);
        let old = match &mut proxy {
            Proxy::Strait(s) => s.roll(setup, &mut pods, new, variant, &mut timeline)?,
            Proxy::Nginx(n) => n.roll(setup, &mut pods, new, variant, &mut timeline)?,
        };
        retire(old, variant, grace, &mut timeline)?;
        if timeline.start.elapsed() > duration {
            late_rolls += 1;
        }
    }
    let out = wrk.wait_with_output().context("waiting for wrk")?;
    timeline.note("wrk done");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr);
    fs::write(dir.join("wrk.txt"), format!("{text}{stderr}"))?;
    fs::write(dir.join("timeline.txt"), &timeline.text)?;
    ensure!(out.status.success(), "wrk failed: {text}{stderr}");
    let wrk = WrkResult::parse(&text).with_context(|| format!("parsing wrk output:\n{text}"))?;
    let final_check = final_backends(addr, &pods);
    proxy.stop()?;
    let proxy_log = match kind {
        ProxyKind::Strait => strait_log_summary(&dir.join("strait.log")),
        ProxyKind::Nginx => nginx_log_summary(&dir.join("nginx/error.log")),
    };
    drop(pods);
    Ok(Row {
        round,
        variant,
        proxy: kind,
        wrk,
        late_rolls,
        final_check,
        proxy_log,
    })
}

/// The old pod's end: SIGTERM after the grace period, or SIGKILL now.
fn retire(mut old: Pod, variant: Variant, grace: Duration, timeline: &mut Timeline) -> Result<()> {
    match variant {
        Variant::Graceful => {
            std::thread::sleep(grace);
            old.terminate()?;
            timeline.note(&format!("{} SIGTERM, exited", old.addr));
        }
        Variant::Harsh => {
            old.kill();
            timeline.note(&format!("{} SIGKILL, exited", old.addr));
        }
        // Killed during the roll already.
        Variant::Crash => {}
    }
    Ok(())
}

fn next_pod_addr(setup: &mut Setup) -> SocketAddr {
    let ip = Ipv4Addr::new(127, 0, 0, FIRST_POD_IP + setup.next_ip);
    setup.next_ip = (setup.next_ip + 1) % POD_IPS;
    SocketAddr::new(ip.into(), setup.args.pod_port)
}

fn sleep_until(at: Instant) {
    let now = Instant::now();
    if at > now {
        std::thread::sleep(at - now);
    }
}

/// What happened when, relative to wrk's start (kept next to the wrk output).
struct Timeline {
    start: Instant,
    text: String,
}

impl Timeline {
    fn new() -> Timeline {
        Timeline {
            start: Instant::now(),
            text: String::new(),
        }
    }

    fn note(&mut self, what: &str) {
        let _ = writeln!(
            self.text,
            "{:>9.3}s  {what}",
            self.start.elapsed().as_secs_f64()
        );
    }
}

// === Pods ===

/// A pod: one `strait echo` process on its own address.
struct Pod {
    addr: SocketAddr,
    child: Child,
    stdout: Option<BufReader<ChildStdout>>,
    exited: bool,
}

impl Pod {
    fn spawn(setup: &Setup, addr: SocketAddr) -> Result<Pod> {
        let mut child = Command::new("taskset")
            .arg("-c")
            .arg(setup.args.load_core.to_string())
            .arg(&setup.strait_bin)
            .args(["echo", "--listen", &addr.to_string()])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .with_context(|| format!("starting pod {addr}"))?;
        let stdout = child.stdout.take().map(BufReader::new);
        Ok(Pod {
            addr,
            child,
            stdout,
            exited: false,
        })
    }

    /// Blocks until the process prints that it listens.
    fn wait_listening(&mut self) -> Result<()> {
        let mut line = String::new();
        if let Some(out) = &mut self.stdout {
            out.read_line(&mut line)?;
        }
        ensure!(
            line.starts_with("echo backend listening on"),
            "pod {} did not start: {line:?}",
            self.addr
        );
        Ok(())
    }

    fn terminate(&mut self) -> Result<()> {
        signal(&self.child, "TERM")?;
        self.child.wait()?;
        self.exited = true;
        Ok(())
    }

    fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        self.exited = true;
    }
}

impl Drop for Pod {
    fn drop(&mut self) {
        if !self.exited {
            self.kill();
        }
    }
}

/// Sends SIGname to a child (through kill(1): no `unsafe` here).
fn signal(child: &Child, name: &str) -> Result<()> {
    let status = Command::new("kill")
        .arg(format!("-{name}"))
        .arg(child.id().to_string())
        .status()
        .context("running kill")?;
    ensure!(status.success(), "kill -{name} {} failed", child.id());
    Ok(())
}
