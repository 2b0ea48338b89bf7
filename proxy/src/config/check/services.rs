//! `services:` and their `routes:`: hosts (exact, `*.suffix`, `[v6]`), path prefixes,
//! methods, and the upstream each route sends to.
//!
//! Runs on: the thread that loads the config. Pure.

use std::collections::HashSet;
use std::net::Ipv6Addr;

use strait_discovery::route::{MethodSet, METHODS};
use strait_discovery::spec::{PathMatch, RouteSpec, ServiceSpec};

use super::{Checker, Result};
use crate::config::file::FileService;

impl Checker<'_> {
    pub(super) fn services(
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
        for (j, mut route) in service.routes.into_iter().enumerate() {
            let at = format!("{list}[{j}]");
            let rules = self.route_rules(&at, &mut route, upstreams)?;
            if rules.path_match != PathMatch::Regex {
                self.path(&format!("{at}.path"), &route.path)?;
            }
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
                (None, None) if rules.answers() || !rules.backends.is_empty() => {}
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
                stream_idle_timeout: match route.stream_idle_timeout.as_deref() {
                    None => None,
                    Some(t) => Some(self.duration(
                        &format!("{at}.stream_idle_timeout"),
                        Some(t),
                        std::time::Duration::ZERO,
                    )?),
                },
                path_match: rules.path_match,
                headers: rules.headers,
                query: rules.query,
                backends: rules.backends,
                backend_hash: rules.backend_hash,
                filters: rules.filters,
                rate_limit: rules.rate_limit,
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
}
