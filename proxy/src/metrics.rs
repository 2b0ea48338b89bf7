//! Per-worker counters, summed at scrape time into the Prometheus text format.
//!
//! Runs on: written by one worker each (every [`Counter`] and [`Gauge`] here has a single
//! writer: its worker), read by the admin thread when it renders `/metrics`. A write is a
//! relaxed load and store of the worker's own cache line: no lock, no read-modify-write
//! instruction, nothing another core writes. The registry lists ([`WorkerMetrics`]) are
//! locked only when a worker swaps in a snapshot with a route or upstream it has not seen,
//! and when a scrape reads them.

// The registry locks: a worker takes them only when it swaps in a snapshot (never per
// request), the admin thread when it scrapes.
#![allow(clippy::disallowed_types)]

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime};

use strait_discovery::{EndpointState, Snapshot, Status};

mod balance;

/// A monotonically increasing count with a single writer.
#[derive(Debug, Default)]
pub struct Counter(AtomicU64);

impl Counter {
    #[inline]
    pub fn add(&self, n: u64) {
        // Single writer: a plain load and store, no locked instruction.
        self.0.store(
            self.0.load(Ordering::Relaxed).wrapping_add(n),
            Ordering::Relaxed,
        );
    }

    #[inline]
    pub fn inc(&self) {
        self.add(1);
    }

    pub fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

/// A value that goes up and down, with a single writer.
#[derive(Debug, Default)]
pub struct Gauge(AtomicU64);

impl Gauge {
    /// Counts one in use until the guard drops.
    #[inline]
    pub fn hold(&self) -> Held<'_> {
        self.inc();
        Held(self)
    }

    #[inline]
    pub fn inc(&self) {
        self.0.store(
            self.0.load(Ordering::Relaxed).wrapping_add(1),
            Ordering::Relaxed,
        );
    }

    #[inline]
    pub fn dec(&self) {
        self.0.store(
            self.0.load(Ordering::Relaxed).wrapping_sub(1),
            Ordering::Relaxed,
        );
    }

    #[inline]
    pub fn set(&self, v: u64) {
        self.0.store(v, Ordering::Relaxed);
    }

    /// The value; wrapping arithmetic, so a sum over workers is read as signed.
    pub fn get(&self) -> i64 {
        self.0.load(Ordering::Relaxed) as i64
    }
}

/// One unit of a [`Gauge`], released on drop.
#[derive(Debug)]
pub struct Held<'a>(&'a Gauge);

impl Drop for Held<'_> {
    fn drop(&mut self) {
        self.0.dec();
    }
}

/// Request duration bucket upper bounds, in seconds (`+Inf` is implied).
pub const DURATION_BUCKETS: [f64; 14] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// Bounds in microseconds, for the hot path's integer compare.
const DURATION_BUCKETS_US: [u64; 14] = [
    500, 1_000, 2_500, 5_000, 10_000, 25_000, 50_000, 100_000, 250_000, 500_000, 1_000_000,
    2_500_000, 5_000_000, 10_000_000,
];

/// A histogram with [`DURATION_BUCKETS`]: per-bucket counts (not cumulative; the scrape
/// adds them up), a count and a sum in microseconds.
#[derive(Debug, Default)]
pub struct Histogram {
    buckets: [Counter; 15],
    sum_us: Counter,
}

impl Histogram {
    #[inline]
    pub fn observe(&self, d: Duration) {
        let us = d.as_micros().min(u128::from(u64::MAX)) as u64;
        let i = DURATION_BUCKETS_US.partition_point(|b| *b < us);
        self.buckets[i].inc();
        self.sum_us.add(us);
    }

    fn add_to(&self, acc: &mut HistogramSum) {
        for (a, b) in acc.buckets.iter_mut().zip(&self.buckets) {
            *a += b.get();
        }
        acc.sum_us += self.sum_us.get();
    }
}

/// Histogram counts summed over workers.
#[derive(Debug, Default, Clone)]
struct HistogramSum {
    buckets: [u64; 15],
    sum_us: u64,
}

