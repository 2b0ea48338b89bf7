//! strait's data plane: thread-per-core HTTP/1.1 reverse proxy and TCP proxy.
//!
//! Crate map:
//! - [`config`]: YAML file → checked [`config::Config`] (main thread only).
//! - [`gateway`]: starts workers, publishes snapshots, shuts down; [`run`] is the entry
//!   point the binary and the tests share.
//! - [`worker`]: one pinned OS thread per core with its own monoio runtime, listeners,
//!   routing view, round-robin cursors and connection pool.
//! - [`http`]: the HTTP/1.1 codec (heads, bodies, chunked framing, hop-by-hop rules).
//! - [`proxy`]: the life of a request, top-down.
//! - [`tcp`]: `protocol: tcp` listeners: bytes copied both ways to an upstream's
//!   endpoints, drained when an endpoint leaves the table.
//! - [`upstream`]: per-worker endpoint picking, passive health, the keep-alive pool and
//!   endpoint departures.
//! - [`access_log`]: the per-request log line.
//! - [`metrics`]: per-worker single-writer counters, summed at scrape time.
//! - [`reload`]: the config file watch and hot reload.
//! - [`admin`]: the admin server (`/healthz`, `/readyz`, `/metrics`, `/debug/snapshot`).
//! - [`demo`]: the built-in httpbin-like echo backend behind `strait demo`.

pub mod access_log;
pub mod admin;
pub mod config;
pub mod demo;
pub mod error;
pub mod gateway;
pub mod metrics;
pub use strait_http as http;
pub mod proxy;
pub mod reload;
pub mod sys;
pub mod tcp;
pub mod upstream;
pub mod worker;

pub use gateway::{run, Gateway, ReloadError, StartError};

/// The embedded config of `strait demo`.
pub const DEMO_CONFIG: &str = include_str!("../demo.yaml");
