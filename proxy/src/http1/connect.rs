//! CONNECT termination, as Envoy terminates it: a CONNECT that a route accepts opens a
//! connection to that route's upstream (never to the authority the request names), is
//! answered `200 Connection Established` and becomes a tunnel, the same as an upgraded
//! connection after its 101 (`tunnel.rs`).
//!
//! Runs on: a worker, inside a client connection's task. Touches only worker-local state.
//! Connections are always new, never taken from or returned to the pool.

use std::time::{Duration, Instant};

use strait_discovery::route::RouteEntry;
use strait_discovery::EndpointAddr;

use super::exchange::Exchange;
use super::forward::unavailable;
use super::tunnel::Upgraded;
use super::Next;
use crate::error::{ErrorKind, ProxyError, Retry, Side};
use crate::http::reply::CONNECT_ESTABLISHED;
use crate::transport::{Transport, UpstreamStream};
use crate::upstream;

/// Connects to an endpoint of `route`'s upstream (round-robin with passive health; a
/// failed connect is retried on the next endpoint, up to the upstream's `retries`), then
/// answers 200 and hands the connection over to the tunnel. No endpoint reached: 502,
/// or 504 when the last connect timed out; the connection closes.
pub(super) async fn open<S: Transport>(x: &mut Exchange<'_, '_, S>, route: &RouteEntry) -> Next {
    let view = x.view;
    let w = x.w;
    let idx = route.upstream;
    // A route that answers itself (a redirect, a direct response) has no upstream.
    let Some(upstream) = view.snapshot.upstreams.get(idx as usize) else {
        let reason = "not found: this route answers itself and opens no tunnel";
        return x.answer(404, reason, None, Some(x.req.head_len)).await;
    };
    if let Some(reason) = unavailable(upstream) {
        return x.answer(503, reason, None, Some(x.req.head_len)).await;
    }
    let settings = &upstream.settings;
    let attempts = view.attempts(idx);
    let mut tried: Vec<EndpointAddr> = Vec::new();
    let mut last = ProxyError::new(ErrorKind::ConnectRefused, Side::Upstream, Retry::Safe);
    let stats = &view.upstream_stats[idx as usize];
    while tried.len() < attempts {
        if !tried.is_empty() {
            stats.retries.inc();
        }
        let Some(ep) = view.pick(idx, &tried, &w.upstreams.health, x.started) else {
            break;
        };
        let connecting = Instant::now();
        match upstream::connect(
            &w.upstreams.health,
            &w.upstreams.tls,
            (upstream, Some(x.c.peer)),
            stats,
            ep.addr,
            w.id,
        )
        .await
        {
            Ok(stream) => {
                // The upstream sends no status: `-` keeps the lists aligned.
                x.note_attempt(ep.addr, &"-");
                if w.access.is_some() {
                    x.c.record.upstream_time = connecting.elapsed().as_secs_f64();
                }
                return established(x, stream, settings.write_timeout).await;
            }
            Err(kind) => {
                // Passive health and the upstream's counters already know.
                last = ProxyError::new(kind, Side::Upstream, Retry::Safe);
                x.note_attempt(ep.addr, &last.status());
                tried.push(ep.addr);
            }
        }
    }
    let consumed = Some(x.req.head_len);
    x.answer(last.status(), last.message(), None, consumed)
        .await
}

/// Answers 200 on an open upstream connection and turns the client connection into a
/// tunnel to it. Client bytes already read past the CONNECT head go upstream first.
async fn established<S: Transport>(
    x: &mut Exchange<'_, '_, S>,
    upstream: UpstreamStream,
    write_timeout: Duration,
) -> Next {
    x.c.buf.drain(..x.req.head_len);
    let mut out = std::mem::take(&mut x.c.out);
    out.clear();
    out.extend_from_slice(CONNECT_ESTABLISHED);
    let written = x.write_client(&mut out).await;
    x.c.out = out;
    if !written {
        return Next::Close;
    }
    x.log(200, CONNECT_ESTABLISHED.len() as u64, 0);
    Next::Upgrade(Upgraded {
        upstream,
        to_client: Vec::new(),
        write_timeout,
    })
}
