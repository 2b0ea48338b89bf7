//! The keep-alive pool: a worker's idle upstream connections per endpoint, most recent
//! last, each checked before reuse (idle timeout, closed by the peer).
//!
//! Runs on: one worker; `!Send`. Connections never move between workers.

use rustc_hash::FxHashMap;
use std::cell::{Cell, RefCell};
use std::sync::Arc;
use std::time::{Duration, Instant};

use strait_discovery::spec::PoolSettings;
use strait_discovery::EndpointAddr;

use crate::metrics::WorkerMetrics;
use crate::transport::{Idle, Transport, UpstreamStream};

/// A pooled connection idle for less than this is handed to a replayable request without
/// a look at whether the upstream closed it (see [`Pool::take`]). Upstreams close idle
/// connections after seconds (gunicorn 2 s, Node 5 s, nginx 75 s); the sweep looks at
/// every idle connection each second.
pub(super) const UNCHECKED_IDLE: Duration = Duration::from_millis(250);

/// An upstream connection checked out for one exchange.
#[derive(Debug)]
pub struct UpstreamConn {
    pub stream: UpstreamStream,
    pub addr: EndpointAddr,
    /// The TLS settings it was secured with ([`strait_discovery::tls::UpstreamTls::id`]);
    /// 0 for plain text. Part of the pool key: a connection is only reused by an upstream
    /// that would have made the same one.
    pub tls: u64,
    /// Requests sent on this connection before the current one.
    pub requests: u32,
    /// Taken from the pool (the peer may have closed it meanwhile).
    pub reused: bool,
}

#[derive(Debug)]
struct IdleConn {
    stream: UpstreamStream,
    since: Instant,
    requests: u32,
}

/// A worker's keep-alive pool: idle connections per endpoint, most recent last.
#[derive(Debug, Default)]
pub struct Pool {
    /// Keyed with FxHash: the keys are our own endpoint addresses, not attacker input.
    idle: RefCell<FxHashMap<(EndpointAddr, u64), Vec<IdleConn>>>,
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

    fn counted(&self, idle: &FxHashMap<(EndpointAddr, u64), Vec<IdleConn>>) {
        let n = idle.values().map(Vec::len).sum();
        self.count.set(n);
        self.metrics.pool_idle.set(n as u64);
    }

    fn add(&self, delta: isize) {
        let n = self.count.get().wrapping_add_signed(delta);
        self.count.set(n);
        self.metrics.pool_idle.set(n as u64);
    }

    /// An idle connection to `addr` not older than the idle timeout, and still open as far
    /// as a look at it says. Stale or closed ones met on the way are closed.
    ///
    /// The look (a `MSG_PEEK` system call) is skipped for a `replayable` request on a
    /// connection idle for less than 250 ms (`UNCHECKED_IDLE`): should the upstream have closed
    /// it meanwhile, the failure comes before any response byte and the request goes
    /// again on a fresh connection, as it must for the race the look cannot close anyway.
    /// Under load every connection is that fresh, so the request path makes no system
    /// call for it; a request that could not be sent again (not idempotent, or its body
    /// streamed) is always looked for.
    pub fn take(
        &self,
        addr: EndpointAddr,
        tls: u64,
        settings: &PoolSettings,
        now: Instant,
        replayable: bool,
    ) -> Option<UpstreamConn> {
        let mut idle = self.idle.borrow_mut();
        let list = idle.get_mut(&(addr, tls))?;
        while let Some(c) = list.pop() {
            self.add(-1);
            let idle_for = now.saturating_duration_since(c.since);
            if idle_for >= settings.idle_timeout {
                continue;
            }
            let look = !replayable || idle_for >= UNCHECKED_IDLE;
            if look && c.stream.idle_state() != Idle::Open {
                continue;
            }
            return Some(UpstreamConn {
                stream: c.stream,
                addr,
                tls,
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
        let list = idle.entry((conn.addr, conn.tls)).or_default();
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
    pub fn close(&self, endpoints: &[EndpointAddr]) {
        let mut idle = self.idle.borrow_mut();
        idle.retain(|(addr, _), _| !endpoints.contains(addr));
        self.counted(&idle);
    }

    /// Closes idle connections older than `max_idle` or closed by their peer.
    pub fn sweep(&self, now: Instant, max_idle: Duration) {
        let mut idle = self.idle.borrow_mut();
        idle.retain(|_, list| {
            list.retain(|c| {
                now.duration_since(c.since) < max_idle && c.stream.idle_state() == Idle::Open
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
