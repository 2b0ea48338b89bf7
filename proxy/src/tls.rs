//! TLS listeners: loading their certificates into a [`TlsSnapshot`] (on the control side),
//! and each worker's own rustls server configs built from it ([`WorkerTls`]).
//!
//! - [`load`] reads every TLS listener's certificate files, checks them
//!   (`strait_discovery::tls::load_pem`) and indexes them by name; an error names the
//!   field and the file, and the running certificates stay.
//! - [`WorkerTls::build`] makes one `rustls::ServerConfig` per TLS listener on each
//!   worker: the SNI resolver over the worker's own [`CertSet`] (signing keys parsed
//!   again per worker), its own copy of the snapshot's ticket keys (the same keys on every
//!   worker, so a ticket resumes on any of them), no session cache (resumption is by
//!   ticket only: no cache shared between cores), ALPN `http/1.1`. A handshake touches no
//!   reference count or lock another core touches.
//!
//! Runs on: the control side (`load`, at start, `strait check` and reload) and workers
//! (`WorkerTls`, rebuilt when a snapshot arrives; read per handshake).

use std::cell::Cell;
use std::collections::HashMap;
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use monoio::io::AsyncWriteRentExt;

use rustls::crypto::ring::default_provider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::CertificateDer;
use rustls::server::{
    ClientHello, NoServerSessionStorage, ResolvesServerCert, WebPkiClientVerifier,
};
use rustls::sign::CertifiedKey;
use rustls::{RootCertStore, ServerConfig, ServerConnection};
use strait_discovery::tls::{
    load_files, CertSet, ListenerCerts, LoadedCert, TicketKeys, TlsSnapshot,
};

use crate::config::{CertSource, Config, ConfigError, ListenerTls, TlsVersion};
use crate::http1;
use crate::transport::tls::TlsStream;
use crate::transport::{ClientAddr, Transport};
use crate::worker::Open;

mod secrets;
pub use secrets::Secrets;

/// How [`load`] gets file certificates.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Files {
    /// Read every file again (start, `strait check`, reload, a file change).
    Read,
    /// Keep the ones of the snapshot in force (a Secret changed).
    Reuse,
}

/// Loads the certificates of every TLS listener in `config`, from files and from the
/// `secrets` read so far (a Secret not read yet, or refused, contributes nothing); `before`
/// (the running snapshot) gives the version, the ticket keys to keep and, with
/// [`Files::Reuse`], the file certificates. `None` when no listener has `tls:`. A file
/// that fails is an error naming the field; a certificate expiring within
/// [`EXPIRY_WARNING`] is loaded with a warning.
pub fn load(
    config: &Config,
    before: Option<&TlsSnapshot>,
    secrets: &Secrets,
    files: Files,
) -> Result<Option<TlsSnapshot>, ConfigError> {
    let now = std::time::SystemTime::now();
    let mut listeners = HashMap::new();
    for (i, l) in config.listeners.iter().enumerate() {
        let Some(tls) = &l.tls else { continue };
        let mut certs = Vec::with_capacity(tls.certificates.len());
        for (j, c) in tls.certificates.iter().enumerate() {
            let loaded =
                match &c.source {
                    CertSource::Files {
                        cert_file,
                        key_file,
                    } => {
                        let kept = (files == Files::Reuse)
                            .then(|| in_force(before, &l.name, &cert_file.display().to_string()))
                            .flatten();
                        match kept {
                            Some(k) => k,
                            None => load_files(cert_file, key_file, c.names.as_deref()).map_err(
                                |e| ConfigError {
                                    file: None,
                                    field: format!("listeners[{i}].tls.certificates[{j}]"),
                                    line: None,
                                    message: e.0,
                                },
                            )?,
                        }
                    }
                    CertSource::Secret(s) => {
                        let Some(data) = secrets.good(s) else {
                            continue;
                        };
                        match data.load(&s.to_string(), c.names.as_deref(), now) {
                            Ok(loaded) => loaded,
                            Err(e) => {
                                tracing::error!(listener = %l.name, "certificate not served: {e}");
                                continue;
                            }
                        }
                    }
                };
            let left = loaded.info.not_after
                - now
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(0, |d| d.as_secs() as i64);
            if left < EXPIRY_WARNING.as_secs() as i64 {
                tracing::warn!(
                    listener = %l.name,
                    source = %loaded.info.source,
                    subject = %loaded.info.subject,
                    days_left = left / 86_400,
                    "certificate expires soon"
                );
            }
            certs.push(loaded);
        }
        if let Some(ca) = &tls.client_ca_file {
            client_roots(ca).map_err(|message| ConfigError {
                file: None,
                field: format!("listeners[{i}].tls.client_ca_file"),
                line: None,
                message,
            })?;
        }
        listeners.insert(
            l.name.clone(),
            ListenerCerts {
                certs,
                strict: tls.sni_strict,
            },
        );
    }
    if listeners.is_empty() {
        return Ok(None);
    }
    let keys = match before {
        Some(b) => b.tickets.copy(),
        None => TicketKeys::rotate(None),
    };
    let tickets = keys.map_err(|e| ConfigError {
        file: None,
        field: String::new(),
        line: None,
        message: e.0,
    })?;
    Ok(Some(TlsSnapshot {
        version: before.map_or(1, |b| b.version + 1),
        listeners,
        tickets,
    }))
}