/// Status classes counted per route: 1xx … 5xx.
pub const CLASSES: [&str; 5] = ["1xx", "2xx", "3xx", "4xx", "5xx"];

/// One (service, route) pair's counters on one worker. Requests no route matched (404,
/// and malformed ones) count under the service and route `""`.
#[derive(Debug, Default)]
pub struct RouteStats {
    pub service: Arc<str>,
    pub route: Arc<str>,
    /// By status class, indexed like [`CLASSES`].
    pub requests: [Counter; 5],
    pub duration: Histogram,
}

impl RouteStats {
    #[inline]
    pub fn record(&self, status: u16, took: Duration) {
        let class = usize::from(status / 100).clamp(1, 5) - 1;
        self.requests[class].inc();
        self.duration.observe(took);
    }
}

/// One upstream's counters on one worker.
#[derive(Debug, Default)]
pub struct UpstreamStats {
    pub name: Arc<str>,
    /// Connects refused, reset or timed out.
    pub connect_failures: Counter,
    /// Attempts after a request's first one.
    pub retries: Counter,
    /// Endpoints ejected by passive health.
    pub ejections: Counter,
    /// Of those, ejected by outlier detection for consecutive 5xx / gateway errors.
    pub ejections_5xx: Counter,
    pub ejections_gateway: Counter,
    /// Picks by locality tier (`Tier as usize`: node, zone, any), for upstreams with
    /// `locality`.
    pub picks: [Counter; 3],
}

impl UpstreamStats {
    /// Counts an ejection for `reason`.
    pub fn count_ejection(&self, reason: crate::upstream::Reason) {
        self.ejections.inc();
        match reason {
            crate::upstream::Reason::Connect => {}
            crate::upstream::Reason::FiveXx => self.ejections_5xx.inc(),
            crate::upstream::Reason::Gateway => self.ejections_gateway.inc(),
        }
    }
}

/// (service, route).
type RouteKey = (Arc<str>, Arc<str>);

/// What one worker exports: its registries of route and upstream stats, and its gauges.
#[derive(Debug, Default)]
pub struct WorkerMetrics {
    routes: Mutex<BTreeMap<RouteKey, Arc<RouteStats>>>,
    upstreams: Mutex<BTreeMap<Arc<str>, Arc<UpstreamStats>>>,
    /// Requests no route took (404, malformed heads, timeouts before routing).
    pub unrouted: Arc<RouteStats>,
    /// Open client connections.
    pub client_connections: Gauge,
    /// Idle upstream connections in the keep-alive pool.
    pub pool_idle: Gauge,
    /// Upstream connections in use by an exchange or a tunnel.
    pub pool_active: Gauge,
    /// TLS handshakes by outcome, indexed like [`crate::tls::RESULTS`].
    pub tls_handshakes: [Counter; 7],
    /// Open HTTP/2 client connections.
    pub h2_connections: Gauge,
    /// HTTP/2 streams accepted from clients.
    pub h2_streams: Counter,
    /// HTTP/2 client connections closed for a control frame flood.
    pub h2_floods: Counter,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl WorkerMetrics {
    /// The stats of every route of `snapshot`, indexed like its router's routes; kept
    /// across snapshots by name, so a reload or an endpoint change does not reset them.
    pub fn routes_for(&self, snapshot: &Snapshot) -> Box<[Arc<RouteStats>]> {
        let mut known = lock(&self.routes);
        snapshot
            .router
            .routes()
            .iter()
            .map(|(service, route)| {
                known
                    .entry((service.clone(), route.clone()))
                    .or_insert_with(|| {
                        Arc::new(RouteStats {
                            service: service.clone(),
                            route: route.clone(),
                            ..RouteStats::default()
                        })
                    })
                    .clone()
            })
            .collect()
    }

    /// The stats of every upstream of `snapshot`, indexed like `snapshot.upstreams`.
    pub fn upstreams_for(&self, snapshot: &Snapshot) -> Box<[Arc<UpstreamStats>]> {
        let mut known = lock(&self.upstreams);
        snapshot
            .upstreams
            .iter()
            .map(|u| {
                known
                    .entry(u.name.clone())
                    .or_insert_with(|| {
                        Arc::new(UpstreamStats {
                            name: u.name.clone(),
                            ..UpstreamStats::default()
                        })
                    })
                    .clone()
            })
            .collect()
    }
}

/// Writes `# HELP` and `# TYPE` lines.
fn family(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} {kind}");
}

