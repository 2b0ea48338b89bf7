//! Upgraded connections (WebSocket and any other `Upgrade` answered with 101): after the
//! 101, bytes are copied both ways unchanged until both sides closed, either side fails,
//! or nothing moved for `http.tunnel_idle_timeout`.
//! A CONNECT (`connect.rs`) becomes the same tunnel after its 200.
//!
//! Runs on: a worker, as the tail of the client connection's task (both directions are
//! polled by that one task). Each direction reuses one buffer; a read of 0 (the peer's
//! half-close) becomes a write shutdown of the other side. The upstream connection is
//! never returned to the pool: it is dropped with the tunnel.

use std::cell::Cell;
use std::time::{Duration, Instant};

use monoio::buf::IoBufMut;
use monoio::io::{AsyncReadRent, AsyncWriteRent, AsyncWriteRentExt, Splitable};
use monoio::net::TcpStream;

use super::Worker;

/// Capacity of each direction's buffer: tunnels are often many and mostly idle.
const TUNNEL_BUF: usize = 16 * 1024;

/// An upstream connection that switched protocols, and what it already sent past its
/// 101 head.
#[derive(Debug)]
pub(super) struct Upgraded {
    pub(super) upstream: TcpStream,
    /// Upstream bytes read past the 101 head, for the client.
    pub(super) to_client: Vec<u8>,
    /// The upstream's `timeouts.write`.
    pub(super) write_timeout: Duration,
}

/// Why one direction stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum End {
    /// Its source half-closed; the close was passed on.
    Closed,
    /// A read or write failed or a write timed out: the tunnel ends.
    Failed,
}

/// Runs the tunnel between `client` and the upgraded upstream. `to_upstream`: client
/// bytes read past the upgrade request's head.
pub(super) async fn run(client: TcpStream, to_upstream: Vec<u8>, up: Upgraded, w: &Worker) {
    let idle = w.http.tunnel_idle_timeout;
    let _active = w.metrics.pool_active.hold();
    let (mut client_r, mut client_w) = client.into_split();
    let (mut up_r, mut up_w) = up.upstream.into_split();
    // When a byte last moved either way; the idle timer re-arms from it.
    let last = Cell::new(Instant::now());
    let to_client = fit(up.to_client, w);
    let mut down = std::pin::pin!(pipe(&mut up_r, &mut client_w, to_client, idle, &last));
    let mut upward = std::pin::pin!(pipe(
        &mut client_r,
        &mut up_w,
        fit(to_upstream, w),
        up.write_timeout,
        &last
    ));
    let mut idle_timer = std::pin::pin!(idle_timer(&last, idle));
    let (mut down_end, mut up_end) = (None, None);
    while down_end.is_none() || up_end.is_none() {
        monoio::select! {
            end = &mut down, if down_end.is_none() => down_end = Some(end),
            end = &mut upward, if up_end.is_none() => up_end = Some(end),
            _ = &mut idle_timer => {
                tracing::debug!(worker = w.id, "tunnel idle timeout");
                return;
            }
        }
        if down_end == Some(End::Failed) || up_end == Some(End::Failed) {
            return;
        }
    }
}

/// A buffer of [`TUNNEL_BUF`] holding `pending`: a larger one (the worker's 64 KiB
/// response buffer) goes back to the worker when what it holds fits.
fn fit(pending: Vec<u8>, w: &Worker) -> Vec<u8> {
    if pending.capacity() <= TUNNEL_BUF || pending.len() > TUNNEL_BUF {
        return pending;
    }
    let mut buf = Vec::with_capacity(TUNNEL_BUF);
    buf.extend_from_slice(&pending);
    w.give_buf(pending);
    buf
}

/// Copies `src` to `dst` through `buf` (starting with what it holds) until `src`
/// half-closes (then `dst` is shut down for writing) or something fails. Each write may
/// block for `write_timeout`.
async fn pipe<R: AsyncReadRent, W: AsyncWriteRent>(
    src: &mut R,
    dst: &mut W,
    mut buf: Vec<u8>,
    write_timeout: Duration,
    last: &Cell<Instant>,
) -> End {
    if buf.capacity() < TUNNEL_BUF {
        buf.reserve(TUNNEL_BUF - buf.len());
    }
    loop {
        if !buf.is_empty() {
            match monoio::time::timeout(write_timeout, dst.write_all(buf)).await {
                Ok((Ok(_), b)) => buf = b,
                Ok((Err(_), _)) | Err(_) => return End::Failed,
            }
            last.set(Instant::now());
            buf.clear();
        }
        let cap = buf.capacity();
        let (res, slice) = src.read(buf.slice_mut(0..cap)).await;
        buf = slice.into_inner();
        match res {
            Ok(0) => {
                let _ = dst.shutdown().await;
                return End::Closed;
            }
            Ok(_) => last.set(Instant::now()),
            Err(_) => return End::Failed,
        }
    }
}

/// Resolves once nothing moved for `idle`.
async fn idle_timer(last: &Cell<Instant>, idle: Duration) {
    loop {
        let until = last.get() + idle;
        if Instant::now() >= until {
            return;
        }
        monoio::time::sleep_until(monoio::time::Instant::from_std(until)).await;
    }
}
