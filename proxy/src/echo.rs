//! The built-in httpbin-like echo backend, `strait echo`: `strait demo` runs three of them
//! (127.0.0.2:8080, 127.0.0.3:8080, 127.0.0.4:8080), and the integration tests and the
//! benches use it as a real upstream, on TCP or on a Unix socket (`unix:/path`).
//!
//! Runs on: plain std threads, never a worker core. Each [`EchoServer`] has one acceptor thread
//! and one thread per accepted connection. It must not be used on the data plane, must not
//! buffer a large body (memory per connection is bounded: a 64 KiB read buffer plus at most
//! 64 KiB of captured body), must not sleep-poll, and must not panic on network input. No
//! `unsafe`.
//!
//! Endpoints (any method; a HEAD request gets the headers a GET would get, without the body):
//!
//! - `/status/{code}`: that status (200..=599) with an empty body; 204 and 304 carry no
//!   `Content-Length`.
//! - `/bytes/{n}`: `n` bytes of [`pattern_bytes`] data with `Content-Length`, written 64 KiB
//!   at a time (any `n`, never allocated whole).
//! - `/stream-bytes/{n}`: the same data with `Transfer-Encoding: chunked`, chunks of 16 KiB
//!   (or `?chunk_size=N`, 1..=16384).
//! - `/close-delimited/{n}`: the same data with no length and no chunking,
//!   `Connection: close`, then a close.
//! - `/delay/{ms}`: reads the request, waits `ms` (at most 60 000), answers like `/anything`.
//! - `/echo`: 200 with the request body streamed back as it arrives (read a piece, write a
//!   piece), chunked. A client must read while it uploads, or both sides' buffers fill.
//! - anything else: 200 `application/json` like httpbin's `/anything`: `args` (a string, or a
//!   list for a repeated name), `data` (the body, UTF-8 lossy), `json` (the body parsed, or
//!   null), `headers` (names as sent; repeats joined with ", "), `method`, `origin` (client
//!   IP), `url` (`http://<Host><target>`), `backend` and `body_length`. A body over 64 KiB is
//!   read in pieces and only counted: `data` is then `""`.
//!
//! Every response carries `X-Backend: <bound addr>` (`unix:/path` on a Unix socket), `Date` and `Server: strait-demo`, plus
//! `Content-Length` except for chunked, close-delimited, 204 and 304 responses. An HTTP/1.0
//! client gets close-delimited bodies instead of chunked ones.
//!
//! Protocol: HTTP/1.1 and 1.0 keep-alive rules (`Connection: close` / `keep-alive`),
//! pipelining, `Expect: 100-continue`, request bodies framed by `Content-Length` or chunked
//! (extensions and trailers accepted and ignored). Malformed framing or heads get 400, a head
//! over 64 KiB or 100 headers gets 431, a transfer coding other than chunked gets 501; each
//! is followed by a close. A request without `Host` is served (`url` then uses the backend
//! address). After the last response the server half-closes and drains the client for up to
//! 2 s, so an unread pipelined request cannot turn the close into a reset.
//!
//! Counters: [`EchoServer::connections_accepted`] counts at accept, before the connection is
//! served; [`EchoServer::requests_served`] counts each response before it is written. A client
//! that has read a response therefore always sees it counted.
//!
//! Stop ([`EchoServer::stop`] or drop): set a flag, `shutdown(2)` the listening socket (which
//! wakes a blocked `accept` on Linux), connect to it once as a portable fallback, join the
//! acceptor (the listener is closed and the port free when stop returns), and shut down every
//! live connection so blocked connection threads see EOF and exit. A Unix socket's file is
//! removed.
//!
//! Files: `server.rs` (listening, the acceptor and connection threads, stop),
//! `conn.rs` (a connection's buffered reads: request heads with strait-http's head
//! reader, bodies with its chunked decoder), `handle.rs` (the endpoints and the
//! responses), `json.rs` (the `/anything` document), `pattern.rs` (the test data).

mod conn;
mod handle;
mod json;
mod pattern;
mod server;

pub use pattern::{pattern_bytes, pattern_matches, PATTERN_SEED};
pub use server::EchoServer;

#[cfg(test)]
mod tests;