/// A label value, escaped as the text format requires.
fn escape(v: &str) -> String {
    let mut s = String::with_capacity(v.len());
    for c in v.chars() {
        match c {
            '\\' => s.push_str("\\\\"),
            '"' => s.push_str("\\\""),
            '\n' => s.push_str("\\n"),
            c => s.push(c),
        }
    }
    s
}

fn histogram(out: &mut String, name: &str, labels: &str, h: &HistogramSum, bounds: &[f64]) {
    let sep = if labels.is_empty() { "" } else { "," };
    let mut cumulative = 0u64;
    for (i, b) in bounds.iter().enumerate() {
        cumulative += h.buckets[i];
        let _ = writeln!(out, "{name}_bucket{{{labels}{sep}le=\"{b}\"}} {cumulative}");
    }
    cumulative += h.buckets[bounds.len()..].iter().sum::<u64>();
    let _ = writeln!(
        out,
        "{name}_bucket{{{labels}{sep}le=\"+Inf\"}} {cumulative}"
    );
    let braces = if labels.is_empty() {
        String::new()
    } else {
        format!("{{{labels}}}")
    };
    let _ = writeln!(out, "{name}_sum{braces} {}", h.sum_us as f64 / 1e6);
    let _ = writeln!(out, "{name}_count{braces} {cumulative}");
}

/// The control side's part of a scrape.
pub struct Control<'a> {
    pub status: &'a Status,
    pub snapshot: Option<Arc<Snapshot>>,
    pub ready: bool,
    pub reloads_ok: u64,
    pub reloads_failed: u64,
    /// The certificates in force on the TLS listeners.
    pub tls: Option<Arc<strait_discovery::tls::TlsSnapshot>>,
    /// TLS Secrets whose latest version is refused (`(secret, why)`).
    pub secrets_refused: Vec<(String, String)>,
}

