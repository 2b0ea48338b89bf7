//! `upstreams:`: static `nodes` (`ip:port` or `unix:/path`) or a `discovery` reference,
//! timeouts, keep-alive, retries, the `Host` sent, passive health, TLS.
//!
//! Runs on: the thread that loads the config. Pure, but for `tls:`, whose CA and client
//! certificate files are read and checked here.

use std::collections::HashMap;

use strait_discovery::spec::{
    DiscoveryRef, NodeSpec, PassHost, PassiveHealth, PoolSettings, ProxyVersion, ServicePort,
    UpstreamProtocol, UpstreamSettings, UpstreamSource, UpstreamSpec,
};
use strait_discovery::EndpointAddr;

use super::{Checker, Result};
use crate::config::file::{
    FileDiscovery, FileNode, FilePassHost, FilePassiveHealth, FilePort, FileUpstream,
    FileUpstreamProtocol, FileUpstreamTls,
};
use strait_discovery::tls::UpstreamTls;

/// Largest node weight accepted.
const MAX_WEIGHT: u32 = 10_000;

impl Checker<'_> {
    pub(super) fn upstreams(&self, items: Vec<FileUpstream>) -> Result<Vec<UpstreamSpec>> {
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
        let balance = self.balance(at, upstream.balance, upstream.hash)?;
        let outlier = self.outlier(at, upstream.outlier)?;
        let mut settings = UpstreamSettings {
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
            tls: match upstream.tls {
                Some(t) => Some(std::sync::Arc::new(
                    self.upstream_tls(&format!("{at}.tls"), t)?,
                )),
                None => None,
            },
            protocol: match upstream.protocol {
                FileUpstreamProtocol::Http1 => UpstreamProtocol::Http1,
                FileUpstreamProtocol::H2 => UpstreamProtocol::H2,
                FileUpstreamProtocol::H2c => UpstreamProtocol::H2c,
            },
            balance,
            outlier,
            health_check: None,
            locality: Default::default(),
            proxy_protocol: None,
        };
        match (settings.protocol, settings.tls.is_some()) {
            (UpstreamProtocol::H2, false) => {
                return Err(self.error(
                    format!("{at}.protocol"),
                    "`h2` is HTTP/2 over TLS: it needs `tls:` (plain-text HTTP/2 is `h2c`)",
                ))
            }
            (UpstreamProtocol::H2c, true) => {
                return Err(self.error(
                    format!("{at}.protocol"),
                    "`h2c` is plain-text HTTP/2: with `tls:` use `h2`",
                ))
            }
            _ => {}
        }
        settings.health_check = self.health_check(at, upstream.health_check, &settings)?;
        settings.locality = self.locality(at, upstream.locality, &settings.balance)?;
        settings.proxy_protocol = upstream.proxy_protocol.map(|v| match v {
            crate::config::file::FileProxyProtocol::V1 => ProxyVersion::V1,
            crate::config::file::FileProxyProtocol::V2 => ProxyVersion::V2,
        });
        Ok(UpstreamSpec {
            name: upstream.name,
            source,
            settings,
        })
    }

    /// `upstreams[].tls`: its files are read and checked here, so a bad one refuses the
    /// config (at start, `strait check` and reload) with the field and file named.
    fn upstream_tls(&self, at: &str, t: FileUpstreamTls) -> Result<UpstreamTls> {
        if let Some(sni) = &t.sni {
            if rustls::pki_types::ServerName::try_from(sni.as_str()).is_err() {
                return Err(self.error(format!("{at}.sni"), format!("{sni:?} is not a DNS name")));
            }
        }
        let client = match (&t.cert_file, &t.key_file) {
            (Some(c), Some(k)) => Some((c.as_path(), k.as_path())),
            (None, None) => None,
            (Some(_), None) => {
                return Err(self.error(format!("{at}.key_file"), "`cert_file` needs `key_file`"))
            }
            (None, Some(_)) => {
                return Err(self.error(format!("{at}.cert_file"), "`key_file` needs `cert_file`"))
            }
        };
        UpstreamTls::load(
            t.sni,
            t.verify.unwrap_or(true),
            t.ca_file.as_deref(),
            client,
        )
        .map_err(|e| self.error(at, e.0))
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
        let mut seen: HashMap<EndpointAddr, usize> = HashMap::new();
        let mut out = Vec::with_capacity(nodes.len());
        for (j, node) in nodes.iter().enumerate() {
            let field = format!("{at}.nodes[{j}].address");
            let addr = self.endpoint_addr(&field, &node.address)?;
            if addr.inet().is_some_and(|a| a.port() == 0) {
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

    /// `ip:port` or `unix:/path`.
    fn endpoint_addr(&self, field: &str, text: &str) -> Result<EndpointAddr> {
        let text = text.trim();
        if text.starts_with("unix:") {
            return text.parse().map_err(|why: String| self.error(field, why));
        }
        self.socket_addr(field, text).map(EndpointAddr::Inet)
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
