//! Active health checks: one task per (upstream, endpoint) on the discovery thread, each
//! probing its endpoint every `interval` (plus jitter) over TCP or HTTP/1.1, and the
//! thresholds that turn a run of results into [`Check::Passing`] or [`Check::Failing`].
//!
//! Runs on: the discovery thread's tokio runtime, so an endpoint is checked once per
//! gateway whatever the number of workers; results reach the workers only as a new
//! snapshot when an endpoint's state changes (the controller rebuilds that upstream).
//! Nothing here touches a worker.

use std::collections::HashMap;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::mpsc::UnboundedSender;
use tokio::task::JoinHandle;

use crate::addr::EndpointAddr;
use crate::snapshot::Check;
use crate::spec::{CheckKind, HealthCheck};

/// One finished probe, sent to the controller.
#[derive(Debug)]
pub(crate) struct Probed {
    pub upstream: String,
    pub addr: EndpointAddr,
    /// Which task sent it (a restarted task's late results are dropped).
    generation: u64,
    pub result: Result<(), String>,
}

struct Probe {
    spec: HealthCheck,
    generation: u64,
    task: JoinHandle<()>,
    state: Check,
    passes: u32,
    failures: u32,
}

impl Drop for Probe {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Every running check and what it has concluded so far.
pub(crate) struct Checks {
    probes: HashMap<(String, EndpointAddr), Probe>,
    tx: UnboundedSender<Probed>,
    next_generation: u64,
}

impl Checks {
    pub(crate) fn new(tx: UnboundedSender<Probed>) -> Checks {
        Checks {
            probes: HashMap::new(),
            tx,
            next_generation: 1,
        }
    }

    /// Makes `upstream`'s checks those of `spec` over `addrs`: starts a task per new
    /// address (or per address whose check changed), stops the others. Returns true
    /// when a result was dropped (the upstream's table needs the new [`Self::results`]).
    pub(crate) fn sync(
        &mut self,
        upstream: &str,
        spec: Option<&HealthCheck>,
        addrs: &[EndpointAddr],
    ) -> bool {
        let before = self.probes.len();
        self.probes
            .retain(|(u, a), p| u != upstream || (spec == Some(&p.spec) && addrs.contains(a)));
        let mut changed = self.probes.len() != before;
        let Some(spec) = spec else {
            return changed;
        };
        for addr in addrs {
            let key = (upstream.to_owned(), *addr);
            if self.probes.contains_key(&key) {
                continue;
            }
            let generation = self.next_generation;
            self.next_generation += 1;
            let task = tokio::spawn(run(
                upstream.to_owned(),
                *addr,
                spec.clone(),
                generation,
                self.tx.clone(),
            ));
            self.probes.insert(
                key,
                Probe {
                    spec: spec.clone(),
                    generation,
                    task,
                    state: Check::Unchecked,
                    passes: 0,
                    failures: 0,
                },
            );
            changed = true;
        }
        changed
    }

    /// Stops every check of upstreams not in `keep`.
    pub(crate) fn retain_upstreams(&mut self, keep: impl Fn(&str) -> bool) {
        self.probes.retain(|(u, _), _| keep(u));
    }

    /// Takes in a probe's result; true when the endpoint's state changed.
    ///
    /// Unchecked → passing on the first pass; → failing after `unhealthy` failures in a
    /// row, and back after `healthy` passes in a row.
    pub(crate) fn record(&mut self, p: Probed) -> bool {
        let Some(probe) = self.probes.get_mut(&(p.upstream.clone(), p.addr)) else {
            return false;
        };
        if probe.generation != p.generation {
            return false;
        }
        let before = probe.state;
        match &p.result {
            Ok(()) => {
                probe.passes = probe.passes.saturating_add(1);
                probe.failures = 0;
                let enough = probe.passes >= probe.spec.healthy.max(1);
                if before == Check::Unchecked || (before == Check::Failing && enough) {
                    probe.state = Check::Passing;
                }
            }
            Err(why) => {
                probe.failures = probe.failures.saturating_add(1);
                probe.passes = 0;
                if before != Check::Failing && probe.failures >= probe.spec.unhealthy.max(1) {
                    probe.state = Check::Failing;
                    tracing::warn!(upstream = %p.upstream, endpoint = %p.addr, reason = %why, "health check failing: endpoint out of rotation");
                }
            }
        }
        if before == Check::Failing && probe.state == Check::Passing {
            tracing::info!(upstream = %p.upstream, endpoint = %p.addr, "health check passing again: endpoint back in rotation");
        }
        probe.state != before
    }

