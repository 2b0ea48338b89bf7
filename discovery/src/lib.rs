//! strait's control side: everything that decides where traffic may go.
//!
//! - [`addr`]: endpoint addresses (`ip:port` or a Unix socket path), `Copy` for the
//!   workers.
//! - [`spec`]: the checked, runtime-free description of services, routes and upstreams
//!   (the proxy's config loader produces it; registries fill in endpoints later).
//! - [`snapshot`]: the immutable, versioned bundle workers route with ([`Snapshot`]).
//! - [`route`]: the compiled router (host → path prefix → methods → upstream).
//! - [`balance`]: weighted round-robin schedules, computed here so that a worker only
//!   advances a cursor.
//! - [`build`]: the table builder; one changed upstream costs that upstream only. It
//!   applies health check results (panic mode) and locality (node, zone) to the
//!   schedules, so a worker's pick never looks at them.
//! - [`publish`]: one channel per worker plus a wake-up socket the worker awaits.
//!
//! - [`registry`] and the controller: the discovery thread (tokio + kube on one OS
//!   thread, started by [`spawn`]) watching EndpointSlices (or Endpoints) and Services in
//!   each configured cluster; [`convert`] and [`state`] turn what it sees into endpoints;
//!   [`status`] is what the admin server reports of it; `check` runs the active health
//!   checks on the same thread. The same thread watches the TLS
//!   Secrets listeners name and hands their contents to the gateway
//!   ([`DiscoveryHandle::secret_events`]).
//!
//! Runs on: the thread that loads the config (building the first table) and the discovery
//! thread (every later one).
//! Nothing here runs on a worker's request path except the pure lookups in [`route`]
//! and the reads of [`snapshot`] data.

pub mod addr;
pub mod balance;
pub mod build;
mod check;
mod controller;
pub mod convert;
pub mod publish;
pub mod registry;
pub mod route;
pub mod snapshot;
pub mod spec;
pub mod state;
pub mod status;
pub mod tls;

use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

pub use addr::{EndpointAddr, UnixPath};
pub use build::{BuildError, TableBuilder};
pub use publish::{Ack, Publisher, Subscriber, Update};
pub use snapshot::{
    Check, Endpoint, EndpointState, Place, Snapshot, SnapshotVersion, Tier, Upstream,
    UpstreamStatus,
};
pub use spec::Spec;
pub use status::{RegistryStatus, Status};

use controller::{Command, Controller};

/// The running discovery thread.
#[derive(Debug)]
pub struct DiscoveryHandle {
    commands: tokio::sync::mpsc::UnboundedSender<Command>,
    thread: Option<JoinHandle<()>>,
    acks: Option<JoinHandle<()>>,
    status: Arc<Status>,
    secret_events: crossbeam_channel::Receiver<tls::SecretEvent>,
}

/// Starts the discovery thread (one OS thread, a current-thread tokio runtime) with the
/// builder of the snapshot already published, and the ack collector.
pub fn spawn(
    builder: TableBuilder,
    publisher: Publisher,
    acks: crossbeam_channel::Receiver<Ack>,
) -> std::io::Result<DiscoveryHandle> {
    let status = Arc::new(Status::new(publisher.workers()));
    status.published(builder.version());
    // Not ready until every enabled registry has listed, from the very start.
    status.set_registries(
        builder
            .spec()
            .registries
            .iter()
            .map(|r| {
                (
                    r.name.clone(),
                    RegistryStatus {
                        enabled: r.enabled,
                        ..Default::default()
                    },
                )
            })
            .collect(),
    );
    let collector = {
        let status = status.clone();
        std::thread::Builder::new()
            .name("strait-acks".into())
            .spawn(move || status.collect_acks(acks))?
    };
    let (cmd_tx, cmd_rx) = tokio::sync::mpsc::unbounded_channel();
    let (ev_tx, ev_rx) = tokio::sync::mpsc::unbounded_channel();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let (secret_tx, secret_events) = crossbeam_channel::unbounded();
    let controller = Controller::new(builder, publisher, status.clone(), ev_tx, secret_tx);
    let thread = std::thread::Builder::new()
        .name("strait-discovery".into())
        .spawn(move || runtime.block_on(controller.run(cmd_rx, ev_rx)))?;
    Ok(DiscoveryHandle {
        commands: cmd_tx,
        thread: Some(thread),
        acks: Some(collector),
        status,
        secret_events,
    })
}

impl DiscoveryHandle {
    pub fn status(&self) -> &Arc<Status> {
        &self.status
    }

    /// What the watchers of the spec's TLS Secrets see, in order, for the gateway's control
    /// loop (which owns the certificates).
    pub fn secret_events(&self) -> &crossbeam_channel::Receiver<tls::SecretEvent> {
        &self.secret_events
    }

    /// Applies a checked config's builder; returns the version published.
    pub fn reload(&self, builder: TableBuilder) -> Option<SnapshotVersion> {
        let (tx, rx) = crossbeam_channel::bounded(1);
        self.commands
            .send(Command::Reload(Box::new(builder), tx))
            .ok()?;
        rx.recv().ok()
    }

    /// Replaces a static upstream's endpoints; the version published, or `None` for an
    /// unknown upstream.
    pub fn set_endpoints(
        &self,
        upstream: &str,
        endpoints: Vec<Endpoint>,
    ) -> Option<SnapshotVersion> {
        let (tx, rx) = crossbeam_channel::bounded(1);
        self.commands
            .send(Command::SetEndpoints(upstream.to_owned(), endpoints, tx))
            .ok()?;
        rx.recv().ok().flatten()
    }

    /// Waits until every worker runs `version` or later.
    pub fn wait_applied(&self, version: SnapshotVersion, timeout: Duration) -> bool {
        self.status.wait_applied(version, timeout)
    }

    /// Stops the discovery thread (the workers keep their last snapshot).
    pub fn stop(mut self) {
        self.shutdown();
    }

    fn shutdown(&mut self) {
        let _ = self.commands.send(Command::Stop);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        // The collector ends when the workers' ack senders are gone.
        drop(self.acks.take());
    }
}

impl Drop for DiscoveryHandle {
    fn drop(&mut self) {
        self.shutdown();
    }
}
