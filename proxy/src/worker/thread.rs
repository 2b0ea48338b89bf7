//! The worker thread: pinned to its core (core_affinity), running its own monoio runtime
//! (io_uring, or the legacy epoll driver where io_uring is unavailable). It starts its
//! accept loops, then waits on its snapshot channel's wake socket: each new snapshot is
//! applied to the worker's upstream state ([`crate::upstream::Upstreams::apply`]); a
//! drain starts the graceful stop and a shutdown ends the thread.
//!
//! Graceful stop ([`Update::Drain`]): the accept loops (HTTP and `tcp` alike) stop,
//! accept what the kernel already queued (so closing the listener resets no connection
//! that was let in), and close the listener; idle client connections close; busy ones
//! close after their current response; `tcp` connections go on; the thread exits when
//! every listener is closed and no connection is left, or at the deadline, after
//! dropping the connections still open.
//!
//! Runs on: the worker thread it spawns. The only cross-thread input is the
//! [`Subscriber`] (a channel drained when the wake socket becomes readable).

use std::os::unix::net::UnixStream as StdUnixStream;
use std::rc::Rc;
use std::sync::mpsc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use monoio::io::AsyncReadRent;
use monoio::net::UnixStream;
use monoio::time::TimeDriver;
use monoio::{FusionRuntime, IoUringDriver, LegacyDriver, RuntimeBuilder};
use strait_discovery::{Subscriber, Update};

use super::listen::{self, BoundListener};
use super::Worker;
use crate::access_log::AccessLog;
use crate::config::{Driver, HttpConfig};
use crate::metrics::WorkerMetrics;

/// How often idle pooled connections are checked for expiry and peer close.
const POOL_SWEEP: Duration = Duration::from_secs(1);
/// How long the connections still open at a graceful stop's timeout get to close.
const STOP_GRACE: Duration = Duration::from_secs(1);

/// Everything one worker thread starts from.
#[derive(Debug)]
pub struct WorkerSetup {
    pub id: usize,
    /// How many workers the gateway runs (rate limits give each its share).
    pub workers: usize,
    pub core: Option<core_affinity::CoreId>,
    pub driver: Driver,
    /// This worker's listening sockets, with their names and protocols.
    pub listeners: Vec<BoundListener>,
    pub subscriber: Subscriber,
    pub http: HttpConfig,
    /// The access log's file and line format.
    pub access_log: Option<(std::fs::File, crate::access_log::Format)>,
    /// This worker's counters (it is their only writer; `/metrics` reads them).
    pub metrics: Arc<WorkerMetrics>,
    /// Dropped when the thread ends: the gateway learns that every worker exited when
    /// the channel disconnects.
    pub alive: crossbeam_channel::Sender<()>,
    /// The certificates of the TLS listeners at start (later ones come as `Update::Tls`).
    pub tls: Option<Arc<strait_discovery::tls::TlsSnapshot>>,
}

/// Which driver a worker ended up with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DriverKind {
    IoUring,
    Legacy,
}

/// A worker's runtime: io_uring or epoll, with monoio's timer.
pub type Runtime = FusionRuntime<TimeDriver<IoUringDriver>, TimeDriver<LegacyDriver>>;

/// The runtime, its driver, and for io_uring the ring's task-run mode. Public for the
/// bench's floor forwarder, which must run on exactly the workers' runtime.
pub fn build_runtime(driver: Driver) -> std::io::Result<(Runtime, DriverKind, Option<TaskRun>)> {
    let uring = match driver {
        Driver::Legacy => false,
        Driver::IoUring => true,
        Driver::Auto => monoio::utils::detect_uring(),
    };
    if uring {
        // A kernel older than the mode (DEFER_TASKRUN needs 6.1, COOP_TASKRUN 5.19)
        // refuses the flags: the next plainer mode is tried.
        let mut setup = RingSetup::from_env();
        loop {
            let built = RuntimeBuilder::<IoUringDriver>::new()
                .uring_builder(setup.builder())
                .with_entries(setup.entries)
                .enable_timer()
                .build();
            match (built, setup.taskrun.plainer()) {
                (Ok(rt), _) => return Ok((rt.into(), DriverKind::IoUring, Some(setup.taskrun))),
                (Err(e), Some(next)) if e.raw_os_error() == Some(libc::EINVAL) => {
                    setup.taskrun = next
                }
                (Err(e), _) => return Err(e),
            }
        }
    } else {
        let rt = RuntimeBuilder::<LegacyDriver>::new()
            .enable_timer()
            .build()?;
        Ok((rt.into(), DriverKind::Legacy, None))
    }
}

