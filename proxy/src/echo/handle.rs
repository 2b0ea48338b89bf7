//! The endpoints (`/status`, `/bytes`, `/stream-bytes`, `/close-delimited`, `/delay`,
//! `/echo`, and `/anything` for the rest) and the responses they write.
//!
//! Runs on: an echo connection thread. Large bodies are generated and written 64 KiB at a
//! time, never held whole.

use std::sync::atomic::{AtomicBool, Ordering};
use std::thread;
use std::time::{Duration, Instant, SystemTime};

use serde_json::Value;

use super::conn::{after_head, parse_decimal, BodyReader, Conn, ConnError, Request, READ_BUF};
use super::json::{anything_json, parse_args};
use super::pattern::pattern_bytes;
use super::server::{Shared, Stream};
use crate::http::reply::reason_phrase;

/// Write size for generated data.
const WRITE_CHUNK: usize = 64 * 1024;
/// Default (and largest) chunk size for `/stream-bytes`.
const STREAM_CHUNK: usize = 16 * 1024;
/// Longest `/delay`.
const MAX_DELAY_MS: u64 = 60_000;
const CONTINUE: &[u8] = b"HTTP/1.1 100 Continue\r\n\r\n";

enum Route {
    Anything,
    Status(u16),
    Bytes(u64),
    StreamBytes(u64, usize),
    CloseDelimited(u64),
    Delay(u64),
    Echo,
    BadParam(&'static str),
}

impl Route {
    fn parse(path: &str, query: &str) -> Route {
        let number = |rest: &str, what| parse_decimal(rest).ok_or(what);
        let route = if path == "/echo" {
            Ok(Route::Echo)
        } else if let Some(rest) = path.strip_prefix("/status/") {
            match parse_decimal(rest) {
                Some(code @ 200..=599) => Ok(Route::Status(code as u16)),
                _ => Err("invalid status code"),
            }
        } else if let Some(rest) = path.strip_prefix("/bytes/") {
            number(rest, "invalid byte count").map(Route::Bytes)
        } else if let Some(rest) = path.strip_prefix("/stream-bytes/") {
            let chunk = match parse_args(query).get("chunk_size") {
                None => Ok(STREAM_CHUNK),
                Some(Value::String(s)) => match parse_decimal(s) {
                    Some(n @ 1..=16384) => Ok(n as usize),
                    _ => Err("chunk_size must be 1..=16384"),
                },
                Some(_) => Err("chunk_size must be given once"),
            };
            chunk.and_then(|c| number(rest, "invalid byte count").map(|n| Route::StreamBytes(n, c)))
        } else if let Some(rest) = path.strip_prefix("/close-delimited/") {
            number(rest, "invalid byte count").map(Route::CloseDelimited)
        } else if let Some(rest) = path.strip_prefix("/delay/") {
            number(rest, "invalid delay").map(|ms| Route::Delay(ms.min(MAX_DELAY_MS)))
        } else {
            Ok(Route::Anything)
        };
        route.unwrap_or_else(Route::BadParam)
    }
}

/// Serves one parsed request; `Ok(true)` keeps the connection for the next one.
pub(super) fn handle<S: Stream>(
    conn: &mut Conn<'_, S>,
    req: &Request,
    origin: &str,
    shared: &Shared,
) -> Result<bool, ConnError> {
    let (kind, framing_forces_close) = req.body_kind()?;
    let host = req.host()?;
    let mut body = BodyReader::new(kind);
    if req.expects_continue() && !body.is_done() {
        conn.write_all(CONTINUE)?;
    }
    let keep_alive =
        req.wants_keep_alive() && !framing_forces_close && !shared.stop.load(Ordering::SeqCst);
    let head_only = req.method == "HEAD";
    let (path, query) = req.path_and_query();
    let route = Route::parse(path, query);
    let reply = Reply::new(200, keep_alive, req.minor, &shared.backend);
    if let Route::Echo = route {
        shared.requests_served.fetch_add(1, Ordering::Relaxed);
        return echo(conn, &mut body, reply, head_only);
    }
    let captured = body.drain(conn, matches!(route, Route::Anything | Route::Delay(_)))?;
    if let Route::Delay(ms) = route {
        wait_until(Instant::now() + Duration::from_millis(ms), &shared.stop);
    }
    shared.requests_served.fetch_add(1, Ordering::Relaxed);
    match route {
        Route::Anything | Route::Delay(_) => {
            let json = anything_json(req, host.as_deref(), origin, &shared.backend, &captured);
            let mut text = serde_json::to_vec_pretty(&json)
                .map_err(|_| ConnError::Reject(500, "JSON encoding failed"))?;
            text.push(b'\n');
            reply.send_body(conn, Some("application/json"), &text, head_only)
        }
        Route::Status(code) => {
            let mut reply = Reply {
                status: code,
                ..reply
            };
            if code == 204 || code == 304 {
                reply.framing = Framing::NoBody;
            }
            reply.send_body(conn, None, b"", head_only)
        }
        Route::Bytes(n) => send_pattern(
            conn,
            Reply {
                framing: Framing::Length(n),
                ..reply
            },
            n,
            WRITE_CHUNK,
            head_only,
        ),
        Route::StreamBytes(n, chunk) => send_pattern(
            conn,
            Reply {
                framing: Framing::Chunked,
                ..reply
            },
            n,
            chunk,
            head_only,
        ),
        Route::CloseDelimited(n) => send_pattern(
            conn,
            Reply {
                framing: Framing::Close,
                ..reply
            },
            n,
            WRITE_CHUNK,
            head_only,
        ),
        Route::BadParam(reason) => {
            let reply = Reply {
                status: 400,
                ..reply
            };
            reply.send_body(
                conn,
                Some("text/plain"),
                format!("{reason}\n").as_bytes(),
                head_only,
            )
        }
        Route::Echo => Ok(false), // served above
    }
}

/// Waits without polling; returns early if the server stops.
fn wait_until(deadline: Instant, stop: &AtomicBool) {
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() || stop.load(Ordering::SeqCst) {
            return;
        }
        thread::park_timeout(left);
    }
}

