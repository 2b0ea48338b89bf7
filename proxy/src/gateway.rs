//! Starting, steering and stopping a gateway: binds every listener (TCP once per worker
//! with SO_REUSEPORT, a Unix socket once for all workers), builds the first snapshot,
//! spawns the pinned workers and publishes later snapshots to them.
//!
//! Runs on: the caller's thread (the binary's main thread, or a test). Builds tables
//! off the workers; never touches a worker's state except through the publisher.

use std::net::SocketAddr;
use std::num::NonZeroUsize;
use std::sync::atomic::Ordering;
use std::sync::{mpsc, Arc};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use strait_discovery::publish;
use strait_discovery::tls::TlsSnapshot;
use strait_discovery::{
    BuildError, DiscoveryHandle, Endpoint, Publisher, SnapshotVersion, Status, TableBuilder, Update,
};

use crate::admin::{AdminServer, AdminState};
use crate::config::{Config, ConfigError, ListenAddr, Protocol};
use crate::metrics::WorkerMetrics;
use crate::worker::listen::{self, BoundListener, BoundSocket, UnixBinding};
use crate::worker::{self, DriverKind, WorkerSetup};

mod control;

pub use control::{run, ConfigSource, Control};

/// Why a gateway could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// A listener (or the admin server) could not bind; `field` is its config field.
    #[error("{field}: cannot listen on {addr}: {source}")]
    Bind {
        field: String,
        addr: String,
        source: std::io::Error,
    },
    #[error("the routing table cannot be built: {0}")]
    Table(#[from] BuildError),
    #[error("access log {path}: {source}")]
    AccessLog {
        path: String,
        source: std::io::Error,
    },
    #[error("{0}")]
    Worker(String),
    /// A TLS listener's certificate or CA file is unusable.
    #[error("{0}")]
    Tls(ConfigError),
    #[error("io: {0}")]
    Io(#[from] std::io::Error),
}

/// Why a reload was refused (the running table stays).
#[derive(Debug, thiserror::Error)]
pub enum ReloadError {
    #[error("the routing table cannot be built: {0}")]
    Table(#[from] BuildError),
    #[error(
        "listener {listener} (protocol tcp) sends to upstream {upstream:?}, which the new \
         config does not define (listeners change only with a restart)"
    )]
    TcpUpstreamMissing { listener: String, upstream: String },
    #[error("{0}")]
    Tls(ConfigError),
}

/// A running gateway.
#[derive(Debug)]
pub struct Gateway {
    publisher: Publisher,
    discovery: Option<DiscoveryHandle>,
    /// Each listener's name and bound address (port 0 resolved).
    listeners: Vec<(String, ListenAddr)>,
    /// The Unix socket files this gateway bound, removed when it stops (or when a start
    /// that bound them fails).
    unix: Vec<Arc<UnixBinding>>,
    threads: Vec<JoinHandle<()>>,
    drivers: Vec<DriverKind>,
    config: Config,
    /// Disconnects once every worker thread has exited.
    exited: crossbeam_channel::Receiver<()>,
    /// What the admin endpoints read (readiness, metrics, the spec in force).
    admin: Arc<AdminState>,
    admin_server: Option<AdminServer>,
    /// Dropping it cancels the pending start of a graceful stop's drain.
    cancel_drain: Option<crossbeam_channel::Sender<()>>,
    /// The certificates the TLS listeners serve.
    tls: Option<Arc<TlsSnapshot>>,
    /// The TLS Secrets as read so far (the last good contents of each).
    secrets: crate::tls::Secrets,
}

