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
//! Runs on: a worker, inside an HTTP/2 connection's task (client side) or an upstream
//! HTTP/2 connection's task.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use monoio::io::{AsyncReadRent, AsyncWriteRent, AsyncWriteRentExt};
use tokio::io::ReadBuf;

use crate::transport::Transport;

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
        }
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
                            Ok(_) => this.read = ReadState::Idle(r),
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
