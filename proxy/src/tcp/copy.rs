//! Copying bytes both ways between a client and an upstream connection, half-closes
//! included: the L4 core shared by `tcp` listeners ([`super::serve`]) and upgraded HTTP
//! connections (`proxy/tunnel.rs`).
//!
//! Runs on: a worker, inside one client connection's task (both directions are polled by
//! that one task). Each direction reuses one buffer for its whole life; a read of 0 (the
//! peer's half-close) becomes a write shutdown of the other side while the other
//! direction keeps flowing. Nothing shared: the idle clock is a `Cell` of this task.

use std::cell::Cell;
use std::time::{Duration, Instant};

use monoio::buf::IoBufMut;
use monoio::io::{AsyncReadRent, AsyncWriteRent, AsyncWriteRentExt, Splitable};
use monoio::net::TcpStream;

/// Bounds of one copy.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Limits {
    /// The copy ends when no byte moved either way for this long.
    pub(crate) idle: Duration,
    /// How long one write to the client may stay blocked.
    pub(crate) client_write: Duration,
    /// How long one write to the upstream may stay blocked.
    pub(crate) upstream_write: Duration,
    /// Each direction's buffer holds at least this much (one read's worth).
    pub(crate) buf: usize,
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

/// What a copy did, and its buffers back (empty where one was lost with a cancelled
/// operation), for the caller to reuse.
#[derive(Debug)]
pub(crate) struct Copied {
    pub(crate) outcome: Outcome,
    /// Bytes written to the upstream and to the client.
    pub(crate) up_bytes: u64,
    pub(crate) down_bytes: u64,
    pub(crate) bufs: [Vec<u8>; 2],
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
/// read for that side (sent first); their capacity is reused.
pub(crate) async fn both_ways(
    client: TcpStream,
    upstream: TcpStream,
    to_upstream: Vec<u8>,
    to_client: Vec<u8>,
    limits: Limits,
) -> Copied {
    let (mut client_r, mut client_w) = client.into_split();
    let (mut up_r, mut up_w) = upstream.into_split();
    // When a byte last moved either way; the idle timer re-arms from it.
    let last = Cell::new(Instant::now());
    let mut down = std::pin::pin!(pipe(
        &mut up_r,
        &mut client_w,
        to_client,
        limits.buf,
        limits.client_write,
        &last
    ));
    let mut upward = std::pin::pin!(pipe(
        &mut client_r,
        &mut up_w,
        to_upstream,
        limits.buf,
        limits.upstream_write,
        &last
    ));
    let mut idle_timer = std::pin::pin!(idle_timer(&last, limits.idle));
    let mut copied = Copied {
        outcome: Outcome::Closed,
        up_bytes: 0,
        down_bytes: 0,
        bufs: [Vec::new(), Vec::new()],
    };
    let (mut down_end, mut up_end) = (None, None);
    while down_end.is_none() || up_end.is_none() {
        monoio::select! {
            (end, n, buf) = &mut down, if down_end.is_none() => {
                down_end = Some(end);
                copied.down_bytes = n;
                copied.bufs[1] = buf;
            }
            (end, n, buf) = &mut upward, if up_end.is_none() => {
                up_end = Some(end);
                copied.up_bytes = n;
                copied.bufs[0] = buf;
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

/// Copies `src` to `dst` through `buf` (starting with what it holds) until `src`
/// half-closes (then `dst` is shut down for writing) or something fails. Each write may
/// block for `write_timeout`. Returns how it ended, the bytes written, and the buffer.
async fn pipe<R: AsyncReadRent, W: AsyncWriteRent>(
    src: &mut R,
    dst: &mut W,
    mut buf: Vec<u8>,
    size: usize,
    write_timeout: Duration,
    last: &Cell<Instant>,
) -> (End, u64, Vec<u8>) {
    if buf.capacity() < size {
        buf.reserve(size - buf.len());
    }
    let mut written = 0u64;
    loop {
        if !buf.is_empty() {
            match monoio::time::timeout(write_timeout, dst.write_all(buf)).await {
                Ok((Ok(n), b)) => {
                    buf = b;
                    written += n as u64;
                }
                Ok((Err(_), b)) => return (End::Failed, written, b),
                Err(_) => return (End::Failed, written, Vec::new()),
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
                return (End::Closed, written, buf);
            }
            Ok(_) => last.set(Instant::now()),
            Err(_) => return (End::Failed, written, buf),
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
