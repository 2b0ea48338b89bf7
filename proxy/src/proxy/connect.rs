//! CONNECT termination, as Envoy terminates it: a CONNECT that a route accepts opens a
//! TCP connection to that route's upstream (never to the authority the request names),
//! is answered `200 Connection Established` and becomes a tunnel, the same as an
//! upgraded connection after its 101 (`tunnel.rs`).
//!
//! Runs on: a worker, inside a client connection's task. Touches only worker-local state.
//! Connections are always new, never taken from or returned to the pool.

use std::net::SocketAddr;
use std::time::Instant;

use monoio::net::TcpStream;
use strait_discovery::route::RouteEntry;

use super::forward::{connect_failed, unavailable};

use super::tunnel::Upgraded;
use super::{finish_with_status, log, push_list, write_client, Client, Next, Prepared, Worker};
use crate::error::{ErrorKind, ProxyError, Retry, Side};
use crate::http::reply::CONNECT_ESTABLISHED;
use crate::upstream::{self, View};

/// Connects to an endpoint of `route`'s upstream (round-robin with passive health; a
/// failed connect is retried on the next endpoint, up to the upstream's `retries`), then
/// answers 200 and hands the connection over to the tunnel. No endpoint reached: 502,
/// or 504 when the last connect timed out; the connection closes.
pub(super) async fn open(
    c: &mut Client,
    w: &Worker,
    view: &View,
    p: &Prepared<'_>,
    route: &RouteEntry,
    started: Instant,
) -> Next {
    let idx = route.upstream;
    let upstream = &view.snapshot.upstreams[idx as usize];
    if let Some(reason) = unavailable(upstream) {
        return finish_with_status(c, w, p, 503, reason, started, Some(p.head_len)).await;
    }
    let settings = &upstream.settings;
    let attempts = view.attempts(idx);
    let mut tried: Vec<SocketAddr> = Vec::new();
    let mut last = ProxyError::new(ErrorKind::ConnectRefused, Side::Upstream, Retry::Safe);
    let stats = &view.upstream_stats[idx as usize];
    while tried.len() < attempts {
        if !tried.is_empty() {
            stats.retries.inc();
        }
        let Some(ep) = view.pick(idx, &tried, &w.health, started) else {
            break;
        };
        let connecting = Instant::now();
        match upstream::connect(&w.health, upstream, stats, ep.addr, w.id).await {
            Ok(stream) => {
                if w.access.is_some() {
                    // The upstream sends no status: `-` keeps the lists aligned.
                    push_list(&mut c.record.upstream_addr, &ep.addr.to_string());
                    push_list(&mut c.record.upstream_status, "-");
                    c.record.upstream_time = connecting.elapsed().as_secs_f64();
                }
                return established(c, w, p, stream, settings.write_timeout, started).await;
            }
            Err(kind) => {
                last = connect_failed(c, w, ep.addr, kind);
                tried.push(ep.addr);
            }
        }
    }
    finish_with_status(
        c,
        w,
        p,
        last.status(),
        last.message(),
        started,
        Some(p.head_len),
    )
    .await
}

/// Answers 200 on an open upstream connection and turns the client connection into a
/// tunnel to it. Client bytes already read past the CONNECT head go upstream first.
async fn established(
    c: &mut Client,
    w: &Worker,
    p: &Prepared<'_>,
    upstream: TcpStream,
    write_timeout: std::time::Duration,
    started: Instant,
) -> Next {
    c.buf.drain(..p.head_len);
    c.out.clear();
    c.out.extend_from_slice(CONNECT_ESTABLISHED);
    if !write_client(&mut c.stream, &mut c.out, w).await {
        return Next::Close;
    }
    log(
        c,
        w,
        p.stats,
        200,
        CONNECT_ESTABLISHED.len() as u64,
        started,
    );
    Next::Upgrade(Upgraded {
        upstream,
        to_client: Vec::new(),
        write_timeout,
    })
}
