//! One exchange's context ([`Exchange`]: the client connection, the worker, the view the
//! request was routed with, what the request is, when it started) and the steps every
//! exchange finishes with, whichever path it took: the proxy's own reply, the route's
//! metrics, the access-log line. The request path's files call down into these; nothing
//! here calls back up.
//!
//! Runs on: a worker, inside a client connection's task.

use std::time::Instant;

use strait_discovery::EndpointAddr;

use super::prepare::{Prepared, RouteAnswer};
use super::{Client, Next};
use crate::http::reply::{write_answer, write_reply, Answer, Reply};
use crate::http::HeadError;
use crate::metrics::RouteStats;
use crate::transport::deadline::{write_all, Timer};
use crate::transport::Transport;
use crate::upstream::View;
use crate::worker::Worker;

/// A request from its prepared head to the end of its response.
pub(super) struct Exchange<'x, 'v, S> {
    pub(super) c: &'x mut Client<S>,
    pub(super) w: &'x Worker,
    /// The view the request was routed with (kept for the whole exchange, so its
    /// indices stay valid whatever a new snapshot does meanwhile).
    pub(super) view: &'v View,
    pub(super) req: Prepared<'v>,
    pub(super) started: Instant,
}

impl<S: Transport> Exchange<'_, '_, S> {
    /// Answers with the proxy's own `status` (with `allow` for a 405). `consumed`: how
    /// many bytes of the client buffer the request occupied, when it was read whole (then
    /// the connection can be kept).
    pub(super) async fn answer(
        &mut self,
        status: u16,
        reason: &str,
        allow: Option<&str>,
        consumed: Option<usize>,
    ) -> Next {
        let p = &self.req;
        let close = p.client_close || consumed.is_none() || self.w.draining.is_fired();
        let reply = Reply {
            status,
            body: reason,
            allow,
            close,
            head_only: p.head_only,
            http10: p.minor == 0,
        };
        let written = send_reply(self.c, self.w, p.stats, &reply, self.started).await;
        if let Some(n) = consumed {
            self.c.buf.drain(..n.min(self.c.buf.len()));
        }
        if !written || close {
            Next::Close
        } else {
            Next::KeepAlive
        }
    }

    /// Answers with the route's own response (a redirect, a direct response, a 429): its
    /// field, the request id, the route's response headers set and added.
    pub(super) async fn answer_route(
        &mut self,
        a: &RouteAnswer<'_>,
        consumed: Option<usize>,
    ) -> Next {
        let p = &self.req;
        let close = p.client_close || consumed.is_none() || self.w.draining.is_fired();
        let c = &mut *self.c;
        let mut fields: Vec<(&str, &[u8])> = Vec::with_capacity(4);
        if let Some((name, value)) = &a.field {
            fields.push((name, value.as_bytes()));
        }
        let rid = &self.w.http.request_id;
        if rid.enabled && !c.request_id.is_empty() {
            fields.push((&rid.header, &c.request_id));
        }
        if let Some(edits) = p.response_edits {
            for (name, value) in edits.set.iter().chain(&edits.add) {
                fields.push((name, value.as_bytes()));
            }
        }
        let answer = Answer {
            status: a.status,
            content_type: a.content_type,
            body: a.body.as_bytes(),
            fields: &fields,
            close,
            head_only: p.head_only,
            http10: p.minor == 0,
        };
        c.out.clear();
        write_answer(&mut c.out, &answer);
        let sent = c.out.len() as u64;
        let written = write_client(&mut c.stream, &mut c.out, &mut c.timer, self.w).await;
        let body = if p.head_only { 0 } else { a.body.len() as u64 };
        log(c, self.w, p.stats, a.status, (sent, body), self.started);
        if let Some(n) = consumed {
            c.buf.drain(..n.min(c.buf.len()));
        }
        if !written || close {
            Next::Close
        } else {
            Next::KeepAlive
        }
    }

    /// Answers a request that turned out malformed or timed out while its body was read,
    /// and closes.
    pub(super) async fn refuse(&mut self, e: HeadError) -> Next {
        reply_error(self.c, self.w, e, self.started).await
    }

