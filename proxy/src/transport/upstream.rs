//! The upstream connection type: TCP, a Unix socket, or TLS over either, in one flat
//! enum so that a plain connection's read or write is one `match` and the socket's own
//! operation (a nested `Either` cost a second state machine per operation). The TLS
//! variant is boxed and its futures are boxed (`transport/tls.rs`), so neither the type
//! nor the futures of plain connections grow for it.
//!
//! Runs on: workers, per operation. No allocation for plain connections.

use monoio::buf::{IoBuf, IoBufMut, IoVecBuf, IoVecBufMut};
use monoio::io::{AsyncReadRent, AsyncWriteRent, OwnedReadHalf, OwnedWriteHalf};
use monoio::net::{TcpStream, UnixStream};
use monoio::BufResult;

use super::tls::{TlsRead, TlsStream, TlsWrite};
use super::{AnyStream, Either, Idle, Transport};

/// A pooled upstream connection: plain, or TLS over one (`upstreams[].tls`).
#[derive(Debug)]
pub enum UpstreamStream {
    Tcp(TcpStream),
    Unix(UnixStream),
    Tls(Box<TlsStream<AnyStream>>),
}

impl From<AnyStream> for UpstreamStream {
    fn from(s: AnyStream) -> UpstreamStream {
        match s {
            Either::A(s) => UpstreamStream::Tcp(s),
            Either::B(s) => UpstreamStream::Unix(s),
        }
    }
}

impl AsyncReadRent for UpstreamStream {
    async fn read<T: IoBufMut>(&mut self, buf: T) -> BufResult<usize, T> {
        match self {
            UpstreamStream::Tcp(s) => s.read(buf).await,
            UpstreamStream::Unix(s) => s.read(buf).await,
            UpstreamStream::Tls(s) => s.read(buf).await,
        }
    }

    async fn readv<T: IoVecBufMut>(&mut self, buf: T) -> BufResult<usize, T> {
        match self {
            UpstreamStream::Tcp(s) => s.readv(buf).await,
            UpstreamStream::Unix(s) => s.readv(buf).await,
            UpstreamStream::Tls(s) => s.readv(buf).await,
        }
    }
}

impl AsyncWriteRent for UpstreamStream {
    async fn write<T: IoBuf>(&mut self, buf: T) -> BufResult<usize, T> {
        match self {
            UpstreamStream::Tcp(s) => s.write(buf).await,
            UpstreamStream::Unix(s) => s.write(buf).await,
            UpstreamStream::Tls(s) => s.write(buf).await,
        }
    }

    async fn writev<T: IoVecBuf>(&mut self, buf: T) -> BufResult<usize, T> {
        match self {
            UpstreamStream::Tcp(s) => s.writev(buf).await,
            UpstreamStream::Unix(s) => s.writev(buf).await,
            UpstreamStream::Tls(s) => s.writev(buf).await,
        }
    }

    async fn flush(&mut self) -> std::io::Result<()> {
        match self {
            UpstreamStream::Tcp(s) => s.flush().await,
            UpstreamStream::Unix(s) => s.flush().await,
            UpstreamStream::Tls(s) => s.flush().await,
        }
    }

    async fn shutdown(&mut self) -> std::io::Result<()> {
        match self {
            UpstreamStream::Tcp(s) => s.shutdown().await,
            UpstreamStream::Unix(s) => s.shutdown().await,
            UpstreamStream::Tls(s) => s.shutdown().await,
        }
    }
}

/// Halves: only tunnels and `tcp` copies split, so nesting is fine there.
type PlainRead = Either<OwnedReadHalf<TcpStream>, OwnedReadHalf<UnixStream>>;
type PlainWrite = Either<OwnedWriteHalf<TcpStream>, OwnedWriteHalf<UnixStream>>;

impl Transport for UpstreamStream {
    type Read = Either<PlainRead, TlsRead<PlainRead>>;
    type Write = Either<PlainWrite, TlsWrite<PlainWrite>>;

    fn into_split(self) -> (Self::Read, Self::Write) {
        match self {
            UpstreamStream::Tcp(s) => {
                let (r, w) = Transport::into_split(s);
                (Either::A(Either::A(r)), Either::A(Either::A(w)))
            }
            UpstreamStream::Unix(s) => {
                let (r, w) = Transport::into_split(s);
                (Either::A(Either::B(r)), Either::A(Either::B(w)))
            }
            UpstreamStream::Tls(s) => {
                let (r, w) = s.into_split();
                (Either::B(r), Either::B(w))
            }
        }
    }

    fn set_nodelay(&self) {
        match self {
            UpstreamStream::Tcp(s) => Transport::set_nodelay(s),
            UpstreamStream::Unix(s) => Transport::set_nodelay(s),
            UpstreamStream::Tls(s) => s.set_nodelay(),
        }
    }

    fn idle_state(&self) -> Idle {
        match self {
            UpstreamStream::Tcp(s) => s.idle_state(),
            UpstreamStream::Unix(s) => s.idle_state(),
            UpstreamStream::Tls(s) => s.idle_state(),
        }
    }
}
