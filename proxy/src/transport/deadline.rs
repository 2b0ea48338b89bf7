//! Reads and writes with a deadline: every wait of the data plane has a bound, and these
//! are the three calls every step uses (the connect is [`crate::upstream::connect`]).
//!
//! The bound is one [`Timer`] per client connection, moved for each wait: a connection's
//! task waits on one thing at a time (the client, then the upstream, then the client), so
//! one timer serves them all. Moving a timer later is a field update (the wheel re-files
//! it only when its old slot comes up), where a new timer per wait cost an insertion, a
//! removal and a drop in the timer wheel: four per request, a tenth of the user-space
//! instructions.
//!
//! Runs on: workers. Owned buffers go in and come back; on a timeout the buffer is lost
//! with the cancelled operation and an empty one comes back. Each operation's future is
//! pinned where it is made: polled in place, never copied.

use std::future::Future;
use std::io;
use std::ops::Range;
use std::pin::Pin;
use std::task::Poll;
use std::time::{Duration, Instant};

use monoio::buf::{IoBuf, IoBufMut};
use monoio::io::{AsyncReadRent, AsyncWriteRent, AsyncWriteRentExt};
use monoio::time::Sleep;

/// A connection task's one timer (see the module doc).
#[derive(Debug)]
pub struct Timer(Pin<Box<Sleep>>);

impl Timer {
    /// Registered in the worker's timer wheel at its first wait.
    pub fn new() -> Timer {
        Timer(Box::pin(monoio::time::sleep(Duration::from_secs(3600))))
    }

    /// `op`'s output, or `None` when `until` passed first (`op` is then dropped by the
    /// caller, which cancels it).
    async fn bound<F: Future>(&mut self, until: Instant, mut op: Pin<&mut F>) -> Option<F::Output> {
        let sleep = &mut self.0;
        sleep.as_mut().reset(monoio::time::Instant::from_std(until));
        std::future::poll_fn(|cx| {
            if let Poll::Ready(out) = op.as_mut().poll(cx) {
                return Poll::Ready(Some(out));
            }
            match sleep.as_mut().poll(cx) {
                Poll::Ready(()) => Poll::Ready(None),
                Poll::Pending => Poll::Pending,
            }
        })
        .await
    }
}

impl Default for Timer {
    fn default() -> Timer {
        Timer::new()
    }
}

/// Reads into the spare capacity of `buf`, appending, until `until`.
pub async fn read_more<S: AsyncReadRent>(
    stream: &mut S,
    buf: Vec<u8>,
    until: Instant,
    timer: &mut Timer,
) -> (io::Result<usize>, Vec<u8>) {
    let len = buf.len();
    let cap = buf.capacity();
    let read = std::pin::pin!(stream.read(buf.slice_mut(len..cap)));
    match timer.bound(until, read).await {
        Some((res, slice)) => (res, slice.into_inner()),
        None => (Err(io::ErrorKind::TimedOut.into()), Vec::new()),
    }
}

/// Writes all of `buf` within `limit`.
pub async fn write_all<S: AsyncWriteRent>(
    stream: &mut S,
    buf: Vec<u8>,
    limit: Duration,
    timer: &mut Timer,
) -> (io::Result<()>, Vec<u8>) {
    if buf.is_empty() {
        return (Ok(()), buf);
    }
    let until = Instant::now() + limit;
    let write = std::pin::pin!(stream.write_all(buf));
    match timer.bound(until, write).await {
        Some((res, buf)) => (res.map(|_| ()), buf),
        None => (Err(io::ErrorKind::TimedOut.into()), Vec::new()),
    }
}

/// Writes `buf[range]` within `limit`.
pub async fn write_range<S: AsyncWriteRent>(
    stream: &mut S,
    buf: Vec<u8>,
    range: Range<usize>,
    limit: Duration,
    timer: &mut Timer,
) -> (io::Result<()>, Vec<u8>) {
    let until = Instant::now() + limit;
    let write = std::pin::pin!(stream.write_all(buf.slice(range)));
    match timer.bound(until, write).await {
        Some((res, slice)) => (res.map(|_| ()), slice.into_inner()),
        None => (Err(io::ErrorKind::TimedOut.into()), Vec::new()),
    }
}
