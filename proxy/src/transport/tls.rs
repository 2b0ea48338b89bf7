//! TLS over any [`Transport`]: [`TlsStream`] runs a rustls session over a connection and is
//! itself a `Transport`, so `http1::serve` and the tunnel copy serve it unchanged.
//!
//! A read decrypts into the caller's buffer (one ciphertext read of up to
//! [`CIPHER_BUF`] bytes, then as much plaintext as the records hold); a write encrypts
//! from the caller's buffer and sends every record it made in one write. `into_split`
//! shares the session between the two halves through an `Rc<RefCell<_>>` that is only
//! borrowed between two awaits, never across one.
//!
//! A future dropped mid-operation (a deadline) loses the ciphertext it held: the
//! callers close the connection then, as they do for a plain one.
//!
//! Unsafe code: monoio's owned buffers are raw pointers and lengths (`IoBuf`,
//! `IoBufMut`, `IoVecBuf`); this file turns them into slices to hand plaintext to and
//! from rustls, within the lengths the buffer traits promise, and marks bytes written as
//! initialised. Each block says why it holds; the TLS tests (`proxy/tests/it/tls.rs`)
//! drive every path (reads, writes, keep-alive, vectored writes of head and body).
//!
//! Runs on: workers. `!Send`, per connection.

#![allow(unsafe_code)]

use std::cell::RefCell;
use std::io::{self, Read, Write};
use std::rc::Rc;

use monoio::buf::{IoBuf, IoBufMut, IoVecBuf, IoVecBufMut};
use monoio::io::{AsyncReadRent, AsyncWriteRent, AsyncWriteRentExt};
use monoio::BufResult;
use rustls::Connection;

use super::{Idle, Transport};

/// Ciphertext read buffer while a lot arrives: one full TLS record (16 KiB of plaintext
/// plus overhead).
pub const CIPHER_BUF: usize = 16 * 1024 + 512;
/// Ciphertext read buffer otherwise (an idle keep-alive connection waits with this one).
pub const CIPHER_BUF_SMALL: usize = 2 * 1024;

type Session = Rc<RefCell<Connection>>;

/// A TLS session over the connection `S`.
pub struct TlsStream<S> {
    io: S,
    session: Session,
    rx: Cipher,
}

impl<S: std::fmt::Debug> std::fmt::Debug for TlsStream<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The session holds keys: only the connection is shown.
        f.debug_struct("TlsStream")
            .field("io", &self.io)
            .finish_non_exhaustive()
    }
}

/// The owned ciphertext read buffer: small, and a record's size only while reads fill
/// it, so an idle connection holds 2 KiB rather than 16.
struct Cipher {
    buf: Option<Vec<u8>>,
    /// The last read filled its buffer: more is probably waiting.
    busy: bool,
}

impl Cipher {
    fn new() -> Cipher {
        Cipher {
            buf: None,
            busy: false,
        }
    }

    /// The buffer for the next read.
    fn next(&mut self) -> Vec<u8> {
        let cap = if self.busy {
            CIPHER_BUF
        } else {
            CIPHER_BUF_SMALL
        };
        self.take(cap)
    }

    fn take(&mut self, cap: usize) -> Vec<u8> {
        let mut b = self.buf.take().unwrap_or_default();
        b.clear();
        if b.capacity() < cap {
            b.reserve(cap);
        } else if b.capacity() > cap * 2 {
            b = Vec::with_capacity(cap);
        }
        b
    }
}

impl<S: Transport> TlsStream<S> {
    /// A session not yet handshaken; [`TlsStream::handshake`] drives it.
    pub fn new(io: S, conn: impl Into<Connection>) -> TlsStream<S> {
        TlsStream {
            io,
            session: Rc::new(RefCell::new(conn.into())),
            rx: Cipher::new(),
        }
    }

