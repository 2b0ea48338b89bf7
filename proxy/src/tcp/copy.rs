//! Copying bytes both ways between a client and an upstream connection, half-closes
//! included: the L4 core shared by `tcp` listeners ([`super::serve`]) and upgraded HTTP
//! connections (`proxy/tunnel.rs`).
//!
//! Runs on: a worker, inside one client connection's task (both directions are polled by
//! that one task). A read of 0 (the peer's half-close) becomes a write shutdown of the
//! other side while the other direction keeps flowing. Nothing shared: the idle clock is
//! a `Cell` of this task.
//!
//! Buffers: each direction owns a small buffer ([`SMALL_BUF`]) for its whole life and
//! reads into it while little moves; a read that fills it borrows one of the worker's
//! 64 KiB buffers for the next reads, given back as soon as a read does not fill it. So
//! a busy stream moves 64 KiB per read, and an idle connection (a pooled database
//! connection, a quiet WebSocket) holds 2 × 4 KiB, not 2 × 64 KiB.

use std::cell::Cell;
use std::time::{Duration, Instant};

use monoio::buf::IoBufMut;
use monoio::io::{AsyncReadRent, AsyncWriteRent, AsyncWriteRentExt, Splitable};
use monoio::net::TcpStream;

use crate::proxy::{Worker, READ_CHUNK};

/// A direction's own buffer, read into while little moves.
pub(crate) const SMALL_BUF: usize = 4 * 1024;

/// Bounds of one copy.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Limits {
    /// The copy ends when no byte moved either way for this long.
    pub(crate) idle: Duration,
    /// How long one write to the client may stay blocked.
    pub(crate) client_write: Duration,
    /// How long one write to the upstream may stay blocked.
    pub(crate) upstream_write: Duration,
}

/// How a copy ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Outcome {
    /// Both sides half-closed and each close was passed on.
    Closed,
    /// A read or write failed (reset, broken pipe) or a write timed out.
    Failed,
    /// Nothing moved for `Limits::idle`.
    Idle,
}

/// What a copy did.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Copied {
    pub(crate) outcome: Outcome,
    /// Bytes written to the upstream and to the client.
    pub(crate) up_bytes: u64,
    pub(crate) down_bytes: u64,
}

/// Why one direction stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum End {
    /// Its source half-closed; the close was passed on.
    Closed,
    /// A read or write failed or a write timed out.
    Failed,
}

/// Copies between `client` and `upstream` until both directions closed, either failed,
/// or nothing moved for `limits.idle`. `to_upstream` and `to_client` hold bytes already
/// read for that side (sent first; a 64 KiB one goes back to the worker after).
pub(crate) async fn both_ways(
    client: TcpStream,
    upstream: TcpStream,
    to_upstream: Vec<u8>,
    to_client: Vec<u8>,
    limits: Limits,
    w: &Worker,
) -> Copied {
    let (mut client_r, mut client_w) = client.into_split();
    let (mut up_r, mut up_w) = upstream.into_split();
    // When a byte last moved either way; the idle timer re-arms from it.
    let last = Cell::new(Instant::now());
    let mut down = std::pin::pin!(pipe(
        &mut up_r,
        &mut client_w,
        to_client,
        limits.client_write,
        &last,
        w
    ));
    let mut upward = std::pin::pin!(pipe(
        &mut client_r,
        &mut up_w,
        to_upstream,
        limits.upstream_write,
        &last,
        w
    ));
    let mut idle_timer = std::pin::pin!(idle_timer(&last, limits.idle));
    let mut copied = Copied {
        outcome: Outcome::Closed,
        up_bytes: 0,
        down_bytes: 0,
    };
    let (mut down_end, mut up_end) = (None, None);
    while down_end.is_none() || up_end.is_none() {
        monoio::select! {
            (end, n) = &mut down, if down_end.is_none() => {
                down_end = Some(end);
                copied.down_bytes = n;
            }
            (end, n) = &mut upward, if up_end.is_none() => {
                up_end = Some(end);
                copied.up_bytes = n;
            }
            _ = &mut idle_timer => {
                copied.outcome = Outcome::Idle;
                return copied;
            }
        }
        if down_end == Some(End::Failed) || up_end == Some(End::Failed) {
            copied.outcome = Outcome::Failed;
            return copied;
        }
    }
    copied
}

/// Copies `src` to `dst`, starting with what `buf` holds, until `src` half-closes (then
/// `dst` is shut down for writing) or something fails. Each write may block for
/// `write_timeout`. Returns how it ended and the bytes written.
async fn pipe<R: AsyncReadRent, W: AsyncWriteRent>(
    src: &mut R,
    dst: &mut W,
    mut buf: Vec<u8>,
    write_timeout: Duration,
    last: &Cell<Instant>,
    w: &Worker,
) -> (End, u64) {
    if buf.capacity() < SMALL_BUF {
        buf.reserve(SMALL_BUF - buf.len());
    }
    // The direction's own buffer while `buf` is a lent one (allocated on the first
    // return to small reads when the copy started with a lent one).
    let mut own = Vec::new();
    let mut written = 0u64;
    // The last read filled its buffer: more is probably waiting.
    let mut full = false;
    let end = loop {
        if !buf.is_empty() {
            full = buf.len() == buf.capacity();
            match monoio::time::timeout(write_timeout, dst.write_all(buf)).await {
                Ok((Ok(n), b)) => {
                    buf = b;
                    written += n as u64;
                }
                Ok((Err(_), b)) => {
                    buf = b;
                    break End::Failed;
                }
                // The buffer went with the cancelled write.
                Err(_) => return (End::Failed, written),
            }
            last.set(Instant::now());
            buf.clear();
        }
        let lent = buf.capacity() >= READ_CHUNK;
        if full && !lent {
            own = std::mem::replace(&mut buf, w.take_buf());
        } else if !full && lent {
            let small = match std::mem::take(&mut own) {
                own if own.capacity() > 0 => own,
                _ => Vec::with_capacity(SMALL_BUF),
            };
            w.give_buf(std::mem::replace(&mut buf, small));
        }
        let cap = buf.capacity();
        let (res, slice) = src.read(buf.slice_mut(0..cap)).await;
        buf = slice.into_inner();
        match res {
            Ok(0) => {
                let _ = dst.shutdown().await;
                break End::Closed;
            }
            Ok(_) => last.set(Instant::now()),
            Err(_) => break End::Failed,
        }
    };
    w.give_buf(buf);
    (end, written)
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
