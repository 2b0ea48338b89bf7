//! The discovery thread's loop: owns the table builder, every registry's state and
//! watcher tasks; turns commands (reload, static endpoint changes) and watch events into
//! snapshots and publishes them.
//!
//! Runs on: the discovery thread, a current-thread tokio runtime. Events that arrive
//! together are applied together and published as one snapshot; an event touching one
//! Service rebuilds only the upstreams that name it.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;
use std::time::{Instant, SystemTime};

use tokio::sync::mpsc::{UnboundedReceiver, UnboundedSender};
use tokio::task::JoinHandle;

use crate::build::TableBuilder;
use crate::check::{Checks, Probed};
use crate::publish::Publisher;
use crate::registry::{kubernetes, Msg, WatchEvent};
use crate::snapshot::{Endpoint, SnapshotVersion, UpstreamStatus};
use crate::spec::{DiscoveryRef, RegistrySpec, SecretRef, Spec, UpstreamSource};
use crate::state::{Kind, RegistryState, ServiceKey};
use crate::status::{RegistryStatus, Status};
use crate::tls::SecretEvent;

/// What the rest of the process asks of the discovery thread.
#[derive(Debug)]
pub(crate) enum Command {
    /// A new config (already checked). Replies with the version published.
    Reload(
        Box<TableBuilder>,
        crossbeam_channel::Sender<SnapshotVersion>,
    ),
    /// Replace a static upstream's endpoints. Replies with the version published, or
    /// none for an unknown upstream.
    SetEndpoints(
        String,
        Vec<Endpoint>,
        crossbeam_channel::Sender<Option<SnapshotVersion>>,
    ),
    Stop,
}

struct Registry {
    spec: RegistrySpec,
    generation: u64,
    state: RegistryState,
    task: Option<JoinHandle<()>>,
    /// HTTP status of the last error logged, to log a repeating failure once.
    last_error_code: Option<Option<u16>>,
    lists_done: u64,
}

impl Drop for Registry {
    fn drop(&mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}

pub(crate) struct Controller {
    builder: TableBuilder,
    publisher: Publisher,
    status: Arc<Status>,
    registries: HashMap<String, Registry>,
    /// `(registry, namespace, service)` → upstreams that name it.
    index: HashMap<(String, String, String), Vec<String>>,
    /// Discovery-backed upstreams by name.
    discovered: HashMap<String, DiscoveryRef>,
    tx: UnboundedSender<Msg>,
    next_generation: u64,
    /// One watcher per TLS Secret, with the registry spec it was started with.
    secrets: HashMap<SecretRef, (RegistrySpec, JoinHandle<()>)>,
    secret_tx: crossbeam_channel::Sender<SecretEvent>,
    /// Active health checks, and the channel their results come back on.
    checks: Checks,
    probed: Option<UnboundedReceiver<Probed>>,
    /// Reads this gateway's zone from its Node, when it must.
    zone_task: Option<(ZoneQuery, JoinHandle<()>)>,
    /// What the Node said (kept across reloads, which start a builder without it).
    read_zone: Option<String>,
    zone_tx: UnboundedSender<Option<String>>,
    zone_rx: Option<UnboundedReceiver<Option<String>>>,
}

/// Which Node the zone was asked of, in which cluster.
type ZoneQuery = (RegistrySpec, String);

impl Controller {
    pub(crate) fn new(
        builder: TableBuilder,
        publisher: Publisher,
        status: Arc<Status>,
        tx: UnboundedSender<Msg>,
        secret_tx: crossbeam_channel::Sender<SecretEvent>,
    ) -> Controller {
        let (probe_tx, probed) = tokio::sync::mpsc::unbounded_channel();
        let (zone_tx, zone_rx) = tokio::sync::mpsc::unbounded_channel();
        Controller {
            builder,
            publisher,
            status,
            registries: HashMap::new(),
            index: HashMap::new(),
            discovered: HashMap::new(),
            tx,
            next_generation: 1,
            secrets: HashMap::new(),
            secret_tx,
            checks: Checks::new(probe_tx),
            probed: Some(probed),
            zone_task: None,
            read_zone: None,
            zone_tx,
            zone_rx: Some(zone_rx),
        }
    }

