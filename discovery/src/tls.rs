//! Certificates for TLS listeners: loading a PEM pair (checked: parsable, key matching,
//! not expired), one listener's certificates indexed by the names they serve ([`CertSet`],
//! the SNI choice: exact name, then one-label wildcard, then the default), the session
//! ticket keys every worker shares ([`TicketKeys`]), and the immutable bundle the workers
//! receive ([`TlsSnapshot`]).
//!
//! Runs on: the thread that loads the config or re-reads the files (never a worker);
//! each worker builds its own [`CertSet`] and ticket keys from a snapshot, so handshakes
//! touch nothing another core touches.

use std::collections::HashMap;
use std::fmt;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use ring::aead::{self, LessSafeKey, UnboundKey, NONCE_LEN};
use ring::rand::{SecureRandom, SystemRandom};
use rustls::crypto::ring::default_provider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::ProducesTickets;
use rustls::sign::CertifiedKey;
use rustls::SignatureScheme;

/// Why a certificate was refused; the message names the file or Secret.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertError(pub String);

impl fmt::Display for CertError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for CertError {}

/// A certificate chain and its key, checked, with what the metrics and logs say of it.
/// Kept as DER: each worker makes its own signing key from it ([`CertSet::build`]), so no
/// two cores share a reference count during handshakes.
pub struct LoadedCert {
    pub chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
    pub info: CertInfo,
}

impl fmt::Debug for LoadedCert {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Never the key.
        f.debug_struct("LoadedCert")
            .field("info", &self.info)
            .finish_non_exhaustive()
    }
}

impl Clone for LoadedCert {
    fn clone(&self) -> LoadedCert {
        LoadedCert {
            chain: self.chain.clone(),
            key: self.key.clone_key(),
            info: self.info.clone(),
        }
    }
}

impl LoadedCert {
    /// A signing key and chain of this worker's own.
    fn certified(&self) -> Result<Arc<CertifiedKey>, CertError> {
        let signing = default_provider()
            .key_provider
            .load_private_key(self.key.clone_key())
            .map_err(|e| CertError(format!("{}: unusable private key: {e}", self.info.source)))?;
        Ok(Arc::new(CertifiedKey::new(self.chain.clone(), signing)))
    }
}

/// What is known of a loaded certificate, for metrics, logs and the admin.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertInfo {
    /// Where it came from: `cert_file` path (or `namespace/name` of a Secret).
    pub source: String,
    /// The DNS names it serves (lowercase; `*.example.com` for a wildcard).
    pub names: Vec<String>,
    /// The leaf's subject, as `CN=…` etc.
    pub subject: String,
    /// The leaf's notAfter, in seconds since the Unix epoch.
    pub not_after: i64,
}

/// Reads `cert_file` (PEM chain, leaf first) and `key_file` (PEM PKCS#8, PKCS#1 or SEC1
/// key) and checks them as [`load_pem`] does. `names`: serve these instead of the
/// certificate's own.
pub fn load_files(
    cert_file: &Path,
    key_file: &Path,
    names: Option<&[String]>,
) -> Result<LoadedCert, CertError> {
    let cert = std::fs::read(cert_file)
        .map_err(|e| CertError(format!("cannot read {}: {e}", cert_file.display())))?;
    let key = std::fs::read(key_file)
        .map_err(|e| CertError(format!("cannot read {}: {e}", key_file.display())))?;
    load_pem(
        &cert,
        &key,
        &cert_file.display().to_string(),
        &key_file.display().to_string(),
        names,
        SystemTime::now(),
    )
}

