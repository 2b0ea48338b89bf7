//! Per-worker upstream state: the routing view with its round-robin cursors, passive
//! health (ejections), connecting to an endpoint, the keep-alive connection pool, and
//! the departures that long-lived (`tcp`) connections wait on to drain.
//!
//! Runs on: one worker; everything here is `!Send` (`Rc`, `Cell`, `RefCell`) on purpose.
//! A new snapshot becomes a new [`View`] once per publication; requests clone the `Rc`
//! (no atomics) and advance a `Cell` cursor. No `RefCell` borrow is held across `.await`.

use rustc_hash::FxHashMap;
use std::cell::{Cell, RefCell};
use std::net::SocketAddr;
use std::os::fd::AsRawFd;
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use monoio::net::TcpStream;
use strait_discovery::spec::{PassiveHealth, PoolSettings};
use strait_discovery::{Endpoint, Snapshot, Upstream};

use crate::error::ErrorKind;
use crate::metrics::{RouteStats, UpstreamStats, WorkerMetrics};
use crate::sys;
use crate::worker::signal::Signal;

/// Most extra endpoints tried after a failed connect when `retries` is not configured.
pub const MAX_DEFAULT_RETRIES: usize = 4;

/// A worker's view of one snapshot.
#[derive(Debug)]
pub struct View {
    pub snapshot: Arc<Snapshot>,
    /// One round-robin cursor per upstream, indexed like `snapshot.upstreams`.
    cursors: Box<[Cell<u32>]>,
    /// This worker's counters per route, indexed by [`strait_discovery::route::RouteEntry::stats`].
    pub route_stats: Box<[Arc<RouteStats>]>,
    /// This worker's counters for requests no route took.
    pub unrouted: Arc<RouteStats>,
    /// This worker's counters per upstream, indexed like `snapshot.upstreams`.
    pub upstream_stats: Box<[Arc<UpstreamStats>]>,
}

impl View {
    /// A view of `snapshot`. Cursors of upstreams that kept their name continue from
    /// `previous`; new ones start at `worker` so workers do not all begin on the same
    /// endpoint.
    pub fn new(
        snapshot: Arc<Snapshot>,
        previous: Option<&View>,
        worker: usize,
        metrics: &WorkerMetrics,
    ) -> View {
        let cursors = snapshot
            .upstreams
            .iter()
            .enumerate()
            .map(|(i, u)| {
                let carried = previous.and_then(|p| {
                    let same = p.snapshot.upstreams.get(i).filter(|o| o.name == u.name);
                    same.map(|_| p.cursors[i].get())
                });
                Cell::new(carried.unwrap_or(worker as u32))
            })
            .collect();
        View {
            route_stats: metrics.routes_for(&snapshot),
            unrouted: metrics.unrouted.clone(),
            upstream_stats: metrics.upstreams_for(&snapshot),
            snapshot,
            cursors,
        }
    }

    /// The next endpoint of upstream `idx` in weighted round-robin order, skipping
    /// addresses in `tried` and endpoints `health` has ejected. Ready endpoints first;
    /// terminating ones only when no endpoint is ready. When every endpoint left is
    /// ejected, ejections are ignored (panic mode) rather than failing the request.
    pub fn pick(
        &self,
        idx: u32,
        tried: &[SocketAddr],
        health: &Health,
        now: Instant,
    ) -> Option<Endpoint> {
        let up = self.snapshot.upstreams.get(idx as usize)?;
        let cursor = &self.cursors[idx as usize];
        let order: &[u32] = if up.schedule.is_empty() {
            &up.fallback
        } else {
            &up.schedule
        };
        let mut panic_pick = None;
        for _ in 0..order.len() {
            let c = cursor.get();
            cursor.set(c.wrapping_add(1));
            let ep = up.endpoints[order[c as usize % order.len()] as usize];
            if tried.contains(&ep.addr) {
                continue;
            }
            if health.is_ejected(ep.addr, now) {
                panic_pick.get_or_insert(ep);
                continue;
            }
            return Some(ep);
        }
        panic_pick
    }

