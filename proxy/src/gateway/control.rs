//! Running a gateway until it is told to stop: the loop the `strait` binary hands its
//! signals to, in the library so that tests drive it the same way.
//!
//! [`run`] starts a gateway and answers [`Control`]s: `Reload` (SIGHUP) and a change of
//! the config file reload it (CONFIG.md, "Reload"); `Drain` (SIGTERM) stops it gracefully
//! (readiness off, `shutdown.delay`, drained within `shutdown.timeout`), and a second
//! `Drain` or `Stop` meanwhile stops it at once; `Stop` (SIGINT) stops it at once. A
//! sender that goes away counts as `Drain`. What the TLS Secrets' watchers see is
//! applied here too (new certificates for new handshakes).
//!
//! Runs on: the caller's thread (the binary's main thread, or a test), plus the config
//! file watcher's thread. Never on a worker.

use std::path::PathBuf;

use crossbeam_channel::{select, Receiver};

use super::{Gateway, StartError};
use crate::config::Config;
use crate::reload;

/// What the process asks of a running gateway.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Control {
    /// Read the config file again and apply it (SIGHUP).
    Reload,
    /// Stop gracefully (SIGTERM); during a graceful stop, stop at once.
    Drain,
    /// Stop at once (SIGINT).
    Stop,
}

impl Control {
    /// A thread that turns the `wanted` signals into controls, as `strait run` does:
    /// SIGHUP reloads, SIGTERM drains, SIGINT (and any other) stops.
    pub fn from_signals(wanted: &[i32]) -> std::io::Result<Receiver<Control>> {
        use signal_hook::consts::{SIGHUP, SIGTERM};
        let mut signals = signal_hook::iterator::Signals::new(wanted)?;
        let (tx, rx) = crossbeam_channel::unbounded();
        std::thread::Builder::new()
            .name("strait-signals".into())
            .spawn(move || {
                for sig in signals.forever() {
                    let control = match sig {
                        SIGHUP => Control::Reload,
                        SIGTERM => Control::Drain,
                        _ => Control::Stop,
                    };
                    if tx.send(control).is_err() {
                        break;
                    }
                }
            })?;
        Ok(rx)
    }
}

/// The config file a gateway runs from: watched, and read again on a reload.
#[derive(Debug, Clone)]
pub struct ConfigSource {
    pub path: PathBuf,
    /// `--workers`, which overrides the file's `workers:` on every reload too.
    pub workers: Option<usize>,
}

/// Starts a gateway from `config` and runs it until `control` stops it (see the module
/// doc); returns once it has stopped. `started` sees the gateway once it accepts (the
/// binary prints its addresses there). With a `source`, the file is watched and reloaded.
pub fn run(
    config: Config,
    source: Option<ConfigSource>,
    control: &Receiver<Control>,
    started: impl FnOnce(&Gateway),
) -> Result<(), StartError> {
    let mut gateway = Gateway::start(config)?;
    started(&gateway);
    let changed = match &source {
        Some(s) => {
            let mut paths = vec![s.path.clone()];
            for l in &gateway.config().listeners {
                for c in l.tls.iter().flat_map(|t| &t.certificates) {
                    if let Some((cert, key)) = c.files() {
                        paths.push(cert.clone());
                        paths.push(key.clone());
                    }
                }
            }
            reload::watch(paths, reload::POLL)?
        }
        None => crossbeam_channel::never(),
    };
    let reload = |gateway: &mut Gateway| {
        if let Some(s) = &source {
            reload::apply(gateway, &s.path, s.workers);
        }
    };
    let rotation = crossbeam_channel::tick(strait_discovery::tls::TICKET_ROTATION);
    let secrets = gateway.secret_events();
    loop {
        select! {
            recv(changed) -> _ => reload(&mut gateway),
            recv(secrets) -> event => {
                if let Ok(event) = event {
                    gateway.apply_secret(event);
                }
            }
            recv(rotation) -> _ => gateway.rotate_tickets(),
            recv(control) -> c => match c {
                Ok(Control::Reload) => reload(&mut gateway),
                Ok(Control::Drain) | Err(_) => {
                    drain(&mut gateway, control);
                    break;
                }
                Ok(Control::Stop) => {
                    tracing::info!("stopping now");
                    break;
                }
            },
        }
    }
    gateway.shutdown();
    Ok(())
}

/// A graceful stop, until the workers exit or another `Drain` or `Stop` cuts it short.
/// No reload while stopping.
fn drain(gateway: &mut Gateway, control: &Receiver<Control>) {
    gateway.begin_shutdown();
    let exited = gateway.exited().clone();
    let mut control = Some(control);
    loop {
        let cut = control.map_or_else(crossbeam_channel::never, Receiver::clone);
        select! {
            recv(exited) -> _ => {
                tracing::info!("drained; exiting");
                return;
            }
            recv(cut) -> c => match c {
                Ok(Control::Reload) => {}
                Ok(c) => {
                    tracing::info!(control = ?c, "second stop request: stopping now");
                    return;
                }
                // Nobody left to cut it short: wait for the drain.
                Err(_) => control = None,
            },
        }
    }
}

#[cfg(test)]
mod tests;