/// How a worker's io_uring is set up: its task-run mode and its size.
///
/// `STRAIT_URING_SETUP` (`defer`, `coop`, `plain`) and `STRAIT_URING_ENTRIES` override the
/// defaults for the comparisons in `bench/` (see bench/README.md); they are not
/// configuration.
#[derive(Debug, Clone, Copy)]
struct RingSetup {
    taskrun: TaskRun,
    entries: u32,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TaskRun {
    /// Completion work runs whenever the kernel gets to it (an interrupt to the worker's
    /// core when the wake-up comes from another one).
    Plain,
    /// `COOP_TASKRUN | TASKRUN_FLAG`: no interrupt; the work waits for the next transition
    /// into the kernel.
    Coop,
    /// `SINGLE_ISSUER | DEFER_TASKRUN`: completion work runs only when the worker waits
    /// for completions (`io_uring_enter` with GETEVENTS), on its own thread, in a batch.
    Defer,
}

impl TaskRun {
    fn plainer(self) -> Option<TaskRun> {
        match self {
            TaskRun::Defer => Some(TaskRun::Coop),
            TaskRun::Coop => Some(TaskRun::Plain),
            TaskRun::Plain => None,
        }
    }
}

impl RingSetup {
    const DEFAULT_ENTRIES: u32 = 1024;

    fn from_env() -> RingSetup {
        let taskrun = match std::env::var("STRAIT_URING_SETUP").as_deref() {
            Ok("plain") => TaskRun::Plain,
            Ok("coop") => TaskRun::Coop,
            _ => TaskRun::Defer,
        };
        let entries = std::env::var("STRAIT_URING_ENTRIES")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(Self::DEFAULT_ENTRIES);
        RingSetup { taskrun, entries }
    }