/// Parses a PEM pair and checks it: at least one certificate, a private key of a type
/// rustls signs with (RSA, ECDSA, Ed25519), the key matching the leaf, the leaf not
/// expired at `now`. `cert_src` and `key_src` name the two in errors.
pub fn load_pem(
    cert_pem: &[u8],
    key_pem: &[u8],
    cert_src: &str,
    key_src: &str,
    names: Option<&[String]>,
    now: SystemTime,
) -> Result<LoadedCert, CertError> {
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(cert_pem)
        .collect::<Result<_, _>>()
        .map_err(|e| CertError(format!("{cert_src}: not a PEM certificate chain: {e}")))?;
    if chain.is_empty() {
        return Err(CertError(format!("{cert_src}: no certificate in it")));
    }
    // The key is never logged: errors say only what is wrong with it.
    let key = PrivateKeyDer::from_pem_slice(key_pem)
        .map_err(|_| CertError(format!("{key_src}: no PEM private key in it")))?;
    let signing = default_provider()
        .key_provider
        .load_private_key(key.clone_key())
        .map_err(|e| CertError(format!("{key_src}: unusable private key: {e}")))?;
    let (subject, not_after, own_names) =
        leaf_facts(&chain[0]).map_err(|e| CertError(format!("{cert_src}: {e}")))?;
    let certified = CertifiedKey::new(chain.clone(), signing);
    certified.keys_match().map_err(|_| {
        CertError(format!(
            "{key_src}: the private key does not match the certificate in {cert_src}"
        ))
    })?;
    let now_secs = now
        .duration_since(UNIX_EPOCH)
        .unwrap_or(Duration::ZERO)
        .as_secs() as i64;
    if not_after < now_secs {
        return Err(CertError(format!(
            "{cert_src}: the certificate ({subject}) expired {}s ago",
            now_secs - not_after
        )));
    }
    let names: Vec<String> = match names {
        Some(n) if !n.is_empty() => n.iter().map(|s| s.trim().to_ascii_lowercase()).collect(),
        _ => own_names,
    };
    if names.is_empty() {
        return Err(CertError(format!(
            "{cert_src}: the certificate names no DNS name (no subjectAltName, no CN); give `names:`"
        )));
    }
    Ok(LoadedCert {
        chain,
        key,
        info: CertInfo {
            source: cert_src.to_string(),
            names,
            subject,
            not_after,
        },
    })
}

/// The leaf's subject, notAfter, and DNS names (subjectAltName, else the CN).
fn leaf_facts(der: &CertificateDer<'_>) -> Result<(String, i64, Vec<String>), String> {
    let (_, cert) = x509_parser::parse_x509_certificate(der.as_ref())
        .map_err(|e| format!("the leaf certificate does not parse: {e}"))?;
    let subject = cert.subject().to_string();
    let not_after = cert.validity().not_after.timestamp();
    let mut names = Vec::new();
    if let Ok(Some(san)) = cert.subject_alternative_name() {
        for n in &san.value.general_names {
            if let x509_parser::extensions::GeneralName::DNSName(d) = n {
                names.push(d.to_ascii_lowercase());
            }
        }
    }
    if names.is_empty() {
        for cn in cert.subject().iter_common_name() {
            if let Ok(s) = cn.as_str() {
                names.push(s.to_ascii_lowercase());
            }
        }
    }
    Ok((subject, not_after, names))
}

/// One TLS listener's certificates as loaded: what the snapshot carries.
#[derive(Debug, Clone)]
pub struct ListenerCerts {
    /// Config order: the first is the default.
    pub certs: Vec<LoadedCert>,
    /// Refuse a client with no SNI or an unknown name instead of serving the default.
    pub strict: bool,
}

/// One TLS listener's certificates on one worker, by the names they serve. Several
/// certificates may serve one name (RSA and ECDSA side by side): the first whose key can
/// sign with a scheme the client offers is chosen.
#[derive(Debug, Default)]
pub struct CertSet {
    exact: HashMap<String, Vec<Arc<CertifiedKey>>>,
    /// `*.example.com` under `example.com`.
    wildcard: HashMap<String, Vec<Arc<CertifiedKey>>>,
    /// The first certificate and those serving the same names: for a client with no SNI
    /// or an unknown name, unless `strict`.
    default: Vec<Arc<CertifiedKey>>,
    /// Refuse a client with no SNI or an unknown name instead of serving the default.
    pub strict: bool,
    /// What was loaded, in config order.
    pub certs: Vec<CertInfo>,
}

impl CertSet {
    /// This worker's index of a listener's certificates, with signing keys of its own.
    pub fn build(listener: &ListenerCerts) -> Result<CertSet, CertError> {
        let mut set = CertSet {
            strict: listener.strict,
            ..CertSet::default()
        };
        let first_names = listener.certs.first().map(|c| &c.info.names);
        for c in &listener.certs {
            let key = c.certified()?;
            for name in &c.info.names {
                let map = match name.strip_prefix("*.") {
                    Some(rest) => set.wildcard.entry(rest.to_string()),
                    None => set.exact.entry(name.clone()),
                };
                map.or_default().push(key.clone());
            }
            if Some(&c.info.names) == first_names {
                set.default.push(key.clone());
            }
            set.certs.push(c.info.clone());
        }
        Ok(set)
    }

