//! What the bench binaries (`rolling`, `tcp-bench`) share: finding programs, the lines
//! about the machine and the checkout a result file starts with, and a process's CPU
//! time. The criterion benchmarks live in `benches/`.
//!
//! Runs on: the bench driver's thread; reads `/proc` and runs `git` and `getconf`.

use std::fmt::Write as _;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

/// The workspace root (the parent of `bench/`).
pub fn workspace_root() -> PathBuf {
    let bench = Path::new(env!("CARGO_MANIFEST_DIR"));
    bench.parent().unwrap_or(bench).to_path_buf()
}

/// Pins the calling thread (and the threads it spawns later, which inherit its mask) to
/// `core`; says so on stderr when it cannot.
pub fn pin_to(core: usize, who: &str) {
    if !core_affinity::set_for_current(core_affinity::CoreId { id: core }) {
        eprintln!("{who}: could not pin to core {core}");
    }
}

/// The `strait` binary to run: `given`, else `strait` beside the running binary (built
/// together, they sit side by side in target/release), else
/// `$CARGO_TARGET_DIR/release/strait`; an error when it is not a file.
pub fn strait_binary(given: Option<&Path>) -> anyhow::Result<PathBuf> {
    let path = match given {
        Some(p) => p.to_path_buf(),
        None => std::env::current_exe()
            .ok()
            .and_then(|exe| Some(exe.parent()?.join("strait")))
            .filter(|p| p.is_file())
            .unwrap_or_else(|| {
                std::env::var_os("CARGO_TARGET_DIR")
                    .map(PathBuf::from)
                    .unwrap_or_else(|| workspace_root().join("target"))
                    .join("release/strait")
            }),
    };
    anyhow::ensure!(
        path.is_file(),
        "{} not found: cargo build --release -p strait (or pass --strait-bin)",
        path.display()
    );
    Ok(path)
}

/// Where one run's results go: `<dir>/<prefix>-<timestamp>.txt` for the summary and the
/// directory of the same name (created) for raw output, configs and logs. `dir` defaults
/// to `bench/results`.
pub struct ResultPaths {
    pub summary: PathBuf,
    pub raw: PathBuf,
}

impl ResultPaths {
    pub fn create(dir: Option<&Path>, prefix: &str) -> anyhow::Result<ResultPaths> {
        let dir = dir.map_or_else(|| workspace_root().join("bench/results"), Path::to_path_buf);
        let stamp = jiff::Timestamp::now().strftime("%Y%m%d-%H%M%S").to_string();
        let raw = dir.join(format!("{prefix}-{stamp}"));
        fs::create_dir_all(&raw).map_err(|e| anyhow::anyhow!("creating {}: {e}", raw.display()))?;
        Ok(ResultPaths {
            summary: dir.join(format!("{prefix}-{stamp}.txt")),
            raw,
        })
    }

    /// Writes the summary and says where on stderr.
    pub fn write_summary(&self, report: &str) -> anyhow::Result<()> {
        fs::write(&self.summary, report)
            .map_err(|e| anyhow::anyhow!("writing {}: {e}", self.summary.display()))?;
        eprintln!("results: {}", self.summary.display());
        Ok(())
    }
}

/// `name` on `PATH`, or in `/usr/sbin` or `/sbin` (where Debian puts nginx and haproxy).
pub fn find_program(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain([PathBuf::from("/usr/sbin"), PathBuf::from("/sbin")])
        .map(|d| d.join(name))
        .find(|p| p.is_file())
}

/// The first line `prog flag` prints (stdout, else stderr), trimmed; empty on failure.
pub fn version(prog: &Path, flag: &str) -> String {
    Command::new(prog)
        .arg(flag)
        .output()
        .map(|o| {
            let mut s = String::from_utf8_lossy(&o.stdout).into_owned();
            s.push_str(&String::from_utf8_lossy(&o.stderr));
            s.lines().next().unwrap_or("").trim().to_string()
        })
        .unwrap_or_default()
}