    fn builder(self) -> io_uring::Builder {
        let mut b = io_uring::IoUring::builder();
        match self.taskrun {
            TaskRun::Plain => {}
            TaskRun::Coop => {
                b.setup_coop_taskrun().setup_taskrun_flag();
            }
            TaskRun::Defer => {
                b.setup_single_issuer().setup_defer_taskrun();
            }
        }
        b
    }
}

/// Spawns a worker thread. It reports `Ok(driver)` on `ready` once its listeners accept,
/// or the error that stopped it.
pub fn spawn(
    mut setup: WorkerSetup,
    ready: mpsc::Sender<Result<DriverKind, String>>,
) -> std::io::Result<std::thread::JoinHandle<()>> {
    std::thread::Builder::new().name(format!("strait-worker-{}", setup.id)).spawn(move || {
        if let Some(core) = setup.core {
            if !core_affinity::set_for_current(core) {
                tracing::warn!(worker = setup.id, core = core.id, "could not pin worker to its core");
            }
        }
        let (mut rt, kind, taskrun) = match build_runtime(setup.driver) {
            Ok(r) => r,
            Err(e) => {
                let _ = ready.send(Err(format!("worker {}: cannot build the {:?} runtime: {e}", setup.id, setup.driver)));
                return;
            }
        };
        let id = setup.id;
        tracing::info!(worker = id, core = setup.core.map(|c| c.id), driver = ?kind, ring = ?taskrun, "worker started");
        rt.block_on(async move {
            if let Err(e) = run(&mut setup, kind, &ready).await {
                let _ = ready.send(Err(format!("worker {}: {e}", setup.id)));
            }
        });
        tracing::debug!(worker = id, "worker stopped");
    })
}

async fn run(
    setup: &mut WorkerSetup,
    kind: DriverKind,
    ready: &mpsc::Sender<Result<DriverKind, String>>,
) -> std::io::Result<()> {
    // The initial snapshot was queued before the thread started.
    let first = match setup.subscriber.recv() {
        Some(Update::Snapshot(s)) => s,
        Some(Update::Drain(_) | Update::Shutdown | Update::Tls(_)) | None => return Ok(()),
    };
    setup.subscriber.ack(&first);
    let access = setup
        .access_log
        .take()
        .map(|(file, format)| AccessLog::new(file, format));
    let worker = Rc::new(Worker::new(
        (setup.id, setup.workers),
        kind,
        first,
        setup.http.clone(),
        access,
        setup.metrics.clone(),
    ));
    let wake: StdUnixStream = setup
        .subscriber
        .take_wake()
        .ok_or_else(|| std::io::Error::other("wake socket already taken"))?;
    wake.set_nonblocking(true)?;
    let mut wake = UnixStream::from_std(wake)?;
    worker.set_tls_listeners(
        setup
            .listeners
            .iter()
            .filter_map(|l| l.tls.clone().map(|t| (l.name.clone(), t)))
            .collect(),
    );
    if let Some(tls) = setup.tls.take() {
        worker.apply_tls(&tls);
    }
    for l in setup.listeners.drain(..) {
        listen::start(l, &worker)?;
    }
    monoio::spawn(sweep_loop(worker.clone()));
    let _ = ready.send(Ok(kind));

    let mut buf = vec![0u8; 64];
    // Set by a graceful stop: exit when the last connection ends, or then.
    let mut deadline: Option<Instant> = None;
    loop {
        let read = wake.read(buf);
        let (res, b) = match deadline {
            None => read.await,
            Some(until) => monoio::select! {
                r = read => r,
                _ = worker.drained.wait() => {
                    tracing::debug!(worker = worker.id, "drained");
                    return Ok(());
                }
                _ = monoio::time::sleep_until(monoio::time::Instant::from_std(until)) => {
                    tracing::warn!(
                        worker = worker.id,
                        connections = worker.connections(),
                        "shutdown timeout: closing the connections still open"
                    );
                    // Each connection task wakes, drops its sockets and ends; give them
                    // the turn they need (bounded, in case one is stuck).
                    worker.stop.fire();
                    let _ = monoio::time::timeout(STOP_GRACE, worker.drained.wait()).await;
                    return Ok(());
                }
            },
        };
        buf = b;
        match res {
            Ok(0) | Err(_) => return Ok(()), // every publisher is gone
            Ok(_) => {}
        }
        loop {
            match setup.subscriber.try_next() {
                Ok(Some(Update::Snapshot(snapshot))) => {
                    let version = snapshot.version;
                    let applied = worker.upstreams.apply(snapshot, Instant::now());
                    setup.subscriber.ack(&applied.view.snapshot);
                    tracing::debug!(worker = worker.id, %version, departed = applied.departed.len(), "snapshot swapped in");
                }
                Ok(Some(Update::Drain(until))) => {
                    tracing::debug!(
                        worker = worker.id,
                        connections = worker.connections(),
                        "draining"
                    );
                    worker.drain();
                    deadline = Some(until);
                }
                Ok(Some(Update::Tls(tls))) => {
                    worker.apply_tls(&tls);
                    tracing::debug!(
                        worker = worker.id,
                        version = tls.version,
                        "certificates swapped in"
                    );
                }
                Ok(Some(Update::Shutdown)) | Err(()) => return Ok(()),
                Ok(None) => break,
            }
        }
    }
}

async fn sweep_loop(worker: Rc<Worker>) {
    loop {
        monoio::time::sleep(POOL_SWEEP).await;
        let view = worker.upstreams.table.view();
        let max_idle = view
            .snapshot
            .upstreams
            .iter()
            .map(|u| u.settings.pool.idle_timeout)
            .max()
            .unwrap_or(Duration::from_secs(60));
        worker.upstreams.pool.sweep(Instant::now(), max_idle);
    }
}
