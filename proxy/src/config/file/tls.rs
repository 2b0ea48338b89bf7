//! The `tls:` mappings of the config file: a listener's certificates (files or a
//! Kubernetes Secret) and an upstream's TLS settings, as written (see `file.rs`).

use serde::Deserialize;
use std::path::PathBuf;

/// `listeners[].tls:`; TLS termination on a listener.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileListenerTls {
    /// The certificates served, at least one; the first is the default for a client with
    /// no SNI or an unknown name.
    #[serde(default)]
    pub certificates: Vec<FileCertificate>,
    /// `"1.2"` or `"1.3"`: the lowest TLS version accepted. Default `"1.2"`.
    #[serde(default)]
    pub min_version: Option<String>,
    /// From accept to the end of the handshake; a slower one is cut. Default `10s`.
    #[serde(default)]
    pub handshake_timeout: Option<String>,
    /// Refuse (handshake alert) a client that sends no SNI or a name no certificate
    /// serves, instead of serving the first certificate. Default `false`.
    #[serde(default)]
    pub sni_strict: Option<bool>,
    /// PEM file of CA certificates: clients must present a certificate they signed (mTLS).
    /// Default: no client certificate asked for.
    #[serde(default)]
    pub client_ca_file: Option<PathBuf>,
    /// Handshakes in progress per worker; new connections beyond it are closed at once.
    /// Default `1024`.
    #[serde(default)]
    pub max_handshakes: Option<usize>,
}

impl FileListenerTls {
    /// The keys of this mapping, as written in the file.
    pub const FIELDS: &'static [&'static str] = &[
        "certificates",
        "min_version",
        "handshake_timeout",
        "sni_strict",
        "client_ca_file",
        "max_handshakes",
    ];
}

/// One item of `listeners[].tls.certificates:`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileCertificate {
    /// PEM certificate chain, leaf first. Re-read when it changes.
    #[serde(default)]
    pub cert_file: Option<PathBuf>,
    /// PEM private key (PKCS#8, PKCS#1 RSA or SEC1 EC) of the leaf. Re-read when it changes.
    #[serde(default)]
    pub key_file: Option<PathBuf>,
    /// A `kubernetes.io/tls` Secret instead of files: watched through the registry named.
    #[serde(default)]
    pub secret: Option<FileSecretRef>,
    /// The DNS names this certificate serves (`*.example.com`: one label). Default: the
    /// certificate's subjectAltName DNS names (its CN when it has none).
    #[serde(default)]
    pub names: Option<Vec<String>>,
}

impl FileCertificate {
    /// The keys of this mapping, as written in the file.
    pub const FIELDS: &'static [&'static str] = &["cert_file", "key_file", "secret", "names"];
}

/// `listeners[].tls.certificates[].secret:`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileSecretRef {
    /// The `registries[].name` whose cluster holds the Secret.
    pub registry: String,
    pub namespace: String,
    pub name: String,
}

impl FileSecretRef {
    /// The keys of this mapping, as written in the file.
    pub const FIELDS: &'static [&'static str] = &["registry", "namespace", "name"];
}

/// `upstreams[].tls:`; TLS to an upstream's endpoints.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileUpstreamTls {
    /// The name sent as SNI and verified in the endpoints' certificates. Default: none
    /// sent, the endpoint's IP verified.
    #[serde(default)]
    pub sni: Option<String>,
    /// PEM CA certificates to verify the endpoints with. Default: the system's roots.
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
    /// Verify the endpoints' certificates. Default `true`.
    #[serde(default)]
    pub verify: Option<bool>,
    /// A client certificate (PEM chain) presented to the endpoints; needs `key_file`.
    #[serde(default)]
    pub cert_file: Option<PathBuf>,
    /// The client certificate's private key (PEM).
    #[serde(default)]
    pub key_file: Option<PathBuf>,
}

impl FileUpstreamTls {
    /// The keys of this mapping, as written in the file.
    pub const FIELDS: &'static [&'static str] =
        &["sni", "ca_file", "verify", "cert_file", "key_file"];
}