/// Renders every metric (CONFIG.md, "Metrics") in the Prometheus text format 0.0.4.
pub fn render(workers: &[Arc<WorkerMetrics>], control: &Control<'_>) -> String {
    let mut out = String::with_capacity(16 * 1024);
    // Requests and durations by (service, route), summed over workers.
    let mut routes: BTreeMap<RouteKey, ([u64; 5], HistogramSum)> = BTreeMap::new();
    let mut upstreams: BTreeMap<Arc<str>, [u64; 5]> = BTreeMap::new();
    let mut picks: BTreeMap<Arc<str>, [u64; 3]> = BTreeMap::new();
    let (mut clients, mut idle, mut active) = (0i64, 0i64, 0i64);
    for w in workers {
        let mut add_route = |r: &RouteStats| {
            let e = routes
                .entry((r.service.clone(), r.route.clone()))
                .or_default();
            for (a, c) in e.0.iter_mut().zip(&r.requests) {
                *a += c.get();
            }
            r.duration.add_to(&mut e.1);
        };
        add_route(&w.unrouted);
        for r in lock(&w.routes).values() {
            add_route(r);
        }
        for u in lock(&w.upstreams).values() {
            let e = upstreams.entry(u.name.clone()).or_default();
            e[0] += u.connect_failures.get();
            e[1] += u.retries.get();
            e[2] += u.ejections.get();
            e[3] += u.ejections_5xx.get();
            e[4] += u.ejections_gateway.get();
            let p = picks.entry(u.name.clone()).or_default();
            for (a, c) in p.iter_mut().zip(&u.picks) {
                *a += c.get();
            }
        }
        clients += w.client_connections.get();
        idle += w.pool_idle.get();
        active += w.pool_active.get();
    }
    family(
        &mut out,
        "strait_requests_total",
        "counter",
        "Requests answered, by service, route and status class (service and route \"\" when no route matched).",
    );
    for ((service, route), (classes, _)) in &routes {
        for (class, n) in CLASSES.iter().zip(classes) {
            let _ = writeln!(
                out,
                "strait_requests_total{{service=\"{}\",route=\"{}\",code=\"{class}\"}} {n}",
                escape(service),
                escape(route)
            );
        }
    }
    family(
        &mut out,
        "strait_request_duration_seconds",
        "histogram",
        "From the complete request head to the end of the response, by service and route.",
    );
    for ((service, route), (_, h)) in &routes {
        let labels = format!(
            "service=\"{}\",route=\"{}\"",
            escape(service),
            escape(route)
        );
        histogram(
            &mut out,
            "strait_request_duration_seconds",
            &labels,
            h,
            &DURATION_BUCKETS,
        );
    }
    for (i, (name, help)) in [
        (
            "strait_upstream_connect_failures_total",
            "Connects to an upstream endpoint refused, reset or timed out.",
        ),
        (
            "strait_upstream_retries_total",
            "Request attempts after the first, on another endpoint or connection.",
        ),
        (
            "strait_upstream_ejections_total",
            "Endpoints ejected by passive health (summed over workers: each worker ejects on its own).",
        ),
    ]
    .into_iter()
    .enumerate()
    {
        family(&mut out, name, "counter", help);
        for (upstream, counts) in &upstreams {
            let _ = writeln!(
                out,
                "{name}{{upstream=\"{}\"}} {}",
                escape(upstream),
                counts[i]
            );
        }
    }
    family(
        &mut out,
        "strait_upstream_outlier_ejections_total",
        "counter",
        "Endpoints ejected by outlier detection, by reason (5xx, gateway), summed over workers.",
    );
    for (upstream, counts) in &upstreams {
        for (reason, n) in [("5xx", counts[3]), ("gateway", counts[4])] {
            let _ = writeln!(
                out,
                "strait_upstream_outlier_ejections_total{{upstream=\"{}\",reason=\"{reason}\"}} {n}",
                escape(upstream)
            );
        }
    }
    balance::render(&mut out, &picks, control.snapshot.as_deref());
    family(
        &mut out,
        "strait_upstream_connections",
        "gauge",
        "Upstream connections: idle in the keep-alive pools, or active (in use by a request or a tunnel).",
    );
    let _ = writeln!(out, "strait_upstream_connections{{state=\"idle\"}} {idle}");
    let _ = writeln!(
        out,
        "strait_upstream_connections{{state=\"active\"}} {active}"
    );
    family(
        &mut out,
        "strait_client_connections",
        "gauge",
        "Open client connections.",
    );
    let _ = writeln!(out, "strait_client_connections {clients}");
    family(
        &mut out,
        "strait_http2_connections",
        "gauge",
        "Open HTTP/2 client connections (h2 over TLS and h2c), part of strait_client_connections.",
    );
    let h2: i64 = workers.iter().map(|w| w.h2_connections.get()).sum();
    let _ = writeln!(out, "strait_http2_connections {h2}");
    family(
        &mut out,
        "strait_http2_streams_total",
        "counter",
        "HTTP/2 streams (requests) accepted from clients.",
    );
    let streams: u64 = workers.iter().map(|w| w.h2_streams.get()).sum();
    let _ = writeln!(out, "strait_http2_streams_total {streams}");
    family(
        &mut out,
        "strait_http2_flood_closes_total",
        "counter",
        "HTTP/2 client connections closed with GOAWAY for a flood of control frames.",
    );
    let floods: u64 = workers.iter().map(|w| w.h2_floods.get()).sum();
    let _ = writeln!(out, "strait_http2_flood_closes_total {floods}");
    family(
        &mut out,
        "strait_upstream_endpoints",
        "gauge",
        "Endpoints per upstream in the current snapshot, by state (ready, terminating, not_serving).",
    );
    if let Some(s) = &control.snapshot {
        for u in &s.upstreams {
            let mut counts = [0u64; 3];
            for e in u.endpoints.iter() {
                counts[state_index(e.state)] += 1;
            }
            for (state, n) in STATES.iter().zip(counts) {
                let _ = writeln!(
                    out,
                    "strait_upstream_endpoints{{upstream=\"{}\",state=\"{state}\"}} {n}",
                    escape(&u.name)
                );
            }
        }
    }
    family(
        &mut out,
        "strait_snapshot_version",
        "gauge",
        "The version of the last routing snapshot published to the workers.",
    );
    let _ = writeln!(
        out,
        "strait_snapshot_version {}",
        control.status.version().0
    );
    family(
        &mut out,
        "strait_propagation_seconds",
        "histogram",
        "From a change reaching the control side (watch event, reload) to every worker routing with it.",
    );
    let (buckets, sum, count) = control.status.propagation_histogram();
    let mut h = HistogramSum::default();
    h.buckets[..buckets.len()].copy_from_slice(&buckets);
    h.sum_us = sum.as_micros() as u64;
    debug_assert_eq!(buckets.iter().sum::<u64>(), count);
    histogram(
        &mut out,
        "strait_propagation_seconds",
        "",
        &h,
        &strait_discovery::status::PROPAGATION_BUCKETS,
    );
    let registries = control.status.registries();
    family(
        &mut out,
        "strait_registry_synced",
        "gauge",
        "1 when the registry's watches have finished their first list.",
    );
    for (name, r) in &registries {
        let _ = writeln!(
            out,
            "strait_registry_synced{{registry=\"{}\"}} {}",
            escape(name),
            u8::from(r.synced)
        );
    }
    family(
        &mut out,
        "strait_registry_watch_restarts_total",
        "counter",
        "Relists after the first one (410 Gone, or a reconnect that needed a list).",
    );
    for (name, r) in &registries {
        let _ = writeln!(
            out,
            "strait_registry_watch_restarts_total{{registry=\"{}\"}} {}",
            escape(name),
            r.relists
        );
    }
    family(
        &mut out,
        "strait_registry_last_sync_age_seconds",
        "gauge",
        "Seconds since the registry's last completed list (absent before the first).",
    );
    let now = SystemTime::now();
    for (name, r) in &registries {
        if let Some(t) = r.last_sync {
            let age = now.duration_since(t).unwrap_or_default().as_secs_f64();
            let _ = writeln!(
                out,
                "strait_registry_last_sync_age_seconds{{registry=\"{}\"}} {age:.3}",
                escape(name)
            );
        }
    }
    family(
        &mut out,
        "strait_ready",
        "gauge",
        "1 when /readyz answers 200: every enabled registry synced, and not stopping.",
    );
    let _ = writeln!(out, "strait_ready {}", u8::from(control.ready));
    family(
        &mut out,
        "strait_config_reloads_total",
        "counter",
        "Config reloads (file change or SIGHUP), by result.",
    );
    let _ = writeln!(
        out,
        "strait_config_reloads_total{{result=\"ok\"}} {}",
        control.reloads_ok
    );
    let _ = writeln!(
        out,
        "strait_config_reloads_total{{result=\"refused\"}} {}",
        control.reloads_failed
    );
    tls_metrics(&mut out, workers, control);
    out
}

