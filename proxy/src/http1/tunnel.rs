//! Upgraded connections (WebSocket and any other `Upgrade` answered with 101): after the
//! 101, bytes are copied both ways unchanged until both sides closed, either side fails,
//! or nothing moved for `http.tunnel_idle_timeout`.
//! A CONNECT (`connect.rs`) becomes the same tunnel after its 200.
//!
//! Runs on: a worker, as the tail of the client connection's task. The copying itself is
//! the L4 core of `tcp` listeners ([`crate::tcp::copy`]): small buffers while idle, the
//! worker's 64 KiB ones while busy, and a half-close becomes a write shutdown of the
//! other side. The upstream connection is never returned to the pool: it is dropped with
//! the tunnel.

use std::time::Duration;

use crate::tcp::copy::{self, Limits, Outcome};
use crate::transport::{Transport, UpstreamStream};
use crate::worker::Worker;

/// An upstream connection that switched protocols, and what it already sent past its
/// 101 head.
#[derive(Debug)]
pub(super) struct Upgraded {
    pub(super) upstream: UpstreamStream,
    /// Upstream bytes read past the 101 head, for the client.
    pub(super) to_client: Vec<u8>,
    /// The upstream's `timeouts.write`.
    pub(super) write_timeout: Duration,
}

/// Runs the tunnel between `client` and the upgraded upstream. `to_upstream`: client
/// bytes read past the upgrade request's head.
pub(super) async fn run<S: Transport>(client: S, to_upstream: Vec<u8>, up: Upgraded, w: &Worker) {
    let idle = w.http.tunnel_idle_timeout;
    let _active = w.metrics.pool_active.hold();
    let limits = Limits {
        idle,
        client_write: idle,
        upstream_write: up.write_timeout,
    };
    let copied = copy::both_ways(client, up.upstream, to_upstream, up.to_client, limits, w).await;
    if copied.outcome == Outcome::Idle {
        tracing::debug!(worker = w.id, "tunnel idle timeout");
    }
}
