//! A worker's view of one snapshot ([`View`]: the snapshot plus this worker's round-robin
//! cursors and counters) and the table that holds the current one ([`Table`]).
//!
//! Runs on: one worker; `!Send` on purpose. A new snapshot becomes a new view once per
//! publication; requests clone the `Rc` (no atomics) and advance a `Cell` cursor. No
//! `RefCell` borrow is held across `.await`.

use std::cell::{Cell, RefCell};
use std::rc::Rc;
use std::sync::Arc;
use std::time::Instant;

use strait_discovery::spec::{Balance, Prefer};
use strait_discovery::{Endpoint, EndpointAddr, Snapshot, Upstream};

use super::{Health, RouteLocals};
use crate::metrics::{RouteStats, UpstreamStats, WorkerMetrics};

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
    /// This worker's state per route (backend cursors, rate-limit buckets, regex caches).
    pub routes: RouteLocals,
}

impl View {
    /// A view of `snapshot` for worker `worker` of `workers`. Cursors of upstreams that
    /// kept their name continue from `previous`; new ones start at `worker` so workers do
    /// not all begin on the same endpoint. Rate-limit buckets of unchanged limits carry
    /// over.
    pub fn new(
        snapshot: Arc<Snapshot>,
        previous: Option<&View>,
        (worker, workers): (usize, usize),
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
            routes: RouteLocals::new(
                &snapshot.router,
                previous.map(|p| (&*p.snapshot.router, &p.routes)),
                worker,
                workers,
            ),
            snapshot,
            cursors,
        }
    }

    /// [`View::pick_for`] without a hash key.
    pub fn pick(
        &self,
        idx: u32,
        tried: &[EndpointAddr],
        health: &Health,
        now: Instant,
    ) -> Option<Endpoint> {
        self.pick_for(idx, tried, health, now, None)
    }

    /// An endpoint of upstream `idx` by its `balance`, skipping addresses in `tried` and
    /// endpoints `health` has ejected. Ready endpoints first; terminating ones only when
    /// no endpoint is ready. When every endpoint left is ejected, ejections are ignored
    /// (panic mode) rather than failing the request.
    ///
    /// - `round_robin`: the next in the smooth weighted schedule;
    /// - `random`: a random slot of the schedule (so, weighted);
    /// - `least_request`: two random slots, the one with fewer requests in flight on this
    ///   worker for its weight (power of two choices);
    /// - `consistent_hash` with `key`: the key's slot of the Maglev table, then the slots
    ///   after it (the same fall-back on every worker and replica); without a key (the
    ///   header or cookie absent), round-robin.
    ///
    /// A candidate that is tried or ejected sends the pick on to round-robin's scan.
    ///
    /// The snapshot has already narrowed the schedule to endpoints that pass their
    /// health checks and to the locality tier in use; a pick from an upstream with
    /// `locality` is counted by that tier.
    pub fn pick_for(
        &self,
        idx: u32,
        tried: &[EndpointAddr],
        health: &Health,
        now: Instant,
        key: Option<u64>,
    ) -> Option<Endpoint> {
        let picked = self.pick_in(idx, tried, health, now, key);
        if picked.is_some() {
            let up = &self.snapshot.upstreams[idx as usize];
            if up.settings.locality.prefer != Prefer::None {
                // `tier` is `Any` when picks come from terminating endpoints.
                self.upstream_stats[idx as usize].picks[up.tier as usize].inc();
            }
        }
        picked
    }

    fn pick_in(
        &self,
        idx: u32,
        tried: &[EndpointAddr],
        health: &Health,
        now: Instant,
        key: Option<u64>,
    ) -> Option<Endpoint> {
        let up = self.snapshot.upstreams.get(idx as usize)?;
        let order: &[u32] = if up.schedule.is_empty() {
            &up.fallback
        } else {
            &up.schedule
        };
        if order.is_empty() {
            return None;
        }
        let usable = |e: &Endpoint| !tried.contains(&e.addr) && !health.is_ejected(e.addr, now);
        match (&up.settings.balance, key) {
            (Balance::RoundRobin, _) => {}
            (Balance::Random, _) => {
                let e =
                    up.endpoints[order[(health.random() % order.len() as u64) as usize] as usize];
                if usable(&e) {
                    return Some(e);
                }
            }
            (Balance::LeastRequest, _) => {
                let at = |r: u64| up.endpoints[order[(r % order.len() as u64) as usize] as usize];
                let a = at(health.random());
                // Two distinct endpoints when there are two (a few draws; the schedule
                // repeats heavy endpoints).
                let mut b = at(health.random());
                for _ in 0..3 {
                    if b.addr != a.addr || up.members.len() < 2 {
                        break;
                    }
                    b = at(health.random());
                }
                // Fewer in flight per unit of weight wins: (n_a + 1) / w_a < (n_b + 1) / w_b.
                let load = |e: &Endpoint| u64::from(health.in_flight(e.addr)) + 1;
                let best = match (usable(&a), usable(&b)) {
                    (true, true)
                        if load(&b) * u64::from(a.weight) < load(&a) * u64::from(b.weight) =>
                    {
                        Some(b)
                    }
                    (true, _) => Some(a),
                    (false, true) => Some(b),
                    (false, false) => None,
                };
                if best.is_some() {
                    return best;
                }
            }
            (Balance::ConsistentHash(_), Some(h)) if !up.maglev.is_empty() => {
                let table = &up.maglev;
                let start = (h % table.len() as u64) as usize;
                // Bounded: when every endpoint is tried or ejected, round-robin's scan
                // below settles it in O(endpoints).
                let limit = table.len().min(64 * (up.members.len() + 1));
                for i in 0..limit {
                    let e = up.endpoints[table[(start + i) % table.len()] as usize];
                    if usable(&e) {
                        return Some(e);
                    }
                }
            }
            (Balance::ConsistentHash(_), _) => {}
        }
        let cursor = &self.cursors[idx as usize];
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
        let distinct = up.members.len();
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
    pub fn departed_since(&self, old: &View) -> Vec<EndpointAddr> {
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
    pub fn sends_to(&self, addr: EndpointAddr) -> bool {
        self.snapshot.upstreams.iter().any(|u| takes(u, addr))
    }
}

/// True when upstream `u` takes new requests to `addr`.
fn takes(u: &Upstream, addr: EndpointAddr) -> bool {
    u.endpoints
        .iter()
        .any(|e| e.addr == addr && u.in_rotation(e))
}

/// The worker's current view, swapped when a snapshot arrives.
#[derive(Debug)]
pub struct Table {
    current: RefCell<Rc<View>>,
    /// This worker's index and the gateway's worker count.
    worker: (usize, usize),
    metrics: Arc<WorkerMetrics>,
}

impl Table {
    /// The table of worker `worker.0` of `worker.1`.
    pub fn new(
        snapshot: Arc<Snapshot>,
        worker: (usize, usize),
        metrics: Arc<WorkerMetrics>,
    ) -> Table {
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
    pub fn still_sends_to(&self, view: &View, addr: EndpointAddr) -> bool {
        let current = self.current.borrow();
        std::ptr::eq(&**current, view) || current.sends_to(addr)
    }

    /// Swaps in a new snapshot; returns the new view and the endpoints that left.
    pub fn swap(&self, snapshot: Arc<Snapshot>) -> (Rc<View>, Vec<EndpointAddr>) {
        let old = self.current.borrow().clone();
        let next = Rc::new(View::new(snapshot, Some(&old), self.worker, &self.metrics));
        let departed = next.departed_since(&old);
        *self.current.borrow_mut() = next.clone();
        (next, departed)
    }
}
