//! wrk's output parsed, the proxies' logs summarised, and the report: machine header, one
//! line per run, medians over rounds and notes.
//!
//! Runs on: the bench's main thread, after each run; pure text work.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::fs;
use std::path::Path;

use anyhow::{ensure, Context, Result};

use crate::{Row, Setup, HOST, REPLICAS, ROW_HEADER};

// === wrk output ===

pub(crate) struct WrkResult {
    pub(crate) requests: u64,
    pub(crate) rps: f64,
    pub(crate) p50_us: f64,
    pub(crate) p99_us: f64,
    pub(crate) max_us: f64,
    pub(crate) non2xx: u64,
    pub(crate) connect: u64,
    pub(crate) read: u64,
    pub(crate) write: u64,
    pub(crate) timeout: u64,
}

impl WrkResult {
    pub(crate) fn errors(&self) -> u64 {
        self.non2xx + self.connect + self.read + self.write + self.timeout
    }

    pub(crate) fn parse(text: &str) -> Result<WrkResult> {
        let mut r = WrkResult {
            requests: 0,
            rps: 0.0,
            p50_us: 0.0,
            p99_us: 0.0,
            max_us: 0.0,
            non2xx: 0,
            connect: 0,
            read: 0,
            write: 0,
            timeout: 0,
        };
        let mut found = 0;
        for line in text.lines() {
            let f: Vec<&str> = line.split_whitespace().collect();
            match f.as_slice() {
                ["Latency", _avg, _stdev, max, ..] => r.max_us = latency_us(max)?,
                ["50%", v] => r.p50_us = latency_us(v)?,
                ["99%", v] => {
                    r.p99_us = latency_us(v)?;
                    found += 1;
                }
                [n, "requests", "in", ..] => {
                    r.requests = n.parse()?;
                    found += 1;
                }
                ["Requests/sec:", v] => {
                    r.rps = v.parse()?;
                    found += 1;
                }
                ["Non-2xx", "or", "3xx", "responses:", n] => r.non2xx = n.parse()?,
                ["Socket", "errors:", "connect", c, "read", rd, "write", w, "timeout", t] => {
                    let n = |s: &str| s.trim_end_matches(',').parse::<u64>();
                    r.connect = n(c)?;
                    r.read = n(rd)?;
                    r.write = n(w)?;
                    r.timeout = n(t)?;
                }
                _ => {}
            }
        }
        ensure!(
            found == 3,
            "missing the 99% line, the request count or Requests/sec"
        );
        Ok(r)
    }
}

/// wrk's latency text (`812.00us`, `1.23ms`, `2.01s`, `1.00m`) in microseconds.
fn latency_us(v: &str) -> Result<f64> {
    let (num, scale) = if let Some(n) = v.strip_suffix("us") {
        (n, 1.0)
    } else if let Some(n) = v.strip_suffix("ms") {
        (n, 1e3)
    } else if let Some(n) = v.strip_suffix('s') {
        (n, 1e6)
    } else if let Some(n) = v.strip_suffix('m') {
        (n, 60e6)
    } else {
        (v, 1.0)
    };
    Ok(num
        .parse::<f64>()
        .with_context(|| format!("latency {v:?}"))?
        * scale)
}

// === Proxy logs ===

/// nginx's `[warn]` and worse lines, by message (`*N` and the client part cut off).
pub(crate) fn nginx_log_summary(path: &Path) -> BTreeMap<String, usize> {
    let mut out = BTreeMap::new();
    for line in fs::read_to_string(path).unwrap_or_default().lines() {
        // "DATE TIME [level] PID#TID: *CONN message, client: ..."
        let Some((_, rest)) = line.split_once("] ") else {
            continue;
        };
        let level = line.split('[').nth(1).and_then(|l| l.split(']').next());
        if matches!(level, Some("notice" | "info" | "debug")) {
            continue;
        }
        let msg = rest.split_once(": ").map_or(rest, |(_, m)| m);
        let msg = match msg.strip_prefix('*') {
            Some(m) => m.split_once(' ').map_or(m, |(_, m)| m),
            None => msg,
        };
        let msg = msg.split(", client:").next().unwrap_or(msg);
        *out.entry(format!("[{}] {msg}", level.unwrap_or("?")))
            .or_default() += 1;
    }
    out
}