#[derive(Clone, Copy, PartialEq)]
enum Framing {
    Length(u64),
    Chunked,
    /// No length: the body ends at the close.
    Close,
    /// 204/304: no body and no Content-Length.
    NoBody,
}

#[derive(Clone, Copy)]
pub(super) struct Reply<'a> {
    status: u16,
    framing: Framing,
    keep_alive: bool,
    /// The request's HTTP minor version (1.0 clients get no chunking).
    minor: u8,
    backend: &'a str,
}

impl<'a> Reply<'a> {
    pub(super) fn new(status: u16, keep_alive: bool, minor: u8, backend: &'a str) -> Reply<'a> {
        Reply {
            status,
            framing: Framing::Length(0),
            keep_alive,
            minor,
            backend,
        }
    }

    /// Encodes the head, first downgrading chunked to close-delimited for HTTP/1.0.
    fn encode(&mut self, content_type: Option<&str>) -> Vec<u8> {
        if self.framing == Framing::Chunked && self.minor == 0 {
            self.framing = Framing::Close;
        }
        if self.framing == Framing::Close {
            self.keep_alive = false;
        }
        let mut head = format!(
            "HTTP/1.1 {} {}\r\nDate: {}\r\nServer: strait-demo\r\nX-Backend: {}\r\n",
            self.status,
            reason_phrase(self.status),
            httpdate::fmt_http_date(SystemTime::now()),
            self.backend,
        );
        if let Some(content_type) = content_type {
            head.push_str(&format!("Content-Type: {content_type}\r\n"));
        }
        match self.framing {
            Framing::Length(n) => head.push_str(&format!("Content-Length: {n}\r\n")),
            Framing::Chunked => head.push_str("Transfer-Encoding: chunked\r\n"),
            Framing::Close | Framing::NoBody => {}
        }
        if !self.keep_alive {
            head.push_str("Connection: close\r\n");
        } else if self.minor == 0 {
            head.push_str("Connection: keep-alive\r\n");
        }
        head.push_str("\r\n");
        head.into_bytes()
    }
}

impl Reply<'_> {
    /// A small body: head and body in one write. Ok(keep-alive).
    pub(super) fn send_body<S: Stream>(
        mut self,
        conn: &mut Conn<'_, S>,
        content_type: Option<&str>,
        body: &[u8],
        head_only: bool,
    ) -> Result<bool, ConnError> {
        let reply = &mut self;
        if reply.framing != Framing::NoBody {
            reply.framing = Framing::Length(body.len() as u64);
        }
        let mut out = reply.encode(content_type);
        if !head_only && reply.framing != Framing::NoBody {
            out.extend_from_slice(body);
        }
        conn.write_all(&out)?;
        Ok(reply.keep_alive)
    }
}

/// `n` bytes of [`pattern_bytes`], framed as `reply.framing` says, in pieces of `chunk`.
fn send_pattern<S: Stream>(
    conn: &mut Conn<'_, S>,
    mut reply: Reply<'_>,
    n: u64,
    chunk: usize,
    head_only: bool,
) -> Result<bool, ConnError> {
    let mut out = reply.encode(Some("application/octet-stream"));
    let chunked = reply.framing == Framing::Chunked;
    let mut offset = 0u64;
    while !head_only && offset < n {
        let take = usize::try_from(n - offset).unwrap_or(usize::MAX).min(chunk);
        if chunked {
            out.extend_from_slice(format!("{take:x}\r\n").as_bytes());
        }
        let at = out.len();
        out.resize(at + take, 0);
        pattern_bytes(offset, &mut out[at..]);
        if chunked {
            out.extend_from_slice(b"\r\n");
        }
        offset += take as u64;
        if out.len() >= WRITE_CHUNK {
            conn.write_all(&out)?;
            out.clear();
        }
    }
    if chunked && !head_only {
        out.extend_from_slice(b"0\r\n\r\n");
    }
    if !out.is_empty() {
        conn.write_all(&out)?;
    }
    Ok(reply.keep_alive)
}

/// `/echo`: the head first, then each piece of the request body as it arrives.
fn echo<S: Stream>(
    conn: &mut Conn<'_, S>,
    body: &mut BodyReader,
    mut reply: Reply<'_>,
    head_only: bool,
) -> Result<bool, ConnError> {
    reply.framing = Framing::Chunked;
    let head = reply.encode(Some("application/octet-stream"));
    conn.write_all(&head)?;
    let chunked = reply.framing == Framing::Chunked;
    let mut piece = vec![0u8; READ_BUF];
    let mut out = Vec::with_capacity(READ_BUF + 32);
    loop {
        let n = body.read(conn, &mut piece).map_err(after_head)?;
        if n == 0 {
            break;
        }
        if head_only {
            continue;
        }
        out.clear();
        if chunked {
            out.extend_from_slice(format!("{n:x}\r\n").as_bytes());
        }
        out.extend_from_slice(&piece[..n]);
        if chunked {
            out.extend_from_slice(b"\r\n");
        }
        conn.write_all(&out)?;
    }
    if chunked && !head_only {
        conn.write_all(b"0\r\n\r\n")?;
    }
    Ok(reply.keep_alive)
}
