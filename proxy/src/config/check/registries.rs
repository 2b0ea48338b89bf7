//! `registries:`: the Kubernetes clusters to watch, how to reach each (kubeconfig,
//! explicit server and credentials, or in-cluster), namespaces and label selector.
//!
//! Runs on: the thread that loads the config. Pure: files named here are read when the
//! registry starts, not now.

use strait_discovery::spec::{Connection, Credentials, RegistrySpec, Resource};

use super::{Checker, Result};
use crate::config::file::{FileRegistry, FileResource};

impl Checker<'_> {
    pub(super) fn registries(&self, items: Vec<FileRegistry>) -> Result<Vec<RegistrySpec>> {
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
}
