//! A fake kube-apiserver for tests: a real HTTP(S) server on `127.0.0.1:0` that speaks the
//! Kubernetes wire protocol (shared/KUBE-API.md) for core/v1 `endpoints`, `services`,
//! `namespaces`, `secrets` and discovery.k8s.io/v1 `endpointslices`, so that kube's `watcher` and `kubectl`
//! run against it unmodified. Dev-only (`publish = false`); no production code depends on it.
//!
//! Threads: [`FakeApiServer::start`] spawns one OS thread (`fake-apiserver`) running a
//! current-thread tokio runtime that accepts connections and runs every request and watch. The
//! handle's methods are plain synchronous calls that take a mutex briefly, so they work from
//! sync tests and from async tests on any runtime (the server never shares the test's runtime).
//!
//! Crate map:
//! - [`kind`](Kind): the served kinds and their wire names.
//! - `object`: normalising applied objects (typed check, defaults); `store`: objects, the
//!   global resourceVersion, history, watch subscriptions.
//! - `server`: runtime thread, accept loop, connections; `http`: one request; `route`: paths and
//!   query; `list`: LIST/GET and pagination; `watch`: watch streams; `render`: Accept, Tables,
//!   PartialObjectMetadata; `discovery_docs`: `/api`, `/apis`, `/version`; `status`: Status
//!   errors; `auth`: bearer tokens and 403s; `tls`: rcgen CA + rustls.
//!
//! ```no_run
//! use strait_fake_apiserver::{FakeApiServer, Kind, Options, Verb};
//! let fake = FakeApiServer::start(Options::default().tls());
//! fake.apply_yaml(include_str!("../tests/fixtures/httpbin.yaml"));
//! // Point a client at it: fake.url(), fake.token(), fake.ca_der() / fake.ca_pem(), or
//! // fake.kubeconfig(). Then drive it:
//! fake.delete(Kind::EndpointSlice, "apisix", "httpbin-abc12");
//! fake.compact(); // history gone: re-watches from older versions get ERROR 410
//! fake.drop_watches(); // every watch stream is cut: the client must relist
//! fake.stop(); // the API server goes away (state kept) …
//! fake.restart(); // … and comes back on the same port
//! assert!(fake.count(Verb::List, Kind::EndpointSlice) <= 2);
//! ```
//!
//! In async tests, wait for conditions (`watch_count()`, `requests()`) by polling with the
//! test runtime's timer under a deadline; [`FakeApiServer::wait_for`] blocks the calling thread
//! and is meant for sync tests.

mod auth;
mod discovery_docs;
mod http;
mod kind;
mod list;
mod object;
mod render;
mod route;
mod selector;
mod server;
mod status;
mod store;
mod tls;
mod watch;

use std::collections::BTreeSet;
use std::net::{SocketAddr, TcpListener};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde::Serialize;
use serde_json::Value;

pub use kind::Kind;
pub use object::ApplyError;
pub use tls::TlsError;

use auth::AuthState;
use server::{lock, Listening, RuntimeThread, Shared};
use store::{Store, WatchMsg};

/// How to start a [`FakeApiServer`].
#[derive(Debug, Clone)]
pub struct Options {
    /// Where to listen; port 0 picks a free one. Default `127.0.0.1:0`.
    pub addr: SocketAddr,
    /// Serve HTTPS with a freshly generated CA (see [`FakeApiServer::ca_pem`]).
    pub tls: bool,
    /// The bearer token to accept; `None` generates a random one.
    pub token: Option<String>,
    /// Let requests without an `Authorization` header through (kubectl over plain http sends
    /// no credentials). A wrong token still gets 401.
    pub anonymous_reads: bool,
    /// Kinds answered with 403 Forbidden (change later with [`FakeApiServer::forbid`]).
    pub forbidden: Vec<Kind>,
    /// Send a BOOKMARK this often on watches that allow them (upstream: about a minute).
    /// `None`: only when [`FakeApiServer::bookmark`] is called.
    pub bookmark_interval: Option<Duration>,
    /// Watch lifetime when the request has no `timeoutSeconds` (upstream: 30–60 min).
    pub default_watch_timeout: Duration,
    /// Print one line per request on stderr.
    pub log_requests: bool,
}

impl Default for Options {
    fn default() -> Options {
        Options {
            addr: SocketAddr::from(([127, 0, 0, 1], 0)),
            tls: false,
            token: None,
            anonymous_reads: false,
            forbidden: Vec::new(),
            bookmark_interval: None,
            default_watch_timeout: Duration::from_secs(1800),
            log_requests: false,
        }
    }
}

impl Options {
    /// Serve HTTPS.
    pub fn tls(mut self) -> Options {
        self.tls = true;
        self
    }