impl Gateway {
    /// Starts the workers; returns once every worker accepts on every listener.
    pub fn start(config: Config) -> Result<Gateway, StartError> {
        let workers = config
            .workers
            .or_else(|| std::thread::available_parallelism().ok())
            .unwrap_or(NonZeroUsize::MIN)
            .get();
        let mut builder = TableBuilder::try_new(config.spec.clone())?;
        let secrets = crate::tls::Secrets::new(&config.spec.tls_secrets);
        let tls = crate::tls::load(&config, None, &secrets, crate::tls::Files::Read)
            .map_err(StartError::Tls)?
            .map(Arc::new);
        let mut per_worker: Vec<Vec<BoundListener>> = (0..workers).map(|_| Vec::new()).collect();
        let mut listeners = Vec::new();
        let mut unix = Vec::new();
        for (i, l) in config.listeners.iter().enumerate() {
            let bind_error = |source| StartError::Bind {
                field: format!("listeners[{i}].address"),
                addr: l.addr.to_string(),
                source,
            };
            let sockets: Vec<BoundSocket> = match &l.addr {
                ListenAddr::Inet(addr) => {
                    let bound = listen::bind_reuseport(*addr, workers).map_err(bind_error)?;
                    listeners.push((l.name.clone(), ListenAddr::Inet(bound[0].local_addr()?)));
                    bound.into_iter().map(BoundSocket::Tcp).collect()
                }
                ListenAddr::Unix(path) => {
                    let (socket, binding) = listen::bind_unix(path, l.mode).map_err(bind_error)?;
                    listeners.push((l.name.clone(), l.addr.clone()));
                    unix.push(binding.clone());
                    let mut sockets = Vec::with_capacity(workers);
                    for _ in 0..workers {
                        sockets.push(BoundSocket::Unix(socket.try_clone()?, binding.clone()));
                    }
                    sockets
                }
            };
            for (w, socket) in sockets.into_iter().enumerate() {
                per_worker[w].push(BoundListener {
                    name: l.name.clone(),
                    protocol: l.protocol.clone(),
                    tls: l.tls.clone(),
                    trusted_proxies: l.trusted_proxies.clone(),
                    proxy_protocol: l.proxy_protocol,
                    socket,
                });
            }
        }
        let admin_listener = match config.admin.listen {
            Some(addr) => Some(bind_admin(addr).map_err(|source| StartError::Bind {
                field: "admin.listen".into(),
                addr: addr.to_string(),
                source,
            })?),
            None => None,
        };
        let admin_socket = match (&config.admin.socket, config.admin.listen) {
            (Some(path), Some(_)) => Some((
                bind_admin_socket(path).map_err(|source| StartError::Bind {
                    field: "admin.socket".into(),
                    addr: path.display().to_string(),
                    source,
                })?,
                path.clone(),
            )),
            _ => None,
        };
        let access_file = if config.access_log.enabled {
            Some(open_access_log(&config)?)
        } else {
            None
        };
        let (publisher, subscribers, acks) = publish::channel(workers)?;
        publisher.publish(builder.snapshot(Instant::now()));
        let cores = core_affinity::get_core_ids().unwrap_or_default();
        let (ready_tx, ready_rx) = mpsc::channel();
        let (alive, exited) = crossbeam_channel::bounded(0);
        let metrics: Vec<Arc<WorkerMetrics>> = (0..workers).map(|_| Arc::default()).collect();
        let mut threads = Vec::with_capacity(workers);
        for (id, (subscriber, listeners)) in subscribers.into_iter().zip(per_worker).enumerate() {
            let access_log = match &access_file {
                Some(f) => Some((f.try_clone()?, config.access_log.format)),
                None => None,
            };
            let setup = WorkerSetup {
                id,
                workers,
                core: if cores.is_empty() {
                    None
                } else {
                    Some(cores[id % cores.len()])
                },
                driver: config.driver,
                listeners,
                subscriber,
                http: config.http.clone(),
                access_log,
                metrics: metrics[id].clone(),
                alive: alive.clone(),
                tls: tls.clone(),
            };
            threads.push(worker::spawn(setup, ready_tx.clone())?);
        }
        drop(ready_tx);
        drop(alive);
        let mut drivers = Vec::with_capacity(workers);
        for _ in 0..workers {
            match ready_rx.recv() {
                Ok(Ok(kind)) => drivers.push(kind),
                Ok(Err(e)) => {
                    publisher.send(Update::Shutdown);
                    return Err(StartError::Worker(e));
                }
                Err(_) => return Err(StartError::Worker("a worker exited during start-up".into())),
            }
        }
        let discovery = strait_discovery::spawn(builder, publisher.clone(), acks)?;
        let admin = Arc::new(AdminState::new(
            metrics,
            discovery.status().clone(),
            publisher.clone(),
            config.spec.clone(),
        ));
        *admin.tls.lock().unwrap_or_else(|e| e.into_inner()) = tls.clone();
        admin.set_secrets(&secrets);
        let admin_server = match admin_listener {
            Some(l) => Some(AdminServer::start(l, admin_socket, admin.clone())?),
            None => None,
        };
        let names: Vec<String> = listeners.iter().map(|(n, a)| format!("{n}={a}")).collect();
        tracing::info!(workers, listeners = ?names, "gateway started");
        Ok(Gateway {
            publisher,
            discovery: Some(discovery),
            listeners,
            unix,
            threads,
            drivers,
            config,
            exited,
            admin,
            admin_server,
            cancel_drain: None,
            tls,
            secrets,
        })
    }

