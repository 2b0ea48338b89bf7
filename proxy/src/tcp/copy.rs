//! Copying bytes both ways between a client and an upstream connection, half-closes
//! included: the L4 core shared by `tcp` listeners ([`super::serve`]) and upgraded HTTP
//! connections (`http1/tunnel.rs`).
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
//! connection, a quiet WebSocket) holds 2 × 2 KiB, not 2 × 64 KiB.

use std::cell::Cell;
use std::time::{Duration, Instant};

use monoio::buf::IoBufMut;
use monoio::io::{AsyncReadRent, AsyncWriteRent, AsyncWriteRentExt};

use crate::transport::Transport;
use crate::worker::{Worker, READ_CHUNK};

/// A direction's own buffer, read into while little moves.
pub(crate) const SMALL_BUF: usize = 2 * 1024;

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
    /// A read or write failed (reset, broken pipe) or a write stayed blocked too long.
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
    /// A read or write failed.
    Failed,
}

/// When bytes moved, shared by the two directions and the timer of one copy.
#[derive(Debug)]
struct Clock {
    /// When a byte last moved either way.
    last: Cell<Instant>,
    /// Towards the upstream, and towards the client.
    up: Direction,
    down: Direction,
}

/// One direction's state that the timer and the result read.
#[derive(Debug, Default)]
struct Direction {
    /// When the write in flight began.
    writing: Cell<Option<Instant>>,
    /// Bytes written so far.
    written: Cell<u64>,
}

/// Copies between `client` and `upstream` until both directions closed, either failed,
/// or nothing moved for `limits.idle`. `to_upstream` and `to_client` hold bytes already
/// read for that side (sent first; a 64 KiB one goes back to the worker after).
pub(crate) async fn both_ways<C: Transport, U: Transport>(
    client: C,
    upstream: U,
    to_upstream: Vec<u8>,
    to_client: Vec<u8>,
    limits: Limits,
    w: &Worker,
) -> Copied {
    let (mut client_r, mut client_w) = client.into_split();
    let (mut up_r, mut up_w) = upstream.into_split();
    let clock = Clock {
        last: Cell::new(Instant::now()),
        up: Direction::default(),
        down: Direction::default(),
    };
    let mut down = std::pin::pin!(pipe(
        &mut up_r,
        &mut client_w,
        to_client,
        &clock.down,
        &clock.last,
        w
    ));
    let mut upward = std::pin::pin!(pipe(
        &mut client_r,
        &mut up_w,
        to_upstream,
        &clock.up,
        &clock.last,
        w
    ));
    let mut timer = std::pin::pin!(timer(&clock, &limits));
    let (mut down_end, mut up_end) = (None, None);
    let outcome = loop {
        if down_end.is_some() && up_end.is_some() {
            break Outcome::Closed;
        }
        monoio::select! {
            end = &mut down, if down_end.is_none() => down_end = Some(end),
            end = &mut upward, if up_end.is_none() => up_end = Some(end),
            outcome = &mut timer => break outcome,
        }
        if down_end == Some(End::Failed) || up_end == Some(End::Failed) {
            break Outcome::Failed;
        }
    };
    Copied {
        outcome,
        up_bytes: clock.up.written.get(),
        down_bytes: clock.down.written.get(),
    }
}

/// Copies `src` to `dst`, starting with what `buf` holds, until `src` half-closes (then
/// `dst` is shut down for writing) or something fails. `dir` tells the copy's timer when
/// the write in flight began, and counts the bytes written; `last` is when a byte last
/// moved either way.
async fn pipe<R: AsyncReadRent, W: AsyncWriteRent>(
    src: &mut R,
    dst: &mut W,
    mut buf: Vec<u8>,
    dir: &Direction,
    last: &Cell<Instant>,
    w: &Worker,
) -> End {
    if buf.capacity() < SMALL_BUF {
        buf.reserve(SMALL_BUF - buf.len());
    }
    // The direction's own buffer while `buf` is a lent one (allocated on the first
    // return to small reads when the copy started with a lent one).
    let mut own = Vec::new();
    // The last read filled its buffer: more is probably waiting.
    let mut full = false;
    let mut now = Instant::now();
    let end = loop {
        if !buf.is_empty() {
            full = buf.len() == buf.capacity();
            dir.writing.set(Some(now));
            let (res, b) = dst.write_all(buf).await;
            buf = b;
            dir.writing.set(None);
            match res {
                Ok(n) => dir.written.set(dir.written.get() + n as u64),
                Err(_) => break End::Failed,
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
            Ok(_) => {
                now = Instant::now();
                last.set(now);
            }
            Err(_) => break End::Failed,
        }
    };
    w.give_buf(buf);
    end
}

/// Resolves when nothing moved for `limits.idle` ([`Outcome::Idle`]), or a write stayed
/// blocked longer than its bound ([`Outcome::Failed`]). One timer for the whole copy:
/// it re-arms at the earliest moment either can happen.
async fn timer(clock: &Clock, limits: &Limits) -> Outcome {
    loop {
        let now = Instant::now();
        let idle_at = clock.last.get() + limits.idle;
        if now >= idle_at {
            return Outcome::Idle;
        }
        // A write in flight is due at its start plus its bound; one that starts later,
        // no earlier than now plus its bound.
        let up = clock.up.writing.get();
        let down = clock.down.writing.get();
        let up_at = up.unwrap_or(now) + limits.upstream_write;
        let down_at = down.unwrap_or(now) + limits.client_write;
        if up.is_some() && now >= up_at || down.is_some() && now >= down_at {
            return Outcome::Failed;
        }
        let next = idle_at.min(up_at).min(down_at);
        monoio::time::sleep_until(monoio::time::Instant::from_std(next)).await;
    }
}