    /// How many endpoints a request may try in all (1 + retries).
    pub fn attempts(&self, idx: u32) -> usize {
        let Some(up) = self.snapshot.upstreams.get(idx as usize) else {
            return 0;
        };
        let distinct = up.usable;
        let retries = match up.settings.retries {
            Some(r) => r as usize,
            None => distinct.saturating_sub(1).min(MAX_DEFAULT_RETRIES),
        };
        (1 + retries).min(distinct.max(1))
    }

    /// Endpoints that took new requests in `old` and take none in this view: removed,
    /// no longer ready (terminating while others are ready), or not serving. Only
    /// upstreams that changed are compared (unchanged ones are the same `Arc`), so a
    /// swap costs O(what changed).
    pub fn departed_since(&self, old: &View) -> Vec<SocketAddr> {
        let mut gone = Vec::new();
        for (i, before) in old.snapshot.upstreams.iter().enumerate() {
            let after = match self.snapshot.upstreams.get(i) {
                Some(u) if Arc::ptr_eq(u, before) => continue,
                Some(u) if u.name == before.name => Some(u),
                _ => self.snapshot.upstream(&before.name),
            };
            for e in before.endpoints.iter().filter(|e| before.in_rotation(e)) {
                let kept = after.is_some_and(|u| takes(u, e.addr));
                if !kept && !gone.contains(&e.addr) {
                    gone.push(e.addr);
                }
            }
        }
        // An address another upstream still sends to stays.
        if !gone.is_empty() {
            gone.retain(|a| !self.snapshot.upstreams.iter().any(|u| takes(u, *a)));
        }
        gone
    }

    /// True when some upstream of this view takes new requests to `addr`.
    pub fn sends_to(&self, addr: SocketAddr) -> bool {
        self.snapshot.upstreams.iter().any(|u| takes(u, addr))
    }
}

/// True when upstream `u` takes new requests to `addr`.
fn takes(u: &Upstream, addr: SocketAddr) -> bool {
    u.endpoints
        .iter()
        .any(|e| e.addr == addr && u.in_rotation(e))
}

// === impl Health ===

/// Passive health of one worker's endpoints: consecutive connect failures and ejections.
/// Keyed by address, so an endpoint shared by upstreams is judged once.
#[derive(Debug, Default)]
pub struct Health {
    /// Endpoints with a failure streak or an ejection; empty while all is well.
    entries: RefCell<FxHashMap<SocketAddr, EndpointHealth>>,
    /// Entries currently ejected, so the pick path skips the map lookup when none is.
    ejected: Cell<usize>,
}

#[derive(Debug, Default, Clone, Copy)]
struct EndpointHealth {
    /// Connect failures since the last success or ejection.
    failures: u32,
    /// Out of rotation until then.
    ejected_until: Option<Instant>,
    /// Ejections in a row (no success between): the next one lasts base × 2^n.
    ejections: u32,
}

/// What a connect failure did to an endpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Still in rotation.
    Kept,
    /// Out of this worker's rotation for this long.
    Ejected(Duration),
}

impl Health {
    /// True when `addr` is ejected at `now`. An ejection that has run out ends here: the
    /// endpoint is back in rotation, one failure away from a longer ejection.
    pub fn is_ejected(&self, addr: SocketAddr, now: Instant) -> bool {
        if self.ejected.get() == 0 {
            return false;
        }
        let mut entries = self.entries.borrow_mut();
        let Some(h) = entries.get_mut(&addr) else {
            return false;
        };
        match h.ejected_until {
            Some(until) if now < until => true,
            Some(_) => {
                h.ejected_until = None;
                h.failures = u32::MAX; // the next failure ejects again
                self.ejected.set(self.ejected.get() - 1);
                false
            }
            None => false,
        }
    }

    /// Records a successful connect (or exchange) with `addr`: its streak ends.
    pub fn success(&self, addr: SocketAddr) {
        if self.entries.borrow().is_empty() {
            return;
        }
        if let Some(h) = self.entries.borrow_mut().remove(&addr) {
            if h.ejected_until.is_some() {
                self.ejected.set(self.ejected.get() - 1);
            }
        }
    }

