//! HTTP/2 from clients: over TLS when ALPN chose `h2`, and in plain text when a
//! connection starts with the HTTP/2 preface (h2c with prior knowledge, as gRPC inside a
//! cluster speaks it). The `h2` crate does the protocol, its limits and its flood
//! defences; strait runs it over its own transports (`io.rs`) on the worker.
//!
//! - this file: the connection ([`serve`]): the handshake with the listener's limits
//!   (`http.http2`), a task per stream, GOAWAY on a graceful stop (open streams finish),
//!   idle connections closed after `http.keepalive_timeout`;
//! - `stream.rs`: one stream, routed like an HTTP/1.1 request: to an `http1` upstream it
//!   becomes an HTTP/1.1 exchange run by the same engine as HTTP/1.1 clients (`pipe.rs`),
//!   to an `h2`/`h2c` upstream it is relayed frame by frame (`upstream.rs`), trailers and
//!   all;
//! - `io.rs`: the owned-buffer transport seen through the poll-based IO traits h2 needs.
//!
//! Runs on: a worker, one task per client connection and one per stream. Worker-local
//! state only.

use std::cell::Cell;
use std::rc::Rc;

use bytes::Bytes;

use crate::config::Http2Config;
use crate::real_ip::Cidr;
use crate::tls::TlsFacts;
use crate::transport::{ClientAddr, Transport};
use crate::worker::Open;

pub mod io;
mod pipe;
pub(crate) mod reply;
mod stream;
pub mod upstream;

/// The client connection preface's first line (RFC 9113 §3.4), as a plain-text listener
/// sees it where a request line would be.
pub const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// What every stream of a connection shares.
#[derive(Clone)]
pub(crate) struct Conn {
    pub(crate) peer: ClientAddr,
    /// The listener's `trusted_proxies`.
    pub(crate) trusted: Rc<[Cidr]>,
    pub(crate) tls: Option<TlsFacts>,
    /// Streams of this connection in progress.
    pub(crate) active: Rc<Cell<usize>>,
}

/// What woke a connection's task.
enum Event<T> {
    Accepted(T),
    Flood,
}

/// The server side's settings from `http.http2`.
fn builder(c: &Http2Config) -> h2::server::Builder {
    let mut b = h2::server::Builder::new();
    b.max_concurrent_streams(c.max_concurrent_streams)
        .initial_window_size(c.initial_stream_window)
        .initial_connection_window_size(c.initial_connection_window)
        .max_header_list_size(c.max_header_list_size)
        .max_frame_size(16 * 1024)
        .max_send_buffer_size(c.max_send_buffer)
        .max_pending_accept_reset_streams(c.max_pending_resets)
        .max_local_error_reset_streams(Some(c.max_local_resets))
        .max_concurrent_reset_streams(c.max_pending_resets);
    b
}

/// Serves one HTTP/2 client connection until it closes, errs, idles out, or the worker
/// stops. `read_already`: bytes read before it was known to be HTTP/2 (the preface).
pub async fn serve<S: Transport>(
    stream: S,
    read_already: Vec<u8>,
    peer: ClientAddr,
    open: Open,
    tls: Option<TlsFacts>,
) {
    let w = open.worker().clone();
    let cfg = &w.http.http2;
    let watch = io::FrameWatch::new(cfg.max_control_frames);
    let flood = watch.tripped.clone();
    let io = io::PollIo::new(stream, read_already).watched(watch);
    let handshake = builder(cfg).handshake::<_, Bytes>(io);
    let handshake = monoio::time::timeout(w.http.client_header_timeout, handshake);
    let mut conn = monoio::select! {
        biased;
        r = handshake => match r {
            Ok(Ok(c)) => c,
            Ok(Err(e)) => {
                tracing::debug!(worker = w.id, %peer, "HTTP/2 handshake failed: {e}");
                return;
            }
            Err(_) => return,
        },
        () = w.stop.wait() => return,
    };
    w.metrics.h2_connections.inc();
    let shared = Conn {
        peer,
        trusted: open.trusted().clone(),
        tls,
        active: Rc::new(Cell::new(0)),
    };
    let mut going_away = false;
    let mut abusive = false;
    loop {
        // Idle (no stream in progress) for the keep-alive timeout: GOAWAY.
        let accepted = {
            let idle = w.http.keepalive_timeout;
            let accept = std::pin::pin!(monoio::time::timeout(idle, conn.accept()));
            let drain = std::pin::pin!(async {
                if going_away {
                    std::future::pending::<()>().await;
                }
                w.draining.wait().await;
            });
            monoio::select! {
                biased;
                () = flood.wait(), if !abusive => Some(Event::Flood),
                r = accept => Some(Event::Accepted(r)),
                () = drain => None,
                () = w.stop.wait() => break,
            }
        };
        let accepted = match accepted {
            Some(Event::Flood) => {
                abusive = true;
                tracing::warn!(worker = w.id, %peer, "HTTP/2 control frame flood: closing the connection (GOAWAY)");
                w.metrics.h2_floods.inc();
                conn.abrupt_shutdown(h2::Reason::ENHANCE_YOUR_CALM);
                continue;
            }
            Some(Event::Accepted(r)) => Some(r),
            None => None,
        };
        match accepted {
            // A graceful stop: GOAWAY now, open streams finish, then the connection ends.
            None => {
                going_away = true;
                conn.graceful_shutdown();
            }
            Some(Err(_)) => {
                if shared.active.get() == 0 {
                    going_away = true;
                    conn.graceful_shutdown();
                }
            }
            Some(Ok(None)) => break,
            Some(Ok(Some(Err(e)))) => {
                tracing::debug!(worker = w.id, %peer, "HTTP/2 connection error: {e}");
                break;
            }
            Some(Ok(Some(Ok((req, respond))))) => {
                w.metrics.h2_streams.inc();
                shared.active.set(shared.active.get() + 1);
                monoio::spawn(stream::serve(req, respond, w.clone(), shared.clone()));
            }
        }
    }
    w.metrics.h2_connections.dec();
    drop(open);
}