/// The certificate from `source` that `listener` serves in `before`.
fn in_force(before: Option<&TlsSnapshot>, listener: &str, source: &str) -> Option<LoadedCert> {
    before?
        .listeners
        .get(listener)?
        .certs
        .iter()
        .find(|c| c.info.source == source)
        .cloned()
}

/// The CA certificates in a PEM file, as roots for verifying client certificates.
fn client_roots(path: &std::path::Path) -> Result<RootCertStore, String> {
    let pem = std::fs::read(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    let mut roots = RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(&pem) {
        let cert = cert.map_err(|e| format!("{}: not a PEM certificate: {e}", path.display()))?;
        roots
            .add(cert)
            .map_err(|e| format!("{}: not a usable CA certificate: {e}", path.display()))?;
    }
    if roots.is_empty() {
        return Err(format!("{}: no certificate in it", path.display()));
    }
    Ok(roots)
}

/// The SNI choice of one listener, over the snapshot's certificates.
#[derive(Debug)]
struct Resolver(Arc<CertSet>);

impl ResolvesServerCert for Resolver {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        self.0.pick(hello.server_name(), hello.signature_schemes())
    }
}

/// One worker's server configs, by listener name, from one snapshot.
#[derive(Debug, Default)]
pub struct WorkerTls {
    pub version: u64,
    configs: HashMap<String, Listener>,
}

/// One TLS listener on one worker: everything in it is this worker's own.
#[derive(Debug, Clone)]
pub struct Listener {
    pub config: Arc<ServerConfig>,
    pub certs: Arc<CertSet>,
}

impl WorkerTls {
    /// Builds this worker's configs for the TLS listeners of `listeners` (name and
    /// settings) from `snapshot`. A listener whose config cannot be built (its client CA
    /// became unreadable since the check) keeps `previous`'s.
    pub fn build(
        snapshot: &TlsSnapshot,
        listeners: &[(String, ListenerTls)],
        previous: Option<&WorkerTls>,
    ) -> WorkerTls {
        let mut configs = HashMap::new();
        let tickets = snapshot.tickets.copy().map(Arc::new);
        for (name, settings) in listeners {
            let Some(loaded) = snapshot.listeners.get(name) else {
                continue;
            };
            let built = CertSet::build(loaded).map_err(|e| e.0).and_then(|certs| {
                let tickets = tickets.clone().map_err(|e| e.0)?;
                let certs = Arc::new(certs);
                server_config(&certs, settings, tickets).map(|c| (c, certs))
            });
            match built {
                Ok((config, certs)) => {
                    configs.insert(
                        name.clone(),
                        Listener {
                            config: Arc::new(config),
                            certs,
                        },
                    );
                }
                Err(e) => {
                    tracing::error!(listener = %name, "TLS config not rebuilt, the previous stays: {e}");
                    if let Some(old) = previous.and_then(|p| p.configs.get(name)) {
                        configs.insert(name.clone(), old.clone());
                    }
                }
            }
        }
        WorkerTls {
            version: snapshot.version,
            configs,
        }
    }

    /// The listener's current config.
    pub fn get(&self, listener: &str) -> Option<&Listener> {
        self.configs.get(listener)
    }
}

