//! The TLS Secrets listeners take certificates from, as the control loop knows them: the
//! last good contents of each (what is served), whether it has been read yet (readiness
//! waits for that), and why the latest version was refused (a metric says so).
//!
//! The discovery thread watches each Secret (`registry::kubernetes::watch_secret`) and
//! sends [`SecretEvent`]s; [`Secrets::apply`] checks the pair and keeps it only when it
//! is good, so a bad or deleted Secret leaves the last good certificate serving.
//!
//! Runs on: the gateway's control loop. Never on a worker.

use std::collections::BTreeMap;
use std::time::SystemTime;

use strait_discovery::spec::SecretRef;
use strait_discovery::tls::{SecretChange, SecretData, SecretEvent};

/// Every TLS Secret of the config, by reference.
#[derive(Debug, Default)]
pub struct Secrets {
    entries: BTreeMap<SecretRef, Entry>,
}

#[derive(Debug, Default)]
struct Entry {
    /// The last contents that passed the checks: what listeners serve.
    good: Option<SecretData>,
    /// Listed at least once (found or not).
    listed: bool,
    /// Why the latest contents are not served (refused pair, not found), if so.
    rejected: Option<String>,
    /// The last watch failure logged, to log a repeating one once.
    last_failure: Option<String>,
}

impl Secrets {
    /// Nothing read yet of `refs`.
    pub fn new(refs: &[SecretRef]) -> Secrets {
        Secrets {
            entries: refs.iter().map(|r| (r.clone(), Entry::default())).collect(),
        }
    }

    /// The served contents of `secret`, once good ones have arrived.
    pub fn good(&self, secret: &SecretRef) -> Option<&SecretData> {
        self.entries.get(secret)?.good.as_ref()
    }

    /// Secrets not listed yet: the gateway is not ready until each has been.
    pub fn pending(&self) -> Vec<String> {
        self.entries
            .iter()
            .filter(|(_, e)| !e.listed)
            .map(|(r, _)| r.to_string())
            .collect()
    }

    /// Secrets whose latest version is not served, and why.
    pub fn rejected(&self) -> Vec<(String, String)> {
        self.entries
            .iter()
            .filter_map(|(r, e)| Some((r.to_string(), e.rejected.clone()?)))
            .collect()
    }

    /// Takes in what a watcher saw; `true` when the served certificates change (the
    /// snapshot must be rebuilt).
    pub fn apply(&mut self, event: SecretEvent) -> bool {
        let Some(entry) = self.entries.get_mut(&event.secret) else {
            return false;
        };
        let secret = &event.secret;
        match event.change {
            SecretChange::Applied(data) => {
                entry.listed = true;
                entry.last_failure = None;
                let same = entry.good.as_ref().is_some_and(|g| {
                    g.cert == data.cert && g.key == data.key && g.type_ == data.type_
                });
                if same {
                    entry.rejected = None;
                    return false;
                }
                // The pair alone is checked here; the names a listener gives it (or its
                // own) are checked when the snapshot is built.
                let placeholder = ["secret.check.invalid".to_string()];
                match data.load(&secret.to_string(), Some(&placeholder), SystemTime::now()) {
                    Ok(c) => {
                        tracing::info!(
                            %secret,
                            resource_version = data.resource_version.as_deref().unwrap_or(""),
                            subject = %c.info.subject,
                            "certificate from the Secret in force for new handshakes"
                        );
                        entry.good = Some(data);
                        entry.rejected = None;
                        true
                    }
                    Err(e) => {
                        let keeps = if entry.good.is_some() {
                            "the last good certificate keeps serving"
                        } else {
                            "nothing is served from it yet"
                        };
                        tracing::error!(%secret, "certificate refused: {e}; {keeps}");
                        entry.rejected = Some(e.0);
                        false
                    }
                }
            }
            SecretChange::Missing => {
                entry.listed = true;
                let keeps = if entry.good.is_some() {
                    "the last good certificate keeps serving"
                } else {
                    "nothing is served from it"
                };
                tracing::error!(%secret, "the Secret does not exist (or was deleted); {keeps}");
                entry.rejected = Some("not found".into());
                false
            }
            SecretChange::Failed { code, message } => {
                if entry.last_failure.as_ref() != Some(&message) {
                    let hint = match code {
                        Some(403) => {
                            "; grant get, list and watch on this Secret (deploy/rbac-tls-secrets.yaml)"
                        }
                        _ => "",
                    };
                    tracing::warn!(%secret, code, "watching the Secret failed, retrying with backoff: {message}{hint}");
                    entry.last_failure = Some(message);
                }
                false
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secret() -> SecretRef {
        SecretRef {
            registry: "local".into(),
            namespace: "apisix".into(),
            name: "httpbin-tls".into(),
        }
    }

    fn data(cert: &[u8], key: &[u8]) -> SecretData {
        SecretData {
            type_: "kubernetes.io/tls".into(),
            cert: Some(cert.to_vec()),
            key: Some(key.to_vec()),
            resource_version: None,
        }
    }

    fn event(change: SecretChange) -> SecretEvent {
        SecretEvent {
            secret: secret(),
            change,
        }
    }

    #[test]
    fn a_bad_or_deleted_secret_leaves_the_last_good_pair_served() {
        let mut s = Secrets::new(&[secret()]);
        assert_eq!(s.pending(), vec!["secret local/apisix/httpbin-tls"]);
        let a = rcgen::generate_simple_self_signed(vec!["a.test".into()]).unwrap();
        let b = rcgen::generate_simple_self_signed(vec!["b.test".into()]).unwrap();
        let good = data(
            a.cert.pem().as_bytes(),
            a.signing_key.serialize_pem().as_bytes(),
        );
        assert!(s.apply(event(SecretChange::Applied(good.clone()))));
        assert!(s.pending().is_empty());
        assert!(!s.apply(event(SecretChange::Applied(good))), "unchanged");
        // b's certificate with a's key: refused, a stays.
        let mismatched = data(
            b.cert.pem().as_bytes(),
            a.signing_key.serialize_pem().as_bytes(),
        );
        assert!(!s.apply(event(SecretChange::Applied(mismatched))));
        let rejected = s.rejected();
        assert_eq!(rejected.len(), 1);
        assert!(rejected[0].1.contains("does not match"), "{rejected:?}");
        assert_eq!(
            s.good(&secret()).unwrap().cert.as_deref(),
            Some(a.cert.pem().as_bytes())
        );
        assert!(!s.apply(event(SecretChange::Missing)));
        assert!(s.good(&secret()).is_some(), "deleted: the last good stays");
        let opaque = SecretData {
            type_: "Opaque".into(),
            cert: None,
            key: None,
            resource_version: None,
        };
        assert!(!s.apply(event(SecretChange::Applied(opaque))));
        assert!(s.rejected()[0].1.contains("no `tls.crt`"));
        let next = data(
            b.cert.pem().as_bytes(),
            b.signing_key.serialize_pem().as_bytes(),
        );
        assert!(s.apply(event(SecretChange::Applied(next))));
        assert!(s.rejected().is_empty());
    }
}
