//! Connecting to an endpoint: TCP (TCP_NODELAY on) or a Unix socket, as its address
//! says, then the TLS handshake when the upstream has `tls:`, all within the upstream's
//! connect timeout, with the outcome told to passive health. Each worker builds its own
//! rustls client config per upstream ([`TlsClients`]) from the snapshot's settings.
//!
//! Runs on: a worker, inside the task that needs the connection.

use std::time::Instant;

use monoio::io::AsyncWriteRentExt;
use monoio::net::{TcpStream, UnixStream};
use strait_discovery::spec::ProxyVersion;
use strait_discovery::{EndpointAddr, Upstream};

use super::health::Verdict;
use super::Health;
use crate::error::ErrorKind;
use crate::metrics::UpstreamStats;
use std::cell::RefCell;
use std::collections::HashMap;
use std::sync::Arc;

use rustls::ClientConfig;
use strait_discovery::tls::UpstreamTls;

use crate::http::proxy_protocol;
use crate::transport::tls::TlsStream;
use crate::transport::{AnyStream, ClientAddr, Either, Transport, UpstreamStream};

/// This worker's rustls client configs, by upstream name, each built from the settings
/// of the snapshot it was made for (rebuilt when a new snapshot brings new settings).
#[derive(Debug, Default)]
pub struct TlsClients {
    configs: RefCell<HashMap<Arc<str>, MadeFor>>,
}

/// A client config and the settings it was built from (and whether it offers `h2`).
type MadeFor = (Arc<UpstreamTls>, bool, Arc<ClientConfig>);

impl TlsClients {
    /// The config for upstream `name`; `h2`: ALPN offers `h2` only (`protocol: h2`).
    fn get(&self, name: &Arc<str>, tls: &Arc<UpstreamTls>, h2: bool) -> Option<Arc<ClientConfig>> {
        if let Some((made_for, for_h2, config)) = self.configs.borrow().get(name) {
            if Arc::ptr_eq(made_for, tls) && *for_h2 == h2 {
                return Some(config.clone());
            }
        }
        let config = match tls.client_config() {
            Ok(mut c) => {
                if h2 {
                    c.alpn_protocols = vec![b"h2".to_vec()];
                }
                Arc::new(c)
            }
            Err(e) => {
                tracing::error!(upstream = %name, "TLS client config: {e}");
                return None;
            }
        };
        self.configs
            .borrow_mut()
            .insert(name.clone(), (tls.clone(), h2, config.clone()));
        Some(config)
    }
}

/// Opens a connection to endpoint `addr` of `up` within its `timeouts.connect`
/// (TCP_NODELAY on for TCP), and tells `health` how it went: a success ends the endpoint's
/// failure streak, a failure may eject it (logged once, at warn). Failures and
/// ejections are counted in the upstream's `stats`.
pub async fn connect(
    health: &Health,
    clients: &TlsClients,
    (up, client): (&Upstream, Option<ClientAddr>),
    stats: &UpstreamStats,
    addr: EndpointAddr,
    worker: usize,
) -> Result<UpstreamStream, ErrorKind> {
    let attempt = open_secured(clients, up, addr, client);
    let kind = match monoio::time::timeout(up.settings.connect_timeout, attempt).await {
        Ok(Ok(stream)) => {
            health.success(addr);
            return Ok(stream);
        }
        Ok(Err(kind)) => kind,
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

/// A connection to `addr`, TLS-secured when `up` says so.
async fn open_secured(
    clients: &TlsClients,
    up: &Upstream,
    addr: EndpointAddr,
    client: Option<ClientAddr>,
) -> Result<UpstreamStream, ErrorKind> {
    let mut stream = open(addr).await.map_err(|_| ErrorKind::ConnectRefused)?;
    stream.set_nodelay();
    if let (Some(version), Some(client)) = (up.settings.proxy_protocol, client) {
        let header = proxy_header(version, client, addr);
        let (res, _) = stream.write_all(header).await;
        res.map_err(|_| ErrorKind::ConnectRefused)?;
    }
    match &up.settings.tls {
        None => Ok(stream.into()),
        // Boxed: only TLS connects carry the handshake's state, not every task that connects.
        Some(tls) => Box::pin(secure(stream, clients, up, tls, addr))
            .await
            .map(|s| UpstreamStream::Tls(Box::new(s))),
    }
}

/// The TLS handshake over a fresh connection to `addr`.
async fn secure(
    stream: AnyStream,
    clients: &TlsClients,
    up: &Upstream,
    tls: &Arc<UpstreamTls>,
    addr: EndpointAddr,
) -> Result<TlsStream<AnyStream>, ErrorKind> {
    let h2 = up.settings.protocol == strait_discovery::spec::UpstreamProtocol::H2;
    let config = clients
        .get(&up.name, tls, h2)
        .ok_or(ErrorKind::UpstreamTls)?;
    let name = tls.server_name(&addr).ok_or(ErrorKind::UpstreamTls)?;
    let conn = rustls::ClientConnection::new(config, name).map_err(|_| ErrorKind::UpstreamTls)?;
    let mut secured = TlsStream::new(stream, conn);
    if let Err(e) = secured.handshake().await {
        tracing::debug!(endpoint = %addr, upstream = %up.name, "TLS handshake with the upstream failed: {e}");
        return Err(ErrorKind::UpstreamTls);
    }
    Ok(secured)
}

/// The PROXY header for a connection on behalf of `client` to `endpoint`: the client's
/// address and port as source, the endpoint's as destination (what the gateway's own
/// listening address was is not carried). A client or an endpoint without an IP address
/// (a Unix socket) gets v1 `UNKNOWN` / v2 `LOCAL`: the receiver then uses the
/// connection's own addresses.
fn proxy_header(version: ProxyVersion, client: ClientAddr, endpoint: EndpointAddr) -> Vec<u8> {
    let mut out = Vec::with_capacity(64);
    match (version, client, endpoint) {
        (ProxyVersion::V1, ClientAddr::Inet(src), EndpointAddr::Inet(dst)) => {
            proxy_protocol::write_v1(&mut out, src, dst)
        }
        (ProxyVersion::V2, ClientAddr::Inet(src), EndpointAddr::Inet(dst)) => {
            proxy_protocol::write_v2(&mut out, src, dst)
        }
        (ProxyVersion::V1, _, _) => out.extend_from_slice(b"PROXY UNKNOWN\r\n"),
        (ProxyVersion::V2, _, _) => proxy_protocol::write_v2_local(&mut out),
    }
    out
}

/// A connection to `addr`: TCP to an IP and port, or a Unix socket's path.
async fn open(addr: EndpointAddr) -> std::io::Result<AnyStream> {
    match addr {
        EndpointAddr::Inet(a) => TcpStream::connect_addr(a).await.map(Either::A),
        EndpointAddr::Unix(path) => UnixStream::connect(path.as_path()).await.map(Either::B),
    }
}