fn server_config(
    certs: &Arc<CertSet>,
    settings: &ListenerTls,
    tickets: Arc<TicketKeys>,
) -> Result<ServerConfig, String> {
    let versions: &[&rustls::SupportedProtocolVersion] = match settings.min_version {
        TlsVersion::V1_2 => &[&rustls::version::TLS13, &rustls::version::TLS12],
        TlsVersion::V1_3 => &[&rustls::version::TLS13],
    };
    let builder = ServerConfig::builder_with_provider(Arc::new(default_provider()))
        .with_protocol_versions(versions)
        .map_err(|e| e.to_string())?;
    let builder = match &settings.client_ca_file {
        None => builder.with_no_client_auth(),
        Some(ca) => {
            let roots = client_roots(ca)?;
            let verifier = WebPkiClientVerifier::builder_with_provider(
                Arc::new(roots),
                Arc::new(default_provider()),
            )
            .build()
            .map_err(|e| e.to_string())?;
            builder.with_client_cert_verifier(verifier)
        }
    };
    let mut config = builder.with_cert_resolver(Arc::new(Resolver(certs.clone())));
    config.alpn_protocols = if settings.h2 {
        vec![b"h2".to_vec(), b"http/1.1".to_vec()]
    } else {
        vec![b"http/1.1".to_vec()]
    };
    config.session_storage = Arc::new(NoServerSessionStorage {});
    config.ticketer = tickets;
    config.max_early_data_size = 0;
    Ok(config)
}

/// Warn at load about a certificate expiring sooner than this.
pub const EXPIRY_WARNING: Duration = Duration::from_secs(14 * 24 * 3600);

/// Handshake outcomes, as `strait_tls_handshakes_total{result}` labels them.
pub const RESULTS: [&str; 7] = [
    "ok",
    "failed",
    "timeout",
    "plaintext_http",
    "unknown_sni",
    "overload",
    "closed",
];

/// An index into [`RESULTS`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Ok = 0,
    Failed = 1,
    Timeout = 2,
    PlaintextHttp = 3,
    UnknownSni = 4,
    Overload = 5,
    /// The client went away before the handshake ended.
    Closed = 6,
}

/// One TLS listener on one worker: its settings, and its handshakes in progress.
#[derive(Debug)]
pub struct Terminator {
    pub name: String,
    pub settings: ListenerTls,
    in_progress: Cell<usize>,
    /// When a failure was last logged at `warn`, and failures not logged since.
    last_warn: Cell<Option<Instant>>,
    quiet: Cell<u64>,
}

/// At most one `warn` line per listener and worker this often; the rest are counted.
const WARN_EVERY: Duration = Duration::from_secs(10);

/// The answer to plain HTTP on a TLS port, as nginx gives it.
const PLAIN_HTTP_400: &[u8] = b"HTTP/1.1 400 Bad Request\r\nContent-Type: text/plain\r\nContent-Length: 46\r\nConnection: close\r\n\r\nThe plain HTTP request was sent to HTTPS port\n";

impl Terminator {
    pub fn new(name: String, settings: ListenerTls) -> Terminator {
        Terminator {
            name,
            settings,
            in_progress: Cell::new(0),
            last_warn: Cell::new(None),
            quiet: Cell::new(0),
        }
    }

    /// Logs a failed handshake: at `debug` always, at `warn` at most every [`WARN_EVERY`]
    /// with the count of those in between, so a flood of bad handshakes cannot flood the
    /// log.
    fn log_failure(&self, worker: usize, peer: ClientAddr, outcome: Outcome, why: &str) {
        tracing::debug!(worker, listener = %self.name, client = %peer, result = RESULTS[outcome as usize], "TLS handshake: {why}");
        let now = Instant::now();
        if self
            .last_warn
            .get()
            .is_some_and(|t| now.duration_since(t) < WARN_EVERY)
        {
            self.quiet.set(self.quiet.get() + 1);
            return;
        }
        tracing::warn!(
            worker,
            listener = %self.name,
            client = %peer,
            result = RESULTS[outcome as usize],
            not_logged_since = self.quiet.get(),
            "TLS handshake failed: {why}"
        );
        self.last_warn.set(Some(now));
        self.quiet.set(0);
    }
}

/// Counts a handshake in progress while it lives.
struct InProgress<'a>(&'a Cell<usize>);

impl Drop for InProgress<'_> {
    fn drop(&mut self) {
        self.0.set(self.0.get() - 1);
    }
}

/// The TLS facts of a client connection, for the access log and `X-Forwarded-Proto`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TlsFacts {
    /// `TLSv1.2` or `TLSv1.3`.
    pub version: &'static str,
    /// The name the client asked for (SNI), if any.
    pub sni: Option<Rc<str>>,
    /// ALPN chose `h2`: the connection speaks HTTP/2.
    pub h2: bool,
}