    /// Records a failed connect to `addr` of upstream `up`; ejects it when the streak
    /// reaches the threshold and the upstream can spare it.
    pub fn failure(&self, addr: SocketAddr, up: &Upstream, now: Instant) -> Verdict {
        let s: &PassiveHealth = &up.settings.health;
        if s.consecutive_failures == 0 {
            return Verdict::Kept;
        }
        let streak = {
            let mut entries = self.entries.borrow_mut();
            let h = entries.entry(addr).or_default();
            if h.ejected_until.is_some() {
                return Verdict::Kept; // a request that was already under way
            }
            h.failures = h.failures.saturating_add(1);
            h.failures
        };
        if streak < s.consecutive_failures || !self.can_eject(up, now) {
            return Verdict::Kept;
        }
        let mut entries = self.entries.borrow_mut();
        let h = entries.entry(addr).or_default();
        let factor = 1u32.checked_shl(h.ejections.min(16)).unwrap_or(u32::MAX);
        let length = s.base_ejection.saturating_mul(factor).min(s.max_ejection);
        h.ejected_until = Some(now + length);
        h.ejections = h.ejections.saturating_add(1);
        h.failures = 0;
        self.ejected.set(self.ejected.get() + 1);
        Verdict::Ejected(length)
    }

    /// The panic threshold: one more ejection must leave at least one endpoint of `up`
    /// in rotation and stay within `max_ejected_percent` (one is always allowed).
    fn can_eject(&self, up: &Upstream, now: Instant) -> bool {
        let in_rotation: Vec<SocketAddr> = up
            .endpoints
            .iter()
            .filter(|e| up.in_rotation(e))
            .map(|e| e.addr)
            .collect();
        let ejected = in_rotation
            .iter()
            .filter(|a| self.is_ejected(**a, now))
            .count();
        let allowed =
            (in_rotation.len() * usize::from(up.settings.health.max_ejected_percent) / 100).max(1);
        ejected + 1 < in_rotation.len() && ejected < allowed
    }

    /// Forgets endpoints that left the table.
    pub fn forget(&self, addrs: &[SocketAddr]) {
        if self.entries.borrow().is_empty() {
            return;
        }
        let mut entries = self.entries.borrow_mut();
        for a in addrs {
            if let Some(h) = entries.remove(a) {
                if h.ejected_until.is_some() {
                    self.ejected.set(self.ejected.get() - 1);
                }
            }
        }
    }

    /// Endpoints ejected right now (for tests and metrics).
    pub fn ejected_count(&self) -> usize {
        self.ejected.get()
    }
}

/// Opens a connection to endpoint `addr` of `up` within its `timeouts.connect`
/// (TCP_NODELAY on), and tells `health` how it went: a success ends the endpoint's
/// failure streak, a failure may eject it (logged once, at warn). Failures and
/// ejections are counted in the upstream's `stats`.
pub async fn connect(
    health: &Health,
    up: &Upstream,
    stats: &UpstreamStats,
    addr: SocketAddr,
    worker: usize,
) -> Result<TcpStream, ErrorKind> {
    let kind =
        match monoio::time::timeout(up.settings.connect_timeout, TcpStream::connect_addr(addr))
            .await
        {
            Ok(Ok(stream)) => {
                let _ = stream.set_nodelay(true);
                health.success(addr);
                return Ok(stream);
            }
            Ok(Err(_)) => ErrorKind::ConnectRefused,
            Err(_) => ErrorKind::ConnectTimeout,
        };
    stats.connect_failures.inc();
    tracing::debug!(endpoint = %addr, ?kind, "connect failed");
    if let Verdict::Ejected(length) = health.failure(addr, up, Instant::now()) {
        stats.ejections.inc();
        tracing::warn!(
            worker,
            upstream = %up.name,
            endpoint = %addr,
            ejection = ?length,
            "endpoint ejected after consecutive connect failures"
        );
    }
    Err(kind)
}

