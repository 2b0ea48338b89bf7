//! L4 listeners (`protocol: tcp`): every accepted connection is proxied, bytes unchanged,
//! to an endpoint of the listener's upstream.
//!
//! The life of a connection ([`serve`]): take the worker's current view → find the
//! upstream (by name, cached per snapshot version) → pick an endpoint (the worker's own
//! round-robin cursor, skipping ejected and already-tried ones) → connect within the
//! upstream's `timeouts.connect`, retrying a failed connect on the next endpoint up to
//! `retries` → copy both ways (`tcp/copy.rs`: a small buffer per direction, one of the
//! worker's 64 KiB buffers while a lot moves) until both sides closed, either side
//! failed, or nothing moved for `idle_timeout`.
//!
//! Draining: the connection watches its endpoint ([`crate::upstream::Departures`]). When
//! the endpoint leaves the table, new connections stop going to it at once (the pick
//! uses the new view); this one goes on for `drain_timeout`, then is closed unless the
//! endpoint came back meanwhile. A graceful stop of the gateway stops the accept loops
//! like the HTTP ones and closes what is still open at `shutdown.timeout`.
//!
//! SNI passthrough (`sni_routes`): before connecting, the client's first bytes are read
//! until its TLS ClientHello is whole (parsed by rustls's `Acceptor`, bounded in size and
//! by `idle_timeout`); its server name picks the upstream (exact, then one-label
//! wildcard, then the listener's `upstream`, else the connection is closed), and the bytes
//! read go to the endpoint first, untouched: the TLS session is between client and
//! endpoint. A `tcp` listener with `tls:` instead terminates TLS (`tls::accept`) and
//! copies the plaintext.
//!
//! Runs on: a worker, one task per client connection. Touches only worker-local state
//! (`Rc`, `Cell`, `RefCell`): no lock, no shared atomic, no cross-thread channel.

use std::cell::Cell;
use std::rc::Rc;
use std::time::{Duration, Instant};

use strait_discovery::spec::{Balance, HashKey};
use strait_discovery::{EndpointAddr, SnapshotVersion, UpstreamStatus};

use crate::config::TcpConfig;
use crate::transport::{ClientAddr, Transport, UpstreamStream};
use crate::upstream::{self, View};
use crate::worker::{Open, Worker};

pub(crate) mod copy;

/// A `tcp` listener as one worker runs it, shared by that worker's connections on it.
#[derive(Debug)]
pub struct Listener {
    /// Names the listener in logs.
    name: String,
    config: TcpConfig,
    /// The default upstream's index in the view of this snapshot version (`None` inside:
    /// not in that table): one name lookup per table swap rather than per connection.
    index: Cell<Option<(SnapshotVersion, Option<u32>)>>,
}

/// The most bytes read while waiting for a whole ClientHello (a few records at most).
const MAX_CLIENT_HELLO: usize = 64 * 1024;

impl Listener {
    pub fn new(name: String, config: TcpConfig) -> Listener {
        Listener {
            name,
            config,
            index: Cell::new(None),
        }
    }

    /// The index of the listener's default upstream in `view`.
    fn upstream(&self, view: &View) -> Option<u32> {
        let name = self.config.upstream.as_deref()?;
        let version = view.snapshot.version;
        if let Some((v, idx)) = self.index.get() {
            if v == version {
                return idx;
            }
        }
        let idx = view
            .snapshot
            .upstreams
            .iter()
            .position(|u| *u.name == *name)
            .and_then(|i| u32::try_from(i).ok());
        self.index.set(Some((version, idx)));
        idx
    }
}