    /// The bound address of TCP listener `name` (port 0 resolved).
    pub fn listen_addr(&self, name: &str) -> Option<SocketAddr> {
        match self.listener(name)? {
            ListenAddr::Inet(a) => Some(*a),
            ListenAddr::Unix(_) => None,
        }
    }

    /// Where listener `name` listens (a TCP listener's port 0 resolved).
    pub fn listener(&self, name: &str) -> Option<&ListenAddr> {
        self.listeners
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, a)| a)
    }

    /// Number of workers running.
    pub fn workers(&self) -> usize {
        self.threads.len()
    }

    /// The driver each worker runs.
    pub fn drivers(&self) -> &[DriverKind] {
        &self.drivers
    }

    /// The admin server's bound address (port 0 resolved); `None` when disabled.
    pub fn admin_addr(&self) -> Option<SocketAddr> {
        self.admin_server.as_ref().map(AdminServer::addr)
    }

    /// What the admin endpoints serve.
    pub fn admin(&self) -> &Arc<AdminState> {
        &self.admin
    }

    pub fn config(&self) -> &Config {
        &self.config
    }

    /// Applies a new config's services, routes, upstreams and registries. Listener,
    /// worker and HTTP settings need a restart; they are kept as they are. A spec that
    /// cannot be built, or that drops the upstream of a running `tcp` listener, is
    /// refused and the running table stays. Returns once every worker routes with the
    /// new table.
    pub fn reload(&mut self, mut config: Config) -> Result<SnapshotVersion, ReloadError> {
        // Listeners are not reloaded: the Secrets watched stay the running ones'.
        config.spec.tls_secrets = self.config.spec.tls_secrets.clone();
        if let Err(e) = self.check_reload(&config) {
            self.reload_refused();
            return Err(e);
        }
        // Certificate files are read again for the running listeners (listeners are not
        // reloaded); a bad one refuses the whole reload and the served ones stay.
        let files = crate::tls::Files::Read;
        let tls = match crate::tls::load(&self.config, self.tls.as_deref(), &self.secrets, files) {
            Ok(t) => t.map(Arc::new),
            Err(e) => {
                self.reload_refused();
                return Err(ReloadError::Tls(e));
            }
        };
        let builder = match TableBuilder::try_new(config.spec.clone()) {
            Ok(b) => b,
            Err(e) => {
                self.reload_refused();
                return Err(e.into());
            }
        };
        *self.admin.spec.lock().unwrap_or_else(|e| e.into_inner()) = config.spec.clone();
        self.config.spec = config.spec;
        if let Some(tls) = tls {
            tracing::info!(
                version = tls.version,
                "certificates read again and in force"
            );
            self.install_tls(tls);
        }
        let version = self.discovery().reload(builder).unwrap_or_default();
        self.wait_applied(version);
        self.admin.reloads_ok.fetch_add(1, Ordering::Relaxed);
        Ok(version)
    }

    /// New session ticket keys for every TLS listener (the current ones kept to open
    /// tickets), with the certificates in force: what the control loop does every
    /// [`strait_discovery::tls::TICKET_ROTATION`].
    pub fn rotate_tickets(&mut self) {
        let Some(before) = &self.tls else {
            return;
        };
        match before.with_new_tickets() {
            Ok(tls) => {
                self.install_tls(Arc::new(tls));
                tracing::info!("session ticket keys rotated");
            }
            Err(e) => tracing::error!("session ticket keys not rotated: {e}"),
        }
    }

    /// What the discovery thread's Secret watchers see, for the control loop to
    /// [`apply_secret`](Gateway::apply_secret).
    pub fn secret_events(&self) -> crossbeam_channel::Receiver<strait_discovery::tls::SecretEvent> {
        self.discovery().secret_events().clone()
    }

    /// Takes in a TLS Secret's change: a good new pair is served to new handshakes at
    /// once (open connections keep theirs); a bad one, or a deletion, is logged and counted
    /// and the last good certificate keeps serving.
    pub fn apply_secret(&mut self, event: strait_discovery::tls::SecretEvent) {
        let changed = self.secrets.apply(event);
        if changed {
            let files = crate::tls::Files::Reuse;
            match crate::tls::load(&self.config, self.tls.as_deref(), &self.secrets, files) {
                Ok(Some(tls)) => {
                    tracing::info!(version = tls.version, "certificates in force");
                    self.install_tls(Arc::new(tls));
                }
                Ok(None) => {}
                Err(e) => tracing::error!("certificates not rebuilt, the served ones stay: {e}"),
            }
        }
        self.admin.set_secrets(&self.secrets);
    }

    /// Publishes `tls` to the workers (new handshakes use it) and keeps it as the one in
    /// force, for the next reload and the expiry gauge.
    fn install_tls(&mut self, tls: Arc<TlsSnapshot>) {
        self.publisher.send(Update::Tls(tls.clone()));
        *self.admin.tls.lock().unwrap_or_else(|e| e.into_inner()) = Some(tls.clone());
        self.tls = Some(tls);
    }

    /// A new config must keep the upstream of every running `tcp` listener (listeners
    /// are not reloaded).
    fn check_reload(&self, config: &Config) -> Result<(), ReloadError> {
        for l in &self.config.listeners {
            if let Protocol::Tcp(tcp) = &l.protocol {
                let named = tcp
                    .upstream
                    .iter()
                    .chain(tcp.sni_routes.iter().map(|r| &r.upstream));
                for upstream in named {
                    if !config.spec.upstreams.iter().any(|u| &u.name == upstream) {
                        return Err(ReloadError::TcpUpstreamMissing {
                            listener: l.name.clone(),
                            upstream: upstream.clone(),
                        });
                    }
                }
            }
        }
        Ok(())
    }

    /// Counts a reload refused before it reached [`Gateway::reload`] (a file that does
    /// not parse or check), for `strait_config_reloads_total`.
    pub fn reload_refused(&self) {
        self.admin.reloads_refused.fetch_add(1, Ordering::Relaxed);
    }

    /// Replaces one static upstream's endpoints and publishes; returns once every worker
    /// routes with them. `None` for an unknown upstream.
    pub fn set_endpoints(
        &mut self,
        upstream: &str,
        endpoints: Vec<Endpoint>,
    ) -> Option<SnapshotVersion> {
        let version = self.discovery().set_endpoints(upstream, endpoints)?;
        self.wait_applied(version);
        Some(version)
    }

    /// Discovery and propagation state: readiness, registries, versions, latencies.
    pub fn status(&self) -> &std::sync::Arc<Status> {
        self.discovery().status()
    }

    /// Ready for traffic: every enabled registry has finished its first list, and no
    /// graceful stop has begun.
    pub fn ready(&self) -> bool {
        self.admin.ready()
    }

    /// Begins a graceful stop (what SIGTERM does): readiness turns false now; the
    /// listeners keep accepting for `shutdown.delay`, then close; idle client
    /// connections close and busy ones close after their current response (which says
    /// `Connection: close`); workers exit when their last connection ends, or
    /// `shutdown.timeout` after the delay. Returns at once; see [`Gateway::wait_stopped`].
    pub fn begin_shutdown(&mut self) {
        if self.admin.stopping.swap(true, Ordering::SeqCst) {
            return;
        }
        let (cancel, cancelled) = crossbeam_channel::bounded::<()>(0);
        self.cancel_drain = Some(cancel);
        let publisher = self.publisher.clone();
        let shutdown = self.config.shutdown;
        tracing::info!(delay = ?shutdown.delay, timeout = ?shutdown.timeout, "graceful stop: readiness off");
        let spawned = std::thread::Builder::new()
            .name("strait-shutdown".into())
            .spawn(move || {
                // Waits out the delay; an early message or disconnect means "stop now".
                if let Err(crossbeam_channel::RecvTimeoutError::Timeout) =
                    cancelled.recv_timeout(shutdown.delay)
                {
                    tracing::info!("graceful stop: closing listeners, draining connections");
                    publisher.send(Update::Drain(Instant::now() + shutdown.timeout));
                }
            });
        if let Err(e) = spawned {
            tracing::error!(error = %e, "cannot start the shutdown timer; draining now");
            self.publisher
                .send(Update::Drain(Instant::now() + shutdown.timeout));
        }
    }

    /// Waits up to `timeout` for every worker to exit (after [`Gateway::begin_shutdown`]);
    /// true when they all did.
    pub fn wait_stopped(&self, timeout: Duration) -> bool {
        matches!(
            self.exited.recv_timeout(timeout),
            Err(crossbeam_channel::RecvTimeoutError::Disconnected)
        )
    }

    /// Disconnects once every worker has exited (for `select!` with other events).
    pub fn exited(&self) -> &crossbeam_channel::Receiver<()> {
        &self.exited
    }

    fn discovery(&self) -> &DiscoveryHandle {
        self.discovery
            .as_ref()
            .expect("invariant: discovery runs until shutdown")
    }

    fn wait_applied(&self, version: SnapshotVersion) {
        if !self
            .discovery()
            .wait_applied(version, Duration::from_secs(10))
        {
            tracing::warn!(%version, "not every worker swapped in the snapshot within 10 s");
        }
    }

    /// Stops every worker now (connections are dropped) and waits for the threads.
    pub fn shutdown(mut self) {
        self.cancel_drain.take();
        self.admin_server.take();
        if let Some(d) = self.discovery.take() {
            d.stop();
        }
        self.publisher.send(Update::Shutdown);
        drop(self.publisher);
        for t in self.threads {
            let _ = t.join();
        }
        // The listeners' sockets are closed; their files go too (unless a newer process
        // bound the path since). Not left to the bindings' drop: an accept loop parked in
        // a stopped runtime keeps its share of them.
        for binding in &self.unix {
            binding.unlink_if_ours();
        }
    }
}