    /// The rustls session (SNI, ALPN, protocol version, peer certificates).
    pub fn session(&self) -> std::cell::Ref<'_, Connection> {
        self.session.borrow()
    }

    /// The name a client asked for (SNI); `None` on the client side or without one.
    pub fn server_name(&self) -> Option<String> {
        match &*self.session.borrow() {
            Connection::Server(c) => c.server_name().map(str::to_owned),
            Connection::Client(_) => None,
        }
    }

    /// The first bytes the client sent, before any is given to the session; for telling
    /// plain HTTP sent to a TLS port from a ClientHello. Reads once.
    pub async fn first_bytes(&mut self) -> io::Result<&[u8]> {
        let buf = self.rx.take(CIPHER_BUF);
        let (res, buf) = self.io.read(buf).await;
        self.rx.buf = Some(buf);
        res?;
        Ok(self.rx.buf.as_deref().unwrap_or_default())
    }

    /// Runs the handshake to its end, with whatever [`TlsStream::first_bytes`] read first.
    /// An error after which an alert is due sends it first.
    pub async fn handshake(&mut self) -> io::Result<()> {
        // Bytes read by `first_bytes` go to the session first.
        if let Some(buf) = self.rx.buf.as_ref().filter(|b| !b.is_empty()) {
            let fed = feed(&self.session, buf);
            self.rx.buf.as_mut().map(Vec::clear);
            if let Err(e) = fed {
                let _ = flush(&mut self.io, &self.session).await;
                return Err(e);
            }
        }
        loop {
            let (handshaking, wants_write) = {
                let s = self.session.borrow();
                (s.is_handshaking(), s.wants_write())
            };
            if wants_write {
                flush(&mut self.io, &self.session).await?;
                continue;
            }
            if !handshaking {
                return Ok(());
            }
            match fill(&mut self.io, &self.session, &mut self.rx).await {
                Ok(true) => {}
                Ok(false) => {
                    return Err(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        "connection closed during the handshake",
                    ))
                }
                Err(e) => {
                    let _ = flush(&mut self.io, &self.session).await;
                    return Err(e);
                }
            }
        }
    }

    /// The connection under the session, for an answer in plain text (a 400 to plain
    /// HTTP on a TLS port).
    pub fn get_mut(&mut self) -> &mut S {
        &mut self.io
    }
}

/// Gives ciphertext to the session and processes it. An error is a TLS error (the session
/// has queued the alert to send).
fn feed(session: &Session, mut data: &[u8]) -> io::Result<()> {
    let mut s = session.borrow_mut();
    while !data.is_empty() {
        s.read_tls(&mut data)?;
        if let Err(e) = s.process_new_packets() {
            return Err(io::Error::new(io::ErrorKind::InvalidData, e));
        }
    }
    Ok(())
}

/// Reads ciphertext once and processes it; `false` at the end of the stream.
async fn fill<R: AsyncReadRent>(
    io: &mut R,
    session: &Session,
    rx: &mut Cipher,
) -> io::Result<bool> {
    let buf = rx.next();
    let (res, buf) = io.read(buf).await;
    rx.busy = matches!(res, Ok(n) if n == buf.capacity());
    let n = match res {
        Ok(n) => n,
        Err(e) => {
            rx.buf = Some(buf);
            return Err(e);
        }
    };
    let fed = if n == 0 {
        let mut s = session.borrow_mut();
        let _ = s.read_tls(&mut &[][..]);
        s.process_new_packets()
            .map(|_| ())
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))
    } else {
        feed(session, &buf[..n])
    };
    rx.buf = Some(buf);
    fed.map(|()| n > 0)
}

/// Sends every record the session has queued, in one write where it can.
async fn flush<W: AsyncWriteRent>(io: &mut W, session: &Session) -> io::Result<()> {
    loop {
        let mut out = Vec::new();
        {
            let mut s = session.borrow_mut();
            while s.wants_write() {
                s.write_tls(&mut out)?;
            }
        }
        if out.is_empty() {
            return Ok(());
        }
        let (res, _) = io.write_all(out).await;
        res?;
    }
}

/// Plaintext the session holds, copied into `buf`: `Some(n)` (0 at a clean close), or
/// `None` when it needs more ciphertext.
fn take_plain<T: IoBufMut>(session: &Session, buf: &mut T) -> Option<io::Result<usize>> {
    let room = buf.bytes_total();
    // SAFETY: `write_ptr` is valid for writes of `bytes_total` bytes (IoBufMut); the
    // slice lives only for this call. rustls's `read` writes plaintext into it and may read
    // nothing of it, so treating the uninitialised tail as `u8`s is not observed.
    let dst = unsafe { std::slice::from_raw_parts_mut(buf.write_ptr(), room) };
    match session.borrow_mut().reader().read(dst) {
        Ok(n) => {
            // SAFETY: `read` initialised the first `n` ≤ `room` bytes.
            unsafe { buf.set_init(n) };
            Some(Ok(n))
        }
        Err(e) if e.kind() == io::ErrorKind::WouldBlock => None,
        // The peer closed without close_notify: an end of stream, as for plain TCP (HTTP
        // framing says whether anything was cut).
        Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => Some(Ok(0)),
        Err(e) => Some(Err(e)),
    }
}