    /// Accept requests without credentials.
    pub fn anonymous_reads(mut self) -> Options {
        self.anonymous_reads = true;
        self
    }

    /// Use this bearer token.
    pub fn token(mut self, token: impl Into<String>) -> Options {
        self.token = Some(token.into());
        self
    }

    /// Listen here.
    pub fn addr(mut self, addr: SocketAddr) -> Options {
        self.addr = addr;
        self
    }
}

/// What kind of request a [`RequestRecord`] was.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verb {
    /// GET of a collection without `watch=true`.
    List,
    /// GET of a collection with `watch=true`.
    Watch,
    /// GET of one object.
    Get,
    /// A discovery document (`/api`, `/apis/…`, `/version`).
    Discovery,
    /// Anything else (health checks, unknown paths).
    Other,
}

/// How a request authenticated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Auth {
    /// The valid bearer token.
    Token,
    /// No credentials, allowed by `anonymous_reads`.
    Anonymous,
    /// Missing or wrong token: answered 401.
    Refused,
}

/// One request the server received.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestRecord {
    /// `GET`, …
    pub method: String,
    /// The path, e.g. `/apis/discovery.k8s.io/v1/endpointslices`.
    pub path: String,
    /// The raw query string (without `?`), e.g. `&limit=500`.
    pub query: String,
    /// What the request was.
    pub verb: Verb,
    /// The resource (plural) for list/watch/get.
    pub resource: Option<String>,
    /// How it authenticated.
    pub auth: Auth,
    /// The HTTP status answered (200 for watches, even one that carries an ERROR event).
    pub status: u16,
}

impl RequestRecord {
    /// A decoded query parameter.
    pub fn param(&self, name: &str) -> Option<String> {
        route::Query::parse(&self.query)
            .get(name)
            .map(str::to_string)
    }

    /// Whether this was a list or watch of `kind`.
    pub fn is(&self, verb: Verb, kind: Kind) -> bool {
        self.verb == verb && self.resource.as_deref() == Some(kind.plural())
    }
}

/// A running fake API server. Dropping it stops the server and its thread.
pub struct FakeApiServer {
    shared: Arc<Shared>,
    addr: SocketAddr,
    tls: Option<tls::TlsMaterial>,
    /// `Some` while listening; `stop()` takes it, `restart()` puts a new one.
    listening: Mutex<Option<Listening>>,
    // Declared last: dropped after `listening` is stopped in `Drop`.
    runtime: RuntimeThread,
}

