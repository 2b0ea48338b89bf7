//! One of two transports, chosen at run time: an upstream connection is TCP or a Unix
//! socket depending on its endpoint, and one pool holds both. Each call is one `match`
//! then the variant's own operation; the future is the variant's, wrapped once.
//!
//! Runs on: workers, per operation. No allocation.

use monoio::buf::{IoBuf, IoBufMut, IoVecBuf, IoVecBufMut};
use monoio::io::{AsyncReadRent, AsyncWriteRent};
use monoio::BufResult;

use super::{Idle, Transport};

/// `A` or `B`, both transports (or both halves of transports).
#[derive(Debug)]
pub enum Either<A, B> {
    A(A),
    B(B),
}

impl<A: AsyncReadRent, B: AsyncReadRent> AsyncReadRent for Either<A, B> {
    async fn read<T: IoBufMut>(&mut self, buf: T) -> BufResult<usize, T> {
        match self {
            Either::A(s) => s.read(buf).await,
            Either::B(s) => s.read(buf).await,
        }
    }

    async fn readv<T: IoVecBufMut>(&mut self, buf: T) -> BufResult<usize, T> {
        match self {
            Either::A(s) => s.readv(buf).await,
            Either::B(s) => s.readv(buf).await,
        }
    }
}

impl<A: AsyncWriteRent, B: AsyncWriteRent> AsyncWriteRent for Either<A, B> {
    async fn write<T: IoBuf>(&mut self, buf: T) -> BufResult<usize, T> {
        match self {
            Either::A(s) => s.write(buf).await,
            Either::B(s) => s.write(buf).await,
        }
    }

    async fn writev<T: IoVecBuf>(&mut self, buf: T) -> BufResult<usize, T> {
        match self {
            Either::A(s) => s.writev(buf).await,
            Either::B(s) => s.writev(buf).await,
        }
    }

    async fn flush(&mut self) -> std::io::Result<()> {
        match self {
            Either::A(s) => s.flush().await,
            Either::B(s) => s.flush().await,
        }
    }

    async fn shutdown(&mut self) -> std::io::Result<()> {
        match self {
            Either::A(s) => s.shutdown().await,
            Either::B(s) => s.shutdown().await,
        }
    }
}

impl<A: Transport, B: Transport> Transport for Either<A, B> {
    type Read = Either<A::Read, B::Read>;
    type Write = Either<A::Write, B::Write>;

    fn into_split(self) -> (Self::Read, Self::Write) {
        match self {
            Either::A(s) => {
                let (r, w) = s.into_split();
                (Either::A(r), Either::A(w))
            }
            Either::B(s) => {
                let (r, w) = s.into_split();
                (Either::B(r), Either::B(w))
            }
        }
    }

    fn set_nodelay(&self) {
        match self {
            Either::A(s) => s.set_nodelay(),
            Either::B(s) => s.set_nodelay(),
        }
    }

    fn idle_state(&self) -> Idle {
        match self {
            Either::A(s) => s.idle_state(),
            Either::B(s) => s.idle_state(),
        }
    }
}
