//! Workers: one OS thread per core, pinned, each running its own monoio runtime with its
//! own listeners, routing view, upstream pool and buffers. This module is the worker's
//! room; the protocols it serves (`http1`, `tcp`) take what they need from here.
//!
//! - [`Worker`] (this file): the state one worker's connections share, behind an `Rc`;
//! - [`thread`]: spawning the pinned thread and its runtime (io_uring, or the legacy
//!   epoll driver), the loop that swaps in snapshots and runs a graceful stop;
//! - [`listen`]: binding listeners (TCP with SO_REUSEPORT, Unix sockets), the accept
//!   loops, and closing a listener without resetting what it queued;
//! - [`admission`]: counting connections ([`Open`]), the per-worker connection limit
//!   ([`SlotFree`]) and knowing when a graceful stop has drained;
//! - [`buffers`]: the worker's spare 64 KiB body buffers and head buffers;
//! - [`signal`]: the one-shot worker-local broadcast the stop uses.
//!
//! Runs on: the worker thread. The only cross-thread input is the snapshot subscriber;
//! nothing here is `Send`, and nothing is touched from another core.

use std::cell::{Cell, RefCell};
use std::rc::Rc;
use std::sync::Arc;

use strait_discovery::tls::TlsSnapshot;
use strait_discovery::Snapshot;

use crate::access_log::AccessLog;
use crate::config::{HttpConfig, ListenerTls};
use crate::http::head::HeadLimits;
use crate::metrics::WorkerMetrics;
use crate::tls::WorkerTls;
use crate::upstream::Upstreams;

pub mod admission;
pub mod buffers;
pub mod listen;
mod proxied;
pub mod signal;
pub mod thread;

pub use admission::{Open, SlotFree};
pub use buffers::READ_CHUNK;
pub use thread::{build_runtime, spawn, DriverKind, Runtime, TaskRun, WorkerSetup};

pub use signal::Signal;

/// Everything a worker's connections share. One per worker, behind an `Rc`.
#[derive(Debug)]
pub struct Worker {
    pub id: usize,
    /// The runtime's driver: how an accept in flight can be stopped differs.
    pub driver: DriverKind,
    /// The routing view, passive health, keep-alive pool and departures.
    pub upstreams: Upstreams,
    pub http: HttpConfig,
    /// `http`'s request-head limits, in the form the head reader takes.
    pub head_limits: HeadLimits,
    pub access: Option<AccessLog>,
    /// Generates request ids (`http.request_id`).
    pub request_ids: crate::request_id::RequestIds,
    /// This worker's counters and gauges (single writer: this worker).
    pub metrics: Arc<WorkerMetrics>,
    /// Fired when a graceful stop begins: accept loops stop, idle connections close,
    /// busy ones close after their current response.
    pub draining: Signal,
    /// Fired once `draining` fired, every listener is closed and the last client
    /// connection (those taken from the listeners' queues included) has ended.
    pub drained: Signal,
    /// Fired when a graceful stop's timeout passes: every connection still open drops
    /// its sockets at once. (A worker that returned with tasks still parked would leave
    /// them, and their sockets, open: the runtime does not drop them.)
    pub stop: Rc<Signal>,
    /// Open client connections, counted from their accept (see [`Open`]).
    connections: Cell<usize>,
    /// Accept loops paused at `http.max_connections_per_worker`, woken when a
    /// connection closes.
    paused: RefCell<Vec<std::task::Waker>>,
    /// Listeners still open. The worker must not exit before its accept loops closed
    /// them: a listening socket left open stays in the SO_REUSEPORT group, and the
    /// kernel keeps queueing connections on it that nobody will accept.
    listeners: Cell<usize>,
    /// Spare 64 KiB buffers for body streaming and copies.
    bufs: RefCell<Vec<Vec<u8>>>,
    /// Spare head buffers: an idle keep-alive connection lends its head buffers here, so
    /// that thousands of idle connections do not hold 2 KiB each.
    heads: RefCell<Vec<Vec<u8>>>,
    /// This worker's TLS server configs, by listener (its own, from the last snapshot).
    pub tls: RefCell<WorkerTls>,
    /// The TLS listeners of this worker and their settings.
    tls_listeners: RefCell<Vec<(String, ListenerTls)>>,
}

impl Worker {
    /// Worker `id` of `workers`.
    pub fn new(
        (id, workers): (usize, usize),
        driver: DriverKind,
        snapshot: Arc<Snapshot>,
        http: HttpConfig,
        access: Option<AccessLog>,
        metrics: Arc<WorkerMetrics>,
    ) -> Worker {
        Worker {
            id,
            driver,
            upstreams: Upstreams::new(snapshot, (id, workers), metrics.clone()),
            head_limits: HeadLimits::new(
                http.max_request_line_bytes,
                http.max_request_head_bytes,
                http.max_headers,
            ),
            http,
            access,
            request_ids: crate::request_id::RequestIds::new(id),
            metrics,
            draining: Signal::default(),
            drained: Signal::default(),
            stop: Rc::new(Signal::default()),
            connections: Cell::new(0),
            paused: RefCell::new(Vec::new()),
            listeners: Cell::new(0),
            bufs: RefCell::new(Vec::new()),
            heads: RefCell::new(Vec::new()),
            tls: RefCell::new(WorkerTls::default()),
            tls_listeners: RefCell::new(Vec::new()),
        }
    }

    /// The TLS listeners this worker serves, for [`Worker::apply_tls`].
    pub fn set_tls_listeners(&self, listeners: Vec<(String, ListenerTls)>) {
        *self.tls_listeners.borrow_mut() = listeners;
    }

    /// Builds this worker's TLS configs from `snapshot`: new handshakes use them, open
    /// connections keep the session they have.
    pub fn apply_tls(&self, snapshot: &TlsSnapshot) {
        let built = {
            let previous = self.tls.borrow();
            WorkerTls::build(snapshot, &self.tls_listeners.borrow(), Some(&previous))
        };
        *self.tls.borrow_mut() = built;
    }
}

/// The size of the future a connection's `serve` makes on a worker with an empty table
/// (what an idle connection costs beyond its buffers and sockets). For the tests that
/// keep those futures small.
#[cfg(test)]
pub(crate) fn connection_future_size<F: std::future::Future>(
    serve: impl FnOnce(monoio::net::TcpStream, crate::transport::ClientAddr, Open) -> F,
) -> usize {
    use std::rc::Rc;
    let mut rt = monoio::RuntimeBuilder::<monoio::LegacyDriver>::new()
        .enable_timer()
        .build()
        .expect("a legacy runtime");
    rt.block_on(async {
        let listener = monoio::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = listener.local_addr().expect("local address");
        let stream = monoio::net::TcpStream::connect_addr(addr)
            .await
            .expect("connect");
        let snapshot = strait_discovery::TableBuilder::try_new(strait_discovery::Spec::default())
            .expect("an empty spec builds")
            .snapshot(std::time::Instant::now());
        let metrics = Arc::new(WorkerMetrics::default());
        let w = Rc::new(Worker::new(
            (0, 1),
            DriverKind::Legacy,
            snapshot,
            HttpConfig::default(),
            None,
            metrics,
        ));
        let fut = serve(stream, addr.into(), Open::new(w, Rc::from(Vec::new())));
        std::mem::size_of_val(&fut)
    })
}