// === impl Departures ===

/// The endpoints some long-lived connection of this worker is open to, each with the
/// [`Departure`] those connections wait on. An endpoint nobody watches costs nothing.
#[derive(Debug, Default)]
pub struct Departures {
    /// Keyed with FxHash: the keys are our own endpoint addresses, not attacker input.
    watched: RefCell<FxHashMap<SocketAddr, Rc<Departure>>>,
}

/// An endpoint leaving the table, as its connections see it.
#[derive(Debug, Default)]
pub struct Departure {
    /// Fired when the endpoint leaves the table.
    left: Signal,
    /// When it left (set before `left` fires).
    at: Cell<Option<Instant>>,
}

impl Departures {
    /// Watches `addr` for as long as the returned guard lives. Connections to one
    /// endpoint share its entry.
    pub fn watch(&self, addr: SocketAddr) -> Watch<'_> {
        let departure = self.watched.borrow_mut().entry(addr).or_default().clone();
        Watch {
            departures: self,
            addr,
            departure,
        }
    }

    /// Tells the connections to `addrs` that their endpoint left the table at `now`.
    /// Their entries go: a connection that finds the endpoint back later watches anew.
    pub fn depart(&self, addrs: &[SocketAddr], now: Instant) {
        if self.watched.borrow().is_empty() {
            return;
        }
        for addr in addrs {
            let departure = self.watched.borrow_mut().remove(addr);
            if let Some(d) = departure {
                d.at.set(Some(now));
                d.left.fire();
            }
        }
    }

    /// Endpoints watched now (for tests and metrics).
    pub fn watched(&self) -> usize {
        self.watched.borrow().len()
    }
}

/// One connection's watch on its endpoint (see [`Departures::watch`]).
#[derive(Debug)]
pub struct Watch<'a> {
    departures: &'a Departures,
    addr: SocketAddr,
    departure: Rc<Departure>,
}

impl Watch<'_> {
    /// Resolves with the time the endpoint left the table, once it has.
    pub async fn departed(&self) -> Instant {
        self.departure.left.wait().await;
        self.departure
            .at
            .get()
            .expect("invariant: the departure time is set before the signal fires")
    }
}

impl Drop for Watch<'_> {
    fn drop(&mut self) {
        // The last watcher of a departure still in the map removes it (the map holds the
        // other reference).
        let mut watched = self.departures.watched.borrow_mut();
        if let Some(d) = watched.get(&self.addr) {
            if Rc::ptr_eq(d, &self.departure) && Rc::strong_count(d) == 2 {
                watched.remove(&self.addr);
            }
        }
    }
}

/// An upstream connection checked out for one exchange.
#[derive(Debug)]
pub struct UpstreamConn {
    pub stream: TcpStream,
    pub addr: SocketAddr,
    /// Requests sent on this connection before the current one.
    pub requests: u32,
    /// Taken from the pool (the peer may have closed it meanwhile).
    pub reused: bool,
}

#[derive(Debug)]
struct IdleConn {
    stream: TcpStream,
    since: Instant,
    requests: u32,
}

/// A worker's keep-alive pool: idle connections per endpoint, most recent last.
#[derive(Debug, Default)]
pub struct Pool {
    /// Keyed with FxHash: the keys are our own endpoint addresses, not attacker input.
    idle: RefCell<FxHashMap<SocketAddr, Vec<IdleConn>>>,
    /// Idle connections held, mirrored into `metrics.pool_idle`.
    count: Cell<usize>,
    metrics: Arc<WorkerMetrics>,
}

impl Pool {
    pub fn new(metrics: Arc<WorkerMetrics>) -> Pool {
        Pool {
            metrics,
            ..Pool::default()
        }
    }

    fn counted(&self, idle: &FxHashMap<SocketAddr, Vec<IdleConn>>) {
        let n = idle.values().map(Vec::len).sum();
        self.count.set(n);
        self.metrics.pool_idle.set(n as u64);
    }