/// `strait_tls_handshakes_total{result}` and `strait_tls_certificate_expiry_seconds`.
fn tls_metrics(out: &mut String, workers: &[Arc<WorkerMetrics>], control: &Control<'_>) {
    family(
        out,
        "strait_tls_handshakes_total",
        "counter",
        "TLS handshakes on the TLS listeners, by result.",
    );
    for (i, result) in crate::tls::RESULTS.iter().enumerate() {
        let n: u64 = workers.iter().map(|w| w.tls_handshakes[i].get()).sum();
        let _ = writeln!(
            out,
            "strait_tls_handshakes_total{{result=\"{result}\"}} {n}"
        );
    }
    family(
        out,
        "strait_tls_certificate_expiry_seconds",
        "gauge",
        "Seconds until each served certificate expires (negative: expired), by listener and source file.",
    );
    if let Some(tls) = &control.tls {
        expiry_rows(out, tls);
    }
    family(
        out,
        "strait_tls_certificate_refused",
        "gauge",
        "1 for each TLS Secret whose latest version is refused (bad pair, expired, not found): the last good certificate keeps serving.",
    );
    for (secret, _) in &control.secrets_refused {
        let _ = writeln!(
            out,
            "strait_tls_certificate_refused{{source=\"{}\"}} 1",
            escape(secret)
        );
    }
}

