//! The proxy's integration tests: one test binary (STYLE.md habit 8). Real sockets on
//! 127.0.0.x, in-process echo and hand-written backends, the real `strait` binary for
//! the process tests.
//!
//! - [`support`]: the harness, a raw HTTP/1.1 client, misbehaving backends.
//! - [`routing`]: hosts, prefixes, strip, methods, 404/405, reload.
//! - [`forwarding`]: headers, HTTP/1.0, bodies both ways, framing, 1xx, pipelining.
//! - [`hostile`]: malformed and hostile requests (status and connection fate, whole and
//!   byte by byte), misbehaving clients beside a good one, malformed responses.
//! - [`upstream`]: balancing, keep-alive pool, failures (502/503/504), endpoint changes,
//!   workers.
//! - [`bounds`]: header, body and upstream write timeouts, the connection limit, a
//!   client that never reads beside one that does.
//! - [`tunnel`]: Upgrade (WebSocket) tunnels, half-close, idle timeout, graceful stop.
//! - [`connect`]: CONNECT refused (405 with `Allow`, 404) or, on a route that names it,
//!   tunnelled to the route's upstream; retries, 502/504, the access log.
//! - [`tcp`]: `protocol: tcp` listeners: transfers by checksum, half-closes, many
//!   connections, connect retries, endpoints leaving and draining, idle timeout,
//!   graceful stop, a discovery-backed upstream.
//! - [`draining`]: removed and terminating endpoints, safe retries with held bodies,
//!   passive health, the in-process graceful stop.
//! - [`e2e`]: Kubernetes discovery end to end: the fake API server, the real kube
//!   watcher, the gateway and echo pods on 127.0.0.x.
//! - [`rolling`]: a rolling update of echo pod processes under load, through the fake
//!   API server and the gateway: no request fails.
//! - [`balance`], [`active_health`], [`locality`]: least_request, consistent_hash and
//!   outlier detection; active health checks (thresholds, panic mode); same-node /
//!   same-zone preference with the zone read from the Node.
//! - [`admin`]: the admin server: health, readiness, metrics, the debug snapshot.
//! - [`process`]: `strait check` and `strait run` as a child process, 1 GiB both ways.
//! - [`reload`]: the config file watched by `strait run`, SIGHUP, a refused bad file.
//! - [`restart`]: SIGTERM draining, a second signal, a new process taking over the port
//!   under load.
//! - [`tls`]: TLS listeners: SNI (exact, wildcard, default, strict), curl, plain HTTP
//!   and bad handshakes, resumption across workers, a rotated certificate mount.
//! - [`unix`]: Unix domain sockets on both sides (listeners, `tcp` listeners, upstream
//!   nodes): forwarding, keep-alive, chunked bodies, retries, draining, the socket file.

// Test code: an unwrap is an assertion. clippy.toml's `allow-unwrap-in-tests` covers
// `#[test]` functions only, not the helpers and handlers of this test crate.
#![allow(clippy::unwrap_used)]
// Test threads may share state with locks; the data plane may not (proxy/clippy.toml).
#![allow(clippy::disallowed_types, clippy::disallowed_methods)]

mod access_log;
mod active_health;
mod admin;
mod balance;
mod bounds;
mod connect;
mod draining;
mod e2e;
mod forwarding;
mod h2;
mod h2_abuse;
mod hostile;
mod locality;
mod process;
mod readme;
mod reload;
mod restart;
mod rolling;
mod routes;
mod routing;
mod support;
mod tcp;
mod tls;
mod tls_secrets;
mod trailers;
mod tunnel;
mod unix;
mod upstream;