/// strait's WARN and ERROR lines, by message (fields dropped).
pub(crate) fn strait_log_summary(path: &Path) -> BTreeMap<String, usize> {
    let mut out = BTreeMap::new();
    for line in fs::read_to_string(path).unwrap_or_default().lines() {
        let plain = strip_ansi(line);
        let level = if plain.contains(" WARN ") {
            "WARN"
        } else if plain.contains(" ERROR ") {
            "ERROR"
        } else {
            continue;
        };
        // "DATE  WARN target: message field=value ..."
        let rest = plain
            .split_once(level)
            .and_then(|(_, r)| r.split_once(": "))
            .map_or(plain.as_str(), |(_, m)| m);
        let msg: Vec<&str> = rest
            .split_whitespace()
            .take_while(|w| !w.contains('='))
            .collect();
        *out.entry(format!("{level} {}", msg.join(" "))).or_default() += 1;
    }
    out
}

/// `s` without terminal colour sequences (`ESC [ ... m`).
fn strip_ansi(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            for c in chars.by_ref() {
                if c == 'm' {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

// === Report ===

pub(crate) fn machine_header(setup: &Setup) -> String {
    let a = &setup.args;
    let wrk = strait_bench::version(Path::new("wrk"), "-v");
    let mut h = String::new();
    let _ = writeln!(h, "strait vs nginx during rolling updates (wrk)");
    h.push_str(&strait_bench::machine_lines(&setup.root));
    let _ = writeln!(
        h,
        "nginx:    {}",
        strait_bench::version(&setup.nginx_bin, "-v").trim_start_matches("nginx version: ")
    );
    let _ = writeln!(
        h,
        "wrk:      {}",
        wrk.split(' ').take(2).collect::<Vec<_>>().join(" ")
    );
    let _ = writeln!(
        h,
        "load:     taskset -c {} wrk -t1 -c{} -d{}s --latency -H 'Host: {HOST}'; pods (strait echo) and this driver on core {}",
        a.load_core,
        a.connections,
        a.duration.as_secs_f64(),
        a.load_core
    );
    let _ = writeln!(
        h,
        "proxies:  strait run (workers: 1) / nginx worker_processes 1, taskset -c {}",
        a.proxy_core
    );
    let _ = writeln!(
        h,
        "rolls:    {} per run, {REPLICAS} replicas, maxSurge 1 / maxUnavailable 0, step {:?}, grace {:?} (graceful: SIGTERM after it; harsh: SIGKILL at once)",
        a.rolls, a.step, a.grace
    );
    h
}

pub(crate) fn report(setup: &Setup, rows: &[Row]) -> String {
    let mut r = String::new();
    let _ = writeln!(r, "{ROW_HEADER}");
    for row in rows {
        let _ = writeln!(r, "{}", row.line());
    }
    if setup.args.rounds > 1 {
        let _ = writeln!(r, "\nmedians over {} rounds", setup.args.rounds);
        let _ = writeln!(
            r,
            "{:<8} {:<6} {:>10} {:>7} {:>9} {:>9} {:>10}",
            "variant", "proxy", "requests", "errors", "p50_us", "p99_us", "req/s"
        );
        for &variant in &setup.args.variants {
            for &proxy in &setup.args.proxies {
                let of: Vec<&WrkResult> = rows
                    .iter()
                    .filter(|x| x.variant == variant && x.proxy == proxy)
                    .map(|x| &x.wrk)
                    .collect();
                let med = |f: &dyn Fn(&WrkResult) -> f64| {
                    let mut v: Vec<f64> = of.iter().map(|w| f(w)).collect();
                    v.sort_by(f64::total_cmp);
                    let n = v.len();
                    if n % 2 == 1 {
                        v[n / 2]
                    } else {
                        (v[n / 2 - 1] + v[n / 2]) / 2.0
                    }
                };
                let _ = writeln!(
                    r,
                    "{:<8} {:<6} {:>10.0} {:>7.0} {:>9.0} {:>9.0} {:>10.1}",
                    variant.name(),
                    proxy.name(),
                    med(&|w| w.requests as f64),
                    med(&|w| w.errors() as f64),
                    med(&|w| w.p50_us),
                    med(&|w| w.p99_us),
                    med(&|w| w.rps)
                );
            }
        }
    }
    let notes: Vec<String> = rows
        .iter()
        .flat_map(|row| {
            let tag = format!(
                "round {} {} {}",
                row.round,
                row.variant.name(),
                row.proxy.name()
            );
            let mut n = Vec::new();
            if row.late_rolls > 0 {
                n.push(format!(
                    "{tag}: {} roll(s) ended after wrk did",
                    row.late_rolls
                ));
            }
            if let Some(f) = &row.final_check {
                n.push(format!(
                    "{tag}: after the rolls the proxy answered from {f}"
                ));
            }
            for (msg, count) in &row.proxy_log {
                n.push(format!("{tag}: proxy log: {count} x {msg}"));
            }
            n
        })
        .collect();
    if !notes.is_empty() {
        let _ = writeln!(r, "\nnotes:");
        for n in notes {
            let _ = writeln!(r, "  {n}");
        }
    }
    let _ = writeln!(
        r,
        "\nerrors = non-2xx/3xx + socket errors (connect, read, write, timeout) as wrk reports them"
    );
    let _ = writeln!(
        r,
        "raw output, configs, logs and roll timelines: {}/",
        setup.raw.display()
    );
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    const WRK: &str = "Running 20s test @ http://127.0.0.42:28091/
  1 threads and 32 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency     6.38ms    9.12ms 101.51ms   91.71%
    Req/Sec     4.68k   595.26     5.77k    71.67%
  Latency Distribution
     50%    5.01ms
     75%    7.12ms
     90%   11.00ms
     99%   56.18ms
  28274 requests in 6.07s, 17.65MB read
  Socket errors: connect 0, read 37, write 0, timeout 2
  Non-2xx or 3xx responses: 5
Requests/sec:   4657.90
Transfer/sec:      2.91MB
";

    #[test]
    fn wrk_output_is_read_with_every_error_kind() {
        let w = WrkResult::parse(WRK).unwrap();
        assert_eq!(w.requests, 28274);
        assert_eq!(
            (w.non2xx, w.connect, w.read, w.write, w.timeout),
            (5, 0, 37, 0, 2)
        );
        assert_eq!(w.errors(), 44);
        assert_eq!((w.p50_us, w.p99_us, w.max_us), (5010.0, 56180.0, 101510.0));
        assert!((w.rps - 4657.9).abs() < 1e-9);
    }

    #[test]
    fn wrk_output_without_errors_has_none() {
        let text: String = WRK
            .lines()
            .filter(|l| !l.contains("errors") && !l.contains("Non-2xx"))
            .map(|l| format!("{l}\n"))
            .collect();
        assert_eq!(WrkResult::parse(&text).unwrap().errors(), 0);
        assert!(WrkResult::parse("Running 1s test").is_err());
    }

    #[test]
    fn latencies_in_every_unit_become_microseconds() {
        assert_eq!(latency_us("812.00us").unwrap(), 812.0);
        assert_eq!(latency_us("1.5ms").unwrap(), 1500.0);
        assert_eq!(latency_us("2.00s").unwrap(), 2e6);
        assert_eq!(latency_us("1.00m").unwrap(), 60e6);
    }

    #[test]
    fn log_lines_are_counted_by_message() {
        let dir = std::env::temp_dir().join(format!("rolling-test-{}", std::process::id()));
        fs::create_dir_all(&dir).unwrap();
        let nginx = dir.join("error.log");
        fs::write(
            &nginx,
            "2026/11/22 08:28:01 [notice] 430#430: signal process started\n\
             2026/11/22 08:28:16 [error] 859#859: *98 upstream prematurely closed connection while reading response header from upstream, client: 127.0.0.1, server: , request: \"GET / HTTP/1.1\"\n\
             2026/11/22 08:28:16 [error] 859#859: *99 upstream prematurely closed connection while reading response header from upstream, client: 127.0.0.1, server: \n",
        )
        .unwrap();
        let n = nginx_log_summary(&nginx);
        assert_eq!(
            n.into_iter().collect::<Vec<_>>(),
            [("[error] upstream prematurely closed connection while reading response header from upstream".to_string(), 2)]
        );
        let strait = dir.join("strait.log");
        fs::write(
            &strait,
            "\x1b[2m2026-11-22T08:27:53Z\x1b[0m \x1b[32m INFO\x1b[0m strait::gateway: gateway started workers=1\n\
             \x1b[2m2026-11-22T08:27:54Z\x1b[0m \x1b[33m WARN\x1b[0m \x1b[2mstrait::proxy\x1b[0m\x1b[2m:\x1b[0m upstream failed mid-response \x1b[3mendpoint\x1b[0m\x1b[2m=\x1b[0m127.0.0.200:28090\n",
        )
        .unwrap();
        let s = strait_log_summary(&strait);
        assert_eq!(
            s.into_iter().collect::<Vec<_>>(),
            [("WARN upstream failed mid-response".to_string(), 1)]
        );
        fs::remove_dir_all(&dir).unwrap();
    }
}
