//! Per-worker upstream state, one file per job:
//!
//! - `view.rs`: the worker's view of the current snapshot ([`View`]: picks by
//!   weighted round-robin, attempts, departed endpoints) and the [`Table`] holding it;
//! - `health.rs`: passive health, ejections ([`Health`]);
//! - `connect.rs`: opening a connection to an endpoint (TCP or Unix);
//! - `pool.rs`: the keep-alive pool ([`Pool`]);
//! - `key.rs`: the hash key of a `consistent_hash` request;
//! - `h2pool.rs`: HTTP/2 connections to `h2`/`h2c` upstreams, shared by streams ([`H2Pool`]);
//! - `drain.rs`: departures that long-lived connections wait on ([`Departures`]).
//!
//! [`Upstreams`] holds the four for a worker, and [`Upstreams::apply`] is the one call
//! that brings a new snapshot in.
//!
//! Runs on: one worker; everything here is `!Send` (`Rc`, `Cell`, `RefCell`) on purpose.

use std::rc::Rc;
use std::sync::Arc;
use std::time::Instant;

use strait_discovery::{EndpointAddr, Snapshot};

use crate::metrics::WorkerMetrics;

mod connect;
mod drain;
mod h2pool;
mod health;
pub mod key;
mod pool;
mod routes;
mod view;

pub use connect::{connect, TlsClients};
pub use drain::{Departure, Departures, Watch};
pub use h2pool::{H2Conn, H2Pool};
pub use health::{Health, InFlight, Observed, Reason, Verdict};
pub use pool::{Pool, UpstreamConn};
pub use routes::RouteLocals;
pub use view::{Table, View, MAX_DEFAULT_RETRIES};

/// A worker's upstream state: the routing view, passive health, the keep-alive pool and
/// the departures its long-lived connections watch.
#[derive(Debug)]
pub struct Upstreams {
    pub table: Table,
    pub pool: Pool,
    /// Endpoints this worker has seen refuse connections, and its ejections.
    pub health: Health,
    /// Endpoints its `tcp` connections are open to, told when they leave the table.
    pub departures: Departures,
    /// This worker's TLS client configs for upstreams with `tls:`.
    pub tls: TlsClients,
    /// Its HTTP/2 connections to `h2`/`h2c` upstreams.
    pub h2: H2Pool,
}

/// What applying a snapshot did.
#[derive(Debug)]
pub struct Applied {
    /// The view new requests route with from now on.
    pub view: Rc<View>,
    /// Endpoints that took new requests before and take none now.
    pub departed: Vec<EndpointAddr>,
}

impl Upstreams {
    /// Worker `worker.0`'s of `worker.1`.
    pub fn new(
        snapshot: Arc<Snapshot>,
        worker: (usize, usize),
        metrics: Arc<WorkerMetrics>,
    ) -> Upstreams {
        Upstreams {
            table: Table::new(snapshot, worker, metrics.clone()),
            pool: Pool::new(metrics),
            health: Health::new(worker.0 as u64 + 1),
            departures: Departures::default(),
            tls: TlsClients::default(),
            h2: H2Pool::default(),
        }
    }

    /// Brings `snapshot` in: the view is swapped (new requests use it at once), idle
    /// pooled connections to endpoints that left the rotation close, their passive health
    /// is forgotten, and the `tcp` connections open to them start their drain.
    pub fn apply(&self, snapshot: Arc<Snapshot>, now: Instant) -> Applied {
        let (view, departed) = self.table.swap(snapshot);
        self.pool.close(&departed);
        self.h2.close(&departed);
        self.health.forget(&departed);
        self.departures.depart(&departed, now);
        Applied { view, departed }
    }
}

#[cfg(test)]
mod tests;
