//! `upstreams[].balance`, `hash`, `outlier`, `health_check` and `locality`, and the
//! top-level `node`: how an endpoint is picked, when one is ejected for what its
//! responses say, how it is checked, and which ones are near.
//!
//! Runs on: the thread that loads the config. Pure.

use std::time::Duration;

use strait_discovery::spec::{
    Balance, CheckKind, GatewayNode, HashKey, HealthCheck, Locality, Outlier, Prefer, RegistrySpec,
    UpstreamSettings,
};

use super::{Checker, Result};
use crate::config::file::{
    FileBalance, FileCheckType, FileGatewayNode, FileHash, FileHashKey, FileHealthCheck,
    FileLocality, FileOutlier, FilePrefer, FileStatus,
};

impl Checker<'_> {
    /// `balance` and `hash`: `hash` goes with `consistent_hash` and only with it.
    pub(super) fn balance(
        &self,
        at: &str,
        balance: FileBalance,
        hash: Option<FileHash>,
    ) -> Result<Balance> {
        let b = match (balance, hash) {
            (FileBalance::ConsistentHash, Some(h)) => {
                let name = |what: &str| -> Result<String> {
                    match h.name.as_deref().map(str::trim) {
                        Some(n) if !n.is_empty() && n.bytes().all(|b| b.is_ascii_graphic()) => {
                            Ok(n.to_string())
                        }
                        _ => Err(self.error(
                            format!("{at}.hash.name"),
                            format!("`key: {what}` needs the {what}'s `name`"),
                        )),
                    }
                };
                let key = match h.key {
                    FileHashKey::Header => HashKey::Header(name("header")?.to_ascii_lowercase()),
                    FileHashKey::Cookie => HashKey::Cookie(name("cookie")?),
                    FileHashKey::SourceIp | FileHashKey::Path if h.name.is_some() => {
                        return Err(self.error(
                            format!("{at}.hash.name"),
                            "`name` is only for `key: header` and `key: cookie`",
                        ))
                    }
                    FileHashKey::SourceIp => HashKey::SourceIp,
                    FileHashKey::Path => HashKey::Path,
                };
                Balance::ConsistentHash(key)
            }
            (FileBalance::ConsistentHash, None) => {
                return Err(self.error(
                    format!("{at}.hash"),
                    "`balance: consistent_hash` needs `hash: {key: …}`",
                ))
            }
            (_, Some(_)) => {
                return Err(self.error(
                    format!("{at}.hash"),
                    "`hash` is only used with `balance: consistent_hash`",
                ))
            }
            (FileBalance::RoundRobin, None) => Balance::RoundRobin,
            (FileBalance::LeastRequest, None) => Balance::LeastRequest,
            (FileBalance::Random, None) => Balance::Random,
        };
        Ok(b)
    }

    /// `outlier`: off (both thresholds 0) when absent.
    pub(super) fn outlier(&self, at: &str, o: Option<FileOutlier>) -> Result<Outlier> {
        let d = Outlier::default();
        let Some(o) = o else { return Ok(d) };
        Ok(Outlier {
            consecutive_5xx: o.consecutive_5xx.unwrap_or(5),
            consecutive_gateway_errors: o.consecutive_gateway_errors.unwrap_or(0),
            base_ejection: self.duration(
                &format!("{at}.outlier.base_ejection"),
                o.base_ejection.as_deref(),
                d.base_ejection,
            )?,
        })
    }
}

