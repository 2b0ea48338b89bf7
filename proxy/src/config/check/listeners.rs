//! `listeners:`: names, addresses (`ip:port` or `unix:/path`, each used once), the
//! protocol and its keys, and `tls:`.
//!
//! Runs on: the thread that loads the config. Pure: a Unix socket path is checked for
//! its form here; whether it can be bound is found out at start.

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;

use strait_discovery::spec::{RegistrySpec, SecretRef};
use strait_discovery::UnixPath;

use super::{Checker, Result};
use crate::config::file::{FileListener, FileListenerTls, FileProtocol};
use crate::config::{
    CertSource, Certificate, ListenAddr, ListenerConfig, ListenerTls, Protocol, SniRoute,
    TcpConfig, TlsVersion,
};

impl Checker<'_> {
    /// The Secrets the TLS listeners take certificates from, each in a configured,
    /// enabled registry (sorted, no duplicates).
    pub(super) fn tls_secrets(
        &self,
        listeners: &[ListenerConfig],
        registries: &[RegistrySpec],
    ) -> Result<Vec<SecretRef>> {
        let mut out = Vec::new();
        for (i, l) in listeners.iter().enumerate() {
            for (j, c) in l.tls.iter().flat_map(|t| t.certificates.iter()).enumerate() {
                let CertSource::Secret(s) = &c.source else {
                    continue;
                };
                let at = format!("listeners[{i}].tls.certificates[{j}].secret.registry");
                match registries.iter().find(|r| r.name == s.registry) {
                    None => {
                        return Err(self.error(
                            at,
                            format!("no registry named {:?} in `registries:`", s.registry),
                        ))
                    }
                    Some(r) if !r.enabled => {
                        return Err(self.error(
                            at,
                            format!(
                                "registry {:?} is disabled: nothing would watch the Secret",
                                s.registry
                            ),
                        ))
                    }
                    Some(_) => out.push(s.clone()),
                }
            }
        }
        out.sort();
        out.dedup();
        Ok(out)
    }

    pub(super) fn listeners(
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
        let mut seen: HashMap<ListenAddr, usize> = HashMap::new();
        let mut out = Vec::with_capacity(items.len());
        for (i, item) in items.into_iter().enumerate() {
            let field = format!("listeners[{i}].address");
            let addr = self.listen_addr(&field, &item.address)?;
            // Port 0 (any free port) is allowed: tests bind 127.0.0.x:0.
            if let Some(first) = seen.insert(addr.clone(), i) {
                return Err(self.error(
                    field,
                    format!("address {addr} is already used by listeners[{first}]"),
                ));
            }
            let mode =
                match (&item.mode, &addr) {
                    (None, _) => None,
                    (Some(text), ListenAddr::Unix(_)) => {
                        Some(self.file_mode(&format!("listeners[{i}].mode"), text)?)
                    }
                    (Some(_), ListenAddr::Inet(_)) => return Err(self.error(
                        format!("listeners[{i}].mode"),
                        "`mode` is the file mode of a Unix socket listener (`address: unix:/path`)",
                    )),
                };
            let protocol = self.protocol(&format!("listeners[{i}]"), &item, upstreams)?;
            if item.tls.is_some() && item.sni_routes.is_some() {
                return Err(self.error(
                    format!("listeners[{i}].sni_routes"),
                    "`sni_routes` passes TLS through untouched; `tls` terminates it: give one",
                ));
            }
            let tls = match item.tls {
                None => None,
                Some(t) => Some(self.listener_tls(&format!("listeners[{i}].tls"), t)?),
            };
            let mut trusted_proxies = Vec::with_capacity(item.trusted_proxies.len());
            for (k, text) in item.trusted_proxies.iter().enumerate() {
                let cidr = crate::real_ip::Cidr::parse(text)
                    .map_err(|e| self.error(format!("listeners[{i}].trusted_proxies[{k}]"), e))?;
                trusted_proxies.push(cidr);
            }
            if !trusted_proxies.is_empty() && protocol != Protocol::Http {
                return Err(self.error(
                    format!("listeners[{i}].trusted_proxies"),
                    "`trusted_proxies` is about X-Forwarded-For, an `http` listener's; a `tcp` listener learns the client from `proxy_protocol`",
                ));
            }
            if item.proxy_protocol && matches!(addr, ListenAddr::Unix(_)) {
                return Err(self.error(
                    format!("listeners[{i}].proxy_protocol"),
                    "a PROXY protocol header comes from a load balancer over TCP; this is a Unix socket",
                ));
            }
            out.push(ListenerConfig {
                name: item.name,
                addr,
                mode,
                protocol,
                tls,
                trusted_proxies,
                proxy_protocol: item.proxy_protocol,
            });
        }
        Ok(out)
    }

    /// A listener's `tls:` (the files are read by `tls::load`, not here).
    fn listener_tls(&self, at: &str, t: FileListenerTls) -> Result<ListenerTls> {
        if t.certificates.is_empty() {
            return Err(self.error(
                format!("{at}.certificates"),
                "at least one certificate (`cert_file` and `key_file`, or `secret`) is required",
            ));
        }
        let mut certificates = Vec::with_capacity(t.certificates.len());
        for (j, c) in t.certificates.into_iter().enumerate() {
            if let Some(names) = &c.names {
                for (k, n) in names.iter().enumerate() {
                    let bare = n.strip_prefix("*.").unwrap_or(n);
                    if bare.is_empty()
                        || bare.contains('*')
                        || bare.contains(|c: char| c.is_whitespace())
                    {
                        return Err(self.error(
                            format!("{at}.certificates[{j}].names[{k}]"),
                            format!("{n:?} is not a DNS name (a wildcard is `*.` and one label: `*.example.com`)"),
                        ));
                    }
                }
            }
            let at_cert = format!("{at}.certificates[{j}]");
            let source = match (c.cert_file, c.key_file, c.secret) {
                (Some(cert_file), Some(key_file), None) => CertSource::Files {
                    cert_file,
                    key_file,
                },
                (None, None, Some(s)) => {
                    for (field, value) in [
                        ("registry", &s.registry),
                        ("namespace", &s.namespace),
                        ("name", &s.name),
                    ] {
                        if value.trim().is_empty() {
                            return Err(self
                                .error(format!("{at_cert}.secret.{field}"), "must not be empty"));
                        }
                    }
                    CertSource::Secret(SecretRef {
                        registry: s.registry,
                        namespace: s.namespace,
                        name: s.name,
                    })
                }
                (_, _, Some(_)) => {
                    return Err(
                        self.error(at_cert, "`secret` or `cert_file` and `key_file`, not both")
                    )
                }
                (Some(_), None, None) => {
                    return Err(self.error(
                        format!("{at_cert}.key_file"),
                        "`cert_file` needs `key_file`",
                    ))
                }
                (None, Some(_), None) => {
                    return Err(self.error(
                        format!("{at_cert}.cert_file"),
                        "`key_file` needs `cert_file`",
                    ))
                }
                (None, None, None) => {
                    return Err(self.error(
                        at_cert,
                        "a certificate needs `cert_file` and `key_file`, or `secret`",
                    ))
                }
            };
            certificates.push(Certificate {
                source,
                names: c.names,
            });
        }
        let min_version = match t.min_version.as_deref().map(str::trim) {
            None | Some("1.2") => TlsVersion::V1_2,
            Some("1.3") => TlsVersion::V1_3,
            Some(other) => {
                return Err(self.error(
                    format!("{at}.min_version"),
                    format!("{other:?} is not a TLS version strait accepts: \"1.2\" or \"1.3\""),
                ))
            }
        };
        let max_handshakes = t
            .max_handshakes
            .unwrap_or(ListenerTls::DEFAULT_MAX_HANDSHAKES);
        if max_handshakes == 0 {
            return Err(self.error(format!("{at}.max_handshakes"), "must be at least 1"));
        }
        Ok(ListenerTls {
            certificates,
            min_version,
            handshake_timeout: self.duration(
                &format!("{at}.handshake_timeout"),
                t.handshake_timeout.as_deref(),
                ListenerTls::DEFAULT_HANDSHAKE_TIMEOUT,
            )?,
            sni_strict: t.sni_strict.unwrap_or(false),
            client_ca_file: t.client_ca_file,
            max_handshakes,
            // Set once `http.http2` is read (`Checker::config`).
            h2: false,
        })
    }

    /// `ip:port` or `unix:/path` (a path a socket address can hold).
    fn listen_addr(&self, field: &str, text: &str) -> Result<ListenAddr> {
        let text = text.trim();
        match text.strip_prefix("unix:") {
            Some(path) => match UnixPath::check(path) {
                Ok(_) => Ok(ListenAddr::Unix(PathBuf::from(path))),
                Err(why) => Err(self.error(field, why)),
            },
            None => self.socket_addr(field, text).map(ListenAddr::Inet),
        }
    }

    /// A file mode in octal, as chmod takes it: `"0660"`, `"660"`.
    fn file_mode(&self, field: &str, text: &str) -> Result<u32> {
        match u32::from_str_radix(text.trim(), 8) {
            Ok(mode) if mode <= 0o777 => Ok(mode),
            _ => Err(self.error(
                field,
                format!("{text:?} is not a file mode: expected octal permissions such as \"0660\""),
            )),
        }
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
                ("sni_routes", item.sni_routes.is_some()),
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
        let mut sni_routes = Vec::new();
        for (j, r) in item.sni_routes.iter().flatten().enumerate() {
            let at = format!("{at}.sni_routes[{j}]");
            if r.names.is_empty() {
                return Err(self.error(format!("{at}.names"), "at least one server name"));
            }
            for (k, n) in r.names.iter().enumerate() {
                let bare = n.strip_prefix("*.").unwrap_or(n);
                if bare.is_empty()
                    || bare.contains('*')
                    || bare.contains(|c: char| c.is_whitespace())
                {
                    return Err(self.error(
                        format!("{at}.names[{k}]"),
                        format!("{n:?} is not a server name (a wildcard is `*.` and one label: `*.example.com`)"),
                    ));
                }
            }
            self.upstream_ref(&format!("{at}.upstream"), &r.upstream, upstreams)?;
            sni_routes.push(SniRoute {
                names: r.names.iter().map(|n| n.to_ascii_lowercase()).collect(),
                upstream: r.upstream.clone(),
            });
        }
        match &item.upstream {
            Some(upstream) => self.upstream_ref(&field, upstream, upstreams)?,
            None if !sni_routes.is_empty() => {}
            None => {
                return Err(self.error(
                    field,
                    "a `protocol: tcp` listener needs an `upstream` (or `sni_routes`)",
                ))
            }
        }
        let drain = self.duration_or_zero(
            &format!("{at}.drain_timeout"),
            item.drain_timeout.as_deref(),
            TcpConfig::DEFAULT_DRAIN_TIMEOUT,
        )?;
        Ok(Protocol::Tcp(TcpConfig {
            upstream: item.upstream.clone(),
            sni_routes,
            idle_timeout: self.duration(
                &format!("{at}.idle_timeout"),
                item.idle_timeout.as_deref(),
                TcpConfig::DEFAULT_IDLE_TIMEOUT,
            )?,
            drain_timeout: (!drain.is_zero()).then_some(drain),
        }))
    }
}
