//! YAML text → [`FileConfig`] → checked [`Config`].
//!
//! Runs on: the thread that loads the config (startup, `strait check`, later reload); never
//! on a worker. Pure: no I/O, no name resolution. The first problem found refuses the whole
//! file with a [`ConfigError`] naming the field path (`services[0].routes[1].upstream`) and
//! its line: serde's own errors carry a location, the semantic checks below look the path up
//! in [`Lines`].

use std::collections::{HashMap, HashSet};
use std::net::{Ipv6Addr, SocketAddr};
use std::num::NonZeroUsize;
use std::time::Duration;

use strait_discovery::route::{MethodSet, METHODS};
use strait_discovery::spec::{
    Connection, Credentials, DiscoveryRef, NodeSpec, PassHost, PassiveHealth, PoolSettings,
    RegistrySpec, Resource, RouteSpec, ServicePort, ServiceSpec, UpstreamSettings, UpstreamSource,
    UpstreamSpec,
};
use strait_discovery::Spec;

use super::file::{
    FileAccessLog, FileAdmin, FileConfig, FileDiscovery, FileDriver, FileHttp, FileListener,
    FileNode, FilePassHost, FilePassiveHealth, FilePort, FileProtocol, FileRegistry, FileResource,
    FileService, FileShutdown, FileUpstream,
};
use super::lines::Lines;
use super::{
    AccessLogConfig, AdminConfig, Config, ConfigError, Driver, HttpConfig, ListenerConfig,
    Protocol, ShutdownConfig, TcpConfig,
};

type Result<T, E = ConfigError> = std::result::Result<T, E>;

/// Largest node weight accepted.
const MAX_WEIGHT: u32 = 10_000;

/// Parses and checks YAML text.
pub(super) fn from_yaml(text: &str) -> Result<Config> {
    let lines = Lines::parse(text);
    let file = deserialize(text, &lines)?;
    let checker = Checker { lines: &lines };
    checker.config(file)
}

/// Runs serde, turning its error into a [`ConfigError`] with one path and one line.
fn deserialize(text: &str, lines: &Lines) -> Result<FileConfig> {
    // serde_norway places a duplicate key at the start of its mapping; yaml-rust2 knows better.
    if let Some((field, line)) = lines.duplicate() {
        let key = field.rsplit('.').next().unwrap_or(field);
        let first = lines
            .of(field)
            .map_or(String::new(), |l| format!(" (first at line {l})"));
        return Err(ConfigError {
            file: None,
            field: field.to_owned(),
            line: Some(line),
            message: format!("duplicate key `{key}`{first}"),
        });
    }
    // Syntax first: serde_norway hands the events before a syntax error to the struct, which
    // may then complain of a missing field instead of the real problem.
    if let Err(e) = serde_norway::from_str::<serde_norway::Value>(text) {
        return Err(yaml_error(String::new(), &e, lines));
    }
    let de = serde_norway::Deserializer::from_str(text);
    serde_path_to_error::deserialize(de).map_err(|e| {
        let field = match e.path().to_string() {
            root if root == "." => String::new(),
            path => path,
        };
        yaml_error(field, e.inner(), lines)
    })
}

/// A serde_norway error at `field` as a [`ConfigError`].
fn yaml_error(field: String, e: &serde_norway::Error, lines: &Lines) -> ConfigError {
    let location = e.location();
    let mut message = e.to_string();
    // The line goes into `line`, not into the message.
    if let Some(loc) = &location {
        let at = format!(" at line {} column {}", loc.line(), loc.column());
        message = message.replacen(&at, "", 1);
    }
    // serde_norway puts its own (sometimes shorter) path first; `field` has the full one.
    if let Some((head, rest)) = message.split_once(": ") {
        if !field.is_empty() && !head.contains(' ') && field.starts_with(head) {
            message = rest.to_owned();
        }
    }
    message = plain_types(&message);
    let line = location.map(|l| l.line()).or_else(|| lines.of(&field));
    ConfigError {
        file: None,
        field,
        line,
        message,
    }
}