impl Checker<'_> {
    /// `health_check`: off when absent. An HTTP check speaks plain HTTP/1.1, so it is
    /// refused on `tls` and `h2c` upstreams (use `type: tcp` there).
    pub(super) fn health_check(
        &self,
        at: &str,
        c: Option<FileHealthCheck>,
        settings: &UpstreamSettings,
    ) -> Result<Option<HealthCheck>> {
        let Some(c) = c else { return Ok(None) };
        let at = format!("{at}.health_check");
        let kind = match c.kind {
            FileCheckType::Tcp => {
                for (set, key) in [
                    (c.path.is_some(), "path"),
                    (c.host.is_some(), "host"),
                    (c.statuses.is_some(), "statuses"),
                ] {
                    if set {
                        return Err(self.error(
                            format!("{at}.{key}"),
                            format!("`{key}` is for `type: http` checks"),
                        ));
                    }
                }
                CheckKind::Tcp
            }
            FileCheckType::Http => {
                if settings.tls.is_some() || settings.protocol.is_h2() {
                    return Err(self.error(
                        format!("{at}.type"),
                        "an `http` check speaks plain HTTP/1.1; this upstream uses TLS or HTTP/2: use `type: tcp`",
                    ));
                }
                let path = c.path.unwrap_or_else(|| "/".into());
                if !path.starts_with('/') || !path.bytes().all(|b| b.is_ascii_graphic()) {
                    return Err(self.error(
                        format!("{at}.path"),
                        "must start with `/` and hold no spaces or control characters",
                    ));
                }
                if let Some(h) = &c.host {
                    if h.is_empty() || !h.bytes().all(|b| b.is_ascii_graphic()) {
                        return Err(self.error(format!("{at}.host"), "not a valid Host value"));
                    }
                }
                let statuses = match c.statuses {
                    None => vec![(200, 399)],
                    Some(list) if list.is_empty() => {
                        return Err(self.error(format!("{at}.statuses"), "must not be empty"))
                    }
                    Some(list) => list
                        .iter()
                        .enumerate()
                        .map(|(i, s)| self.status_range(&format!("{at}.statuses[{i}]"), s))
                        .collect::<Result<_>>()?,
                };
                CheckKind::Http {
                    path,
                    host: c.host,
                    statuses,
                }
            }
        };
        let interval = self.duration(
            &format!("{at}.interval"),
            c.interval.as_deref(),
            Duration::from_secs(5),
        )?;
        let timeout = self.duration(
            &format!("{at}.timeout"),
            c.timeout.as_deref(),
            Duration::from_secs(1),
        )?;
        let jitter =
            self.duration_or_zero(&format!("{at}.jitter"), c.jitter.as_deref(), interval / 10)?;
        let count = |key: &str, v: Option<u32>, d: u32| -> Result<u32> {
            match v {
                Some(0) => Err(self.error(format!("{at}.{key}"), "must be at least 1")),
                v => Ok(v.unwrap_or(d)),
            }
        };
        Ok(Some(HealthCheck {
            kind,
            interval,
            timeout,
            jitter,
            healthy: count("healthy", c.healthy, 2)?,
            unhealthy: count("unhealthy", c.unhealthy, 3)?,
        }))
    }

    /// `200` or `"200-399"`, within 100–599.
    fn status_range(&self, at: &str, s: &FileStatus) -> Result<(u16, u16)> {
        let (lo, hi) = match s {
            FileStatus::Code(c) => (*c, *c),
            FileStatus::Range(r) => {
                let parsed = match r.split_once('-') {
                    Some((a, b)) => a.trim().parse().ok().zip(b.trim().parse().ok()),
                    None => r.trim().parse().ok().map(|c| (c, c)),
                };
                parsed.ok_or_else(|| {
                    self.error(
                        at,
                        format!("{r:?} is not a status or a range like \"200-399\""),
                    )
                })?
            }
        };
        if !(100..=599).contains(&lo) || !(100..=599).contains(&hi) || lo > hi {
            return Err(self.error(at, "statuses are 100–599, a range low to high"));
        }
        Ok((lo, hi))
    }

    /// `locality`: `prefer: none` when absent. Node or zone preference and
    /// `consistent_hash` pull apart (a key must reach the same pod from every node), so
    /// the two are refused together.
    pub(super) fn locality(
        &self,
        at: &str,
        l: Option<FileLocality>,
        balance: &Balance,
    ) -> Result<Locality> {
        let Some(l) = l else {
            return Ok(Locality::default());
        };
        let prefer = match l.prefer {
            FilePrefer::None => Prefer::None,
            FilePrefer::Node => Prefer::Node,
            FilePrefer::Zone => Prefer::Zone,
        };
        if prefer != Prefer::None && matches!(balance, Balance::ConsistentHash(_)) {
            return Err(self.error(
                format!("{at}.locality.prefer"),
                "`consistent_hash` sends a key to the same endpoint from every gateway; preferring this node's or zone's endpoints would break that: use one or the other",
            ));
        }
        let min_ready = match l.min_ready {
            Some(0) => {
                return Err(self.error(format!("{at}.locality.min_ready"), "must be at least 1"))
            }
            v => v.unwrap_or(1),
        };
        Ok(Locality { prefer, min_ready })
    }

    /// `node`: the name defaults to `NODE_NAME` (the downward API); `zone_from` must
    /// name a configured registry.
    pub(super) fn node(
        &self,
        n: FileGatewayNode,
        registries: &[RegistrySpec],
    ) -> Result<GatewayNode> {
        let nonempty = |v: Option<String>| v.map(|s| s.trim().to_owned()).filter(|s| !s.is_empty());
        let name = nonempty(n.name).or_else(|| nonempty(std::env::var("NODE_NAME").ok()));
        if let Some(r) = &n.zone_from {
            if !registries.iter().any(|s| &s.name == r) {
                return Err(self.error("node.zone_from", format!("no registry is named {r:?}")));
            }
        }
        Ok(GatewayNode {
            name,
            zone: nonempty(n.zone),
            zone_from: n.zone_from,
        })
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use strait_discovery::spec::{Balance, HashKey};

    use crate::config::Config;

    fn upstream(extra: &str) -> Result<strait_discovery::spec::UpstreamSettings, String> {
        let yaml = format!(
            "listeners: [{{name: http, address: '127.0.0.1:9080'}}]\nservices: [{{name: s, upstream: u}}]\nupstreams:\n  - {{name: u, nodes: [{{address: '127.0.0.2:80'}}], {extra}}}\n"
        );
        Config::from_yaml(&yaml)
            .map(|c| c.spec.upstreams[0].settings.clone())
            .map_err(|e| e.to_string())
    }

    #[test]
    fn balance_hash_and_outlier_are_read_and_checked() {
        let s = upstream("balance: consistent_hash, hash: {key: cookie, name: sid}, outlier: {consecutive_gateway_errors: 2, base_ejection: 10s}").unwrap();
        assert_eq!(
            s.balance,
            Balance::ConsistentHash(HashKey::Cookie("sid".into()))
        );
        assert_eq!(
            s.outlier.consecutive_5xx, 5,
            "the default once `outlier` is given"
        );
        assert_eq!(s.outlier.consecutive_gateway_errors, 2);
        assert_eq!(s.outlier.base_ejection, Duration::from_secs(10));
        let s = upstream("balance: consistent_hash, hash: {key: header, name: X-User}").unwrap();
        assert_eq!(
            s.balance,
            Balance::ConsistentHash(HashKey::Header("x-user".into()))
        );
        assert_eq!(s.outlier.consecutive_5xx, 0, "off without `outlier`");
        assert_eq!(
            upstream("balance: least_request").unwrap().balance,
            Balance::LeastRequest
        );
        for (extra, field) in [
            ("balance: consistent_hash", "upstreams[0].hash"),
            ("balance: random, hash: {key: path}", "upstreams[0].hash"),
            (
                "balance: consistent_hash, hash: {key: header}",
                "upstreams[0].hash.name",
            ),
            (
                "balance: consistent_hash, hash: {key: path, name: x}",
                "upstreams[0].hash.name",
            ),
        ] {
            let e = upstream(extra).unwrap_err();
            assert!(e.contains(field), "{extra}: {e}");
        }
    }

    #[test]
    fn health_check_locality_and_node_are_read_and_checked() {
        use strait_discovery::spec::{CheckKind, Prefer};
        let s = upstream("health_check: {path: /status/200, statuses: [200, '300-302'], interval: 2s, healthy: 1}, locality: {prefer: node, min_ready: 2}").unwrap();
        let c = s.health_check.unwrap();
        assert_eq!(
            c.kind,
            CheckKind::Http {
                path: "/status/200".into(),
                host: None,
                statuses: vec![(200, 200), (300, 302)]
            }
        );
        assert_eq!(
            (c.interval, c.timeout, c.jitter, c.healthy, c.unhealthy),
            (
                Duration::from_secs(2),
                Duration::from_secs(1),
                Duration::from_millis(200),
                1,
                3
            )
        );
        assert_eq!((s.locality.prefer, s.locality.min_ready), (Prefer::Node, 2));
        assert_eq!(
            upstream("health_check: {type: tcp}")
                .unwrap()
                .health_check
                .unwrap()
                .kind,
            CheckKind::Tcp
        );
        for (extra, field) in [
            (
                "health_check: {type: tcp, path: /}",
                "upstreams[0].health_check.path",
            ),
            (
                "health_check: {statuses: ['2xx']}",
                "upstreams[0].health_check.statuses[0]",
            ),
            (
                "health_check: {statuses: [600]}",
                "upstreams[0].health_check.statuses[0]",
            ),
            (
                "health_check: {path: nope}",
                "upstreams[0].health_check.path",
            ),
            (
                "health_check: {unhealthy: 0}",
                "upstreams[0].health_check.unhealthy",
            ),
            (
                "protocol: h2c, health_check: {}",
                "upstreams[0].health_check.type",
            ),
            (
                "balance: consistent_hash, hash: {key: path}, locality: {prefer: zone}",
                "upstreams[0].locality.prefer",
            ),
            (
                "locality: {prefer: node, min_ready: 0}",
                "upstreams[0].locality.min_ready",
            ),
        ] {
            let e = upstream(extra).unwrap_err();
            assert!(e.contains(field), "{extra}: {e}");
        }
        let yaml =
            "listeners: [{name: http, address: '127.0.0.1:9080'}]\nnode: {name: n1, zone: z1}\n";
        let n = Config::from_yaml(yaml).unwrap().spec.node;
        assert_eq!(
            (n.name.as_deref(), n.zone.as_deref()),
            (Some("n1"), Some("z1"))
        );
        let yaml = "listeners: [{name: http, address: '127.0.0.1:9080'}]\nnode: {name: n1, zone_from: nope}\n";
        let e = Config::from_yaml(yaml).unwrap_err().to_string();
        assert!(e.contains("node.zone_from"), "{e}");
    }
}