fn expiry_rows(out: &mut String, tls: &strait_discovery::tls::TlsSnapshot) {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64);
    let mut rows: Vec<(&String, &str, i64)> = Vec::new();
    for (listener, certs) in &tls.listeners {
        for c in &certs.certs {
            rows.push((listener, &c.info.source, c.info.not_after - now));
        }
    }
    rows.sort();
    for (listener, source, left) in rows {
        let _ = writeln!(
            out,
            "strait_tls_certificate_expiry_seconds{{listener=\"{}\",source=\"{}\"}} {left}",
            escape(listener),
            escape(source)
        );
    }
}

/// Endpoint state labels, in [`state_index`] order.
pub const STATES: [&str; 3] = ["ready", "terminating", "not_serving"];

/// The position of `s` in [`STATES`].
pub fn state_index(s: EndpointState) -> usize {
    match s {
        EndpointState::Ready => 0,
        EndpointState::Terminating => 1,
        EndpointState::NotServing => 2,
    }
}

/// The label for `s`, as `/metrics` and `/debug/snapshot` write it.
pub fn state_name(s: EndpointState) -> &'static str {
    STATES[state_index(s)]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_duration_lands_in_the_first_bucket_at_or_above_it() {
        let h = Histogram::default();
        h.observe(Duration::from_micros(500));
        h.observe(Duration::from_micros(501));
        h.observe(Duration::from_secs(60));
        let mut sum = HistogramSum::default();
        h.add_to(&mut sum);
        assert_eq!(sum.buckets[0], 1);
        assert_eq!(sum.buckets[1], 1);
        assert_eq!(sum.buckets[14], 1);
        assert_eq!(sum.sum_us, 500 + 501 + 60_000_000);
    }

    #[test]
    fn the_histogram_text_is_cumulative_and_ends_with_inf_sum_and_count() {
        let mut h = HistogramSum::default();
        h.buckets[0] = 2;
        h.buckets[2] = 1;
        h.buckets[14] = 4;
        h.sum_us = 1_500_000;
        let mut out = String::new();
        histogram(&mut out, "x", "a=\"b\"", &h, &DURATION_BUCKETS);
        assert!(out.contains("x_bucket{a=\"b\",le=\"0.0005\"} 2\n"));
        assert!(out.contains("x_bucket{a=\"b\",le=\"0.001\"} 2\n"));
        assert!(out.contains("x_bucket{a=\"b\",le=\"0.0025\"} 3\n"));
        assert!(out.contains("x_bucket{a=\"b\",le=\"10\"} 3\n"));
        assert!(out.contains("x_bucket{a=\"b\",le=\"+Inf\"} 7\n"));
        assert!(out.contains("x_sum{a=\"b\"} 1.5\n"));
        assert!(out.contains("x_count{a=\"b\"} 7\n"));
    }

    #[test]
    fn config_md_documents_every_metric() {
        let status = Status::new(1);
        let text = render(
            &[Arc::default()],
            &Control {
                status: &status,
                snapshot: None,
                ready: true,
                reloads_ok: 0,
                reloads_failed: 0,
                tls: None,
                secrets_refused: Vec::new(),
            },
        );
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../CONFIG.md");
        let doc = std::fs::read_to_string(path).expect("CONFIG.md next to the workspace root");
        let names: Vec<&str> = text
            .lines()
            .filter_map(|l| l.strip_prefix("# TYPE "))
            .filter_map(|l| l.split_whitespace().next())
            .collect();
        assert!(names.len() >= 15, "{names:?}");
        let missing: Vec<&&str> = names
            .iter()
            .filter(|n| !doc.contains(&format!("| `{n}` |")))
            .collect();
        assert!(missing.is_empty(), "CONFIG.md, Metrics, lacks {missing:?}");
    }

    #[test]
    fn label_values_are_escaped() {
        assert_eq!(escape("a\"b\\c\nd"), "a\\\"b\\\\c\\nd");
    }
}
