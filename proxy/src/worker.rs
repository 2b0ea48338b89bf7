//! Workers: one OS thread per core, pinned with core_affinity, each running its own
//! monoio runtime (io_uring, or the legacy epoll driver where io_uring is unavailable),
//! its own SO_REUSEPORT listeners and accept loops, its own routing view and pool.
//!
//! Runs on: the worker thread it spawns. The only cross-thread input is the
//! [`Subscriber`] (a channel drained when the wake socket becomes readable); nothing
//! else is shared.
//!
//! Connection limit: at `http.max_connections_per_worker` open client connections, the
//! accept loops pause until one closes (new connections wait in the kernel's queue).
//!
//! Graceful stop ([`Update::Drain`]): the accept loops (HTTP and `tcp` alike) stop,
//! accept what the kernel already queued (so closing the listener resets no connection
//! that was let in), and close the listener; idle client connections close; busy ones
//! close after their current response; `tcp` connections go on; the thread exits when
//! every listener is closed and no connection is left, or at the deadline, after
//! dropping the connections still open.

use std::net::SocketAddr;
use std::os::unix::net::UnixStream as StdUnixStream;
use std::rc::Rc;
use std::sync::mpsc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use monoio::io::AsyncReadRent;
use monoio::net::{TcpListener, UnixStream};
use monoio::time::TimeDriver;
use monoio::{FusionRuntime, IoUringDriver, LegacyDriver, RuntimeBuilder};
use strait_discovery::{Subscriber, Update};

use crate::access_log::AccessLog;
use crate::config::{Driver, HttpConfig, Protocol};
use crate::metrics::WorkerMetrics;
use crate::proxy::{self, Open, Worker};
use crate::tcp;
use crate::upstream::Table;

pub mod signal;

/// How often idle pooled connections are checked for expiry and peer close.
const POOL_SWEEP: Duration = Duration::from_secs(1);
/// How long the connections still open at a graceful stop's timeout get to close.
const STOP_GRACE: Duration = Duration::from_secs(1);
/// How long an accept in flight gets to end after its listener was shut down (it ends
/// at once; the bound is a safety net).
const ACCEPT_SETTLE: Duration = Duration::from_secs(1);

/// Everything one worker thread starts from.
#[derive(Debug)]
pub struct WorkerSetup {
    pub id: usize,
    pub core: Option<core_affinity::CoreId>,
    pub driver: Driver,
    /// Each listener's socket (this worker's own), name and protocol.
    pub listeners: Vec<(std::net::TcpListener, String, Protocol)>,
    pub subscriber: Subscriber,
    pub http: HttpConfig,
    pub access_log: Option<std::fs::File>,
    /// This worker's counters (it is their only writer; `/metrics` reads them).
    pub metrics: Arc<WorkerMetrics>,
    /// Dropped when the thread ends: the gateway learns that every worker exited when
    /// the channel disconnects.
    pub alive: crossbeam_channel::Sender<()>,
}

/// Which driver a worker ended up with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DriverKind {
    IoUring,
    Legacy,
}

type Runtime = FusionRuntime<TimeDriver<IoUringDriver>, TimeDriver<LegacyDriver>>;

fn build_runtime(driver: Driver) -> std::io::Result<(Runtime, DriverKind)> {
    let uring = match driver {
        Driver::Legacy => false,
        Driver::IoUring => true,
        Driver::Auto => monoio::utils::detect_uring(),
    };
    if uring {
        let rt = RuntimeBuilder::<IoUringDriver>::new()
            .enable_timer()
            .build()?;
        Ok((rt.into(), DriverKind::IoUring))
    } else {
        let rt = RuntimeBuilder::<LegacyDriver>::new()
            .enable_timer()
            .build()?;
        Ok((rt.into(), DriverKind::Legacy))
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
        let (mut rt, kind) = match build_runtime(setup.driver) {
            Ok(r) => r,
            Err(e) => {
                let _ = ready.send(Err(format!("worker {}: cannot build the {:?} runtime: {e}", setup.id, setup.driver)));
                return;
            }
        };
        let id = setup.id;
        tracing::info!(worker = id, core = setup.core.map(|c| c.id), driver = ?kind, "worker started");
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
        Some(Update::Drain(_) | Update::Shutdown) | None => return Ok(()),
    };
    setup.subscriber.ack(&first);
    let access = setup.access_log.take().map(AccessLog::new);
    let worker = Rc::new(Worker::new(
        setup.id,
        Table::new(first, setup.id, setup.metrics.clone()),
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
    for (l, name, protocol) in setup.listeners.drain(..) {
        // A second descriptor of the same socket, to accept what is queued at close.
        let queued = l.try_clone()?;
        let listener = TcpListener::from_std(l)?;
        let serve = match protocol {
            Protocol::Http => Serve::Http,
            Protocol::Tcp(config) => Serve::Tcp(Rc::new(tcp::Listener::new(name, config))),
        };
        worker.listener_opened();
        monoio::spawn(accept_loop(listener, queued, serve, worker.clone()));
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
                    let (view, departed) = worker.table.swap(snapshot);
                    setup.subscriber.ack(&view.snapshot);
                    // Idle connections to endpoints that left the rotation close now;
                    // `tcp` connections to them start their drain timeout.
                    worker.pool.close(&departed);
                    worker.health.forget(&departed);
                    worker.departures.depart(&departed, Instant::now());
                    tracing::debug!(worker = worker.id, %version, departed = departed.len(), "snapshot swapped in");
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
                Ok(Some(Update::Shutdown)) | Err(()) => return Ok(()),
                Ok(None) => break,
            }
        }
    }
}