/// The admin listener, with `SO_REUSEPORT` like the workers' listeners: a new strait on
/// the same node (an upgrade on the host network) binds it beside this one.
fn bind_admin(addr: SocketAddr) -> std::io::Result<std::net::TcpListener> {
    use socket2::{Domain, Socket, Type};
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, None)?;
    socket.set_reuse_address(true)?;
    socket.set_reuse_port(true)?;
    socket.bind(&addr.into())?;
    socket.listen(128)?;
    Ok(socket.into())
}

/// The admin Unix socket at `path`; a socket file left there (by a process that stopped
/// without removing it) is replaced, anything else refused.
fn bind_admin_socket(path: &std::path::Path) -> std::io::Result<std::os::unix::net::UnixListener> {
    use std::os::unix::fs::FileTypeExt;
    match std::fs::symlink_metadata(path) {
        Ok(m) if m.file_type().is_socket() => std::fs::remove_file(path)?,
        Ok(_) => {
            return Err(std::io::Error::new(
                std::io::ErrorKind::AlreadyExists,
                "something other than a socket is at this path",
            ))
        }
        Err(_) => {}
    }
    std::os::unix::net::UnixListener::bind(path)
}

fn open_access_log(config: &Config) -> Result<std::fs::File, StartError> {
    use std::os::fd::AsFd;
    match &config.access_log.path {
        Some(path) => std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .map_err(|source| StartError::AccessLog {
                path: path.display().to_string(),
                source,
            }),
        None => {
            let fd = std::io::stdout().as_fd().try_clone_to_owned()?;
            Ok(std::fs::File::from(fd))
        }
    }
}