    pub(crate) async fn run(
        mut self,
        mut commands: UnboundedReceiver<Command>,
        mut events: UnboundedReceiver<Msg>,
    ) {
        let mut probed = self.probed.take().expect("invariant: run once");
        let mut zones = self.zone_rx.take().expect("invariant: run once");
        self.configure(false);
        if !self.discovered.is_empty() {
            self.publish(Instant::now(), "registries configured");
        }
        loop {
            tokio::select! {
                cmd = commands.recv() => match cmd {
                    None | Some(Command::Stop) => break,
                    Some(Command::Reload(builder, reply)) => {
                        let origin = Instant::now();
                        let version = self.builder.version();
                        self.builder = *builder;
                        self.builder.continue_from(version);
                        self.configure(true);
                        let _ = reply.send(self.publish(origin, "reload"));
                    }
                    Some(Command::SetEndpoints(name, endpoints, reply)) => {
                        let origin = Instant::now();
                        let ok = self.builder.set_endpoints(&name, endpoints, UpstreamStatus::Ready);
                        if ok {
                            self.sync_checks(&name);
                        }
                        let _ = reply.send(ok.then(|| self.publish(origin, "endpoints set")));
                    }
                },
                Some(p) = probed.recv() => {
                    let origin = Instant::now();
                    let mut changed = BTreeSet::new();
                    let mut take = |p: Probed, changed: &mut BTreeSet<String>| {
                        let name = p.upstream.clone();
                        if self.checks.record(p) {
                            changed.insert(name);
                        }
                    };
                    take(p, &mut changed);
                    while let Ok(p) = probed.try_recv() {
                        take(p, &mut changed);
                    }
                    if !changed.is_empty() {
                        for name in &changed {
                            self.builder.set_checks(name, self.checks.results(name));
                        }
                        self.publish(origin, "health checks");
                    }
                }
                Some(zone) = zones.recv() => {
                    self.read_zone = zone.clone();
                    if zone.as_deref() != self.builder.zone() {
                        tracing::info!(zone = zone.as_deref().unwrap_or("(none)"), "gateway zone read from its Node");
                        self.builder.set_zone(zone.as_deref());
                        self.publish(Instant::now(), "zone");
                    }
                }
                Some(msg) = events.recv() => {
                    // The change reached the control side now; what else is queued joins it.
                    let origin = Instant::now();
                    let mut changed = BTreeSet::new();
                    self.handle(msg, &mut changed);
                    while let Ok(msg) = events.try_recv() {
                        self.handle(msg, &mut changed);
                    }
                    if !changed.is_empty() || self.status.needs_ready_snapshot() {
                        let started = Instant::now();
                        for name in &changed {
                            self.rebuild(name);
                        }
                        let version = self.publish(origin, "discovery");
                        tracing::info!(
                            %version,
                            upstreams_changed = changed.len(),
                            build_us = started.elapsed().as_micros() as u64,
                            "published discovered endpoints"
                        );
                    }
                }
            }
        }
        self.registries.clear();
        self.stop_zone_task();
        for (_, (_, task)) in self.secrets.drain() {
            task.abort();
        }
    }

    /// Applies the builder's spec: starts, keeps or stops registries, re-indexes
    /// discovery-backed upstreams and fills them in.
    fn configure(&mut self, log: bool) {
        let spec: Spec = self.builder.spec().clone();
        let wanted: HashMap<&str, &RegistrySpec> = spec
            .registries
            .iter()
            .map(|r| (r.name.as_str(), r))
            .collect();
        self.registries
            .retain(|name, r| wanted.get(name.as_str()).is_some_and(|w| **w == r.spec));
        for r in &spec.registries {
            if self.registries.contains_key(&r.name) {
                continue;
            }
            let generation = self.next_generation;
            self.next_generation += 1;
            let task = r
                .enabled
                .then(|| tokio::spawn(kubernetes::run(r.clone(), generation, self.tx.clone())));
            if log {
                tracing::info!(registry = %r.name, enabled = r.enabled, "registry (re)started");
            }
            self.registries.insert(
                r.name.clone(),
                Registry {
                    spec: r.clone(),
                    generation,
                    state: RegistryState::default(),
                    task,
                    last_error_code: None,
                    lists_done: 0,
                },
            );
        }
        self.discovered = spec
            .upstreams
            .iter()
            .filter_map(|u| match &u.source {
                UpstreamSource::Discovery(d) => Some((u.name.clone(), d.clone())),
                UpstreamSource::Static(_) => None,
            })
            .collect();
        for (name, d) in &self.discovered {
            if !self.registries.contains_key(&d.registry) {
                tracing::warn!(upstream = %name, registry = %d.registry, "registry not configured: the upstream answers 503");
            }
        }
        self.index.clear();
        for (name, d) in &self.discovered {
            self.index
                .entry((d.registry.clone(), d.namespace.clone(), d.service.clone()))
                .or_default()
                .push(name.clone());
        }
        let names: Vec<String> = self.discovered.keys().cloned().collect();
        for name in &names {
            self.rebuild(name);
        }
        // A reload's builder starts without check results: carry them over, and start
        // or stop checks as the upstreams say.
        self.checks
            .retain_upstreams(|u| spec.upstreams.iter().any(|s| s.name == u));
        for u in &spec.upstreams {
            if !self.discovered.contains_key(&u.name) {
                self.sync_checks(&u.name);
            }
        }
        self.configure_zone(&spec);
        self.configure_secrets(&spec, &wanted);
        let old = self.status.registries();
        let statuses: BTreeMap<String, RegistryStatus> = self
            .registries
            .iter()
            .map(|(name, r)| {
                let mut s = old.get(name).cloned().unwrap_or_default();
                s.enabled = r.spec.enabled;
                s.synced = r.state.synced();
                (name.clone(), s)
            })
            .collect();
        self.status.set_registries(statuses);
    }

