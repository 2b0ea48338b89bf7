//! One body streamed between two transports through a reused buffer: Content-Length,
//! chunked (framing checked, passed through or de-chunked for an HTTP/1.0 client) or
//! close-delimited (chunked on the way to an HTTP/1.1 client), with the head it follows
//! coalesced into the first write when the first segment is small.
//!
//! Runs on: a worker, inside a client connection's task. Worker-local buffers only; every
//! read and write has a deadline ([`crate::transport::deadline`]).

use std::io;
use std::time::{Duration, Instant};

use monoio::io::{AsyncReadRent, AsyncWriteRent};

use crate::error::{ErrorKind, Side};
use crate::http::chunked::ChunkedDecoder;
use crate::http::BodyKind;
use crate::transport::deadline::{read_more, write_all, write_range, Timer};
use crate::worker::READ_CHUNK;

/// A body segment up to this size rides in the same write as its head.
const COALESCE: usize = 16 * 1024;

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
    /// Between two reads of the source.
    pub(super) read: Duration,
    pub(super) write: Duration,
    /// When the whole body must have been read (a client's request body).
    pub(super) until: Option<Instant>,
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

/// One body to stream (see [`relay`]).
pub(super) struct Body {
    /// The buffer to stream through; `buf[start..]` already holds the first bytes.
    pub(super) buf: Vec<u8>,
    pub(super) start: usize,
    pub(super) kind: BodyKind,
    pub(super) mode: Mode,
    /// The chunked decoder's state when part of the body was decoded already.
    pub(super) decoder: Option<ChunkedDecoder>,
    pub(super) timeouts: Timeouts,
    /// The side `src` is on (errors are blamed on the right one).
    pub(super) src_side: Side,
    /// A chunked body passed through loses its trailer fields (the final CRLF is kept):
    /// the client did not say `TE: trailers`.
    pub(super) drop_trailers: bool,
}

/// What failed on `side`, by whether it was a timeout.
fn kind_of(side: Side, timeout: bool) -> ErrorKind {
    match (side, timeout) {
        (Side::Upstream, true) => ErrorKind::UpstreamIoTimeout,
        (Side::Upstream, false) => ErrorKind::UpstreamClosed,
        (_, true) => ErrorKind::ClientTimeout,
        (_, false) => ErrorKind::ClientIo,
    }
}

/// Streams one body from `src` to `dst` through its buffer, re-framing per its `mode`.
/// A non-empty `head` is written first, in the same write as the first body segment when
/// that is small.
pub(super) async fn relay<R: AsyncReadRent, W: AsyncWriteRent>(
    src: &mut R,
    dst: &mut W,
    head: &mut Vec<u8>,
    timer: &mut Timer,
    job: Body,
) -> Relayed {
    let Body {
        mut buf,
        mut start,
        kind: body,
        mode,
        decoder,
        timeouts: t,
        src_side,
        drop_trailers,
    } = job;
    let drop_trailers = drop_trailers && mode == Mode::Pass && body == BodyKind::Chunked;
    let dst_side = if src_side == Side::Upstream {
        Side::Downstream
    } else {
        Side::Upstream
    };
    let src_err = |timeout: bool| RelayError {
        side: src_side,
        kind: kind_of(src_side, timeout),
    };
    let dst_err = |e: io::Error| RelayError {
        side: dst_side,
        kind: kind_of(dst_side, e.kind() == io::ErrorKind::TimedOut),
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
    // Every way out hands the buffer back with what was written so far.
    macro_rules! finish {
        ($end:expr, $result:expr) => {
            return Relayed {
                buf,
                end: $end,
                written,
                head_sent,
                result: $result,
            }
        };
    }
    loop {
        let avail = buf.len() - start;
        // 1. Take the body's part of what is buffered (`fwd_end`: what of it goes on, when
        // trailers are dropped).
        let was_in_trailers = drop_trailers && decoder.in_trailers();
        let mut fwd_end = None;
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
                    Ok(progress) => {
                        if was_in_trailers {
                            fwd_end = Some(start);
                        } else if let (true, Some(at)) = (drop_trailers, progress.trailers_at) {
                            fwd_end = Some(start + at);
                        }
                        (start + progress.consumed, progress.done)
                    }
                    Err(e) => {
                        let kind = match src_side {
                            Side::Upstream => ErrorKind::BadResponse,
                            _ if e.status() == 413 => ErrorKind::BodyTooLarge,
                            _ => ErrorKind::ClientIo,
                        };
                        finish!(
                            start,
                            Err(RelayError {
                                side: src_side,
                                kind
                            })
                        )
                    }
                }
            }
            BodyKind::Close => (buf.len(), eof),
        };
        // 2. Write it (re-framed as needed), coalesced with any pending head.
        let seg = seg_end - start;
        let mut direct = false;
        match mode {
            Mode::Pass if drop_trailers && (fwd_end.is_some() || done) => {
                // Up to the trailers, then (once done) the final CRLF alone.
                let to = fwd_end.unwrap_or(seg_end);
                head.extend_from_slice(&buf[start..to]);
                if done {
                    head.extend_from_slice(b"\r\n");
                }
            }
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
            let (res, h) = write_all(dst, std::mem::take(head), t.write, timer).await;
            *head = h;
            head.clear();
            if let Err(e) = res {
                finish!(start, Err(dst_err(e)))
            }
            written += if head_sent { n } else { n - head_initial };
            head_sent = true;
        }
        if direct {
            let (res, b) = write_range(dst, buf, start..seg_end, t.write, timer).await;
            buf = b;
            if let Err(e) = res {
                finish!(start, Err(dst_err(e)))
            }
            written += seg as u64;
        }
        start = seg_end;
        if done {
            finish!(start, Ok(()))
        }
        // 3. Everything buffered was consumed: read more.
        buf.clear();
        start = 0;
        if buf.capacity() < READ_CHUNK {
            buf.reserve(READ_CHUNK);
        }
        let mut deadline = Instant::now() + t.read;
        if let Some(until) = t.until {
            deadline = deadline.min(until);
        }
        let (res, b) = read_more(src, buf, deadline, timer).await;
        buf = b;
        match res {
            Ok(0) if body == BodyKind::Close => eof = true,
            Ok(0) => {
                finish!(0, Err(src_err(false)))
            }
            Ok(_) => {}
            Err(e) => {
                finish!(0, Err(src_err(e.kind() == io::ErrorKind::TimedOut)))
            }
        }
    }
}
