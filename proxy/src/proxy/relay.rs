//! Byte movement for the request path: streaming one body between two sockets through a
//! reused buffer (re-framing chunked / close-delimited bodies on the way), and the
//! deadline-bound read and write every step uses (the connect is
//! [`crate::upstream::connect`]).
//!
//! Runs on: a worker, inside a client connection's task. Worker-local buffers only.

use std::io;
use std::time::{Duration, Instant};

use monoio::buf::{IoBuf, IoBufMut};
use monoio::io::{AsyncReadRent, AsyncWriteRentExt};
use monoio::net::TcpStream;

use super::{COALESCE, READ_CHUNK};
use crate::error::{ErrorKind, Side};
use crate::http::chunked::ChunkedDecoder;
use crate::http::BodyKind;

/// How body bytes are re-framed on the way.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Mode {
    /// Unchanged (framing passed through).
    Pass,
    /// Chunked in, raw data out (to an HTTP/1.0 client).
    Dechunk,
    /// Close-delimited in, chunked out (to an HTTP/1.1 client).
    Chunk,
}

#[derive(Debug, Clone, Copy)]
pub(super) struct Timeouts {
    pub(super) read: Duration,
    pub(super) write: Duration,
}

#[derive(Debug, Clone, Copy)]
pub(super) struct RelayError {
    pub(super) side: Side,
    pub(super) kind: ErrorKind,
}

pub(super) struct Relayed {
    pub(super) buf: Vec<u8>,
    /// Index in `buf` just past the body (later bytes belong to the next message).
    pub(super) end: usize,
    /// Body bytes written to the destination.
    pub(super) written: u64,
    /// The `head` given to [`relay`] was written.
    pub(super) head_sent: bool,
    pub(super) result: Result<(), RelayError>,
}