/// Serves one connection of a TLS listener: the handshake (bounded by the listener's
/// `handshake_timeout` and `max_handshakes`), then HTTP/1.1 over it. Plain HTTP gets
/// nginx's 400; every outcome is counted.
pub async fn accept<S: Transport>(stream: S, peer: ClientAddr, open: Open, t: Rc<Terminator>) {
    accept_then(stream, peer, open, t, |s, peer, open, facts| async move {
        if facts.h2 {
            crate::h2::serve(s, Vec::new(), peer, open, Some(facts)).await;
        } else {
            http1::serve(s, peer, open, Some(facts)).await;
        }
    })
    .await;
}

/// [`accept`], then `then` over the TLS stream (a `tcp` listener with `tls:` copies it
/// to its upstream).
pub async fn accept_then<S, F, Fut>(
    stream: S,
    peer: ClientAddr,
    open: Open,
    t: Rc<Terminator>,
    then: F,
) where
    S: Transport,
    F: FnOnce(TlsStream<S>, ClientAddr, Open, TlsFacts) -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    let w = open.worker().clone();
    let count = |o: Outcome| w.metrics.tls_handshakes[o as usize].inc();
    if t.in_progress.get() >= t.settings.max_handshakes {
        count(Outcome::Overload);
        t.log_failure(
            w.id,
            peer,
            Outcome::Overload,
            "too many handshakes in progress on this worker",
        );
        return;
    }
    let listener = w.tls.borrow().get(&t.name).map(|l| l.config.clone());
    let Some(config) = listener else {
        count(Outcome::Failed);
        t.log_failure(
            w.id,
            peer,
            Outcome::Failed,
            "no certificate loaded for this listener",
        );
        return;
    };
    let conn = match ServerConnection::new(config) {
        Ok(c) => c,
        Err(e) => {
            count(Outcome::Failed);
            t.log_failure(w.id, peer, Outcome::Failed, &e.to_string());
            return;
        }
    };
    stream.set_nodelay();
    let mut tls = TlsStream::new(stream, conn);
    let result = {
        t.in_progress.set(t.in_progress.get() + 1);
        let _guard = InProgress(&t.in_progress);
        // Boxed: the handshake's state lives only while it runs, not in the task of
        // every idle connection (massif: the task was 5.9 KiB with it inline).
        let shake = Box::pin(monoio::time::timeout(
            t.settings.handshake_timeout,
            handshake(&mut tls),
        ));
        monoio::select! {
            biased;
            r = shake => r,
            () = w.stop.wait() => return,
        }
    };
    let outcome = match result {
        Err(_) => Err((
            Outcome::Timeout,
            "no handshake within handshake_timeout".to_string(),
        )),
        Ok(Err(Fail::Closed)) => Err((
            Outcome::Closed,
            "the client closed the connection".to_string(),
        )),
        Ok(Err(Fail::PlainHttp)) => Err((
            Outcome::PlaintextHttp,
            "plain HTTP sent to a TLS port (answered 400)".to_string(),
        )),
        Ok(Err(Fail::Tls(e))) => {
            let sni = tls.server_name();
            let unknown = {
                let tls_state = w.tls.borrow();
                let certs = tls_state.get(&t.name).map(|l| l.certs.clone());
                certs.is_some_and(|c| c.strict && !sni.as_deref().is_some_and(|n| c.serves(n)))
            };
            if unknown {
                Err((
                    Outcome::UnknownSni,
                    format!(
                        "no certificate for SNI {:?} (sni_strict)",
                        sni.as_deref().unwrap_or("")
                    ),
                ))
            } else {
                Err((Outcome::Failed, e.to_string()))
            }
        }
        Ok(Ok(())) => Ok(()),
    };
    if let Err((o, why)) = outcome {
        count(o);
        if o != Outcome::Closed {
            t.log_failure(w.id, peer, o, &why);
        }
        return;
    }
    count(Outcome::Ok);
    let version = match tls.session().protocol_version() {
        Some(rustls::ProtocolVersion::TLSv1_3) => "TLSv1.3",
        Some(rustls::ProtocolVersion::TLSv1_2) => "TLSv1.2",
        _ => "TLS",
    };
    let facts = TlsFacts {
        version,
        sni: tls.server_name().map(Rc::from),
        h2: tls.session().alpn_protocol() == Some(b"h2"),
    };
    then(tls, peer, open, facts).await;
}

/// Why a handshake did not end.
enum Fail {
    Closed,
    PlainHttp,
    Tls(std::io::Error),
}