async fn read_plain<R: AsyncReadRent, T: IoBufMut>(
    io: &mut R,
    session: &Session,
    rx: &mut Cipher,
    mut buf: T,
) -> BufResult<usize, T> {
    loop {
        if buf.bytes_total() == 0 {
            return (Ok(0), buf);
        }
        if let Some(r) = take_plain(session, &mut buf) {
            return (r, buf);
        }
        match fill(io, session, rx).await {
            Ok(_) => {}
            Err(e) => return (Err(e), buf),
        }
    }
}

async fn write_plain<W: AsyncWriteRent>(
    io: &mut W,
    session: &Session,
    data: &[u8],
) -> io::Result<usize> {
    let n = session.borrow_mut().writer().write(data)?;
    flush(io, session).await?;
    Ok(n)
}

/// The first non-empty buffer of an iovec list, as (pointer, length).
fn first_iovec(ptr: *const libc::iovec, len: usize) -> Option<(*mut u8, usize)> {
    // SAFETY: IoVecBufMut promises `ptr` points to `len` initialised iovecs.
    let vecs = unsafe { std::slice::from_raw_parts(ptr, len) };
    vecs.iter()
        .find(|v| v.iov_len > 0)
        .map(|v| (v.iov_base.cast::<u8>(), v.iov_len))
}

/// A read into the first non-empty buffer of an iovec list (TLS has no vectored read).
async fn readv_plain<R: AsyncReadRent, T: IoVecBufMut>(
    io: &mut R,
    session: &Session,
    rx: &mut Cipher,
    mut buf: T,
) -> BufResult<usize, T> {
    let Some((ptr, len)) = first_iovec(buf.write_iovec_ptr(), buf.write_iovec_len()) else {
        return (Ok(0), buf);
    };
    let (res, tmp) = read_plain(io, session, rx, vec![0u8; len]).await;
    if let Ok(n) = res {
        // SAFETY: `ptr` holds `len` ≥ n writable bytes (IoVecBufMut) and `tmp` n readable
        // ones; they do not overlap (`tmp` is ours). The first n are now set.
        unsafe {
            std::ptr::copy_nonoverlapping(tmp.as_ptr(), ptr, n);
            buf.set_init(n);
        }
    }
    (res, buf)
}

/// Encrypts and sends an owned buffer.
async fn write_owned<W: AsyncWriteRent, T: IoBuf>(
    io: &mut W,
    session: &Session,
    buf: T,
) -> BufResult<usize, T> {
    // SAFETY: IoBuf promises `read_ptr` is valid for `bytes_init` initialised bytes for as
    // long as `buf` lives, which outlives `data`.
    let data = unsafe { std::slice::from_raw_parts(buf.read_ptr(), buf.bytes_init()) };
    let res = write_plain(io, session, data).await;
    (res, buf)
}

/// Encrypts and sends an owned iovec list.
async fn writev_owned<W: AsyncWriteRent, T: IoVecBuf>(
    io: &mut W,
    session: &Session,
    buf: T,
) -> BufResult<usize, T> {
    let res = writev_plain(io, session, &buf).await;
    (res, buf)
}

async fn writev_plain<W: AsyncWriteRent, T: IoVecBuf>(
    io: &mut W,
    session: &Session,
    buf: &T,
) -> io::Result<usize> {
    // SAFETY: IoVecBuf promises `read_iovec_ptr` points to `read_iovec_len` iovecs.
    let vecs = unsafe { std::slice::from_raw_parts(buf.read_iovec_ptr(), buf.read_iovec_len()) };
    let mut total = 0;
    {
        let mut s = session.borrow_mut();
        for v in vecs {
            // SAFETY: each iovec of an IoVecBuf describes `iov_len` initialised bytes.
            let data = unsafe { std::slice::from_raw_parts(v.iov_base.cast::<u8>(), v.iov_len) };
            let n = s.writer().write(data)?;
            total += n;
            if n < data.len() {
                break;
            }
        }
    }
    flush(io, session).await?;
    Ok(total)
}

/// Sends what the session holds, then flushes the connection.
async fn flush_all<W: AsyncWriteRent>(io: &mut W, session: &Session) -> io::Result<()> {
    flush(io, session).await?;
    io.flush().await
}

/// close_notify, then the connection's write half-close.
async fn close<W: AsyncWriteRent>(io: &mut W, session: &Session) -> io::Result<()> {
    session.borrow_mut().send_close_notify();
    flush(io, session).await?;
    io.shutdown().await
}

/// A read on an unsplit stream: records the session owes the peer (a key update's
/// answer) go first.
async fn read_unsplit<S: Transport, T: IoBufMut>(
    s: &mut TlsStream<S>,
    buf: T,
) -> BufResult<usize, T> {
    if s.session.borrow().wants_write() {
        if let Err(e) = flush(&mut s.io, &s.session).await {
            return (Err(e), buf);
        }
    }
    read_plain(&mut s.io, &s.session, &mut s.rx, buf).await
}