/// What an accept loop does with the connections it accepts.
#[derive(Debug, Clone)]
enum Serve {
    /// HTTP/1.1 exchanges ([`proxy::serve`]).
    Http,
    /// Copied to the listener's upstream ([`tcp::serve`]).
    Tcp(Rc<tcp::Listener>),
}

impl Serve {
    /// Counts the connection on `worker` and spawns its task.
    fn spawn(&self, stream: monoio::net::TcpStream, peer: SocketAddr, worker: &Rc<Worker>) {
        let open = Open::new(worker.clone());
        match self {
            Serve::Http => {
                monoio::spawn(proxy::serve(stream, peer, open));
            }
            Serve::Tcp(l) => {
                monoio::spawn(tcp::serve(stream, peer, open, l.clone()));
            }
        }
    }
}

async fn accept_loop(
    listener: TcpListener,
    queued: std::net::TcpListener,
    serve: Serve,
    worker: Rc<Worker>,
) {
    let mut taken = 0;
    loop {
        // At `http.max_connections_per_worker`, accepting pauses (new connections wait
        // in the listener's queue) until a connection closes or a graceful stop begins.
        if worker.connections() >= worker.http.max_connections_per_worker {
            tracing::debug!(
                worker = worker.id,
                "connection limit reached: accepting paused"
            );
            monoio::select! {
                _ = worker.slot_free() => {}
                _ = worker.draining.wait() => {}
            }
        }
        // The accept stays in flight across the drain signal. Dropping it would cancel an
        // io_uring accept that may already hold a new connection (monoio discards the
        // result of a dropped op, so that connection would be neither served nor
        // closed), and the op would keep the listening socket open until its
        // cancellation lands.
        let mut accept = std::pin::pin!(listener.accept());
        let accepted = monoio::select! {
            r = &mut accept => r,
            _ = worker.draining.wait() => {
                taken += stop_listening(&queued, &serve, &worker);
                // The accept in flight ends now, with a connection it took before the
                // listener stopped, or an error.
                if let Ok(Ok((stream, peer))) =
                    monoio::time::timeout(ACCEPT_SETTLE, accept).await
                {
                    serve.spawn(stream, peer, &worker);
                    taken += 1;
                }
                break;
            }
        };
        match accepted {
            Ok((stream, peer)) => serve.spawn(stream, peer, &worker),
            Err(e) => {
                // Out of descriptors or similar: back off briefly instead of spinning.
                tracing::warn!(worker = worker.id, error = %e, "accept failed");
                monoio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
    drop(listener);
    drop(queued);
    tracing::debug!(worker = worker.id, taken, "listener closed");
    worker.listener_closed();
}

/// Stops a listener at a graceful stop: takes the connections the kernel completed but
/// nobody accepted yet (closing the socket would reset them) and serves them, then shuts
/// the socket down, which takes it out of the SO_REUSEPORT group (new connections go to
/// the other listeners on the port, or are refused) and wakes an accept in flight.
/// Returns how many connections it took.
fn stop_listening(queued: &std::net::TcpListener, serve: &Serve, worker: &Rc<Worker>) -> usize {
    let mut taken = 0;
    while let Ok((stream, peer)) = queued.accept() {
        let stream = stream
            .set_nonblocking(true)
            .and_then(|()| monoio::net::TcpStream::from_std(stream));
        if let Ok(stream) = stream {
            serve.spawn(stream, peer, worker);
            taken += 1;
        }
    }
    if let Err(e) = socket2::SockRef::from(queued).shutdown(std::net::Shutdown::Read) {
        tracing::warn!(worker = worker.id, error = %e, "cannot shut the listener down");
    }
    taken
}

async fn sweep_loop(worker: Rc<Worker>) {
    loop {
        monoio::time::sleep(POOL_SWEEP).await;
        let view = worker.table.view();
        let max_idle = view
            .snapshot
            .upstreams
            .iter()
            .map(|u| u.settings.pool.idle_timeout)
            .max()
            .unwrap_or(Duration::from_secs(60));
        worker.pool.sweep(Instant::now(), max_idle);
    }
}

/// Binds `addr` once per worker with SO_REUSEPORT. Port 0 is resolved by the first bind
/// and reused for the others, so all workers share one port.
pub fn bind_reuseport(
    addr: SocketAddr,
    count: usize,
) -> std::io::Result<Vec<std::net::TcpListener>> {
    use socket2::{Domain, Protocol, Socket, Type};
    let mut out = Vec::with_capacity(count);
    let mut addr = addr;
    for _ in 0..count {
        let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
        socket.set_reuse_address(true)?;
        socket.set_reuse_port(true)?;
        socket.set_nodelay(true)?;
        socket.set_nonblocking(true)?;
        socket.bind(&addr.into())?;
        socket.listen(4096)?;
        let listener: std::net::TcpListener = socket.into();
        addr = listener.local_addr()?;
        out.push(listener);
    }
    Ok(out)
}
