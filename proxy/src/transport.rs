//! Transports: the byte streams the data plane reads and writes, named by a trait so that
//! no exchange names a socket type.
//!
//! [`Transport`] is monoio's owned-buffer [`AsyncReadRent`] + [`AsyncWriteRent`] (a write
//! half-close is `AsyncWriteRent::shutdown`) plus the three things the layers above need
//! of a connection: Nagle off on a fresh socket ([`Transport::set_nodelay`]), whether an
//! idle pooled connection is still usable ([`Transport::idle_state`]), and read and write
//! halves that two directions of a tunnel can drive at once ([`Transport::into_split`]).
//! Addresses stay outside the trait: a client's comes from the accept ([`ClientAddr`]), an
//! upstream's from the pick ([`strait_discovery::EndpointAddr`]).
//!
//! Today's transports: [`TcpStream`] and [`UnixStream`], on both sides, and TLS over them
//! on the client side. The client side is
//! generic (`http1::serve::<S>`, `tcp::serve::<S>`, one instance per listener kind, no
//! dispatch per read); the upstream side holds whichever the endpoint needs in one pooled
//! type, [`AnyStream`] (an [`Either`] of the two).
//!
//! How the layers above plug in:
//! - **TLS** (rustls, `transport/tls.rs`): `TlsStream<S>` wraps any `Transport` and is
//!   itself one (a read decrypts into the caller's buffer, a write encrypts from it;
//!   `into_split` shares the session between the halves through an `Rc<RefCell<_>>`
//!   borrowed only between awaits; `idle_state` also looks at plaintext buffered in the
//!   session). TLS listeners hand `TlsStream<TcpStream>` to the same `http1::serve`; the
//!   exchange, relay and copy code do not change. Upstream TLS (next) pools
//!   `Either<AnyStream, TlsStream<AnyStream>>`.
//! - **HTTP/2**: an h2 connection is not a byte stream per request, so it sits above this
//!   trait: the connection task (`h2.rs`) runs the `h2` crate over a `Transport` (through
//!   `h2/io.rs`, an adapter to the poll-based IO traits h2 needs), and a stream bound for
//!   an HTTP/1.1 upstream is itself a `Transport` (`h2/pipe.rs`: reads give the request as
//!   HTTP/1.1, writes take the response), so `forward` and `relay` serve HTTP/1.1 and
//!   HTTP/2 clients alike.
//!
//! Runs on: workers. Everything here is `!Send` and per connection.

use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::os::fd::AsRawFd;

use monoio::io::{AsyncReadRent, AsyncWriteRent, OwnedReadHalf, OwnedWriteHalf, Splitable};
use monoio::net::{TcpStream, UnixStream};

use crate::sys;

pub mod deadline;
mod either;
pub mod tls;
mod upstream;

pub use upstream::UpstreamStream;

pub use either::Either;

/// A connection the data plane reads and writes with owned buffers.
pub trait Transport: AsyncReadRent + AsyncWriteRent + 'static {
    /// The half that reads.
    type Read: AsyncReadRent + Unpin + 'static;
    /// The half that writes (and half-closes with `shutdown`).
    type Write: AsyncWriteRent + Unpin + 'static;

    /// Splits the connection so that both directions can be driven at once.
    fn into_split(self) -> (Self::Read, Self::Write);

    /// Sends small writes at once (TCP_NODELAY); nothing to do where there is no Nagle.
    fn set_nodelay(&self);

    /// Whether an idle connection is still usable: nothing to read (no close, no stray
    /// bytes). Must not block or consume anything.
    fn idle_state(&self) -> Idle;
}

/// What a look at an idle connection found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Idle {
    /// Nothing to read: the connection looks usable.
    Open,
    /// EOF, an error, or unexpected bytes: do not reuse.
    Unusable,
}

impl Transport for TcpStream {
    type Read = OwnedReadHalf<TcpStream>;
    type Write = OwnedWriteHalf<TcpStream>;

    fn into_split(self) -> (Self::Read, Self::Write) {
        Splitable::into_split(self)
    }

    fn set_nodelay(&self) {
        let _ = TcpStream::set_nodelay(self, true);
    }

    fn idle_state(&self) -> Idle {
        sys::peek_idle(self.as_raw_fd())
    }
}

impl Transport for UnixStream {
    type Read = OwnedReadHalf<UnixStream>;
    type Write = OwnedWriteHalf<UnixStream>;

    fn into_split(self) -> (Self::Read, Self::Write) {
        Splitable::into_split(self)
    }

    fn set_nodelay(&self) {}

    fn idle_state(&self) -> Idle {
        sys::peek_idle(self.as_raw_fd())
    }
}

/// An upstream connection: TCP or a Unix socket, as its endpoint's address says.
pub type AnyStream = Either<TcpStream, UnixStream>;

/// Where a client connection comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientAddr {
    /// A TCP peer.
    Inet(SocketAddr),
    /// A peer on a Unix socket listener (it has no address of its own).
    Unix,
}

impl ClientAddr {
    /// The client's IP, for `X-Forwarded-For` and the access log; none on a Unix socket.
    pub fn ip(&self) -> Option<IpAddr> {
        match self {
            ClientAddr::Inet(a) => Some(a.ip()),
            ClientAddr::Unix => None,
        }
    }
}

impl From<SocketAddr> for ClientAddr {
    fn from(a: SocketAddr) -> ClientAddr {
        ClientAddr::Inet(a)
    }
}

/// `ip:port`, or `unix:` for a Unix socket peer (nginx's `$remote_addr` for one).
impl fmt::Display for ClientAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ClientAddr::Inet(a) => a.fmt(f),
            ClientAddr::Unix => f.write_str("unix:"),
        }
    }
}