    /// The certificate for a client that sent `sni` (or none) and offers `schemes`:
    /// exact name, then a wildcard one label up, then (unless strict) the default.
    pub fn pick(
        &self,
        sni: Option<&str>,
        schemes: &[SignatureScheme],
    ) -> Option<Arc<CertifiedKey>> {
        let by_name = sni.and_then(|name| self.lookup(name));
        let list = match by_name {
            Some(l) => l,
            None if self.strict => return None,
            None => &self.default,
        };
        list.iter()
            .find(|k| k.key.choose_scheme(schemes).is_some())
            .or_else(|| list.first())
            .cloned()
    }

    /// Whether a client sending `sni` gets a certificate by name (not the default).
    pub fn serves(&self, sni: &str) -> bool {
        self.lookup(sni).is_some()
    }

    fn lookup(&self, name: &str) -> Option<&Vec<Arc<CertifiedKey>>> {
        let name = name.trim_end_matches('.').to_ascii_lowercase();
        if let Some(l) = self.exact.get(&name) {
            return Some(l);
        }
        let (_, rest) = name.split_once('.')?;
        self.wildcard.get(rest)
    }
}

/// How long a ticket key seals new tickets before the next one takes over; the one before
/// still opens tickets for as long again.
pub const TICKET_ROTATION: Duration = Duration::from_secs(6 * 3600);

/// Session ticket keys: the current one seals and opens, the previous one only opens.
/// Made on the control side and handed to every worker in the snapshot, so a ticket one
/// worker sealed resumes on any other; nothing in it is mutable.
pub struct TicketKeys {
    current: TicketKey,
    previous: Option<TicketKey>,
    rng: SystemRandom,
}

struct TicketKey {
    name: [u8; 16],
    secret: [u8; 32],
    key: LessSafeKey,
}

impl TicketKey {
    fn new(name: [u8; 16], secret: [u8; 32]) -> Result<TicketKey, CertError> {
        let key = UnboundKey::new(&aead::CHACHA20_POLY1305, &secret)
            .map_err(|_| CertError("session ticket key".into()))?;
        Ok(TicketKey {
            name,
            secret,
            key: LessSafeKey::new(key),
        })
    }
}

impl fmt::Debug for TicketKeys {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Never the keys themselves.
        f.debug_struct("TicketKeys")
            .field("previous", &self.previous.is_some())
            .finish_non_exhaustive()
    }
}

impl TicketKeys {
    /// The same keys, for one worker to own (no reference count shared between cores).
    pub fn copy(&self) -> Result<TicketKeys, CertError> {
        Ok(TicketKeys {
            current: TicketKey::new(self.current.name, self.current.secret)?,
            previous: match &self.previous {
                Some(p) => Some(TicketKey::new(p.name, p.secret)?),
                None => None,
            },
            rng: SystemRandom::new(),
        })
    }

    /// A fresh key; the current one of `before` (if any) is kept for opening.
    pub fn rotate(before: Option<&TicketKeys>) -> Result<TicketKeys, CertError> {
        let rng = SystemRandom::new();
        let mut name = [0u8; 16];
        let mut secret = [0u8; 32];
        rng.fill(&mut name)
            .and_then(|()| rng.fill(&mut secret))
            .map_err(|_| CertError("no randomness for the session ticket key".into()))?;
        let previous = match before {
            Some(b) => Some(TicketKey::new(b.current.name, b.current.secret)?),
            None => None,
        };
        Ok(TicketKeys {
            current: TicketKey::new(name, secret)?,
            previous,
            rng,
        })
    }
}

impl ProducesTickets for TicketKeys {
    fn enabled(&self) -> bool {
        true
    }

    fn lifetime(&self) -> u32 {
        TICKET_ROTATION.as_secs() as u32
    }

    fn encrypt(&self, plain: &[u8]) -> Option<Vec<u8>> {
        let mut nonce = [0u8; NONCE_LEN];
        self.rng.fill(&mut nonce).ok()?;
        let mut out = Vec::with_capacity(16 + NONCE_LEN + plain.len() + 16);
        out.extend_from_slice(&self.current.name);
        out.extend_from_slice(&nonce);
        let mut body = plain.to_vec();
        self.current
            .key
            .seal_in_place_append_tag(
                aead::Nonce::assume_unique_for_key(nonce),
                aead::Aad::from(&self.current.name),
                &mut body,
            )
            .ok()?;
        out.extend_from_slice(&body);
        Some(out)
    }