    /// Starts a watcher for each TLS Secret of the spec in its (enabled) registry, keeps
    /// those whose registry is unchanged, stops the rest (the gateway keeps serving what
    /// they last delivered).
    fn configure_secrets(&mut self, spec: &Spec, registries: &HashMap<&str, &RegistrySpec>) {
        let wanted: HashMap<&SecretRef, &RegistrySpec> = spec
            .tls_secrets
            .iter()
            .filter_map(|s| {
                let r = registries.get(s.registry.as_str()).filter(|r| r.enabled);
                if r.is_none() {
                    tracing::warn!(%s, "registry not configured or disabled: the Secret is not watched");
                }
                Some((s, *r?))
            })
            .collect();
        self.secrets.retain(|s, (r, task)| {
            let keep = wanted.get(s).is_some_and(|w| *w == r);
            if !keep {
                task.abort();
            }
            keep
        });
        for (s, r) in wanted {
            if self.secrets.contains_key(s) {
                continue;
            }
            let task = tokio::spawn(kubernetes::watch_secret(
                r.clone(),
                s.clone(),
                self.secret_tx.clone(),
            ));
            self.secrets.insert(s.clone(), (r.clone(), task));
        }
    }

    fn handle(&mut self, msg: Msg, changed: &mut BTreeSet<String>) {
        let Some(reg) = self.registries.get_mut(&msg.registry) else {
            return;
        };
        if reg.generation != msg.generation {
            return;
        }
        let name = msg.registry;
        let keys: Vec<ServiceKey> = match msg.event {
            WatchEvent::Init => {
                reg.state.init(msg.kind);
                Vec::new()
            }
            WatchEvent::InitApply(obj) => {
                reg.state.init_apply(obj);
                Vec::new()
            }
            WatchEvent::InitDone => {
                let was_synced = reg.state.synced();
                let keys = reg.state.init_done(msg.kind);
                reg.lists_done += 1;
                reg.last_error_code = None;
                let synced = reg.state.synced();
                let relist = reg.lists_done > 2;
                let degraded = reg.state.services_are_refused();
                self.status.update_registry(&name, |s| {
                    s.synced = synced;
                    s.last_sync = Some(SystemTime::now());
                    s.last_error = None;
                    if !degraded {
                        s.degraded = None;
                    }
                    if relist {
                        s.relists += 1;
                    }
                });
                if synced && !was_synced {
                    tracing::info!(registry = %name, "registry synced");
                    // Every upstream of the registry leaves "not synced".
                    for (upstream, d) in &self.discovered {
                        if d.registry == name {
                            changed.insert(upstream.clone());
                        }
                    }
                }
                keys
            }
            WatchEvent::Apply(obj) => reg.state.apply(obj),
            WatchEvent::Delete(obj) => reg.state.delete(&obj),
            WatchEvent::Error(e) if e.code == Some(403) && msg.kind == Kind::Services => {
                // The seed's RBAC: list/watch on endpoints only. Route from what the
                // Endpoints say rather than leave every upstream unsynced (503).
                let was_synced = reg.state.synced();
                let first = !reg.state.services_are_refused();
                let keys = reg.state.services_refused();
                if first {
                    tracing::error!(
                        registry = %name,
                        error = %e.message,
                        "the API server refuses list/watch on services (403): ports are \
                         resolved from the Endpoints alone (a port name must match the \
                         Endpoints' port name; a single-port Endpoints is used whatever the \
                         port; a number must match an Endpoints port); grant list and watch \
                         on services to resolve Service ports"
                    );
                }
                let synced = reg.state.synced();
                self.status.update_registry(&name, |s| {
                    s.synced = synced;
                    s.degraded = Some(
                        "list/watch on services is forbidden (403): ports resolved from the \
                         Endpoints alone"
                            .into(),
                    );
                });
                if synced && !was_synced {
                    tracing::info!(registry = %name, "registry synced (from the Endpoints alone)");
                    for (upstream, d) in &self.discovered {
                        if d.registry == name {
                            changed.insert(upstream.clone());
                        }
                    }
                }
                keys
            }
            WatchEvent::Error(e) => {
                if reg.last_error_code != Some(e.code) {
                    reg.last_error_code = Some(e.code);
                    match e.code {
                        Some(401) | Some(403) => tracing::error!(
                            registry = %name,
                            code = e.code,
                            error = %e.message,
                            "the API server refused our credentials; check the token and that \
                             the ClusterRole grants list and watch on endpointslices, endpoints and services \
                             (retrying with backoff, re-reading the token)"
                        ),
                        _ => {
                            tracing::warn!(registry = %name, code = e.code, error = %e.message, "watch failed; retrying with backoff, last known endpoints stay in use")
                        }
                    }
                } else {
                    tracing::debug!(registry = %name, code = e.code, error = %e.message, "watch failed again");
                }
                self.status
                    .update_registry(&name, |s| s.last_error = Some(e.message.clone()));
                Vec::new()
            }
        };
        for (ns, svc) in keys {
            if let Some(upstreams) = self.index.get(&(name.clone(), ns, svc)) {
                changed.extend(upstreams.iter().cloned());
            }
        }
    }