    /// Writes the client's response-head buffer (`cout`) out; false when the write failed.
    pub(super) async fn write_client_cout(&mut self) -> bool {
        let c = &mut *self.c;
        write_client(&mut c.stream, &mut c.cout, &mut c.timer, self.w).await
    }

    /// Writes all of `buf` (one of the client's reused buffers, which it keeps) to the
    /// client; false when the write failed.
    pub(super) async fn write_client(&mut self, buf: &mut Vec<u8>) -> bool {
        write_client(&mut self.c.stream, buf, &mut self.c.timer, self.w).await
    }
}

impl<S> Exchange<'_, '_, S> {
    /// Counts the finished request in its route's metrics and writes its access-log line.
    /// `bytes_sent`: heads and body written to the client; `body_bytes`: the body's.
    pub(super) fn log(&mut self, status: u16, bytes_sent: u64, body_bytes: u64) {
        log(
            self.c,
            self.w,
            self.req.stats,
            status,
            (bytes_sent, body_bytes),
            self.started,
        );
    }

    /// Adds an attempt on `addr` that ended with `status` to the access-log line.
    pub(super) fn note_attempt(&mut self, addr: EndpointAddr, status: &dyn std::fmt::Display) {
        if self.w.access.is_some() {
            push_list(&mut self.c.record.upstream_addr, &addr);
            push_list(&mut self.c.record.upstream_status, status);
        }
    }
}

/// Answers a malformed or timed-out request and closes.
pub(super) async fn reply_error<S: Transport>(
    c: &mut Client<S>,
    w: &Worker,
    e: HeadError,
    started: Instant,
) -> Next {
    if w.access.is_some() {
        c.record.clear();
        c.record.client = Some(c.peer);
    }
    let reply = Reply {
        status: e.status,
        body: e.reason,
        allow: None,
        close: true,
        head_only: false,
        http10: false,
    };
    send_reply(c, w, &w.metrics.unrouted, &reply, started).await;
    Next::Close
}

/// Writes one of the proxy's own responses and logs it; false when the write failed.
async fn send_reply<S: Transport>(
    c: &mut Client<S>,
    w: &Worker,
    stats: &RouteStats,
    reply: &Reply<'_>,
    started: Instant,
) -> bool {
    c.out.clear();
    write_reply(&mut c.out, reply);
    let sent = c.out.len() as u64;
    let written = write_client(&mut c.stream, &mut c.out, &mut c.timer, w).await;
    let body = if reply.head_only {
        0
    } else {
        reply.body.len() as u64 + 1
    };
    log(c, w, stats, reply.status, (sent, body), started);
    written
}

/// Writes all of `buf` to the client, within `http.client_body_timeout`; false when the
/// write failed. `buf` comes back (cleared or not) for reuse.
pub(super) async fn write_client<S: Transport>(
    stream: &mut S,
    buf: &mut Vec<u8>,
    timer: &mut Timer,
    w: &Worker,
) -> bool {
    let (res, back) = write_all(
        stream,
        std::mem::take(buf),
        w.http.client_body_timeout,
        timer,
    )
    .await;
    *buf = back;
    res.is_ok()
}

/// Appends `item` to a comma-separated access-log list.
fn push_list(list: &mut String, item: &dyn std::fmt::Display) {
    use std::fmt::Write;
    if !list.is_empty() {
        list.push_str(", ");
    }
    let _ = write!(list, "{item}");
}

/// Counts a finished request in `stats` and writes its access log line.
fn log<S>(
    c: &mut Client<S>,
    w: &Worker,
    stats: &RouteStats,
    status: u16,
    (bytes_sent, body_bytes): (u64, u64),
    started: Instant,
) {
    let took = started.elapsed();
    stats.record(status, took);
    if let Some(access) = &w.access {
        c.record.status = status;
        c.record.bytes_sent = bytes_sent;
        c.record.body_bytes_sent = body_bytes;
        c.record.request_time = took.as_secs_f64();
        access.write(&c.record);
        c.record.clear();
    }
}
