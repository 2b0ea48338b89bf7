//! What the control side knows about itself, for readiness, the admin endpoint, tests
//! and benches: registry sync state, the versions each worker has swapped in, and the
//! propagation latency (change reaching the control side → every worker swapped).
//!
//! Runs on: written by the discovery thread and the ack collector thread, read by
//! anyone on the control side. Never touched on a worker's request path (workers only
//! send acks over a channel, once per snapshot).

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::{Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime};

use crossbeam_channel::Receiver;

use crate::publish::Ack;
use crate::snapshot::SnapshotVersion;

/// Propagation samples kept.
const SAMPLES: usize = 4096;

/// Propagation histogram bucket upper bounds, in seconds (`+Inf` implied).
pub const PROPAGATION_BUCKETS: [f64; 12] = [
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0,
];

/// Every propagation measured since start, bucketed like [`PROPAGATION_BUCKETS`].
#[derive(Debug, Default, Clone)]
struct PropagationHistogram {
    buckets: [u64; 13],
    sum: Duration,
}

/// One registry's watch state.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RegistryStatus {
    pub enabled: bool,
    /// Both collections finished their first list.
    pub synced: bool,
    /// When a (re)list last completed.
    pub last_sync: Option<SystemTime>,
    /// The last watch error, cleared by the next completed list.
    pub last_error: Option<String>,
    /// Relists after the first one (410 Gone, reconnects that needed a list).
    pub relists: u64,
    /// A permission the registry lacks and works around (`/readyz` says it), until fixed.
    pub degraded: Option<String>,
}

#[derive(Debug, Default)]
struct Inner {
    registries: BTreeMap<String, RegistryStatus>,
    published: SnapshotVersion,
    /// The first version published since every enabled registry was synced: ready once
    /// every worker has swapped it in. `None` while a registry is not synced.
    ready_from: Option<SnapshotVersion>,
    /// Per worker: the last version it swapped in.
    applied: Vec<SnapshotVersion>,
    /// Acks counted per version until every worker has sent one.
    pending: HashMap<SnapshotVersion, (usize, Instant)>,
    propagation: VecDeque<Duration>,
    histogram: PropagationHistogram,
}

impl Inner {
    fn all_synced(&self) -> bool {
        self.registries.values().all(|r| !r.enabled || r.synced)
    }
}

/// Shared control-side status.
#[derive(Debug, Default)]
pub struct Status {
    inner: Mutex<Inner>,
    changed: Condvar,
}