/// `date:`, `commit:`, `cpu:`, `kernel:` and `loadavg:` lines for a result file; the
/// commit is `root`'s HEAD, marked when `proxy/` or `discovery/` have uncommitted changes.
pub fn machine_lines(root: &Path) -> String {
    let cpuinfo = fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let model = cpuinfo
        .lines()
        .find_map(|l| l.strip_prefix("model name").and_then(|r| r.split_once(':')))
        .map_or("unknown", |(_, m)| m.trim());
    let cores = cpuinfo
        .lines()
        .filter(|l| l.starts_with("processor"))
        .count();
    let git = |args: &[&str]| {
        Command::new("git")
            .arg("-C")
            .arg(root)
            .args(args)
            .output()
            .ok()
    };
    let commit = git(&["rev-parse", "--short", "HEAD"])
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_else(|| "unknown".into());
    let dirty = git(&["diff", "--quiet", "HEAD", "--", "proxy", "discovery"])
        .is_some_and(|o| !o.status.success());
    let mut h = String::new();
    let _ = writeln!(
        h,
        "date:     {}",
        jiff::Timestamp::now().strftime("%Y-%m-%dT%H:%M:%SZ")
    );
    let _ = writeln!(
        h,
        "commit:   {commit}{}",
        if dirty {
            " (+ uncommitted changes in proxy/ or discovery/)"
        } else {
            ""
        }
    );
    let _ = writeln!(h, "cpu:      {model}, {cores} cores");
    let _ = writeln!(
        h,
        "kernel:   {}",
        fs::read_to_string("/proc/sys/kernel/osrelease")
            .unwrap_or_default()
            .trim()
    );
    let _ = writeln!(
        h,
        "loadavg:  {} (at start)",
        fs::read_to_string("/proc/loadavg")
            .unwrap_or_default()
            .split(' ')
            .take(3)
            .collect::<Vec<_>>()
            .join(" ")
    );
    h
}

/// Reads a process's CPU time (all its threads).
#[derive(Debug, Clone, Copy)]
pub struct CpuClock {
    /// Clock ticks per second of `/proc/PID/stat` (`getconf CLK_TCK`).
    hz: u64,
}

/// User and system CPU time.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CpuTime {
    pub user: Duration,
    pub system: Duration,
}

impl CpuTime {
    pub fn total(&self) -> Duration {
        self.user + self.system
    }

    /// The time used since `earlier`.
    pub fn since(&self, earlier: CpuTime) -> CpuTime {
        CpuTime {
            user: self.user.saturating_sub(earlier.user),
            system: self.system.saturating_sub(earlier.system),
        }
    }
}

impl CpuClock {
    /// Asks `getconf CLK_TCK` (100 on Linux when it cannot be asked).
    pub fn new() -> CpuClock {
        let hz = Command::new("getconf")
            .arg("CLK_TCK")
            .output()
            .ok()
            .and_then(|o| String::from_utf8_lossy(&o.stdout).trim().parse().ok())
            .filter(|hz| *hz > 0)
            .unwrap_or(100);
        CpuClock { hz }
    }

    /// The CPU time process `pid` used so far: utime and stime (fields 14 and 15 of
    /// `/proc/PID/stat`); `None` when it is gone.
    pub fn read(&self, pid: u32) -> Option<CpuTime> {
        let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
        // The command name (field 2) may hold spaces; the fields after it do not.
        let rest = &stat[stat.rfind(')')? + 2..];
        let fields: Vec<&str> = rest.split(' ').collect();
        let tick = |i: usize| -> Option<Duration> {
            let ticks: u64 = fields.get(i)?.parse().ok()?;
            Some(Duration::from_nanos(ticks * 1_000_000_000 / self.hz))
        };
        // Field 3 (state) is rest[0], so field 14 is rest[11].
        Some(CpuTime {
            user: tick(11)?,
            system: tick(12)?,
        })
    }
}

impl Default for CpuClock {
    fn default() -> Self {
        CpuClock::new()
    }
}
