//! The bridge from strait's owned-buffer [`Transport`]s to the poll-based IO traits the
//! `h2` crate drives (`tokio::io::AsyncRead` / `AsyncWrite`; only the traits: no tokio
//! runtime runs).
//!
//! The connection is split; each half has one operation in flight at a time, owning its
//! half and its buffer inside a boxed future. Reads fill a 16 KiB buffer that
//! `poll_read` copies out of; a write takes a copy of what h2 hands it, is reported done at
//! once and completes in the background, and `poll_flush` (which h2 calls after each batch
//! of frames) waits for it: one write system call or ring operation per batch, as h2's
//! own buffering makes them. Bytes already read from the connection (the HTTP/2
//! preface detected on a plain-text listener) are served first.
//!
//! On a client connection, [`FrameWatch`] reads the 9-byte header of every frame that
//! comes in (nothing else) and trips on floods of frames that cost strait work but carry
//! no request: SETTINGS and PING (each one asks for an acknowledgement), PRIORITY,
//! RST_STREAM (rapid reset), empty DATA / HEADERS / CONTINUATION frames, unknown frame
//! types. Past
//! `http.http2.max_control_frames` of them within a second the connection stops being
//! read and its task ends it with GOAWAY (ENHANCE_YOUR_CALM).
//!
//! Runs on: a worker, inside an HTTP/2 connection's task (client side) or an upstream
//! HTTP/2 connection's task.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use std::rc::Rc;
use std::time::Instant;

use monoio::io::{AsyncReadRent, AsyncWriteRent, AsyncWriteRentExt};
use tokio::io::ReadBuf;

use crate::transport::Transport;
use crate::worker::Signal;

/// Bytes read per read operation.
const READ_BUF: usize = 16 * 1024;

type ReadFut<R> = Pin<Box<dyn Future<Output = (R, Vec<u8>, io::Result<usize>)>>>;
type WriteFut<W> = Pin<Box<dyn Future<Output = (W, Vec<u8>, io::Result<()>)>>>;

enum ReadState<R> {
    Idle(R),
    Busy(ReadFut<R>),
    /// EOF or an error was returned; nothing more is read.
    Done,
}

enum WriteState<W> {
    Idle(W),
    Busy(WriteFut<W>),
    Closed,
}

/// Counts a client's costly frames; see the module doc.
pub struct FrameWatch {
    /// Preface bytes still to skip.
    preface: usize,
    header: [u8; 9],
    have: usize,
    /// Payload bytes of the current frame still to skip.
    skip: usize,
    window: Instant,
    count: u32,
    limit: u32,
    /// Fired once the limit is passed: the connection's task sends GOAWAY.
    pub tripped: Rc<Signal>,
}

impl FrameWatch {
    /// A watch for a connection that starts with the client preface.
    pub fn new(limit: u32) -> FrameWatch {
        FrameWatch {
            preface: super::PREFACE.len(),
            header: [0; 9],
            have: 0,
            skip: 0,
            window: Instant::now(),
            count: 0,
            limit,
            tripped: Rc::new(Signal::default()),
        }
    }

    /// Takes in bytes read; whether the connection is to be ended (the signal fired).
    fn feed(&mut self, mut data: &[u8]) -> bool {
        let skip = self.preface.min(data.len());
        self.preface -= skip;
        data = &data[skip..];
        while !data.is_empty() {
            if self.skip > 0 {
                let n = self.skip.min(data.len());
                self.skip -= n;
                data = &data[n..];
                continue;
            }
            let n = (9 - self.have).min(data.len());
            self.header[self.have..self.have + n].copy_from_slice(&data[..n]);
            self.have += n;
            data = &data[n..];
            if self.have < 9 {
                break;
            }
            self.have = 0;
            let h = self.header;
            let len = u32::from_be_bytes([0, h[0], h[1], h[2]]) as usize;
            self.skip = len;
            if costly(h[3], h[4], len) && self.count() {
                self.tripped.fire();
                return true;
            }
        }
        false
    }

    /// Counts one costly frame; whether the limit is passed.
    fn count(&mut self) -> bool {
        let now = Instant::now();
        if now.duration_since(self.window).as_secs() >= 1 {
            self.window = now;
            self.count = 0;
        }
        self.count += 1;
        self.count > self.limit
    }
}

/// A frame that costs work and carries no request (RFC 9113 frame types and flags).
fn costly(kind: u8, flags: u8, len: usize) -> bool {
    const ACK: u8 = 0x1;
    const END_STREAM: u8 = 0x1;
    const END_HEADERS: u8 = 0x4;
    match kind {
        // DATA: empty and not the end of the stream.
        0x0 => len == 0 && flags & END_STREAM == 0,
        // HEADERS / CONTINUATION: an empty fragment that does not end the block.
        0x1 | 0x9 => len == 0 && flags & END_HEADERS == 0,
        // PRIORITY
        0x2 => true,
        // SETTINGS, PING: unless an acknowledgement.
        0x4 | 0x6 => flags & ACK == 0,
        // RST_STREAM: a client cancelling streams faster than this is resetting rapidly.
        0x3 => true,
        // PUSH_PROMISE, GOAWAY, WINDOW_UPDATE: h2 refuses or bounds them itself.
        0x5 | 0x7 | 0x8 => false,
        // Unknown types are to be ignored (§5.5): a flood of them is work for nothing.
        _ => true,
    }
}

