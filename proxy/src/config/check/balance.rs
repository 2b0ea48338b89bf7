//! `upstreams[].balance`, `hash` and `outlier`: how an endpoint is picked, and when one
//! is ejected for what its responses say.
//!
//! Runs on: the thread that loads the config. Pure.

use strait_discovery::spec::{Balance, HashKey, Outlier};

use super::{Checker, Result};
use crate::config::file::{FileBalance, FileHash, FileHashKey, FileOutlier};

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
}