    fn add(&self, delta: isize) {
        let n = self.count.get().wrapping_add_signed(delta);
        self.count.set(n);
        self.metrics.pool_idle.set(n as u64);
    }

    /// An idle connection to `addr` that is still open and not older than the idle
    /// timeout. Stale or closed ones met on the way are closed.
    pub fn take(
        &self,
        addr: SocketAddr,
        settings: &PoolSettings,
        now: Instant,
    ) -> Option<UpstreamConn> {
        let mut idle = self.idle.borrow_mut();
        let list = idle.get_mut(&addr)?;
        while let Some(c) = list.pop() {
            self.add(-1);
            if now.duration_since(c.since) >= settings.idle_timeout {
                continue;
            }
            if sys::peek_idle(c.stream.as_raw_fd()) != sys::Idle::Open {
                continue;
            }
            return Some(UpstreamConn {
                stream: c.stream,
                addr,
                requests: c.requests,
                reused: true,
            });
        }
        None
    }

    /// Returns a connection after a complete exchange, unless the pool is disabled, the
    /// connection has served its maximum, or the endpoint left the table.
    pub fn put(&self, conn: UpstreamConn, settings: &PoolSettings, now: Instant) {
        let requests = conn.requests + 1;
        if settings.max_idle_per_endpoint == 0
            || (settings.max_requests_per_connection != 0
                && requests >= settings.max_requests_per_connection)
        {
            return;
        }
        let mut idle = self.idle.borrow_mut();
        let list = idle.entry(conn.addr).or_default();
        if list.len() >= settings.max_idle_per_endpoint {
            list.remove(0);
            self.add(-1);
        }
        self.add(1);
        list.push(IdleConn {
            stream: conn.stream,
            since: now,
            requests,
        });
    }

    /// Closes every idle connection to these endpoints.
    pub fn close(&self, endpoints: &[SocketAddr]) {
        let mut idle = self.idle.borrow_mut();
        for addr in endpoints {
            idle.remove(addr);
        }
        self.counted(&idle);
    }

    /// Closes idle connections older than `max_idle` or closed by their peer.
    pub fn sweep(&self, now: Instant, max_idle: Duration) {
        let mut idle = self.idle.borrow_mut();
        idle.retain(|_, list| {
            list.retain(|c| {
                now.duration_since(c.since) < max_idle
                    && sys::peek_idle(c.stream.as_raw_fd()) == sys::Idle::Open
            });
            !list.is_empty()
        });
        self.counted(&idle);
    }

    /// Idle connections held, for tests and metrics.
    pub fn idle_count(&self) -> usize {
        self.count.get()
    }
}

/// The worker's current view, swapped when a snapshot arrives.
#[derive(Debug)]
pub struct Table {
    current: RefCell<Rc<View>>,
    worker: usize,
    metrics: Arc<WorkerMetrics>,
}

impl Table {
    pub fn new(snapshot: Arc<Snapshot>, worker: usize, metrics: Arc<WorkerMetrics>) -> Table {
        Table {
            current: RefCell::new(Rc::new(View::new(snapshot, None, worker, &metrics))),
            worker,
            metrics,
        }
    }

    /// The view new requests use (an `Rc` clone, no atomics).
    pub fn view(&self) -> Rc<View> {
        self.current.borrow().clone()
    }

    /// True when `addr`, picked from `view`, still takes new requests: `view` is the
    /// current one (the common case, one pointer compare), or the current one sends to it.
    pub fn still_sends_to(&self, view: &View, addr: SocketAddr) -> bool {
        let current = self.current.borrow();
        std::ptr::eq(&**current, view) || current.sends_to(addr)
    }

