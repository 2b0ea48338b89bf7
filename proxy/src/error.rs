//! Data-plane errors: what failed, on which side, and whether a retry is safe; one
//! [`ProxyError::status`] maps them to the response the client gets.
//!
//! Runs on: workers. Plain `Copy` data; no allocation, no boxing.

/// Which side of the proxy an error came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    /// The client.
    Downstream,
    /// The backend.
    Upstream,
    Internal,
}

/// Whether the request may be sent again to another endpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Retry {
    No,
    /// Nothing reached an upstream.
    Safe,
    /// Only for idempotent requests (the upstream may have seen it).
    IfIdempotent,
}

/// What went wrong.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    ConnectRefused,
    ConnectTimeout,
    /// The TLS handshake with the endpoint failed (its certificate did not verify, or it
    /// does not speak TLS).
    UpstreamTls,
    /// The upstream closed or reset before a response head.
    UpstreamClosed,
    /// No response head within the response-header timeout.
    ResponseTimeout,
    /// A read or write on an upstream body timed out.
    UpstreamIoTimeout,
    /// A malformed response head or body framing.
    BadResponse,
    /// The client went away or misbehaved mid-request.
    ClientIo,
    /// A streamed chunked request body passed the body limit.
    BodyTooLarge,
    ClientTimeout,
}

/// A failed exchange.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProxyError {
    pub kind: ErrorKind,
    pub side: Side,
    pub retry: Retry,
}

impl ProxyError {
    pub const fn new(kind: ErrorKind, side: Side, retry: Retry) -> Self {
        Self { kind, side, retry }
    }

    /// The status answered for it (when no response byte was sent yet).
    pub fn status(&self) -> u16 {
        match self.kind {
            ErrorKind::ConnectTimeout
            | ErrorKind::ResponseTimeout
            | ErrorKind::UpstreamIoTimeout => 504,
            ErrorKind::ConnectRefused
            | ErrorKind::UpstreamTls
            | ErrorKind::UpstreamClosed
            | ErrorKind::BadResponse => 502,
            ErrorKind::ClientTimeout => 408,
            ErrorKind::ClientIo => 400,
            ErrorKind::BodyTooLarge => 413,
        }
    }

    /// The body text of the error response.
    pub fn message(&self) -> &'static str {
        match self.kind {
            ErrorKind::ConnectRefused => "bad gateway: could not connect to any upstream endpoint",
            ErrorKind::ConnectTimeout => "gateway timeout: connecting to the upstream timed out",
            ErrorKind::UpstreamTls => "bad gateway: the TLS handshake with the upstream failed",
            ErrorKind::UpstreamClosed => {
                "bad gateway: the upstream closed the connection before responding"
            }
            ErrorKind::ResponseTimeout => {
                "gateway timeout: the upstream did not send a response head in time"
            }
            ErrorKind::UpstreamIoTimeout => "gateway timeout: the upstream stalled",
            ErrorKind::BadResponse => "bad gateway: the upstream sent a malformed response",
            ErrorKind::ClientIo => "bad request: the request body could not be read",
            ErrorKind::BodyTooLarge => "content too large: the request body is over the limit",
            ErrorKind::ClientTimeout => "request timeout",
        }
    }
}
