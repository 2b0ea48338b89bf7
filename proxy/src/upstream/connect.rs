//! Connecting to an endpoint: TCP (TCP_NODELAY on) or a Unix socket, as its address
//! says, within the upstream's connect timeout, with the outcome told to passive health.
//!
//! Runs on: a worker, inside the task that needs the connection.

use std::time::Instant;

use monoio::net::{TcpStream, UnixStream};
use strait_discovery::{EndpointAddr, Upstream};

use super::health::Verdict;
use super::Health;
use crate::error::ErrorKind;
use crate::metrics::UpstreamStats;
use crate::transport::{AnyStream, Either, Transport};

/// Opens a connection to endpoint `addr` of `up` within its `timeouts.connect`
/// (TCP_NODELAY on for TCP), and tells `health` how it went: a success ends the endpoint's
/// failure streak, a failure may eject it (logged once, at warn). Failures and
/// ejections are counted in the upstream's `stats`.
pub async fn connect(
    health: &Health,
    up: &Upstream,
    stats: &UpstreamStats,
    addr: EndpointAddr,
    worker: usize,
) -> Result<AnyStream, ErrorKind> {
    let kind = match monoio::time::timeout(up.settings.connect_timeout, open(addr)).await {
        Ok(Ok(stream)) => {
            stream.set_nodelay();
            health.success(addr);
            return Ok(stream);
        }
        Ok(Err(_)) => ErrorKind::ConnectRefused,
        Err(_) => ErrorKind::ConnectTimeout,
    };
    stats.connect_failures.inc();
    tracing::debug!(endpoint = %addr, ?kind, "connect failed");
    if let Verdict::Ejected(length) = health.failure(addr, up, Instant::now()) {
        stats.ejections.inc();
        tracing::warn!(
            worker,
            upstream = %up.name,
            endpoint = %addr,
            ejection = ?length,
            "endpoint ejected after consecutive connect failures"
        );
    }
    Err(kind)
}

/// A connection to `addr`: TCP to an IP and port, or a Unix socket's path.
async fn open(addr: EndpointAddr) -> std::io::Result<AnyStream> {
    match addr {
        EndpointAddr::Inet(a) => TcpStream::connect_addr(a).await.map(Either::A),
        EndpointAddr::Unix(path) => UnixStream::connect(path.as_path()).await.map(Either::B),
    }
}
