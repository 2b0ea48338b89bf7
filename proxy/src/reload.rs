//! Hot reload: the config file is watched (and SIGHUP asks for a reload); a changed file
//! is checked and, when good, becomes the running gateway's new services, routes,
//! upstreams and registries without a restart. A bad file is refused with a logged error
//! naming the field, and the running config stays.
//!
//! Runs on: the binary's main thread (applying) and one watcher thread (polling the
//! file); never on a worker.

use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::config::Config;
use crate::Gateway;

/// How often the watcher reads the file.
pub const POLL: Duration = Duration::from_secs(1);

/// Watches `paths` (the config file, and the certificate and key files of the TLS
/// listeners): sends once each time the content of one differs from what was last seen
/// (a rename over it or a Kubernetes mount's `..data` symlink swap included: the path is
/// read through its links). While a file cannot be read (between the two renames of a
/// swap), nothing is sent until it can. Stops when the receiver is dropped.
pub fn watch(
    paths: Vec<PathBuf>,
    every: Duration,
) -> std::io::Result<crossbeam_channel::Receiver<()>> {
    let (tx, rx) = crossbeam_channel::bounded(1);
    let read_all =
        move || -> Option<Vec<Vec<u8>>> { paths.iter().map(|p| std::fs::read(p).ok()).collect() };
    let mut seen = read_all();
    std::thread::Builder::new()
        .name("strait-config-watch".into())
        .spawn(move || loop {
            std::thread::park_timeout(every);
            let Some(now) = read_all() else {
                continue;
            };
            if seen.as_ref() != Some(&now) {
                seen = Some(now);
                match tx.try_send(()) {
                    Ok(()) | Err(crossbeam_channel::TrySendError::Full(())) => {}
                    Err(crossbeam_channel::TrySendError::Disconnected(())) => return,
                }
            }
        })?;
    Ok(rx)
}

/// What a reload did.
#[derive(Debug, PartialEq, Eq)]
pub enum Outcome {
    /// The new spec is in force on every worker.
    Applied,
    /// The file was refused; the running config stays.
    Refused,
}

/// Loads `path` and applies it to `gateway`. `workers` is the `--workers` override the
/// gateway started with. Settings that need a restart are logged and kept as they are.
pub fn apply(gateway: &mut Gateway, path: &Path, workers: Option<usize>) -> Outcome {
    let mut config = match Config::load(path) {
        Ok(c) => c,
        Err(e) => {
            gateway.reload_refused();
            tracing::error!("config reload refused, the running config stays: {e}");
            return Outcome::Refused;
        }
    };
    if workers.is_some() {
        config.workers = gateway.config().workers;
    }
    for field in needs_restart(gateway.config(), &config) {
        tracing::warn!(
            field,
            "config reload: `{field}` changed, which needs a restart; keeping the running value"
        );
    }
    match gateway.reload(config) {
        Ok(version) => {
            tracing::info!(%version, "config reloaded");
            Outcome::Applied
        }
        Err(e) => {
            tracing::error!("config reload refused, the running config stays: {e}");
            Outcome::Refused
        }
    }
}

/// The top-level settings that differ and are not reloaded (CONFIG.md, "Reload").
pub fn needs_restart(running: &Config, new: &Config) -> Vec<&'static str> {
    let mut changed = Vec::new();
    if running.workers != new.workers {
        changed.push("workers");
    }
    if running.driver != new.driver {
        changed.push("driver");
    }
    if running.listeners != new.listeners {
        changed.push("listeners");
    }
    if running.access_log != new.access_log {
        changed.push("access_log");
    }
    if running.http != new.http {
        changed.push("http");
    }
    if running.shutdown != new.shutdown {
        changed.push("shutdown");
    }
    if running.admin != new.admin {
        changed.push("admin");
    }
    changed
}
