//! Per-worker upstream state: the routing view with its round-robin cursors, and the
//! keep-alive connection pool.
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
use strait_discovery::spec::PoolSettings;
use strait_discovery::{Endpoint, EndpointState, Snapshot};

use crate::sys;

/// Most extra endpoints tried after a failed connect when `retries` is not configured.
pub const MAX_DEFAULT_RETRIES: usize = 4;

/// A worker's view of one snapshot.
#[derive(Debug)]
pub struct View {
    pub snapshot: Arc<Snapshot>,
    /// One round-robin cursor per upstream, indexed like `snapshot.upstreams`.
    cursors: Box<[Cell<u32>]>,
}

impl View {
    /// A view of `snapshot`. Cursors of upstreams that kept their name continue from
    /// `previous`; new ones start at `worker` so workers do not all begin on the same
    /// endpoint.
    pub fn new(snapshot: Arc<Snapshot>, previous: Option<&View>, worker: usize) -> View {
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
        View { snapshot, cursors }
    }

    /// The next endpoint of upstream `idx` in weighted round-robin order, skipping
    /// addresses in `tried`. Ready endpoints first; terminating ones only when no
    /// endpoint is ready.
    pub fn pick(&self, idx: u32, tried: &[SocketAddr]) -> Option<Endpoint> {
        let up = self.snapshot.upstreams.get(idx as usize)?;
        let cursor = &self.cursors[idx as usize];
        let order: &[u32] = if up.schedule.is_empty() {
            &up.fallback
        } else {
            &up.schedule
        };
        for _ in 0..order.len() {
            let c = cursor.get();
            cursor.set(c.wrapping_add(1));
            let ep = up.endpoints[order[c as usize % order.len()] as usize];
            if !tried.contains(&ep.addr) {
                return Some(ep);
            }
        }
        None
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

    /// Endpoints that took traffic in `old` and take none in this view: removed, or no
    /// longer ready nor serving. Only upstreams that changed are compared (unchanged
    /// ones are the same `Arc`), so a swap costs O(what changed).
    pub fn departed_since(&self, old: &View) -> Vec<SocketAddr> {
        let usable = |e: &Endpoint| e.state != EndpointState::NotServing && e.weight > 0;
        let mut gone = Vec::new();
        for (i, before) in old.snapshot.upstreams.iter().enumerate() {
            let after = match self.snapshot.upstreams.get(i) {
                Some(u) if Arc::ptr_eq(u, before) => continue,
                Some(u) if u.name == before.name => Some(u),
                _ => self.snapshot.upstream(&before.name),
            };
            for e in before.endpoints.iter().filter(|e| usable(e)) {
                let kept = after
                    .is_some_and(|u| u.endpoints.iter().any(|n| n.addr == e.addr && usable(n)));
                if !kept && !gone.contains(&e.addr) {
                    gone.push(e.addr);
                }
            }
        }
        // An address another upstream still uses stays.
        if !gone.is_empty() {
            gone.retain(|a| {
                !self
                    .snapshot
                    .upstreams
                    .iter()
                    .any(|u| u.endpoints.iter().any(|e| e.addr == *a && usable(e)))
            });
        }
        gone
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
}

impl Pool {
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
        }
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
    }

    /// Idle connections held, for tests and metrics.
    pub fn idle_count(&self) -> usize {
        self.idle.borrow().values().map(Vec::len).sum()
    }
}

/// The worker's current view, swapped when a snapshot arrives.
#[derive(Debug)]
pub struct Table {
    current: RefCell<Rc<View>>,
    worker: usize,
}

impl Table {
    pub fn new(snapshot: Arc<Snapshot>, worker: usize) -> Table {
        Table {
            current: RefCell::new(Rc::new(View::new(snapshot, None, worker))),
            worker,
        }
    }

    /// The view new requests use (an `Rc` clone, no atomics).
    pub fn view(&self) -> Rc<View> {
        self.current.borrow().clone()
    }

    /// Swaps in a new snapshot; returns the new view and the endpoints that left.
    pub fn swap(&self, snapshot: Arc<Snapshot>) -> (Rc<View>, Vec<SocketAddr>) {
        let old = self.current.borrow().clone();
        let next = Rc::new(View::new(snapshot, Some(&old), self.worker));
        let departed = next.departed_since(&old);
        *self.current.borrow_mut() = next.clone();
        (next, departed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use strait_discovery::spec::*;
    use strait_discovery::TableBuilder;

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
        let table = Table::new(snapshot(&[1, 1, 1]), 0);
        let v = table.view();
        let picks: Vec<_> = (0..4)
            .map(|_| v.pick(0, &[]).unwrap().addr.ip().to_string())
            .collect();
        assert_eq!(picks, ["127.0.0.2", "127.0.0.3", "127.0.0.4", "127.0.0.2"]);
        let tried = ["127.0.0.3:80".parse().unwrap()];
        assert_eq!(v.pick(0, &tried).unwrap().addr.to_string(), "127.0.0.4:80");
        assert_eq!(v.attempts(0), 3);
        let (v2, departed) = table.swap(snapshot(&[1, 1, 1]));
        assert!(departed.is_empty());
        assert_eq!(v2.pick(0, &[]).unwrap().addr.to_string(), "127.0.0.2:80");
    }

    #[test]
    fn endpoints_that_left_rotation_are_reported_once_per_swap() {
        let table = Table::new(snapshot(&[1, 1, 1]), 0);
        let (_, departed) = table.swap(snapshot(&[1, 0]));
        let mut departed: Vec<String> = departed.iter().map(|a| a.to_string()).collect();
        departed.sort();
        assert_eq!(departed, ["127.0.0.3:80", "127.0.0.4:80"]);
    }

    #[test]
    fn weights_shape_the_rotation() {
        let table = Table::new(snapshot(&[3, 1]), 0);
        let v = table.view();
        let n2 = (0..400)
            .filter(|_| v.pick(0, &[]).unwrap().addr.ip().to_string() == "127.0.0.2")
            .count();
        assert_eq!(n2, 300);
    }
}