/// Serves one client connection of a `tcp` listener until it ends, then closes both
/// sides. A connection no endpoint could take is closed at once.
pub async fn serve<S: Transport>(mut client: S, peer: ClientAddr, open: Open, l: Rc<Listener>) {
    // TCP_NODELAY came with the accept: a TCP listener has it.
    let w = open.worker().clone();
    // SNI passthrough: the ClientHello picks the upstream and is sent on first.
    let (route, hello) = if l.config.sni_routes.is_empty() {
        (Route::Default, Vec::new())
    } else {
        // Boxed: only passthrough connections carry the ClientHello read's state.
        let read = Box::pin(monoio::time::timeout(
            l.config.idle_timeout,
            client_hello(&mut client),
        ));
        let got = monoio::select! {
            biased;
            r = read => r,
            () = w.stop.wait() => return,
        };
        let Ok(Some((sni, bytes))) = got else {
            tracing::debug!(worker = w.id, listener = %l.name, client = %peer, "no TLS ClientHello: closing");
            return;
        };
        let route = match sni.as_deref().and_then(|n| l.route_for(n)) {
            Some(upstream) => Route::Named(upstream),
            None => Route::Default,
        };
        (route, bytes)
    };
    let connected = {
        let connect = std::pin::pin!(connect(&w, &l, &route, peer));
        monoio::select! {
            biased;
            c = connect => c,
            () = w.stop.wait() => None,
        }
    };
    let Some((upstream, addr, view)) = connected else {
        tracing::debug!(worker = w.id, listener = %l.name, client = %peer, "no endpoint took the connection: closing it");
        return;
    };
    let limits = copy::Limits {
        idle: l.config.idle_timeout,
        client_write: l.config.idle_timeout,
        upstream_write: l.config.idle_timeout,
    };
    let copy = std::pin::pin!(copy::both_ways(
        client,
        upstream,
        hello,
        Vec::new(),
        limits,
        &w
    ));
    let drain = std::pin::pin!(drained(&w, addr, view, l.config.drain_timeout));
    let _active = w.metrics.pool_active.hold();
    monoio::select! {
        biased;
        copied = copy => {
            tracing::debug!(
                worker = w.id,
                listener = %l.name,
                client = %peer,
                endpoint = %addr,
                outcome = ?copied.outcome,
                up_bytes = copied.up_bytes,
                down_bytes = copied.down_bytes,
                "tcp connection ended"
            );
        }
        // A graceful stop's timeout.
        () = w.stop.wait() => {}
        () = drain => {
            tracing::debug!(
                worker = w.id,
                listener = %l.name,
                endpoint = %addr,
                "the endpoint left the table longer than drain_timeout ago: closing its connection"
            );
        }
    }
}

/// Connects to an endpoint of the listener's upstream, trying the next endpoint after a
/// failed connect (1 + `retries` attempts in all, each endpoint once). Returns the
/// connection, its endpoint and the view it was picked from (still current, or still
/// sending to that endpoint).
async fn connect(
    w: &Worker,
    l: &Listener,
    route: &Route<'_>,
    peer: ClientAddr,
) -> Option<(UpstreamStream, EndpointAddr, Rc<View>)> {
    let mut view = w.upstreams.table.view();
    let mut tried: Vec<EndpointAddr> = Vec::new();
    let mut used = 0;
    loop {
        let idx = match route {
            Route::Default => l.upstream(&view),
            Route::Named(name) => view
                .snapshot
                .upstreams
                .iter()
                .position(|u| *u.name == **name)
                .and_then(|i| u32::try_from(i).ok()),
        };
        let Some(idx) = idx else {
            tracing::debug!(worker = w.id, listener = %l.name, ?route, "no upstream for this connection in the routing table");
            return None;
        };
        let up = &view.snapshot.upstreams[idx as usize];
        if up.status != UpstreamStatus::Ready || !up.has_endpoints() {
            tracing::debug!(worker = w.id, listener = %l.name, upstream = %up.name, status = ?up.status, "the upstream has no endpoint in rotation");
            return None;
        }
        if used >= view.attempts(idx) {
            return None;
        }
        let stats = &view.upstream_stats[idx as usize];
        if used > 0 {
            stats.retries.inc();
        }
        let key = match &up.settings.balance {
            Balance::ConsistentHash(HashKey::SourceIp) => peer.ip().map(upstream::key::ip_key),
            _ => None,
        };
        let ep = view.pick_for(idx, &tried, &w.upstreams.health, Instant::now(), key)?;
        used += 1;
        tried.push(ep.addr);
        let Ok(stream) = upstream::connect(
            &w.upstreams.health,
            &w.upstreams.tls,
            (up, Some(peer)),
            stats,
            ep.addr,
            w.id,
        )
        .await
        else {
            continue;
        };
        if w.upstreams.table.still_sends_to(&view, ep.addr) {
            return Some((stream, ep.addr, view));
        }
        // The endpoint left the table while we connected: it takes no new connection.
        drop(stream);
        view = w.upstreams.table.view();
    }
}