/// Rust type names in serde's "expected …" replaced by what a YAML author writes.
fn plain_types(message: &str) -> String {
    let mut out = message
        .replace("expected usize", "expected a non-negative integer")
        .replace("expected u32", "expected a non-negative integer")
        .replace("expected a boolean", "expected true or false");
    // "expected struct FileService" → "expected a mapping"
    if let Some(i) = out.find("expected struct ") {
        let name = &out[i + "expected struct ".len()..];
        let end = name
            .find(|c: char| !c.is_alphanumeric())
            .unwrap_or(name.len());
        out.replace_range(i..i + "expected struct ".len() + end, "expected a mapping");
    }
    out
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
        let listeners = self.listeners(listeners, &defined)?;
        let access_log = self.access_log(access_log)?;
        let http = self.http(http)?;
        let shutdown = self.shutdown(shutdown)?;
        let admin = self.admin(admin)?;
        let taken = |l: &ListenerConfig| l.addr.port() != 0 && Some(l.addr) == admin.listen;
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
        let upstreams = self.upstreams(upstreams)?;
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
            },
        })
    }

    // === names, addresses, durations ===

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
    fn positive(&self, field: &str, value: Option<usize>, default: usize) -> Result<usize> {
        match value {
            Some(0) => Err(self.error(field, "must be greater than 0")),
            Some(n) => Ok(n),
            None => Ok(default),
        }
    }

    /// A service host: lower-cased; an exact name, a `*.suffix` wildcard or `[v6]`.
    fn host(&self, field: &str, text: &str) -> Result<String> {
        let host = text.trim().to_ascii_lowercase();
        let bad = |why: &str| Err(self.error(field, format!("invalid host {text:?}: {why}")));
        if host.is_empty() {
            return bad("empty");
        }
        if let Some(inner) = host.strip_prefix('[') {
            return match inner.strip_suffix(']').map(str::parse::<Ipv6Addr>) {
                Some(Ok(_)) => Ok(host),
                _ => bad("expected an IPv6 address in brackets, as in [::1]"),
            };
        }
        let name = host.strip_prefix("*.").unwrap_or(&host);
        if name.contains('*') {
            return bad("`*` is only allowed as the whole first label, as in *.example.com");
        }
        if name.contains(':') {
            return bad("a host is a name without a port");
        }
        if name.len() > 253 {
            return bad("longer than 253 characters");
        }
        for label in name.split('.') {
            if label.is_empty() {
                return bad("empty label (a leading, trailing or double dot)");
            }
            if label.len() > 63 {
                return bad("a label is longer than 63 characters");
            }
            if !label
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
            {
                return bad("only letters, digits, `-`, `_` and `.` are allowed");
            }
        }
        Ok(host)
    }

    /// A path prefix: starts with `/`, no query, fragment or whitespace.
    fn path(&self, field: &str, path: &str) -> Result<()> {
        if !path.starts_with('/') {
            return Err(self.error(field, format!("path {path:?} must start with `/`")));
        }
        if path.contains(['?', '#']) || path.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err(self.error(
                field,
                format!("path {path:?} must not contain `?`, `#` or whitespace"),
            ));
        }
        Ok(())
    }

    // === listeners, access log, http ===

    fn listeners(
        &self,
        items: Vec<FileListener>,
        upstreams: &HashSet<&str>,
    ) -> Result<Vec<ListenerConfig>> {
        if items.is_empty() {
            return Err(self.error("listeners", "at least one listener is required"));
        }
        self.unique_names(
            "listeners",
            "listener",
            items.iter().map(|l| l.name.as_str()),
        )?;
        let mut seen: HashMap<SocketAddr, usize> = HashMap::new();
        let mut out = Vec::with_capacity(items.len());
        for (i, item) in items.into_iter().enumerate() {
            let field = format!("listeners[{i}].address");
            let addr = self.socket_addr(&field, &item.address)?;
            // Port 0 (any free port) is allowed: tests bind 127.0.0.x:0.
            if let Some(first) = seen.insert(addr, i) {
                return Err(self.error(
                    field,
                    format!("address {addr} is already used by listeners[{first}]"),
                ));
            }
            let protocol = self.protocol(&format!("listeners[{i}]"), &item, upstreams)?;
            out.push(ListenerConfig {
                name: item.name,
                addr,
                protocol,
            });
        }
        Ok(out)
    }

    /// A listener's protocol: `http` takes none of the `tcp` keys; `tcp` needs a defined
    /// `upstream`.
    fn protocol(
        &self,
        at: &str,
        item: &FileListener,
        upstreams: &HashSet<&str>,
    ) -> Result<Protocol> {
        if item.protocol == FileProtocol::Http {
            let tcp_only = [
                ("upstream", item.upstream.is_some()),
                ("idle_timeout", item.idle_timeout.is_some()),
                ("drain_timeout", item.drain_timeout.is_some()),
            ];
            if let Some((key, _)) = tcp_only.iter().find(|(_, set)| *set) {
                return Err(self.error(
                    format!("{at}.{key}"),
                    format!(
                        "`{key}` is only for `protocol: tcp` listeners (an http listener \
                         routes by `services`)"
                    ),
                ));
            }
            return Ok(Protocol::Http);
        }
        let field = format!("{at}.upstream");
        let Some(upstream) = &item.upstream else {
            return Err(self.error(field, "a `protocol: tcp` listener needs an `upstream`"));
        };
        self.upstream_ref(&field, upstream, upstreams)?;
        let drain = self.duration_or_zero(
            &format!("{at}.drain_timeout"),
            item.drain_timeout.as_deref(),
            TcpConfig::DEFAULT_DRAIN_TIMEOUT,
        )?;
        Ok(Protocol::Tcp(TcpConfig {
            upstream: upstream.clone(),
            idle_timeout: self.duration(
                &format!("{at}.idle_timeout"),
                item.idle_timeout.as_deref(),
                TcpConfig::DEFAULT_IDLE_TIMEOUT,
            )?,
            drain_timeout: (!drain.is_zero()).then_some(drain),
        }))
    }

    fn access_log(&self, file: FileAccessLog) -> Result<AccessLogConfig> {
        if file.path.as_ref().is_some_and(|p| p.as_os_str().is_empty()) {
            return Err(self.error(
                "access_log.path",
                "must not be empty (leave it out for standard output)",
            ));
        }
        Ok(AccessLogConfig {
            enabled: file.enabled,
            path: file.path,
        })
    }

    fn http(&self, file: FileHttp) -> Result<HttpConfig> {
        let d = HttpConfig::default();
        Ok(HttpConfig {
            client_header_timeout: self.duration(
                "http.client_header_timeout",
                file.client_header_timeout.as_deref(),
                d.client_header_timeout,
            )?,
            keepalive_timeout: self.duration(
                "http.keepalive_timeout",
                file.keepalive_timeout.as_deref(),
                d.keepalive_timeout,
            )?,
            client_body_timeout: self.duration(
                "http.client_body_timeout",
                file.client_body_timeout.as_deref(),
                d.client_body_timeout,
            )?,
            max_request_line_bytes: self.positive(
                "http.max_request_line_bytes",
                file.max_request_line_bytes,
                d.max_request_line_bytes,
            )?,
            max_request_head_bytes: self.positive(
                "http.max_request_head_bytes",
                file.max_request_head_bytes,
                d.max_request_head_bytes,
            )?,
            tunnel_idle_timeout: self.duration(
                "http.tunnel_idle_timeout",
                file.tunnel_idle_timeout.as_deref(),
                d.tunnel_idle_timeout,
            )?,
            max_connections_per_worker: self.positive(
                "http.max_connections_per_worker",
                file.max_connections_per_worker,
                d.max_connections_per_worker,
            )?,
            max_headers: match self.positive("http.max_headers", file.max_headers, d.max_headers)? {
                n if n > crate::http::head::MAX_HEADERS => {
                    return Err(self.error(
                        "http.max_headers",
                        format!("must be at most {}", crate::http::head::MAX_HEADERS),
                    ))
                }
                n => n,
            },
            max_request_body_bytes: file
                .max_request_body_bytes
                .unwrap_or(d.max_request_body_bytes),
        })
    }

    fn shutdown(&self, file: FileShutdown) -> Result<ShutdownConfig> {
        let d = ShutdownConfig::default();
        Ok(ShutdownConfig {
            delay: self.duration_or_zero("shutdown.delay", file.delay.as_deref(), d.delay)?,
            timeout: self.duration("shutdown.timeout", file.timeout.as_deref(), d.timeout)?,
        })
    }

    fn admin(&self, file: FileAdmin) -> Result<AdminConfig> {
        if file.enabled == Some(false) {
            return Ok(AdminConfig { listen: None });
        }
        let listen = match file.listen.as_deref() {
            None => AdminConfig::DEFAULT_LISTEN,
            Some(text) => self.socket_addr("admin.listen", text)?,
        };
        Ok(AdminConfig {
            listen: Some(listen),
        })
    }

    // === services and routes ===

    fn services(
        &self,
        items: Vec<FileService>,
        upstreams: &HashSet<&str>,
    ) -> Result<Vec<ServiceSpec>> {
        self.unique_names("services", "service", items.iter().map(|s| s.name.as_str()))?;
        items
            .into_iter()
            .enumerate()
            .map(|(i, s)| self.service(&format!("services[{i}]"), s, upstreams))
            .collect()
    }

    fn service(
        &self,
        at: &str,
        service: FileService,
        upstreams: &HashSet<&str>,
    ) -> Result<ServiceSpec> {
        let mut hosts: Vec<String> = Vec::with_capacity(service.hosts.len());
        for (j, text) in service.hosts.iter().enumerate() {
            let field = format!("{at}.hosts[{j}]");
            let host = self.host(&field, text)?;
            if let Some(first) = hosts.iter().position(|h| *h == host) {
                return Err(self.error(
                    field,
                    format!("host {host:?} is listed twice (also {at}.hosts[{first}])"),
                ));
            }
            hosts.push(host);
        }
        let path_prefix = match service.path_prefix {
            None => "/".to_owned(),
            Some(p) => {
                self.path(&format!("{at}.path_prefix"), &p)?;
                p
            }
        };
        if let Some(name) = &service.upstream {
            self.upstream_ref(&format!("{at}.upstream"), name, upstreams)?;
        } else if service.routes.is_empty() {
            return Err(self.error(
                format!("{at}.upstream"),
                "a service without routes needs an upstream",
            ));
        }
        let list = format!("{at}.routes");
        self.unique_names(
            &list,
            "route",
            service.routes.iter().map(|r| r.name.as_str()),
        )?;
        let mut routes = Vec::with_capacity(service.routes.len());
        for (j, route) in service.routes.into_iter().enumerate() {
            let at = format!("{list}[{j}]");
            self.path(&format!("{at}.path"), &route.path)?;
            let upper: Vec<String> = route
                .methods
                .iter()
                .map(|m| m.trim().to_ascii_uppercase())
                .collect();
            let methods =
                MethodSet::try_from_names(upper.iter().map(String::as_str)).map_err(|bad| {
                    let k = upper.iter().position(|m| m == bad).unwrap_or(0);
                    self.error(
                        format!("{at}.methods[{k}]"),
                        format!("unknown method {bad:?} (known: {})", METHODS.join(", ")),
                    )
                })?;
            match (&route.upstream, &service.upstream) {
                (Some(name), _) => self.upstream_ref(&format!("{at}.upstream"), name, upstreams)?,
                (None, Some(_)) => {}
                (None, None) => {
                    return Err(self.error(
                        format!("{at}.upstream"),
                        "no upstream: set `upstream` on the route or on its service",
                    ))
                }
            }
            routes.push(RouteSpec {
                name: route.name,
                path: route.path,
                strip_prefix: route.strip_prefix,
                methods,
                upstream: route.upstream,
                max_body_bytes: route.max_body_bytes,
            });
        }
        Ok(ServiceSpec {
            name: service.name,
            hosts,
            path_prefix,
            upstream: service.upstream,
            routes,
        })
    }

    fn upstream_ref(&self, field: &str, name: &str, defined: &HashSet<&str>) -> Result<()> {
        if defined.contains(name) {
            Ok(())
        } else {
            Err(self.error(field, format!("upstream {name:?} is not defined")))
        }
    }

    // === upstreams ===

    fn upstreams(&self, items: Vec<FileUpstream>) -> Result<Vec<UpstreamSpec>> {
        self.unique_names(
            "upstreams",
            "upstream",
            items.iter().map(|u| u.name.as_str()),
        )?;
        items
            .into_iter()
            .enumerate()
            .map(|(i, u)| self.upstream(&format!("upstreams[{i}]"), u))
            .collect()
    }

    fn upstream(&self, at: &str, upstream: FileUpstream) -> Result<UpstreamSpec> {
        let source = match (upstream.nodes, upstream.discovery) {
            (Some(nodes), None) => UpstreamSource::Static(self.nodes(at, nodes)?),
            (None, Some(discovery)) => UpstreamSource::Discovery(self.discovery(at, discovery)?),
            (Some(_), Some(_)) => {
                return Err(self.error(
                    format!("{at}.discovery"),
                    "`nodes` and `discovery` exclude each other: give one",
                ))
            }
            (None, None) => {
                return Err(self.error(at, "an upstream needs `nodes` or `discovery`"));
            }
        };
        let pass_host = match (upstream.pass_host, upstream.upstream_host) {
            (FilePassHost::Rewrite, Some(host)) => {
                PassHost::Rewrite(self.host_header(&format!("{at}.upstream_host"), &host)?)
            }
            (FilePassHost::Rewrite, None) => {
                return Err(self.error(
                    format!("{at}.pass_host"),
                    "`pass_host: rewrite` needs `upstream_host`",
                ))
            }
            (_, Some(_)) => {
                return Err(self.error(
                    format!("{at}.upstream_host"),
                    "`upstream_host` is only used with `pass_host: rewrite`",
                ))
            }
            (FilePassHost::Pass, None) => PassHost::Pass,
            (FilePassHost::Node, None) => PassHost::Node,
        };
        let d = UpstreamSettings::default();
        let t = &upstream.timeouts;
        let k = &upstream.keepalive;
        let h = &upstream.passive_health;
        let settings = UpstreamSettings {
            connect_timeout: self.duration(
                &format!("{at}.timeouts.connect"),
                t.connect.as_deref(),
                d.connect_timeout,
            )?,
            response_header_timeout: self.duration(
                &format!("{at}.timeouts.response_header"),
                t.response_header.as_deref(),
                d.response_header_timeout,
            )?,
            read_timeout: self.duration(
                &format!("{at}.timeouts.read"),
                t.read.as_deref(),
                d.read_timeout,
            )?,
            write_timeout: self.duration(
                &format!("{at}.timeouts.write"),
                t.write.as_deref(),
                d.write_timeout,
            )?,
            retries: upstream.retries,
            retry_body_bytes: upstream.retry_body_bytes.unwrap_or(d.retry_body_bytes),
            pass_host,
            pool: PoolSettings {
                max_idle_per_endpoint: k.max_idle.unwrap_or(d.pool.max_idle_per_endpoint),
                idle_timeout: self.duration(
                    &format!("{at}.keepalive.idle_timeout"),
                    k.idle_timeout.as_deref(),
                    d.pool.idle_timeout,
                )?,
                max_requests_per_connection: k
                    .max_requests
                    .unwrap_or(d.pool.max_requests_per_connection),
            },
            health: self.passive_health(&format!("{at}.passive_health"), h, &d.health)?,
        };
        Ok(UpstreamSpec {
            name: upstream.name,
            source,
            settings,
        })
    }

    fn passive_health(
        &self,
        at: &str,
        file: &FilePassiveHealth,
        d: &PassiveHealth,
    ) -> Result<PassiveHealth> {
        let health = PassiveHealth {
            consecutive_failures: file.consecutive_failures.unwrap_or(d.consecutive_failures),
            base_ejection: self.duration(
                &format!("{at}.base_ejection"),
                file.base_ejection.as_deref(),
                d.base_ejection,
            )?,
            max_ejection: self.duration(
                &format!("{at}.max_ejection"),
                file.max_ejection.as_deref(),
                d.max_ejection,
            )?,
            max_ejected_percent: file.max_ejected_percent.unwrap_or(d.max_ejected_percent),
        };
        if health.max_ejected_percent > 100 {
            return Err(self.error(
                format!("{at}.max_ejected_percent"),
                format!("{} is not a percentage (0-100)", health.max_ejected_percent),
            ));
        }
        if health.max_ejection < health.base_ejection {
            return Err(self.error(
                format!("{at}.max_ejection"),
                "must not be shorter than `base_ejection`",
            ));
        }
        Ok(health)
    }

    fn nodes(&self, at: &str, nodes: Vec<FileNode>) -> Result<Vec<NodeSpec>> {
        if nodes.is_empty() {
            return Err(self.error(format!("{at}.nodes"), "at least one node is required"));
        }
        let mut seen: HashMap<SocketAddr, usize> = HashMap::new();
        let mut out = Vec::with_capacity(nodes.len());
        for (j, node) in nodes.iter().enumerate() {
            let field = format!("{at}.nodes[{j}].address");
            let addr = self.socket_addr(&field, &node.address)?;
            if addr.port() == 0 {
                return Err(self.error(field, format!("node {addr} has port 0")));
            }
            if let Some(first) = seen.insert(addr, j) {
                return Err(self.error(
                    field,
                    format!("node {addr} is listed twice (also {at}.nodes[{first}])"),
                ));
            }
            let weight = node.weight.unwrap_or(1);
            if weight > MAX_WEIGHT {
                return Err(self.error(
                    format!("{at}.nodes[{j}].weight"),
                    format!("weight {weight} is out of range 0..={MAX_WEIGHT}"),
                ));
            }
            out.push(NodeSpec { addr, weight });
        }
        if out.iter().all(|n| n.weight == 0) {
            return Err(self.error(
                format!("{at}.nodes"),
                "every node has weight 0; at least one needs a weight above 0",
            ));
        }
        Ok(out)
    }

    fn registries(&self, items: Vec<FileRegistry>) -> Result<Vec<RegistrySpec>> {
        self.unique_names(
            "registries",
            "registry",
            items.iter().map(|r| r.name.as_str()),
        )?;
        let mut out = Vec::with_capacity(items.len());
        for (i, r) in items.into_iter().enumerate() {
            let at = format!("registries[{i}]");
            let explicit = r.server.is_some()
                || r.token.is_some()
                || r.token_file.is_some()
                || r.client_cert.is_some()
                || r.client_key.is_some()
                || r.ca_file.is_some()
                || r.insecure_skip_tls_verify.is_some();
            let connection = match (r.kubeconfig, explicit) {
                (Some(_), true) => {
                    return Err(self.error(
                        format!("{at}.kubeconfig"),
                        "`kubeconfig` excludes `server`, `token`, `token_file`, `ca_file`, \
                         `client_cert`, `client_key` and `insecure_skip_tls_verify`",
                    ))
                }
                (Some(path), false) => Connection::Kubeconfig {
                    path,
                    context: r.context,
                },
                (None, true) => {
                    let Some(server) = r.server else {
                        return Err(self.error(
                            format!("{at}.server"),
                            "credentials or `ca_file` need a `server` (leave all of them out \
                             for the in-cluster service account)",
                        ));
                    };
                    if !(server.starts_with("https://") || server.starts_with("http://")) {
                        return Err(self.error(
                            format!("{at}.server"),
                            format!("{server:?} is not an http(s) URL"),
                        ));
                    }
                    if r.token.is_some() && r.token_file.is_some() {
                        return Err(self.error(
                            format!("{at}.token_file"),
                            "give `token` or `token_file`, not both",
                        ));
                    }
                    if r.client_cert.is_some() != r.client_key.is_some() {
                        return Err(self.error(
                            format!("{at}.client_key"),
                            "`client_cert` and `client_key` go together",
                        ));
                    }
                    if r.context.is_some() {
                        return Err(
                            self.error(format!("{at}.context"), "`context` needs `kubeconfig`")
                        );
                    }
                    Connection::Explicit {
                        server,
                        credentials: Credentials {
                            token: r.token,
                            token_file: r.token_file,
                            client_cert: r.client_cert,
                            client_key: r.client_key,
                        },
                        ca_file: r.ca_file,
                        insecure_skip_tls_verify: r.insecure_skip_tls_verify.unwrap_or(false),
                    }
                }
                (None, false) => {
                    if r.context.is_some() {
                        return Err(
                            self.error(format!("{at}.context"), "`context` needs `kubeconfig`")
                        );
                    }
                    Connection::InCluster
                }
            };
            if let Some(pattern) = &r.namespaces {
                if let Err(e) = strait_discovery::registry::check_namespaces(pattern) {
                    return Err(self.error(
                        format!("{at}.namespaces"),
                        format!("not a valid regular expression: {e}"),
                    ));
                }
            }
            if let Some(sel) = &r.label_selector {
                if sel.trim().is_empty() {
                    return Err(self.error(format!("{at}.label_selector"), "must not be empty"));
                }
            }
            out.push(RegistrySpec {
                name: r.name,
                enabled: r.enabled.unwrap_or(true),
                connection,
                namespaces: r.namespaces,
                label_selector: r.label_selector,
                resource: match r.resource {
                    FileResource::Endpointslices => Resource::EndpointSlices,
                    FileResource::Endpoints => Resource::Endpoints,
                },
            });
        }
        Ok(out)
    }

    fn discovery(&self, at: &str, file: FileDiscovery) -> Result<DiscoveryRef> {
        let at = format!("{at}.discovery");
        // A registry that is not (or no longer) configured is allowed: its upstreams answer
        // 503, as when a registry is removed in the seed product. `Config::warnings` and
        // the discovery thread's log name it.
        if file.registry.trim().is_empty() {
            return Err(self.error(format!("{at}.registry"), "must not be empty"));
        }
        for (key, value) in [("namespace", &file.namespace), ("service", &file.service)] {
            if value.trim().is_empty() {
                return Err(self.error(format!("{at}.{key}"), "must not be empty"));
            }
        }
        Ok(DiscoveryRef {
            registry: file.registry,
            namespace: file.namespace,
            service: file.service,
            port: match file.port {
                FilePort::Number(n) => ServicePort::Number(n),
                FilePort::Name(name) => ServicePort::Name(name),
            },
        })
    }

    /// A fixed `Host` header value (`example.com`, `example.com:8443`).
    fn host_header(&self, field: &str, text: &str) -> Result<String> {
        let host = text.trim();
        if host.is_empty()
            || host
                .chars()
                .any(|c| c.is_whitespace() || c.is_control() || matches!(c, '/' | '*' | '@'))
        {
            return Err(self.error(
                field,
                format!("{text:?} is not a Host header value such as example.com:8443"),
            ));
        }
        Ok(host.to_owned())
    }
}

#[cfg(test)]
mod tests;
