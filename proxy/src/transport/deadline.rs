//! Reads and writes with a deadline: every wait of the data plane has a bound, and these
//! are the three calls every step uses (the connect is [`crate::upstream::connect`]).
//!
//! Runs on: workers. Owned buffers go in and come back; on a timeout the buffer is lost
//! with the cancelled operation and an empty one comes back. Each operation's future is
//! pinned where it is made and the timeout holds a pointer to it: a future moved into the
//! timeout would be copied (a few hundred bytes) on every read and write.

use std::io;
use std::ops::Range;
use std::time::{Duration, Instant};

use monoio::buf::{IoBuf, IoBufMut};
use monoio::io::{AsyncReadRent, AsyncWriteRent, AsyncWriteRentExt};

/// Reads into the spare capacity of `buf`, appending, until `until`.
pub async fn read_more<S: AsyncReadRent>(
    stream: &mut S,
    buf: Vec<u8>,
    until: Instant,
) -> (io::Result<usize>, Vec<u8>) {
    let len = buf.len();
    let cap = buf.capacity();
    let deadline = monoio::time::Instant::from_std(until);
    // Pinned where it is made: the timeout holds a pointer, not a copy of the read.
    let read = std::pin::pin!(stream.read(buf.slice_mut(len..cap)));
    match monoio::time::timeout_at(deadline, read).await {
        Ok((res, slice)) => (res, slice.into_inner()),
        Err(_) => (Err(io::ErrorKind::TimedOut.into()), Vec::new()),
    }
}

/// Writes all of `buf` within `limit`.
pub async fn write_all<S: AsyncWriteRent>(
    stream: &mut S,
    buf: Vec<u8>,
    limit: Duration,
) -> (io::Result<()>, Vec<u8>) {
    if buf.is_empty() {
        return (Ok(()), buf);
    }
    let write = std::pin::pin!(stream.write_all(buf));
    match monoio::time::timeout(limit, write).await {
        Ok((res, buf)) => (res.map(|_| ()), buf),
        Err(_) => (Err(io::ErrorKind::TimedOut.into()), Vec::new()),
    }
}

/// Writes `buf[range]` within `limit`.
pub async fn write_range<S: AsyncWriteRent>(
    stream: &mut S,
    buf: Vec<u8>,
    range: Range<usize>,
    limit: Duration,
) -> (io::Result<()>, Vec<u8>) {
    let write = std::pin::pin!(stream.write_all(buf.slice(range)));
    match monoio::time::timeout(limit, write).await {
        Ok((res, slice)) => (res.map(|_| ()), slice.into_inner()),
        Err(_) => (Err(io::ErrorKind::TimedOut.into()), Vec::new()),
    }
}