/// Why the server could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// Binding or starting the runtime failed.
    #[error("fake-apiserver: {0}")]
    Io(#[from] std::io::Error),
    /// Certificate generation failed.
    #[error(transparent)]
    Tls(#[from] TlsError),
}

fn bind(addr: SocketAddr) -> std::io::Result<TcpListener> {
    let listener = TcpListener::bind(addr)?;
    listener.set_nonblocking(true)?;
    Ok(listener)
}

impl FakeApiServer {
    /// Starts a server; panics if it cannot (a test cannot go on without it).
    pub fn start(options: Options) -> FakeApiServer {
        FakeApiServer::try_start(options)
            .unwrap_or_else(|e| panic!("fake-apiserver failed to start: {e}"))
    }

    /// Starts a server.
    pub fn try_start(options: Options) -> Result<FakeApiServer, StartError> {
        let listener = bind(options.addr)?;
        let addr = listener.local_addr()?;
        let tls = if options.tls {
            Some(tls::generate(addr)?)
        } else {
            None
        };
        let runtime = RuntimeThread::start()?;
        let advertised = if addr.ip().is_unspecified() {
            SocketAddr::from(([127, 0, 0, 1], addr.port()))
        } else {
            addr
        };
        let shared = Arc::new(Shared {
            store: Mutex::new(Store::new()),
            auth: Mutex::new(AuthState {
                token: options.token.unwrap_or_else(auth::random_token),
                anonymous_reads: options.anonymous_reads,
                forbidden: options.forbidden.into_iter().collect::<BTreeSet<_>>(),
            }),
            log: Mutex::new(Vec::new()),
            server_address: advertised.to_string(),
            bookmark_interval: options.bookmark_interval,
            default_watch_timeout: options.default_watch_timeout,
            log_requests: options.log_requests,
        });
        let listening = Listening::start(
            &runtime.handle,
            Arc::clone(&shared),
            listener,
            tls.as_ref().map(|t| t.acceptor.clone()),
        );
        Ok(FakeApiServer {
            shared,
            addr,
            tls,
            listening: Mutex::new(Some(listening)),
            runtime,
        })
    }

    // === Connection details ===

    /// The base URL, e.g. `http://127.0.0.1:40123` (`https://` with TLS).
    pub fn url(&self) -> String {
        let scheme = if self.tls.is_some() { "https" } else { "http" };
        format!("{scheme}://{}", self.shared.server_address)
    }

    /// The address listened on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The bearer token currently accepted.
    pub fn token(&self) -> String {
        lock(&self.shared.auth).token.clone()
    }

    /// Rotates the accepted token; the old one gets 401 from now on.
    pub fn set_token(&self, token: impl Into<String>) {
        lock(&self.shared.auth).token = token.into();
    }

    /// Allows or refuses requests without credentials.
    pub fn set_anonymous_reads(&self, allow: bool) {
        lock(&self.shared.auth).anonymous_reads = allow;
    }

    /// Answers 403 Forbidden for every request on `kind` from now on.
    pub fn forbid(&self, kind: Kind) {
        lock(&self.shared.auth).forbidden.insert(kind);
    }

    /// Undoes [`forbid`](Self::forbid).
    pub fn allow(&self, kind: Kind) {
        lock(&self.shared.auth).forbidden.remove(&kind);
    }

    /// The CA certificate (PEM) that signed the server certificate, with TLS.
    pub fn ca_pem(&self) -> Option<String> {
        self.tls.as_ref().map(|t| t.ca_pem.clone())
    }

    /// With TLS, a client certificate and key (PEM, signed by [`Self::ca_pem`]'s CA): a
    /// connection that presents them is authenticated without a token.
    pub fn client_identity(&self) -> Option<(String, String)> {
        self.tls
            .as_ref()
            .map(|t| (t.client_cert_pem.clone(), t.client_key_pem.clone()))
    }

    /// The CA certificate (DER), with TLS: what `kube::Config::root_cert` takes.
    pub fn ca_der(&self) -> Option<Vec<u8>> {
        self.tls.as_ref().map(|t| t.ca_der.clone())
    }

    /// A kubeconfig (YAML) with the URL, the current token and, with TLS, the CA.
    pub fn kubeconfig(&self) -> String {
        tls::kubeconfig(&self.url(), &self.token(), self.ca_pem().as_deref())
    }

    // === Objects ===

    /// Creates or replaces an object (a k8s-openapi value or a `serde_json::Value` with
    /// `apiVersion`/`kind`), giving it the next global resourceVersion; returns that version.
    /// Panics if the object is not a valid object of a served kind.
    pub fn apply<T: Serialize + ?Sized>(&self, obj: &T) -> u64 {
        self.try_apply(obj)
            .unwrap_or_else(|e| panic!("fake-apiserver apply: {e}"))
    }

    /// [`apply`](Self::apply) that reports a bad object instead of panicking.
    pub fn try_apply<T: Serialize + ?Sized>(&self, obj: &T) -> Result<u64, ApplyError> {
        let value = serde_json::to_value(obj).map_err(ApplyError::Serialize)?;
        let normalized = object::normalize(value)?;
        Ok(lock(&self.shared.store).apply(normalized))
    }

    /// Applies every document of a (multi-document) YAML stream, in order; a `kind: List`
    /// document applies its items. Panics on a bad document.
    pub fn apply_yaml(&self, yaml: &str) -> Vec<u64> {
        self.try_apply_yaml(yaml)
            .unwrap_or_else(|e| panic!("fake-apiserver apply_yaml: {e}"))
    }

    /// [`apply_yaml`](Self::apply_yaml) that reports errors; nothing is applied unless every
    /// document is valid.
    pub fn try_apply_yaml(&self, yaml: &str) -> Result<Vec<u64>, ApplyError> {
        let normalized = object::parse_yaml_stream(yaml)?
            .into_iter()
            .map(object::normalize)
            .collect::<Result<Vec<_>, _>>()?;
        let mut store = lock(&self.shared.store);
        Ok(normalized.into_iter().map(|n| store.apply(n)).collect())
    }

    /// Deletes an object (`namespace` is ignored for cluster-scoped kinds); returns the
    /// deletion's resourceVersion, or `None` if it did not exist.
    pub fn delete(&self, kind: Kind, namespace: &str, name: &str) -> Option<u64> {
        lock(&self.shared.store).delete(kind, namespace, name)
    }

    /// An object as stored (with `kind`, `apiVersion`, resourceVersion, uid…).
    pub fn get(&self, kind: Kind, namespace: &str, name: &str) -> Option<Value> {
        lock(&self.shared.store)
            .get(kind, namespace, name)
            .map(|v| v.as_ref().clone())
    }

    /// The last resourceVersion handed out.
    pub fn resource_version(&self) -> u64 {
        lock(&self.shared.store).rv()
    }

    // === Watches and history ===

    /// Sends a BOOKMARK at the current resourceVersion to every open watch that allows them;
    /// returns that version.
    pub fn bookmark(&self) -> u64 {
        let mut store = lock(&self.shared.store);
        let rv = store.rv();
        store.broadcast(|| WatchMsg::Bookmark(rv), false);
        rv
    }

    /// Forgets the change history: watches from any version issued so far get an in-stream
    /// ERROR 410 "Expired", and continue tokens get HTTP 410. The global resourceVersion moves
    /// on by one (like a write to some other kind), so a fresh LIST returns a version that can
    /// be watched. Open watches are not touched (see [`drop_watches`](Self::drop_watches),
    /// [`expire_watches`](Self::expire_watches)). Returns the new version.
    pub fn compact(&self) -> u64 {
        lock(&self.shared.store).compact()
    }

    /// Closes every open watch stream abruptly (no terminating chunk), as a dying connection
    /// would; clients re-watch from their last version.
    pub fn drop_watches(&self) {
        lock(&self.shared.store).broadcast(|| WatchMsg::Drop, true);
    }

    /// Sends every open watch an ERROR 410 "Expired" event and ends it cleanly, as upstream
    /// does when a watch falls out of the watch cache's window. Also compacts history (so the
    /// re-watch gets 410 too and the client must relist). Returns the new version.
    pub fn expire_watches(&self) -> u64 {
        let mut store = lock(&self.shared.store);
        let compacted = store.compact();
        store.broadcast(|| WatchMsg::Expire { compacted }, true);
        compacted
    }

    /// Number of open watch streams.
    pub fn watch_count(&self) -> usize {
        lock(&self.shared.store).watch_count()
    }

    // === Lifecycle ===

    /// Stops listening and closes every connection (watches end abruptly); the objects and
    /// history are kept for [`restart`](Self::restart). Returns once the port is closed.
    pub fn stop(&self) {
        let listening = lock(&self.listening).take();
        if let Some(listening) = listening {
            lock(&self.shared.store).broadcast(|| WatchMsg::Drop, true);
            listening.stop();
        }
    }

    /// Listens again on the same address after [`stop`](Self::stop), with the same state,
    /// token and certificate. Panics if the port was taken meanwhile.
    pub fn restart(&self) {
        let mut listening = lock(&self.listening);
        if listening.is_some() {
            return;
        }
        let listener = bind(self.addr)
            .unwrap_or_else(|e| panic!("fake-apiserver restart on {}: {e}", self.addr));
        *listening = Some(Listening::start(
            &self.runtime.handle,
            Arc::clone(&self.shared),
            listener,
            self.tls.as_ref().map(|t| t.acceptor.clone()),
        ));
    }

    /// Whether the server is listening.
    pub fn is_running(&self) -> bool {
        lock(&self.listening).is_some()
    }

    // === Request log ===

    /// Every request received so far, oldest first.
    pub fn requests(&self) -> Vec<RequestRecord> {
        lock(&self.shared.log).clone()
    }

    /// Empties the request log.
    pub fn clear_requests(&self) {
        lock(&self.shared.log).clear();
    }

    /// Number of logged requests of `verb` on `kind`.
    pub fn count(&self, verb: Verb, kind: Kind) -> usize {
        lock(&self.shared.log)
            .iter()
            .filter(|r| r.is(verb, kind))
            .count()
    }

    /// Polls `condition` every 10 ms until it holds or `timeout` passes (a deadline wait for
    /// sync tests; async tests should poll with their runtime's timer instead of blocking).
    pub fn wait_for(&self, timeout: Duration, condition: impl Fn(&FakeApiServer) -> bool) -> bool {
        let deadline = Instant::now() + timeout;
        loop {
            if condition(self) {
                return true;
            }
            if Instant::now() >= deadline {
                return false;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

impl Drop for FakeApiServer {
    fn drop(&mut self) {
        self.stop();
        // `runtime` drops next: stops the runtime and joins its thread.
    }
}

impl std::fmt::Debug for FakeApiServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FakeApiServer")
            .field("url", &self.url())
            .field("running", &self.is_running())
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_handle_can_be_shared_across_threads_and_tasks() {
        fn assert_send_sync<T: Send + Sync>() {}
        assert_send_sync::<FakeApiServer>();
    }

    #[test]
    fn stop_closes_the_port_and_restart_reopens_it_with_state_kept() {
        let fake = FakeApiServer::start(Options::default());
        let rv = fake.apply(&serde_json::json!({"apiVersion": "v1", "kind": "Namespace",
            "metadata": {"name": "apisix"}}));
        fake.stop();
        assert!(!fake.is_running());
        assert!(std::net::TcpStream::connect(fake.addr()).is_err());
        fake.restart();
        assert!(std::net::TcpStream::connect(fake.addr()).is_ok());
        assert_eq!(fake.resource_version(), rv);
        assert!(fake.get(Kind::Namespace, "", "apisix").is_some());
    }
}