    fn decrypt(&self, cipher: &[u8]) -> Option<Vec<u8>> {
        if cipher.len() < 16 + NONCE_LEN {
            return None;
        }
        let (name, rest) = cipher.split_at(16);
        let (nonce, sealed) = rest.split_at(NONCE_LEN);
        let key = [Some(&self.current), self.previous.as_ref()]
            .into_iter()
            .flatten()
            .find(|k| k.name[..] == *name)?;
        let nonce = aead::Nonce::try_assume_unique_for_key(nonce).ok()?;
        let mut body = sealed.to_vec();
        let plain = key
            .key
            .open_in_place(nonce, aead::Aad::from(&key.name), &mut body)
            .ok()?;
        let n = plain.len();
        body.truncate(n);
        Some(body)
    }
}

/// A TLS Secret's contents, as its watcher read them. `Debug` never shows the key.
#[derive(Clone)]
pub struct SecretData {
    /// The Secret's `type` (`kubernetes.io/tls` for certificates).
    pub type_: String,
    /// `data["tls.crt"]`, when present.
    pub cert: Option<Vec<u8>>,
    /// `data["tls.key"]`, when present.
    pub key: Option<Vec<u8>>,
    pub resource_version: Option<String>,
}

impl fmt::Debug for SecretData {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SecretData")
            .field("type", &self.type_)
            .field("cert_bytes", &self.cert.as_ref().map(Vec::len))
            .field("has_key", &self.key.is_some())
            .field("resource_version", &self.resource_version)
            .finish()
    }
}

impl SecretData {
    /// Reads `tls.crt` and `tls.key` of a Secret.
    pub fn from_secret(secret: &k8s_openapi::api::core::v1::Secret) -> SecretData {
        let field = |k: &str| {
            secret
                .data
                .as_ref()
                .and_then(|d| d.get(k))
                .map(|b| b.0.clone())
        };
        SecretData {
            type_: secret.type_.clone().unwrap_or_default(),
            cert: field("tls.crt"),
            key: field("tls.key"),
            resource_version: secret.metadata.resource_version.clone(),
        }
    }

    /// Checks the pair as [`load_pem`] does, naming the Secret (`source`) in errors; a
    /// Secret of another type than `kubernetes.io/tls` is accepted when it holds both keys.
    pub fn load(
        &self,
        source: &str,
        names: Option<&[String]>,
        now: SystemTime,
    ) -> Result<LoadedCert, CertError> {
        let (Some(cert), Some(key)) = (&self.cert, &self.key) else {
            return Err(CertError(format!(
                "{source}: no `tls.crt` and `tls.key` in its data (type {:?}; a kubernetes.io/tls Secret has both)",
                self.type_
            )));
        };
        load_pem(
            cert,
            key,
            &format!("{source} tls.crt"),
            &format!("{source} tls.key"),
            names,
            now,
        )
        .map(|mut c| {
            c.info.source = source.to_string();
            c
        })
    }
}

/// What a Secret's watcher saw.
#[derive(Debug, Clone)]
pub enum SecretChange {
    /// Listed or changed: its current contents.
    Applied(SecretData),
    /// Listed and not found, or deleted.
    Missing,
    /// The watch failed (it retries by itself): the reason, with the HTTP status.
    Failed { code: Option<u16>, message: String },
}

/// A Secret's watcher reports to the gateway's control loop (`DiscoveryHandle::secret_events`).
#[derive(Debug, Clone)]
pub struct SecretEvent {
    pub secret: crate::spec::SecretRef,
    pub change: SecretChange,
}

/// What the workers' TLS listeners serve, published whole whenever a certificate changes.
#[derive(Debug)]
pub struct TlsSnapshot {
    /// Increases with each snapshot.
    pub version: u64,
    /// Each TLS listener's certificates, by listener name.
    pub listeners: HashMap<String, ListenerCerts>,
    /// Session ticket keys: every worker seals and opens with the same ones (its own
    /// copy), so a ticket resumes whichever core the client lands on.
    pub tickets: TicketKeys,
}

impl TlsSnapshot {
    /// The same certificates with new ticket keys (the current ones kept for opening
    /// tickets), as the next version: what a rotation publishes, with no file read.
    pub fn with_new_tickets(&self) -> Result<TlsSnapshot, CertError> {
        Ok(TlsSnapshot {
            version: self.version + 1,
            listeners: self.listeners.clone(),
            tickets: TicketKeys::rotate(Some(&self.tickets))?,
        })
    }
}

/// TLS to an upstream's endpoints, as checked from the config: the data each worker
/// builds its own rustls client config from ([`UpstreamTls::client_config`]).
#[derive(Clone, PartialEq)]
pub struct UpstreamTls {
    /// The name sent as SNI and verified in the endpoint's certificate; `None`: the
    /// endpoint's IP is verified and no SNI is sent.
    pub sni: Option<String>,
    /// Verify the endpoint's certificate (the default). Off only on purpose.
    pub verify: bool,
    /// Trusted CAs: `ca_file`'s, or the system's when none is given.
    pub roots: Vec<CertificateDer<'static>>,
    /// A client certificate chain and key presented to the endpoint (mTLS), if any.
    client: Option<Arc<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>)>>,
    /// A digest of all the above, never 0: pooled connections are kept apart by it, so an
    /// upstream only reuses a connection secured the way it would secure one.
    pub id: u64,
}