async fn handshake<S: Transport>(tls: &mut TlsStream<S>) -> Result<(), Fail> {
    let first = match tls.first_bytes().await {
        Ok([]) => return Err(Fail::Closed),
        Ok(b) => b,
        Err(_) => return Err(Fail::Closed),
    };
    // A TLS record starts with its content type (22: handshake); an HTTP request with a
    // method's first letter.
    if first[0].is_ascii_uppercase() {
        let (_, _) = tls.get_mut().write_all(PLAIN_HTTP_400).await;
        return Err(Fail::PlainHttp);
    }
    tls.handshake().await.map_err(|e| match e.kind() {
        std::io::ErrorKind::UnexpectedEof | std::io::ErrorKind::ConnectionReset => Fail::Closed,
        _ => Fail::Tls(e),
    })
}

/// The files of a generated certificate authority and of one server certificate it signed.
#[derive(Debug, Clone)]
pub struct DemoCerts {
    pub ca_file: std::path::PathBuf,
    pub cert_file: std::path::PathBuf,
    pub key_file: std::path::PathBuf,
}

/// Generates a throwaway CA and an ECDSA P-256 certificate it signed for `names`, written
/// as PEM into `dir` (`ca.pem`, `<stem>.crt`, `<stem>.key`, the key readable by the owner
/// only). For `strait demo` and tests.
pub fn generate_demo_certs(
    dir: &std::path::Path,
    stem: &str,
    names: &[&str],
) -> Result<DemoCerts, String> {
    use rcgen::{
        BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair, KeyUsagePurpose,
    };
    use std::os::unix::fs::OpenOptionsExt;
    let fail = |e: rcgen::Error| e.to_string();
    let ca_key = KeyPair::generate().map_err(fail)?;
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).map_err(fail)?;
    ca_params
        .distinguished_name
        .push(DnType::CommonName, "strait demo CA");
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    let ca = ca_params.self_signed(&ca_key).map_err(fail)?;
    let issuer = Issuer::from_params(&ca_params, &ca_key);
    let key = KeyPair::generate().map_err(fail)?;
    let mut params =
        CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>())
            .map_err(fail)?;
    params.distinguished_name.push(
        DnType::CommonName,
        names.first().copied().unwrap_or("strait"),
    );
    let cert = params.signed_by(&key, &issuer).map_err(fail)?;
    let files = DemoCerts {
        ca_file: dir.join("ca.pem"),
        cert_file: dir.join(format!("{stem}.crt")),
        key_file: dir.join(format!("{stem}.key")),
    };
    let write = |path: &std::path::Path, text: &str, mode: u32| {
        use std::io::Write;
        std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(mode)
            .open(path)
            .and_then(|mut f| f.write_all(text.as_bytes()))
            .map_err(|e| format!("{}: {e}", path.display()))
    };
    write(&files.ca_file, &ca.pem(), 0o644)?;
    write(&files.cert_file, &cert.pem(), 0o644)?;
    write(&files.key_file, &key.serialize_pem(), 0o600)?;
    Ok(files)
}

/// `strait demo`'s HTTPS listener on 127.0.0.1:9443, serving a certificate for
/// `sd.httpbin.org` and `localhost` signed by a CA generated into `dir`.
pub fn demo_listener(
    dir: &std::path::Path,
) -> Result<(crate::config::ListenerConfig, DemoCerts), String> {
    use crate::config::{Certificate, ListenAddr, ListenerConfig, Protocol};
    let certs = generate_demo_certs(dir, "sd.httpbin.org", &["sd.httpbin.org", "localhost"])?;
    let listener = ListenerConfig {
        name: "https".into(),
        addr: ListenAddr::Inet(std::net::SocketAddr::from(([127, 0, 0, 1], 9443))),
        mode: None,
        protocol: Protocol::Http,
        tls: Some(ListenerTls {
            certificates: vec![Certificate {
                source: CertSource::Files {
                    cert_file: certs.cert_file.clone(),
                    key_file: certs.key_file.clone(),
                },
                names: None,
            }],
            min_version: TlsVersion::V1_2,
            handshake_timeout: ListenerTls::DEFAULT_HANDSHAKE_TIMEOUT,
            sni_strict: false,
            client_ca_file: None,
            max_handshakes: ListenerTls::DEFAULT_MAX_HANDSHAKES,
            h2: true,
        }),
        trusted_proxies: Vec::new(),
        proxy_protocol: false,
    };
    Ok((listener, certs))
}