/// Which upstream a connection goes to.
#[derive(Debug)]
enum Route<'a> {
    /// The listener's `upstream`.
    Default,
    /// The upstream an SNI route names.
    Named(&'a str),
}

impl Listener {
    /// The upstream `sni_routes` names for server name `sni`: exact, then a wildcard one
    /// label up.
    fn route_for(&self, sni: &str) -> Option<&str> {
        let sni = sni.trim_end_matches('.').to_ascii_lowercase();
        let routes = &self.config.sni_routes;
        if let Some(r) = routes.iter().find(|r| r.names.contains(&sni)) {
            return Some(&r.upstream);
        }
        let (_, parent) = sni.split_once('.')?;
        routes
            .iter()
            .find(|r| r.names.iter().any(|n| n.strip_prefix("*.") == Some(parent)))
            .map(|r| r.upstream.as_str())
    }
}

/// Reads the client's first bytes until they hold a whole TLS ClientHello; returns its
/// server name (if any) and every byte read. `None`: not TLS, too large, or closed.
async fn client_hello<S: Transport>(client: &mut S) -> Option<(Option<String>, Vec<u8>)> {
    let mut acceptor = rustls::server::Acceptor::default();
    let mut seen = Vec::new();
    let mut buf = vec![0u8; 4096];
    loop {
        let (res, b) = client.read(buf).await;
        buf = b;
        let n = res.ok().filter(|&n| n > 0)?;
        seen.extend_from_slice(&buf[..n]);
        let mut fresh = &buf[..n];
        while !fresh.is_empty() {
            acceptor.read_tls(&mut fresh).ok()?;
        }
        match acceptor.accept() {
            Ok(Some(accepted)) => {
                let sni = accepted.client_hello().server_name().map(str::to_owned);
                return Some((sni, seen));
            }
            Ok(None) if seen.len() < MAX_CLIENT_HELLO => {}
            _ => return None,
        }
        buf.clear();
        buf.resize(4096, 0);
    }
}

/// Resolves when the connection to `addr` (picked from `view`) must be cut: `drain`
/// after the endpoint left the table, if it has not come back meanwhile. Never, with no
/// `drain`.
async fn drained(w: &Worker, addr: EndpointAddr, view: Rc<View>, drain: Option<Duration>) {
    // Not held while the connection lasts.
    let mut in_table = w.upstreams.table.still_sends_to(&view, addr);
    drop(view);
    let Some(drain) = drain else {
        return std::future::pending().await;
    };
    loop {
        let left = {
            let watch = w.upstreams.departures.watch(addr);
            if in_table {
                watch.departed().await
            } else {
                // It left before we watched (the signal went out unheard).
                Instant::now()
            }
        };
        monoio::time::sleep_until(monoio::time::Instant::from_std(left + drain)).await;
        in_table = w.upstreams.table.view().sends_to(addr);
        if !in_table {
            return;
        }
        // Back in the table (a flapping readiness): watch it again.
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What an idle tcp connection costs beyond its sockets and two 2 KiB buffers: its
    /// task's future (3,968 bytes in a debug build: both directions' read and write
    /// states, the copy's one timer, the drain watch).
    #[test]
    fn a_tcp_connections_future_stays_small() {
        let l = Rc::new(Listener::new(
            "tcp".into(),
            TcpConfig {
                upstream: Some("u".into()),
                sni_routes: Vec::new(),
                idle_timeout: Duration::from_secs(60),
                drain_timeout: None,
            },
        ));
        let size = crate::worker::connection_future_size(|s, a, open| serve(s, a, open, l));
        eprintln!("tcp serve future: {size} bytes");
        assert!(size <= 4096, "tcp serve future: {size} bytes");
    }
}