    /// Swaps in a new snapshot; returns the new view and the endpoints that left.
    pub fn swap(&self, snapshot: Arc<Snapshot>) -> (Rc<View>, Vec<SocketAddr>) {
        let old = self.current.borrow().clone();
        let next = Rc::new(View::new(snapshot, Some(&old), self.worker, &self.metrics));
        let departed = next.departed_since(&old);
        *self.current.borrow_mut() = next.clone();
        (next, departed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use strait_discovery::spec::*;
    use strait_discovery::{EndpointState, TableBuilder};

    fn snapshot(weights: &[u32]) -> Arc<Snapshot> {
        let nodes = weights
            .iter()
            .enumerate()
            .map(|(i, w)| NodeSpec {
                addr: format!("127.0.0.{}:80", i + 2).parse().unwrap(),
                weight: *w,
            })
            .collect();
        let spec = Spec {
            registries: Vec::new(),
            services: vec![],
            upstreams: vec![UpstreamSpec {
                name: "u".into(),
                source: UpstreamSource::Static(nodes),
                settings: UpstreamSettings::default(),
            }],
        };
        TableBuilder::try_new(spec)
            .unwrap()
            .snapshot(Instant::now())
    }

    #[test]
    fn round_robin_skips_tried_endpoints_and_carries_cursors_across_swaps() {
        let table = Table::new(snapshot(&[1, 1, 1]), 0, Default::default());
        let v = table.view();
        let picks: Vec<_> = (0..4)
            .map(|_| {
                v.pick(0, &[], &Health::default(), Instant::now())
                    .unwrap()
                    .addr
                    .ip()
                    .to_string()
            })
            .collect();
        assert_eq!(picks, ["127.0.0.2", "127.0.0.3", "127.0.0.4", "127.0.0.2"]);
        let tried = ["127.0.0.3:80".parse().unwrap()];
        assert_eq!(
            v.pick(0, &tried, &Health::default(), Instant::now())
                .unwrap()
                .addr
                .to_string(),
            "127.0.0.4:80"
        );
        assert_eq!(v.attempts(0), 3);
        let (v2, departed) = table.swap(snapshot(&[1, 1, 1]));
        assert!(departed.is_empty());
        assert_eq!(
            v2.pick(0, &[], &Health::default(), Instant::now())
                .unwrap()
                .addr
                .to_string(),
            "127.0.0.2:80"
        );
    }

    #[test]
    fn endpoints_that_left_rotation_are_reported_once_per_swap() {
        let table = Table::new(snapshot(&[1, 1, 1]), 0, Default::default());
        let (_, departed) = table.swap(snapshot(&[1, 0]));
        let mut departed: Vec<String> = departed.iter().map(|a| a.to_string()).collect();
        departed.sort();
        assert_eq!(departed, ["127.0.0.3:80", "127.0.0.4:80"]);
    }

    #[test]
    fn weights_shape_the_rotation() {
        let table = Table::new(snapshot(&[3, 1]), 0, Default::default());
        let v = table.view();
        let n2 = (0..400)
            .filter(|_| {
                v.pick(0, &[], &Health::default(), Instant::now())
                    .unwrap()
                    .addr
                    .ip()
                    .to_string()
                    == "127.0.0.2"
            })
            .count();
        assert_eq!(n2, 300);
    }

    fn addr(i: u8) -> SocketAddr {
        format!("127.0.0.{i}:80").parse().unwrap()
    }

    #[test]
    fn consecutive_connect_failures_eject_for_a_doubling_backoff() {
        let table = Table::new(snapshot(&[1, 1, 1, 1]), 0, Default::default());
        let v = table.view();
        let up = &v.snapshot.upstreams[0];
        let h = Health::default();
        let t0 = Instant::now();
        assert_eq!(h.failure(addr(2), up, t0), Verdict::Kept);
        assert_eq!(h.failure(addr(2), up, t0), Verdict::Kept);
        assert_eq!(
            h.failure(addr(2), up, t0),
            Verdict::Ejected(Duration::from_secs(5))
        );
        let picks: Vec<_> = (0..6)
            .map(|_| v.pick(0, &[], &h, t0).unwrap().addr)
            .collect();
        assert!(
            !picks.contains(&addr(2)),
            "ejected endpoint picked: {picks:?}"
        );
        // Back after the ejection; one more failure ejects it for twice as long.
        let t1 = t0 + Duration::from_secs(5);
        assert!(!h.is_ejected(addr(2), t1));
        assert_eq!(
            h.failure(addr(2), up, t1),
            Verdict::Ejected(Duration::from_secs(10))
        );
        // A success ends the streak and the backoff.
        h.success(addr(2));
        assert_eq!(h.ejected_count(), 0);
        assert_eq!(h.failure(addr(2), up, t1), Verdict::Kept);
    }

    #[test]
    fn ejection_never_takes_the_last_endpoints_and_a_fully_ejected_upstream_still_picks() {
        let table = Table::new(snapshot(&[1, 1]), 0, Default::default());
        let v = table.view();
        let up = &v.snapshot.upstreams[0];
        let h = Health::default();
        let now = Instant::now();
        for _ in 0..3 {
            h.failure(addr(2), up, now);
        }
        assert!(h.is_ejected(addr(2), now));
        for _ in 0..10 {
            assert_eq!(
                h.failure(addr(3), up, now),
                Verdict::Kept,
                "the last one stays"
            );
        }
        // Panic mode: with every candidate ejected or tried, the ejected one is used.
        let tried = [addr(3)];
        assert_eq!(v.pick(0, &tried, &h, now).unwrap().addr, addr(2));
        // Endpoints that leave the table are forgotten.
        h.forget(&[addr(2)]);
        assert_eq!(h.ejected_count(), 0);
    }

    #[test]
    fn a_departure_reaches_every_watcher_of_its_endpoint_and_the_last_one_cleans_up() {
        let d = Departures::default();
        let w1 = d.watch(addr(2));
        let w2 = d.watch(addr(2));
        let other = d.watch(addr(4));
        assert_eq!(d.watched(), 2);
        drop(w2);
        assert_eq!(d.watched(), 2, "w1 still watches 127.0.0.2");
        let now = Instant::now();
        d.depart(&[addr(2), addr(3)], now);
        assert_eq!(d.watched(), 1, "only 127.0.0.4 is left");
        let mut rt = monoio::RuntimeBuilder::<monoio::LegacyDriver>::new()
            .build()
            .unwrap();
        assert_eq!(rt.block_on(w1.departed()), now);
        // Back in the table and watched anew: the old watcher's end leaves the new entry.
        let w3 = d.watch(addr(2));
        drop(w1);
        assert_eq!(d.watched(), 2);
        drop(w3);
        drop(other);
        assert_eq!(d.watched(), 0);
    }

    #[test]
    fn an_endpoint_that_turns_terminating_leaves_rotation_while_others_are_ready() {
        let spec = |states: [EndpointState; 2]| {
            let mut builder = TableBuilder::try_new(Spec {
                registries: Vec::new(),
                services: vec![],
                upstreams: vec![UpstreamSpec {
                    name: "u".into(),
                    source: UpstreamSource::Static(Vec::new()),
                    settings: UpstreamSettings::default(),
                }],
            })
            .unwrap();
            let eps = (0..2)
                .map(|i| Endpoint {
                    addr: addr(2 + i as u8),
                    weight: 1,
                    state: states[i],
                })
                .collect();
            builder.set_endpoints("u", eps, strait_discovery::UpstreamStatus::Ready);
            builder.snapshot(Instant::now())
        };
        let table = Table::new(
            spec([EndpointState::Ready, EndpointState::Ready]),
            0,
            Default::default(),
        );
        let (v, departed) = table.swap(spec([EndpointState::Ready, EndpointState::Terminating]));
        assert_eq!(departed, [addr(3)]);
        assert!(!v.sends_to(addr(3)));
        // With no ready endpoint left, the terminating one takes traffic again.
        let (v, departed) = table.swap(spec([
            EndpointState::NotServing,
            EndpointState::Terminating,
        ]));
        assert_eq!(departed, [addr(2)]);
        assert_eq!(
            v.pick(0, &[], &Health::default(), Instant::now())
                .unwrap()
                .addr,
            addr(3)
        );
    }
}