/// Streams one body from `src` to `dst` through `buf`, starting with the bytes at
/// `buf[start..]`, re-framing per `mode`. A non-empty `head` is written first, in the
/// same write as the first body segment when that is small.
#[allow(clippy::too_many_arguments)]
pub(super) async fn relay(
    src: &mut TcpStream,
    dst: &mut TcpStream,
    mut buf: Vec<u8>,
    mut start: usize,
    body: BodyKind,
    mode: Mode,
    head: &mut Vec<u8>,
    decoder: Option<ChunkedDecoder>,
    t: Timeouts,
    src_side: Side,
) -> Relayed {
    let dst_side = if src_side == Side::Upstream {
        Side::Downstream
    } else {
        Side::Upstream
    };
    let src_err = |timeout: bool| RelayError {
        side: src_side,
        kind: match (src_side, timeout) {
            (Side::Upstream, true) => ErrorKind::UpstreamIoTimeout,
            (Side::Upstream, false) => ErrorKind::UpstreamClosed,
            (_, true) => ErrorKind::ClientTimeout,
            (_, false) => ErrorKind::ClientIo,
        },
    };
    let dst_err = |e: io::Error| RelayError {
        side: dst_side,
        kind: match (dst_side, e.kind() == io::ErrorKind::TimedOut) {
            (Side::Upstream, true) => ErrorKind::UpstreamIoTimeout,
            (Side::Upstream, false) => ErrorKind::UpstreamClosed,
            (_, true) => ErrorKind::ClientTimeout,
            (_, false) => ErrorKind::ClientIo,
        },
    };
    let mut remaining = match body {
        BodyKind::Length(n) => n,
        _ => 0,
    };
    let mut decoder = decoder.unwrap_or_default();
    let mut written = 0u64;
    let mut head_sent = head.is_empty();
    let head_initial = head.len() as u64;
    let mut eof = false;
    loop {
        let avail = buf.len() - start;
        // 1. Take the body's part of what is buffered.
        let (seg_end, done) = match body {
            BodyKind::None => (start, true),
            BodyKind::Length(_) => {
                let take = remaining.min(avail as u64) as usize;
                remaining -= take as u64;
                (start + take, remaining == 0)
            }
            BodyKind::Chunked => {
                let input = &buf[start..];
                let fed = if mode == Mode::Dechunk {
                    decoder.feed(input, |r| head.extend_from_slice(&input[r]))
                } else {
                    decoder.feed(input, |_| {})
                };
                match fed {
                    Ok(progress) => (start + progress.consumed, progress.done),
                    Err(e) => {
                        return Relayed {
                            buf,
                            end: start,
                            written,
                            head_sent,
                            result: Err(RelayError {
                                side: src_side,
                                kind: match src_side {
                                    Side::Upstream => ErrorKind::BadResponse,
                                    _ if e.status() == 413 => ErrorKind::BodyTooLarge,
                                    _ => ErrorKind::ClientIo,
                                },
                            }),
                        };
                    }
                }
            }
            BodyKind::Close => (buf.len(), eof),
        };
        // 2. Write it (re-framed as needed), coalesced with any pending head.
        let seg = seg_end - start;
        let mut direct = false;
        match mode {
            Mode::Pass => {
                if head.is_empty() {
                    direct = seg > 0;
                } else if seg <= COALESCE {
                    head.extend_from_slice(&buf[start..seg_end]);
                } else {
                    direct = true;
                }
            }
            Mode::Dechunk => {}
            Mode::Chunk => {
                if seg > 0 {
                    head.extend_from_slice(format!("{seg:x}\r\n").as_bytes());
                    head.extend_from_slice(&buf[start..seg_end]);
                    head.extend_from_slice(b"\r\n");
                }
                if done {
                    head.extend_from_slice(b"0\r\n\r\n");
                }
            }
        }
        if !head.is_empty() {
            let n = head.len() as u64;
            let (res, h) = write_all(dst, std::mem::take(head), t.write).await;
            *head = h;
            head.clear();
            if let Err(e) = res {
                return Relayed {
                    buf,
                    end: start,
                    written,
                    head_sent,
                    result: Err(dst_err(e)),
                };
            }
            written += if head_sent { n } else { n - head_initial };
            head_sent = true;
        }
        if direct {
            let (res, b) = write_range(dst, buf, start..seg_end, t.write).await;
            buf = b;
            if let Err(e) = res {
                return Relayed {
                    buf,
                    end: start,
                    written,
                    head_sent,
                    result: Err(dst_err(e)),
                };
            }
            written += seg as u64;
        }
        start = seg_end;
        if done {
            return Relayed {
                buf,
                end: start,
                written,
                head_sent,
                result: Ok(()),
            };
        }
        // 3. Everything buffered was consumed: read more.
        buf.clear();
        start = 0;
        if buf.capacity() < READ_CHUNK {
            buf.reserve(READ_CHUNK);
        }
        let (res, b) = read_more(src, buf, Instant::now() + t.read).await;
        buf = b;
        match res {
            Ok(0) if body == BodyKind::Close => eof = true,
            Ok(0) => {
                return Relayed {
                    buf,
                    end: 0,
                    written,
                    head_sent,
                    result: Err(src_err(false)),
                }
            }
            Ok(_) => {}
            Err(e) => {
                return Relayed {
                    buf,
                    end: 0,
                    written,
                    head_sent,
                    result: Err(src_err(e.kind() == io::ErrorKind::TimedOut)),
                };
            }
        }
    }
}

/// Reads into the spare capacity of `buf`, appending. On timeout the buffer is lost
/// with the cancelled operation, so an empty one comes back.
pub(super) async fn read_more(
    stream: &mut TcpStream,
    buf: Vec<u8>,
    until: Instant,
) -> (io::Result<usize>, Vec<u8>) {
    let len = buf.len();
    let cap = buf.capacity();
    let deadline = monoio::time::Instant::from_std(until);
    match monoio::time::timeout_at(deadline, stream.read(buf.slice_mut(len..cap))).await {
        Ok((res, slice)) => (res, slice.into_inner()),
        Err(_) => (Err(io::ErrorKind::TimedOut.into()), Vec::new()),
    }
}

pub(super) async fn write_all(
    stream: &mut TcpStream,
    buf: Vec<u8>,
    limit: Duration,
) -> (io::Result<()>, Vec<u8>) {
    if buf.is_empty() {
        return (Ok(()), buf);
    }
    match monoio::time::timeout(limit, stream.write_all(buf)).await {
        Ok((res, buf)) => (res.map(|_| ()), buf),
        Err(_) => (Err(io::ErrorKind::TimedOut.into()), Vec::new()),
    }
}

pub(super) async fn write_range(
    stream: &mut TcpStream,
    buf: Vec<u8>,
    range: std::ops::Range<usize>,
    limit: Duration,
) -> (io::Result<()>, Vec<u8>) {
    match monoio::time::timeout(limit, stream.write_all(buf.slice(range))).await {
        Ok((res, slice)) => (res.map(|_| ()), slice.into_inner()),
        Err(_) => (Err(io::ErrorKind::TimedOut.into()), Vec::new()),
    }
}