// Boxed futures, here and on the halves: a `TlsStream` sits in the upstream connection
// type beside plain ones (`UpstreamStream`), and its halves in the tunnel and `tcp` copy
// loops every open connection holds; unboxed, the TLS futures would size (and make every
// plain operation move) the larger future.
impl<S: Transport> AsyncReadRent for TlsStream<S> {
    fn read<T: IoBufMut>(
        &mut self,
        buf: T,
    ) -> impl std::future::Future<Output = BufResult<usize, T>> {
        Box::pin(read_unsplit(self, buf))
    }

    fn readv<T: IoVecBufMut>(
        &mut self,
        buf: T,
    ) -> impl std::future::Future<Output = BufResult<usize, T>> {
        Box::pin(readv_plain(&mut self.io, &self.session, &mut self.rx, buf))
    }
}

impl<S: Transport> AsyncWriteRent for TlsStream<S> {
    fn write<T: IoBuf>(
        &mut self,
        buf: T,
    ) -> impl std::future::Future<Output = BufResult<usize, T>> {
        Box::pin(write_owned(&mut self.io, &self.session, buf))
    }

    fn writev<T: IoVecBuf>(
        &mut self,
        buf: T,
    ) -> impl std::future::Future<Output = BufResult<usize, T>> {
        Box::pin(writev_owned(&mut self.io, &self.session, buf))
    }

    fn flush(&mut self) -> impl std::future::Future<Output = io::Result<()>> {
        Box::pin(flush_all(&mut self.io, &self.session))
    }

    fn shutdown(&mut self) -> impl std::future::Future<Output = io::Result<()>> {
        Box::pin(close(&mut self.io, &self.session))
    }
}

/// The reading half of a split [`TlsStream`].
pub struct TlsRead<R> {
    io: R,
    session: Session,
    rx: Cipher,
}

/// The writing half of a split [`TlsStream`]; it also sends what the reading half's
/// records asked the session to answer.
pub struct TlsWrite<W> {
    io: W,
    session: Session,
}

impl<R: AsyncReadRent> AsyncReadRent for TlsRead<R> {
    fn read<T: IoBufMut>(
        &mut self,
        buf: T,
    ) -> impl std::future::Future<Output = BufResult<usize, T>> {
        Box::pin(read_plain(&mut self.io, &self.session, &mut self.rx, buf))
    }

    fn readv<T: IoVecBufMut>(
        &mut self,
        buf: T,
    ) -> impl std::future::Future<Output = BufResult<usize, T>> {
        Box::pin(readv_plain(&mut self.io, &self.session, &mut self.rx, buf))
    }
}

impl<W: AsyncWriteRent> AsyncWriteRent for TlsWrite<W> {
    fn write<T: IoBuf>(
        &mut self,
        buf: T,
    ) -> impl std::future::Future<Output = BufResult<usize, T>> {
        Box::pin(write_owned(&mut self.io, &self.session, buf))
    }

    fn writev<T: IoVecBuf>(
        &mut self,
        buf: T,
    ) -> impl std::future::Future<Output = BufResult<usize, T>> {
        Box::pin(writev_owned(&mut self.io, &self.session, buf))
    }

    fn flush(&mut self) -> impl std::future::Future<Output = io::Result<()>> {
        Box::pin(flush_all(&mut self.io, &self.session))
    }

    fn shutdown(&mut self) -> impl std::future::Future<Output = io::Result<()>> {
        Box::pin(close(&mut self.io, &self.session))
    }
}

impl<S: Transport> Transport for TlsStream<S> {
    type Read = TlsRead<S::Read>;
    type Write = TlsWrite<S::Write>;

    fn into_split(self) -> (Self::Read, Self::Write) {
        let (r, w) = self.io.into_split();
        (
            TlsRead {
                io: r,
                session: self.session.clone(),
                rx: self.rx,
            },
            TlsWrite {
                io: w,
                session: self.session,
            },
        )
    }

    fn set_nodelay(&self) {
        self.io.set_nodelay();
    }

    /// Plaintext already decrypted and not read makes an idle connection unusable, as
    /// stray bytes do on a plain one.
    fn idle_state(&self) -> Idle {
        let mut s = self.session.borrow_mut();
        let mut probe = [0u8; 1];
        match s.reader().read(&mut probe) {
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => self.io.idle_state(),
            _ => Idle::Unusable,
        }
    }
}