impl Status {
    pub fn new(workers: usize) -> Status {
        let status = Status::default();
        status.lock().applied = vec![SnapshotVersion(0); workers];
        status
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // A panic elsewhere must not take readiness down with it.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Every enabled registry has finished its first list, and every worker routes with
    /// a table built from it (so no worker still answers "not synced").
    pub fn ready(&self) -> bool {
        let inner = self.lock();
        if !inner.registries.values().any(|r| r.enabled) {
            return true;
        }
        inner.all_synced()
            && inner
                .ready_from
                .is_some_and(|v| inner.applied.iter().all(|a| *a >= v))
    }

    pub fn registries(&self) -> BTreeMap<String, RegistryStatus> {
        self.lock().registries.clone()
    }

    pub(crate) fn set_registries(&self, registries: BTreeMap<String, RegistryStatus>) {
        self.lock().registries = registries;
        self.changed.notify_all();
    }

    pub(crate) fn update_registry(&self, name: &str, f: impl FnOnce(&mut RegistryStatus)) {
        if let Some(r) = self.lock().registries.get_mut(name) {
            f(r);
        }
        self.changed.notify_all();
    }

    /// Every registry is synced but no snapshot was published since: one must be, so
    /// that readiness has a version to wait for.
    pub(crate) fn needs_ready_snapshot(&self) -> bool {
        let inner = self.lock();
        inner.ready_from.is_none() && inner.all_synced()
    }

    pub(crate) fn published(&self, version: SnapshotVersion) {
        let mut inner = self.lock();
        inner.published = version;
        if !inner.all_synced() {
            inner.ready_from = None;
        } else if inner.ready_from.is_none() {
            inner.ready_from = Some(version);
        }
    }

    /// The last version published.
    pub fn version(&self) -> SnapshotVersion {
        self.lock().published
    }

    /// Waits until every worker has swapped in `version` (or a later one).
    pub fn wait_applied(&self, version: SnapshotVersion, timeout: Duration) -> bool {
        self.wait_until(timeout, |inner| inner.applied.iter().all(|v| *v >= version))
    }

    /// Waits until `cond` holds for the registry states.
    pub fn wait_registries(
        &self,
        timeout: Duration,
        cond: impl Fn(&BTreeMap<String, RegistryStatus>) -> bool,
    ) -> bool {
        self.wait_until(timeout, |inner| cond(&inner.registries))
    }

    fn wait_until(&self, timeout: Duration, cond: impl Fn(&Inner) -> bool) -> bool {
        let deadline = Instant::now() + timeout;
        let mut inner = self.lock();
        loop {
            if cond(&inner) {
                return true;
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return false;
            }
            inner = self
                .changed
                .wait_timeout(inner, left)
                .map(|(g, _)| g)
                .unwrap_or_else(|e| e.into_inner().0);
        }
    }

    /// Every propagation measured since start: counts per bucket of
    /// [`PROPAGATION_BUCKETS`] (the last is `+Inf`, not cumulative), their sum and count.
    pub fn propagation_histogram(&self) -> ([u64; 13], Duration, u64) {
        let h = self.lock().histogram.clone();
        (h.buckets, h.sum, h.buckets.iter().sum())
    }

    /// Recent propagation latencies, oldest first.
    pub fn propagation_samples(&self) -> Vec<Duration> {
        self.lock().propagation.iter().copied().collect()
    }

    fn record_ack(&self, ack: Ack) {
        let mut inner = self.lock();
        let workers = inner.applied.len();
        if let Some(v) = inner.applied.get_mut(ack.worker) {
            *v = (*v).max(ack.version);
        }
        let entry = inner.pending.entry(ack.version).or_insert((0, ack.swapped));
        entry.0 += 1;
        entry.1 = entry.1.max(ack.swapped);
        if entry.0 >= workers {
            let (_, last) = entry.to_owned();
            inner.pending.remove(&ack.version);
            if inner.propagation.len() == SAMPLES {
                inner.propagation.pop_front();
            }
            let took = last.saturating_duration_since(ack.origin);
            inner.propagation.push_back(took);
            let secs = took.as_secs_f64();
            let i = PROPAGATION_BUCKETS.partition_point(|b| *b < secs);
            inner.histogram.buckets[i] += 1;
            inner.histogram.sum += took;
        }
        // Versions every worker has passed can no longer complete.
        let min = inner.applied.iter().copied().min().unwrap_or_default();
        inner.pending.retain(|v, _| *v >= min);
        drop(inner);
        self.changed.notify_all();
    }

    /// Collects acks until every sender is gone (run on its own thread).
    pub fn collect_acks(&self, acks: Receiver<Ack>) {
        while let Ok(ack) = acks.recv() {
            self.record_ack(ack);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn propagation_is_measured_when_every_worker_acked() {
        let s = Status::new(2);
        let origin = Instant::now();
        let ack = |worker, ms| Ack {
            worker,
            version: SnapshotVersion(3),
            origin,
            swapped: origin + Duration::from_millis(ms),
        };
        s.record_ack(ack(0, 1));
        assert!(!s.wait_applied(SnapshotVersion(3), Duration::ZERO));
        assert!(s.propagation_samples().is_empty());
        s.record_ack(ack(1, 4));
        assert!(s.wait_applied(SnapshotVersion(3), Duration::ZERO));
        assert_eq!(s.propagation_samples(), [Duration::from_millis(4)]);
        let (buckets, sum, count) = s.propagation_histogram();
        assert_eq!((sum, count), (Duration::from_millis(4), 1));
        assert_eq!(buckets[5], 1, "4 ms is in the 5 ms bucket");
    }

    #[test]
    fn ready_waits_for_every_worker_to_apply_the_first_synced_table() {
        let s = Status::new(2);
        let registry = |synced| RegistryStatus {
            enabled: true,
            synced,
            ..RegistryStatus::default()
        };
        s.set_registries([("k".to_owned(), registry(false))].into());
        s.published(SnapshotVersion(1));
        assert!(!s.ready());
        s.update_registry("k", |r| r.synced = true);
        assert!(!s.ready(), "synced, but no worker has the table yet");
        assert!(s.needs_ready_snapshot());
        s.published(SnapshotVersion(2));
        let origin = Instant::now();
        for worker in 0..2 {
            assert!(!s.ready());
            s.record_ack(Ack {
                worker,
                version: SnapshotVersion(2),
                origin,
                swapped: origin,
            });
        }
        assert!(s.ready());
        assert!(!s.needs_ready_snapshot());
    }
}