    /// Each checked endpoint's state, for `upstream`.
    pub(crate) fn results(&self, upstream: &str) -> HashMap<EndpointAddr, Check> {
        self.probes
            .iter()
            .filter(|((u, _), _)| u == upstream)
            .map(|((_, a), p)| (*a, p.state))
            .collect()
    }
}

/// Probes `addr` forever (until aborted): the first check right away (after a random
/// share of the jitter), then every `interval` + random(`jitter`).
async fn run(
    upstream: String,
    addr: EndpointAddr,
    spec: HealthCheck,
    generation: u64,
    tx: UnboundedSender<Probed>,
) {
    let mut rng = seed(&upstream, addr, generation);
    let mut wait = jitter(&mut rng, spec.jitter);
    loop {
        tokio::time::sleep(wait).await;
        let result = match tokio::time::timeout(spec.timeout, probe(addr, &spec.kind)).await {
            Ok(r) => r,
            Err(_) => Err(format!("no answer within {:?}", spec.timeout)),
        };
        let done = Probed {
            upstream: upstream.clone(),
            addr,
            generation,
            result,
        };
        if tx.send(done).is_err() {
            return;
        }
        wait = spec.interval + jitter(&mut rng, spec.jitter);
    }
}

/// One check of `addr`: connect; for HTTP, `GET` and read the status line.
async fn probe(addr: EndpointAddr, kind: &CheckKind) -> Result<(), String> {
    match addr {
        EndpointAddr::Inet(a) => {
            let s = tokio::net::TcpStream::connect(a)
                .await
                .map_err(|e| format!("connect: {e}"))?;
            http(s, addr, kind).await
        }
        EndpointAddr::Unix(p) => {
            let s = tokio::net::UnixStream::connect(p.as_path())
                .await
                .map_err(|e| format!("connect: {e}"))?;
            http(s, addr, kind).await
        }
    }
}

async fn http<S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin>(
    mut s: S,
    addr: EndpointAddr,
    kind: &CheckKind,
) -> Result<(), String> {
    let CheckKind::Http {
        path,
        host,
        statuses,
    } = kind
    else {
        return Ok(());
    };
    let host = host.clone().unwrap_or_else(|| addr.to_string());
    let request = format!(
        "GET {path} HTTP/1.1\r\nHost: {host}\r\nUser-Agent: strait-health-check\r\nConnection: close\r\n\r\n"
    );
    s.write_all(request.as_bytes())
        .await
        .map_err(|e| format!("write: {e}"))?;
    // The status line fits in the first 64 bytes; read until it is whole.
    let mut buf = [0u8; 64];
    let mut len = 0;
    while !buf[..len].contains(&b'\n') && len < buf.len() {
        let n = s
            .read(&mut buf[len..])
            .await
            .map_err(|e| format!("read: {e}"))?;
        if n == 0 {
            return Err("closed before a status line".into());
        }
        len += n;
    }
    let status = status_of(&buf[..len]).ok_or("not an HTTP/1.x status line")?;
    if statuses
        .iter()
        .any(|(lo, hi)| (*lo..=*hi).contains(&status))
    {
        Ok(())
    } else {
        Err(format!("status {status}"))
    }
}

/// The status of `HTTP/1.x NNN …`.
fn status_of(line: &[u8]) -> Option<u16> {
    let rest = line.strip_prefix(b"HTTP/1.")?;
    let code = rest.get(2..5)?;
    if rest.get(1) != Some(&b' ') || !code.iter().all(u8::is_ascii_digit) {
        return None;
    }
    std::str::from_utf8(code).ok()?.parse().ok()
}

fn seed(upstream: &str, addr: EndpointAddr, generation: u64) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    (upstream, addr, generation).hash(&mut h);
    h.finish() | 1
}

/// A random duration in `[0, max)` (xorshift64).
pub(crate) fn jitter(rng: &mut u64, max: Duration) -> Duration {
    *rng ^= *rng << 13;
    *rng ^= *rng >> 7;
    *rng ^= *rng << 17;
    let nanos = max.as_nanos() as u64;
    if nanos == 0 {
        return Duration::ZERO;
    }
    Duration::from_nanos(*rng % nanos)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_lines() {
        assert_eq!(status_of(b"HTTP/1.1 200 OK\r\n"), Some(200));
        assert_eq!(status_of(b"HTTP/1.0 503 x"), Some(503));
        assert_eq!(status_of(b"HTTP/2 200"), None);
        assert_eq!(status_of(b"HTTP/1.1 2x0"), None);
        assert_eq!(status_of(b"junk"), None);
    }

    fn probed(generation: u64, ok: bool) -> Probed {
        Probed {
            upstream: "u".into(),
            addr: "127.0.0.2:80".parse().unwrap(),
            generation,
            result: if ok { Ok(()) } else { Err("no".into()) },
        }
    }

    #[tokio::test]
    async fn thresholds_turn_results_into_states() {
        let (tx, _rx) = tokio::sync::mpsc::unbounded_channel();
        let mut c = Checks::new(tx);
        let spec = HealthCheck {
            kind: CheckKind::Tcp,
            interval: Duration::from_secs(3600),
            timeout: Duration::from_secs(1),
            jitter: Duration::ZERO,
            healthy: 2,
            unhealthy: 3,
        };
        let addr: EndpointAddr = "127.0.0.2:80".parse().unwrap();
        assert!(c.sync("u", Some(&spec), &[addr]));
        let g = c.probes.values().next().unwrap().generation;
        let state = |c: &Checks| c.results("u")[&addr];
        assert_eq!(state(&c), Check::Unchecked);
        assert!(c.record(probed(g, true)));
        assert_eq!(state(&c), Check::Passing);
        assert!(!c.record(probed(g, false)));
        assert!(!c.record(probed(g, false)));
        assert!(!c.record(probed(g + 99, false)), "a stale task's result");
        assert!(c.record(probed(g, false)));
        assert_eq!(state(&c), Check::Failing);
        assert!(!c.record(probed(g, true)));
        assert!(c.record(probed(g, true)));
        assert_eq!(state(&c), Check::Passing);
        // The endpoint leaves: its check stops.
        assert!(c.sync("u", Some(&spec), &[]));
        assert!(c.results("u").is_empty());
    }
}