impl fmt::Debug for UpstreamTls {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Never the key.
        f.debug_struct("UpstreamTls")
            .field("sni", &self.sni)
            .field("verify", &self.verify)
            .field("roots", &self.roots.len())
            .field("client_certificate", &self.client.is_some())
            .finish()
    }
}

impl UpstreamTls {
    /// Reads and checks what `upstreams[].tls` names: the CA file (or the system's
    /// roots), and the client certificate pair (checked as [`load_pem`] does).
    pub fn load(
        sni: Option<String>,
        verify: bool,
        ca_file: Option<&Path>,
        client: Option<(&Path, &Path)>,
    ) -> Result<UpstreamTls, CertError> {
        let roots = match ca_file {
            Some(path) => {
                let pem = std::fs::read(path)
                    .map_err(|e| CertError(format!("cannot read {}: {e}", path.display())))?;
                let roots: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(&pem)
                    .collect::<Result<_, _>>()
                    .map_err(|e| {
                        CertError(format!("{}: not a PEM certificate: {e}", path.display()))
                    })?;
                if roots.is_empty() {
                    return Err(CertError(format!(
                        "{}: no certificate in it",
                        path.display()
                    )));
                }
                roots
            }
            None => rustls_native_certs::load_native_certs().certs,
        };
        if verify && roots.is_empty() {
            return Err(CertError(
                "no CA to verify with: give `ca_file` (the system has no roots)".into(),
            ));
        }
        let client = match client {
            Some((cert, key)) => {
                let loaded = load_files(cert, key, Some(&["client".to_string()]))?;
                Some(Arc::new((loaded.chain, loaded.key)))
            }
            None => None,
        };
        let id = {
            use std::hash::{Hash, Hasher};
            let mut h = std::collections::hash_map::DefaultHasher::new();
            (&sni, verify, &roots).hash(&mut h);
            if let Some(pair) = &client {
                pair.0.hash(&mut h);
                pair.1.secret_der().hash(&mut h);
            }
            h.finish() | 1
        };
        let tls = UpstreamTls {
            sni,
            verify,
            roots,
            client,
            id,
        };
        tls.client_config()?;
        Ok(tls)
    }

    /// A rustls client config of the caller's own (a worker's): ALPN `http/1.1`, TLS 1.2
    /// and 1.3, session resumption within the worker.
    pub fn client_config(&self) -> Result<rustls::ClientConfig, CertError> {
        let provider = Arc::new(default_provider());
        let builder = rustls::ClientConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .map_err(|e| CertError(e.to_string()))?;
        let builder = if self.verify {
            let mut roots = rustls::RootCertStore::empty();
            let (_, _) = roots.add_parsable_certificates(self.roots.iter().cloned());
            builder.with_root_certificates(roots)
        } else {
            builder
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(NoVerify(provider)))
        };
        let mut config = match &self.client {
            Some(pair) => builder
                .with_client_auth_cert(pair.0.clone(), pair.1.clone_key())
                .map_err(|e| CertError(format!("client certificate: {e}")))?,
            None => builder.with_no_client_auth(),
        };
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(config)
    }

    /// The name verified (and sent as SNI when it is a DNS name) for endpoint `addr`.
    pub fn server_name(
        &self,
        addr: &crate::EndpointAddr,
    ) -> Option<rustls::pki_types::ServerName<'static>> {
        match (&self.sni, addr) {
            (Some(name), _) => rustls::pki_types::ServerName::try_from(name.clone()).ok(),
            (None, crate::EndpointAddr::Inet(a)) => {
                Some(rustls::pki_types::ServerName::IpAddress(a.ip().into()))
            }
            (None, _) => None,
        }
    }
}

/// `verify: false`: any certificate is accepted (signatures are still checked, so the
/// handshake is not trivially forged); the config says so on purpose.
#[derive(Debug)]
struct NoVerify(Arc<rustls::crypto::CryptoProvider>);

impl rustls::client::danger::ServerCertVerifier for NoVerify {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &rustls::pki_types::ServerName<'_>,
        _ocsp_response: &[u8],
        _now: rustls::pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        Ok(rustls::client::danger::ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}
