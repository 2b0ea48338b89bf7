//! YAML text → [`FileConfig`] → checked [`Config`].
//!
//! Runs on: the thread that loads the config (startup, `strait check`, later reload); never
//! on a worker. Pure: no I/O, no name resolution. The first problem found refuses the whole
//! file with a [`ConfigError`] naming the field path (`services[0].routes[1].upstream`) and
//! its line: serde's own errors carry a location, the semantic checks below look the path up
//! in [`Lines`].
//!
//! One file per section of the config, each an `impl Checker` block: `yaml.rs` (serde and
//! its errors), `listeners.rs`, `settings.rs` (access log, http, shutdown, admin),
//! `services.rs` (services, routes, hosts, paths), `upstreams.rs` (upstreams, nodes,
//! discovery references, passive health) and `registries.rs` (Kubernetes clusters). This
//! file has the entry point, the whole-config check that calls them, and the checks they
//! share (names, durations, counts, upstream references).

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::num::NonZeroUsize;
use std::time::Duration;

use strait_discovery::Spec;

use super::file::{FileConfig, FileDriver};
use super::lines::Lines;
use super::{Config, ConfigError, Driver, ListenAddr, ListenerConfig, Protocol};

mod balance;
mod listeners;
mod registries;
mod routes;
mod services;
mod settings;
mod upstreams;
mod yaml;

type Result<T, E = ConfigError> = std::result::Result<T, E>;

/// Parses and checks YAML text.
pub(super) fn from_yaml(text: &str) -> Result<Config> {
    let lines = Lines::parse(text);
    let file = yaml::deserialize(text, &lines)?;
    let checker = Checker { lines: &lines };
    checker.config(file)
}

/// The semantic checks, with what they need to name a line.
struct Checker<'a> {
    lines: &'a Lines,
}

impl Checker<'_> {
    fn error(&self, field: impl Into<String>, message: impl Into<String>) -> ConfigError {
        let field = field.into();
        ConfigError {
            file: None,
            line: self.lines.of(&field),
            field,
            message: message.into(),
        }
    }

    fn config(&self, file: FileConfig) -> Result<Config> {
        let FileConfig {
            workers,
            driver,
            listeners,
            access_log,
            http,
            services,
            upstreams,
            registries,
            shutdown,
            admin,
            node,
        } = file;
        let workers = match workers {
            None => None,
            Some(n) => Some(
                NonZeroUsize::new(n).ok_or_else(|| self.error("workers", "must be at least 1"))?,
            ),
        };
        let driver = match driver {
            FileDriver::Auto => Driver::Auto,
            FileDriver::IoUring => Driver::IoUring,
            FileDriver::Legacy => Driver::Legacy,
        };
        let defined: HashSet<&str> = upstreams.iter().map(|u| u.name.as_str()).collect();
        let mut listeners = self.listeners(listeners, &defined)?;
        let access_log = self.access_log(access_log)?;
        let http = self.http(http)?;
        for l in &mut listeners {
            let h2 = l.protocol == Protocol::Http && http.http2.enabled;
            if let Some(t) = &mut l.tls {
                t.h2 = h2;
            }
        }
        let shutdown = self.shutdown(shutdown)?;
        let admin = self.admin(admin)?;
        let taken = |l: &ListenerConfig| match l.addr {
            ListenAddr::Inet(a) => a.port() != 0 && Some(a) == admin.listen,
            ListenAddr::Unix(_) => false,
        };
        if let Some(i) = listeners.iter().position(taken) {
            return Err(self.error(
                "admin.listen",
                format!(
                    "address {} is already used by listeners[{i}]",
                    listeners[i].addr
                ),
            ));
        }
        let services = self.services(services, &defined)?;
        let registries = self.registries(registries)?;
        let tls_secrets = self.tls_secrets(&listeners, &registries)?;
        let upstreams = self.upstreams(upstreams)?;
        let node = self.node(node, &registries)?;
        Ok(Config {
            workers,
            driver,
            listeners,
            access_log,
            http,
            shutdown,
            admin,
            spec: Spec {
                services,
                upstreams,
                registries,
                tls_secrets,
                node,
            },
        })
    }

    /// Each item of the list at `list` (e.g. `services[0].routes`) has a non-empty name,
    /// free of whitespace, unique in the list.
    fn unique_names<'n>(
        &self,
        list: &str,
        what: &str,
        names: impl Iterator<Item = &'n str>,
    ) -> Result<()> {
        let mut seen: HashMap<&str, usize> = HashMap::new();
        for (i, name) in names.enumerate() {
            let field = format!("{list}[{i}].name");
            if name.is_empty() {
                return Err(self.error(field, format!("{what} name must not be empty")));
            }
            if name.chars().any(|c| c.is_whitespace() || c.is_control()) {
                return Err(self.error(
                    field,
                    format!("{what} name {name:?} must not contain whitespace"),
                ));
            }
            if let Some(first) = seen.insert(name, i) {
                return Err(self.error(
                    field,
                    format!("duplicate {what} name {name:?} (also {list}[{first}])"),
                ));
            }
        }
        Ok(())
    }

    fn socket_addr(&self, field: &str, text: &str) -> Result<SocketAddr> {
        text.trim().parse().map_err(|_| {
            self.error(
                field,
                format!(
                    "{text:?} is not an IP address and port (e.g. 127.0.0.1:8080, [::1]:8080); \
                     host names are not resolved"
                ),
            )
        })
    }

    /// A humantime duration above zero, or `default` when absent.
    fn duration(&self, field: &str, text: Option<&str>, default: Duration) -> Result<Duration> {
        let Some(text) = text else {
            return Ok(default);
        };
        match humantime::parse_duration(text.trim()) {
            Ok(d) if d.is_zero() => Err(self.error(field, "duration must be greater than 0")),
            Ok(d) => Ok(d),
            Err(e) => Err(self.error(field, format!("invalid duration {text:?}: {e}"))),
        }
    }

    /// A humantime duration, zero allowed, or `default` when absent.
    fn duration_or_zero(
        &self,
        field: &str,
        text: Option<&str>,
        default: Duration,
    ) -> Result<Duration> {
        match text.map(str::trim) {
            None => Ok(default),
            Some("0") => Ok(Duration::ZERO),
            Some(text) => humantime::parse_duration(text)
                .map_err(|e| self.error(field, format!("invalid duration {text:?}: {e}"))),
        }
    }

    /// A count above zero, or `default` when absent.
    fn positive<T: From<u8> + PartialEq + Copy>(
        &self,
        field: &str,
        value: Option<T>,
        default: T,
    ) -> Result<T> {
        match value {
            Some(n) if n == T::from(0) => Err(self.error(field, "must be greater than 0")),
            Some(n) => Ok(n),
            None => Ok(default),
        }
    }

    /// `name` is an upstream the config defines.
    fn upstream_ref(&self, field: &str, name: &str, defined: &HashSet<&str>) -> Result<()> {
        if defined.contains(name) {
            Ok(())
        } else {
            Err(self.error(field, format!("upstream {name:?} is not defined")))
        }
    }
}

#[cfg(test)]
mod route_tests;
#[cfg(test)]
mod tests;
#[cfg(test)]
mod tls_tests;
