//! Request and response heads, in four steps with a file each:
//!
//! - [`reader`](mod@reader): finding the end of a request head as it arrives, with the
//!   limits checked on the partial head (the workers, the admin server and the echo
//!   backend all read heads with it);
//! - [`parse`](mod@parse): strict parsing (httparse over the connection's buffer, in place);
//! - [`framing`](mod@framing): what the framing headers say (body length, keep-alive,
//!   `Expect`, `Upgrade`), the request target and `Host`, CONNECT authorities, path
//!   normalisation;
//! - [`encode`](mod@encode): the rewritten heads sent on (upstream request, client
//!   response, interim and 101 heads).
//!
//! Runs on: a worker, per request (and the admin and echo threads). No allocation except
//! growing the caller's output buffer; parsing returns `Ok(None)` while the head is
//! incomplete.

use std::mem::MaybeUninit;

use httparse::Header;

pub mod encode;
pub mod framing;
pub mod parse;
pub mod reader;

pub use encode::{
    finish_upstream_head, push_u64, write_client_head, write_client_head_with, write_interim_head,
    write_switching_head, write_upstream_head, write_upstream_head_for, ClientFraming, Edits,
    Forwarding, HostHeader,
};
pub use framing::{
    analyze_connect, analyze_request, analyze_response, normalize_path, upgrade, Framing,
    RequestInfo,
};
pub use parse::{check_request_line, parse_request, parse_response};
pub use reader::{HeadLimits, HeadReader};

/// Most header fields parsed in one head (the configured limit may be lower).
pub const MAX_HEADERS: usize = 128;

/// Uninitialised header storage for one parse.
pub type HeaderBuf<'b> = [MaybeUninit<Header<'b>>; MAX_HEADERS];

/// Fresh header storage.
pub fn header_buf<'b>() -> HeaderBuf<'b> {
    [const { MaybeUninit::uninit() }; MAX_HEADERS]
}

/// A parsed request head, borrowing the connection's buffer.
#[derive(Debug)]
pub struct Request<'h, 'b> {
    pub method: &'b str,
    pub target: &'b str,
    /// HTTP/1.`minor`.
    pub minor: u8,
    pub headers: &'h [Header<'b>],
    /// Length of the head in the buffer, including the blank line.
    pub len: usize,
}

/// A parsed response head, borrowing the upstream connection's buffer.
#[derive(Debug)]
pub struct Response<'h, 'b> {
    pub status: u16,
    pub reason: &'b str,
    pub minor: u8,
    pub headers: &'h [Header<'b>],
    pub len: usize,
}

#[cfg(test)]
mod tests;
