//! The PROXY protocol on a listener (`proxy_protocol: true`): before anything else, each
//! connection must start with a v1 or v2 header (from an AWS NLB, HAProxy `send-proxy`,
//! …), and the client it names becomes the connection's peer (for `X-Forwarded-For`,
//! `trusted_proxies`, rate limits, hashing and the access log). A `LOCAL`/`UNKNOWN`
//! header (the balancer's own health check) keeps the real peer.
//!
//! The header is peeked (`MSG_PEEK`), parsed, and exactly its length consumed, so the
//! bytes after it stay in the socket for whatever reads next (the TLS handshake, the
//! HTTP reader, the TCP copy): nothing is buffered on the side.
//!
//! Runs on: a worker, once per connection, before its protocol starts; within
//! `http.client_header_timeout`. A connection without a valid header is closed.

use std::io;
use std::time::{Duration, Instant};

use strait_http::proxy_protocol::{self, Parsed, Proxied, MAX_LEN};

use super::listen::Peek;
use crate::sys::recv_now;
use crate::transport::ClientAddr;

/// How long to wait before looking again at a header that arrived in pieces (readiness
/// stays set while the first piece sits unread, so waiting on it would spin).
const PIECE_WAIT: Duration = Duration::from_millis(2);

/// Reads the PROXY header at the start of `stream` and returns the client it names (or
/// `peer` for a `LOCAL` header). `Err`: no valid header within `timeout`.
pub(super) async fn read_header<S: Peek>(
    stream: &S,
    peer: ClientAddr,
    timeout: Duration,
) -> Result<ClientAddr, String> {
    let until = Instant::now() + timeout;
    let mut buf = [0u8; MAX_LEN];
    let mut seen = 0;
    loop {
        let left = until.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err("timed out".into());
        }
        if seen == 0 {
            monoio::time::timeout(left, stream.wait_readable())
                .await
                .map_err(|_| "timed out".to_string())?
                .map_err(|e| e.to_string())?;
        } else {
            monoio::time::sleep(PIECE_WAIT.min(left)).await;
        }
        let n = match recv_now(stream.as_raw_fd(), &mut buf, true) {
            Ok(0) => return Err("closed before the header".into()),
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
            Err(e) => return Err(e.to_string()),
        };
        match proxy_protocol::parse(&buf[..n]) {
            Err(e) => return Err(e.to_string()),
            Ok(Parsed::Partial) if n == MAX_LEN => return Err("header too long".into()),
            Ok(Parsed::Partial) => seen = n,
            Ok(Parsed::Done { header, len }) => {
                // The peeked bytes are in the socket: this takes exactly the header.
                let mut sink = [0u8; MAX_LEN];
                match recv_now(stream.as_raw_fd(), &mut sink[..len], false) {
                    Ok(taken) if taken == len => {}
                    _ => return Err("the header could not be consumed".into()),
                }
                return Ok(match header {
                    Proxied::Addrs { src, .. } => ClientAddr::Inet(src),
                    Proxied::Local => peer,
                });
            }
        }
    }
}