/// A [`Transport`] seen through `tokio::io::{AsyncRead, AsyncWrite}`.
pub struct PollIo<S: Transport> {
    read: ReadState<S::Read>,
    /// Read bytes not handed out yet: `rbuf[rpos..]`.
    rbuf: Vec<u8>,
    rpos: usize,
    write: WriteState<S::Write>,
    /// The write buffer while no write is in flight.
    wbuf: Vec<u8>,
    /// A background write failed: the next write or flush reports it.
    werr: Option<io::Error>,
    /// The write side's shutdown has started.
    shutting: bool,
    /// A client connection's flood watch; once tripped nothing more is read.
    watch: Option<FrameWatch>,
}

impl<S: Transport> PollIo<S> {
    /// Wraps `stream`; `read_already` is served before anything read from it.
    pub fn new(stream: S, read_already: Vec<u8>) -> PollIo<S> {
        let (r, w) = stream.into_split();
        PollIo {
            read: ReadState::Idle(r),
            rbuf: read_already,
            rpos: 0,
            write: WriteState::Idle(w),
            wbuf: Vec::new(),
            werr: None,
            shutting: false,
            watch: None,
        }
    }

    /// Watches the frames read for floods (a client connection).
    pub fn watched(mut self, mut watch: FrameWatch) -> PollIo<S> {
        // What was read before (the preface, maybe more) counts too.
        watch.feed(&self.rbuf[self.rpos..]);
        self.watch = Some(watch);
        self
    }

    /// Waits for the write in flight, if any; `Err` if it failed (or failed before).
    fn poll_write_done(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        if let WriteState::Busy(fut) = &mut self.write {
            let (w, buf, res) = ready!(fut.as_mut().poll(cx));
            self.write = WriteState::Idle(w);
            self.wbuf = buf;
            if let Err(e) = res {
                self.werr = Some(e);
            }
        }
        match self.werr.take() {
            Some(e) => {
                self.write = WriteState::Closed;
                Poll::Ready(Err(e))
            }
            None => Poll::Ready(Ok(())),
        }
    }
}

impl<S: Transport> tokio::io::AsyncRead for PollIo<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        out: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        loop {
            if this.rpos < this.rbuf.len() {
                let n = out.remaining().min(this.rbuf.len() - this.rpos);
                out.put_slice(&this.rbuf[this.rpos..this.rpos + n]);
                this.rpos += n;
                return Poll::Ready(Ok(()));
            }
            match std::mem::replace(&mut this.read, ReadState::Done) {
                ReadState::Done => return Poll::Ready(Ok(())),
                ReadState::Idle(r) if this.watch.as_ref().is_some_and(|w| w.tripped.is_fired()) => {
                    // What was read is handed out; nothing more is read: the signal wakes
                    // the connection's task, which ends the connection with GOAWAY.
                    this.read = ReadState::Idle(r);
                    return Poll::Pending;
                }
                ReadState::Idle(mut r) => {
                    let mut buf = std::mem::take(&mut this.rbuf);
                    buf.clear();
                    if buf.capacity() < READ_BUF {
                        buf.reserve(READ_BUF);
                    }
                    this.rpos = 0;
                    this.read = ReadState::Busy(Box::pin(async move {
                        let (res, buf) = r.read(buf).await;
                        (r, buf, res)
                    }));
                }
                ReadState::Busy(mut fut) => match fut.as_mut().poll(cx) {
                    Poll::Pending => {
                        this.read = ReadState::Busy(fut);
                        return Poll::Pending;
                    }
                    Poll::Ready((r, buf, res)) => {
                        this.rbuf = buf;
                        match res {
                            Ok(0) => {
                                this.rbuf.clear();
                                return Poll::Ready(Ok(()));
                            }
                            Ok(_) => {
                                this.read = ReadState::Idle(r);
                                if let Some(w) = &mut this.watch {
                                    w.feed(&this.rbuf);
                                }
                            }
                            Err(e) => {
                                this.rbuf.clear();
                                return Poll::Ready(Err(e));
                            }
                        }
                    }
                },
            }
        }
    }
}

impl<S: Transport> tokio::io::AsyncWrite for PollIo<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        ready!(this.poll_write_done(cx))?;
        let WriteState::Idle(mut w) = std::mem::replace(&mut this.write, WriteState::Closed) else {
            return Poll::Ready(Err(io::ErrorKind::BrokenPipe.into()));
        };
        let mut buf = std::mem::take(&mut this.wbuf);
        buf.clear();
        buf.extend_from_slice(data);
        let mut fut: WriteFut<S::Write> = Box::pin(async move {
            let (res, buf) = w.write_all(buf).await;
            (w, buf, res.map(|_| ()))
        });
        // Started now; finished by the next write or flush.
        match fut.as_mut().poll(cx) {
            Poll::Ready((w, buf, res)) => {
                this.write = WriteState::Idle(w);
                this.wbuf = buf;
                res?;
            }
            Poll::Pending => this.write = WriteState::Busy(fut),
        }
        Poll::Ready(Ok(data.len()))
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.get_mut().poll_write_done(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        ready!(this.poll_write_done(cx))?;
        if this.shutting {
            this.write = WriteState::Closed;
            return Poll::Ready(Ok(()));
        }
        this.shutting = true;
        match std::mem::replace(&mut this.write, WriteState::Closed) {
            WriteState::Idle(mut w) => {
                let mut fut: WriteFut<S::Write> = Box::pin(async move {
                    let res = w.shutdown().await;
                    (w, Vec::new(), res)
                });
                match fut.as_mut().poll(cx) {
                    Poll::Ready((_, _, res)) => Poll::Ready(res),
                    Poll::Pending => {
                        this.write = WriteState::Busy(fut);
                        Poll::Pending
                    }
                }
            }
            _ => Poll::Ready(Ok(())),
        }
    }
}