    /// Recomputes one discovery-backed upstream from its registry's state.
    fn rebuild(&mut self, upstream: &str) {
        let Some(d) = self.discovered.get(upstream) else {
            return;
        };
        let registry: Arc<str> = Arc::from(d.registry.as_str());
        let (endpoints, status) = match self.registries.get(&d.registry) {
            Some(r) if r.spec.enabled && r.state.synced() => (
                r.state.endpoints(&d.namespace, &d.service, &d.port),
                UpstreamStatus::Ready,
            ),
            Some(r) if r.spec.enabled => (Vec::new(), UpstreamStatus::NotSynced { registry }),
            _ => (Vec::new(), UpstreamStatus::RegistryDisabled { registry }),
        };
        self.builder.set_discovered(upstream, endpoints, status);
        let name = upstream.to_owned();
        self.sync_checks(&name);
    }

    /// Starts and stops `upstream`'s health checks for its current endpoints, and puts
    /// their results in its table.
    fn sync_checks(&mut self, upstream: &str) {
        let spec = self
            .builder
            .spec()
            .upstreams
            .iter()
            .find(|u| u.name == upstream)
            .and_then(|u| u.settings.health_check.clone());
        let addrs = self.builder.checked_addrs(upstream);
        self.checks.sync(upstream, spec.as_ref(), &addrs);
        let results = self.checks.results(upstream);
        if spec.is_some() || !results.is_empty() {
            self.builder.set_checks(upstream, results);
        }
    }

    /// With a node name, no configured zone and an upstream that prefers a locality,
    /// reads the zone from the Node (once per node name and registry).
    fn configure_zone(&mut self, spec: &Spec) {
        let node = &spec.node;
        if let Some(zone) = &node.zone {
            self.builder.set_zone(Some(zone));
            self.stop_zone_task();
            return;
        }
        let registry = match &node.zone_from {
            Some(name) => spec.registries.iter().find(|r| &r.name == name),
            None => spec.registries.iter().find(|r| r.enabled),
        };
        let wanted = spec
            .upstreams
            .iter()
            .any(|u| u.settings.locality.prefer != crate::spec::Prefer::None);
        let query = match (&node.name, registry) {
            (Some(name), Some(r)) if r.enabled && wanted => (r.clone(), name.clone()),
            _ => {
                self.stop_zone_task();
                return;
            }
        };
        if let Some((q, _)) = &self.zone_task {
            if *q == query {
                // Asked already: what it said (or will say) stands.
                self.builder.set_zone(self.read_zone.as_deref());
                return;
            }
        }
        self.stop_zone_task();
        let task = tokio::spawn(kubernetes::node_zone(
            query.0.clone(),
            query.1.clone(),
            self.zone_tx.clone(),
        ));
        self.zone_task = Some((query, task));
    }

    fn stop_zone_task(&mut self) {
        if let Some((_, task)) = self.zone_task.take() {
            task.abort();
        }
        self.read_zone = None;
    }

    fn publish(&mut self, origin: Instant, why: &str) -> SnapshotVersion {
        let snapshot = self.builder.snapshot(origin);
        let version = snapshot.version;
        tracing::debug!(%version, why, "publishing snapshot");
        self.status.published(version);
        self.publisher.publish(snapshot);
        version
    }
}
