//! The HTTP/1.1 codec: heads ([`head`]), chunked framing ([`chunked`]) and the proxy's
//! own small responses ([`reply`]).
//!
//! Runs on: workers. Pure functions over byte slices; no IO, no allocation beyond the
//! caller's reusable output buffers. Malformed input becomes a [`HeadError`] carrying the
//! status to answer with, never a panic.

pub mod chunked;
pub mod head;
pub mod proxy_protocol;
pub mod reply;

/// How a message body is delimited.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyKind {
    None,
    Length(u64),
    Chunked,
    /// Until the sender closes (responses only).
    Close,
}

impl BodyKind {
    /// True when there is no body byte to read (`None`, or `Content-Length: 0`).
    pub fn is_empty(self) -> bool {
        matches!(self, BodyKind::None | BodyKind::Length(0))
    }
}

/// A head that cannot be accepted, with the status to answer (400, 431, 502, 505…).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HeadError {
    pub status: u16,
    pub reason: &'static str,
}

impl HeadError {
    pub const fn new(status: u16, reason: &'static str) -> Self {
        Self { status, reason }
    }
}

/// True for methods a proxy may replay (RFC 9110 §9.2.2).
pub fn is_idempotent(method: &str) -> bool {
    matches!(
        method,
        "GET" | "HEAD" | "OPTIONS" | "PUT" | "DELETE" | "TRACE"
    )
}
