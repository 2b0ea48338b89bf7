//! strait's data plane: a thread-per-core HTTP/1.1 reverse proxy and TCP proxy, and the
//! `strait` binary around it. ARCHITECTURE.md (at the repository root) walks one request
//! and one discovery event through these modules.
//!
//! Crate map:
//! - [`config`]: YAML file → checked [`config::Config`] (main thread only).
//! - [`gateway`]: starts the workers, publishes snapshots, reloads, stops; [`run`] is the
//!   loop the binary (and the tests) hand their signals to.
//! - [`worker`]: one pinned OS thread per core with its own monoio runtime, listeners,
//!   admission, buffers and graceful stop.
//! - [`transport`]: the stream trait every protocol is written over (TCP, Unix sockets;
//!   TLS next), deadline-bound reads and writes.
//! - [`http1`]: HTTP/1.1 from clients, the life of a request, top-down.
//! - [`tcp`]: `protocol: tcp` listeners: bytes copied both ways to an upstream's
//!   endpoints, drained when an endpoint leaves the table.
//! - [`upstream`]: per-worker endpoint picking, passive health, connecting, the keep-alive
//!   pool and endpoint departures.
//! - [`http`]: the HTTP/1.1 codec (`strait-http`: heads, chunked framing, replies).
//! - [`access_log`]: the per-request log line.
//! - [`ratelimit`], [`real_ip`], [`request_id`]: per-worker token buckets, the client
//!   address behind trusted proxies, and request ids (pure, per request).
//! - [`metrics`]: per-worker single-writer counters, summed at scrape time.
//! - [`reload`]: the config file watch and hot reload.
//! - [`admin`]: the admin server (`/healthz`, `/readyz`, `/metrics`, `/debug/snapshot`).
//! - [`echo`]: the httpbin-like echo backend behind `strait echo` and `strait demo`.
//! - [`error`]: data-plane errors and the status each maps to; [`sys`]: the few raw
//!   system calls (socket peek, open-file limit).

pub mod access_log;
pub mod admin;
pub mod config;
pub mod echo;
pub mod error;
pub mod gateway;
pub mod h2;
pub mod http1;
pub mod metrics;
pub use strait_http as http;
pub mod ratelimit;
pub mod real_ip;
pub mod reload;
pub mod request_id;
pub mod routing;
pub mod sys;
pub mod tcp;
pub mod tls;
pub mod transport;
pub mod upstream;
pub mod worker;

pub use gateway::{run, ConfigSource, Control, Gateway, ReloadError, StartError};

/// The embedded config of `strait demo`.
pub const DEMO_CONFIG: &str = include_str!("../demo.yaml");
