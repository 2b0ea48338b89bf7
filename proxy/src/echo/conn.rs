//! A connection's reading side: the bytes read and not yet consumed, request heads read
//! with strait-http's head reader and parser (the workers' own), and request bodies framed
//! by `Content-Length` or chunked (strait-http's chunked decoder, de-chunking).
//!
//! Runs on: an echo connection thread. A head over 64 KiB or 100 fields gets 431, a
//! malformed one 400; the buffer never grows past 64 KiB.

use std::io;

use crate::http::chunked::ChunkedDecoder;
use crate::http::head::{self, HeadLimits, HeadReader};

use super::server::Stream;

/// Read buffer per connection; also the largest request head accepted.
pub(super) const READ_BUF: usize = 64 * 1024;
/// Most request headers accepted (more → 431).
const MAX_HEADERS: usize = 100;
/// Bodies up to this size are put in the `/anything` JSON; larger ones are only counted.
const CAPTURE_LIMIT: usize = 64 * 1024;
/// What a request head is held to.
const LIMITS: HeadLimits = HeadLimits {
    max_line: READ_BUF,
    max_head: READ_BUF,
    max_headers: MAX_HEADERS,
};

/// Why a connection stops being served.
pub(super) enum ConnError {
    /// Socket error or EOF mid-request: close without a reply.
    Io(io::Error),
    /// Bad input before the response started: reply with this status and reason, then close.
    Reject(u16, &'static str),
}

impl From<io::Error> for ConnError {
    fn from(e: io::Error) -> Self {
        ConnError::Io(e)
    }
}

/// After the response head is out, a bad body can only end the connection.
pub(super) fn after_head(e: ConnError) -> ConnError {
    match e {
        ConnError::Reject(_, reason) => {
            ConnError::Io(io::Error::new(io::ErrorKind::InvalidData, reason))
        }
        io => io,
    }
}

fn unexpected_eof() -> ConnError {
    ConnError::Io(io::ErrorKind::UnexpectedEof.into())
}

/// One connection's socket and read buffer (`buf[start..end]` is read but not consumed).
pub(super) struct Conn<'a, S> {
    stream: &'a S,
    buf: Vec<u8>,
    start: usize,
    end: usize,
}

impl<'a, S: Stream> Conn<'a, S> {
    pub(super) fn new(stream: &'a S) -> Conn<'a, S> {
        Conn {
            stream,
            buf: vec![0; READ_BUF],
            start: 0,
            end: 0,
        }
    }

    pub(super) fn buffered(&self) -> &[u8] {
        &self.buf[self.start..self.end]
    }

    pub(super) fn consume(&mut self, n: usize) {
        self.start += n;
        if self.start == self.end {
            self.start = 0;
            self.end = 0;
        }
    }

    /// Reads more from the socket; `Ok(0)` at EOF.
    fn fill(&mut self) -> io::Result<usize> {
        if self.end == self.buf.len() {
            if self.start == 0 {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    "read buffer full",
                ));
            }
            self.buf.copy_within(self.start..self.end, 0);
            self.end -= self.start;
            self.start = 0;
        }
        loop {
            match self.stream.read_some(&mut self.buf[self.end..]) {
                Ok(n) => {
                    self.end += n;
                    return Ok(n);
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            }
        }
    }

    /// Buffers at least one byte; EOF is an error (we are inside a request).
    pub(super) fn fill_some(&mut self) -> Result<(), ConnError> {
        if self.start == self.end && self.fill()? == 0 {
            return Err(unexpected_eof());
        }
        Ok(())
    }

    /// Copies up to `limit` body bytes into `out`.
    pub(super) fn copy_body(&mut self, out: &mut [u8], limit: u64) -> Result<usize, ConnError> {
        self.fill_some()?;
        let avail = self.buffered();
        let n = avail
            .len()
            .min(out.len())
            .min(usize::try_from(limit).unwrap_or(usize::MAX));
        out[..n].copy_from_slice(&avail[..n]);
        self.consume(n);
        Ok(n)
    }

    pub(super) fn write_all(&mut self, data: &[u8]) -> io::Result<()> {
        self.stream.write_all_of(data)
    }

    /// Reads the next request head; `Ok(None)` when the client closed between requests.
    pub(super) fn read_head(&mut self) -> Result<Option<Request>, ConnError> {
        let mut reader = HeadReader::default();
        loop {
            if !self.buffered().is_empty() {
                let (start, end) = (self.start, self.end);
                match reader.poll(&mut self.buf[start..end], &LIMITS) {
                    Ok(true) => {
                        let mut hb = head::header_buf();
                        let parsed =
                            head::reader::parse_complete(self.buffered(), &mut hb, &LIMITS)
                                .map_err(|e| ConnError::Reject(e.status, e.reason))?;
                        let (req, len) = (Request::from_parsed(&parsed), parsed.len);
                        self.consume(len);
                        return Ok(Some(req));
                    }
                    Ok(false) => {}
                    Err(e) => return Err(ConnError::Reject(e.status, e.reason)),
                }
            }
            if self.fill()? == 0 {
                return if self.buffered().is_empty() {
                    Ok(None)
                } else {
                    Err(unexpected_eof())
                };
            }
        }
    }
}

// === request head ===

/// A request head, owned.
pub(super) struct Request {
    pub(super) method: String,
    /// The request-target as sent.
    pub(super) target: String,
    /// 0 for HTTP/1.0, 1 for HTTP/1.1.
    pub(super) minor: u8,
    /// Names as sent, values as bytes.
    pub(super) headers: Vec<(String, Vec<u8>)>,
}

/// How the request body is framed.
pub(super) enum BodyKind {
    Empty,
    Length(u64),
    Chunked,
}

impl Request {
    fn from_parsed(parsed: &head::Request<'_, '_>) -> Request {
        Request {
            method: parsed.method.to_owned(),
            target: parsed.target.to_owned(),
            minor: parsed.minor,
            headers: parsed
                .headers
                .iter()
                .map(|h| (h.name.to_owned(), h.value.to_vec()))
                .collect(),
        }
    }

    fn values<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a [u8]> + 'a {
        self.headers
            .iter()
            .filter(move |(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_slice())
    }

    /// Comma-separated tokens of every `name` header, trimmed and lowercased.
    fn tokens(&self, name: &str) -> Vec<String> {
        self.values(name)
            .flat_map(|v| v.split(|&b| b == b','))
            .map(|t| String::from_utf8_lossy(t).trim().to_ascii_lowercase())
            .filter(|t| !t.is_empty())
            .collect()
    }

    pub(super) fn wants_keep_alive(&self) -> bool {
        let connection = self.tokens("connection");
        if connection.iter().any(|t| t == "close") {
            false
        } else if self.minor == 0 {
            connection.iter().any(|t| t == "keep-alive")
        } else {
            true
        }
    }

    pub(super) fn expects_continue(&self) -> bool {
        self.minor >= 1 && self.tokens("expect").iter().any(|t| t == "100-continue")
    }

    /// The body framing, and whether it forces a close (Transfer-Encoding in HTTP/1.0).
    pub(super) fn body_kind(&self) -> Result<(BodyKind, bool), ConnError> {
        let codings = self.tokens("transfer-encoding");
        let has_te = self.values("transfer-encoding").next().is_some();
        let has_cl = self.values("content-length").next().is_some();
        if has_te && has_cl {
            return Err(ConnError::Reject(
                400,
                "both Transfer-Encoding and Content-Length",
            ));
        }
        if has_te {
            return match codings.last().map(String::as_str) {
                Some("chunked") if codings.len() == 1 => Ok((BodyKind::Chunked, self.minor == 0)),
                Some("chunked") => Err(ConnError::Reject(501, "unsupported transfer coding")),
                _ => Err(ConnError::Reject(
                    400,
                    "Transfer-Encoding must end in chunked",
                )),
            };
        }
        let mut length = None;
        for value in self.values("content-length") {
            for item in value.split(|&b| b == b',') {
                let item = std::str::from_utf8(item).unwrap_or("x").trim();
                let Some(n) = parse_decimal(item) else {
                    return Err(ConnError::Reject(400, "invalid Content-Length"));
                };
                if length.is_some_and(|l| l != n) {
                    return Err(ConnError::Reject(400, "conflicting Content-Length"));
                }
                length = Some(n);
            }
        }
        Ok(match length {
            None | Some(0) => (BodyKind::Empty, false),
            Some(n) => (BodyKind::Length(n), false),
        })
    }

    /// The Host header (more than one is a 400).
    pub(super) fn host(&self) -> Result<Option<String>, ConnError> {
        let mut hosts = self.values("host");
        let host = hosts
            .next()
            .map(|h| String::from_utf8_lossy(h).trim().to_owned());
        if hosts.next().is_some() {
            return Err(ConnError::Reject(400, "more than one Host header"));
        }
        Ok(host)
    }

    pub(super) fn path_and_query(&self) -> (&str, &str) {
        self.target.split_once('?').unwrap_or((&self.target, ""))
    }
}

/// ASCII digits only (no sign, no spaces), no overflow.
pub(super) fn parse_decimal(s: &str) -> Option<u64> {
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse().ok()
}

// === request body ===

/// Reads one request body, de-chunking, from the connection buffer and socket.
pub(super) enum BodyReader {
    Done,
    Length(u64),
    Chunked(ChunkedDecoder),
}

/// A body read to its end: its length, and its bytes if it fit [`CAPTURE_LIMIT`].
pub(super) struct Captured {
    pub(super) length: u64,
    pub(super) data: Option<Vec<u8>>,
}

impl BodyReader {
    pub(super) fn new(kind: BodyKind) -> BodyReader {
        match kind {
            BodyKind::Empty => BodyReader::Done,
            BodyKind::Length(n) => BodyReader::Length(n),
            BodyKind::Chunked => BodyReader::Chunked(ChunkedDecoder::new()),
        }
    }

    pub(super) fn is_done(&self) -> bool {
        matches!(self, BodyReader::Done)
    }

    /// Reads body bytes into `out` (non-empty); `Ok(0)` at the end of the body.
    pub(super) fn read<S: Stream>(
        &mut self,
        conn: &mut Conn<'_, S>,
        out: &mut [u8],
    ) -> Result<usize, ConnError> {
        debug_assert!(!out.is_empty());
        match self {
            BodyReader::Done | BodyReader::Length(0) => {
                *self = BodyReader::Done;
                Ok(0)
            }
            BodyReader::Length(left) => {
                let n = conn.copy_body(out, *left)?;
                *left -= n as u64;
                Ok(n)
            }
            BodyReader::Chunked(decoder) => loop {
                if decoder.is_done() {
                    *self = BodyReader::Done;
                    return Ok(0);
                }
                conn.fill_some()?;
                // Its data fits in `out`: it is no longer than the input fed.
                let avail = conn.buffered();
                let window = &avail[..avail.len().min(out.len())];
                let mut n = 0;
                let progress = decoder
                    .feed(window, |r| {
                        out[n..n + r.len()].copy_from_slice(&window[r.clone()]);
                        n += r.len();
                    })
                    .map_err(|e| ConnError::Reject(e.status(), e.0))?;
                conn.consume(progress.consumed);
                if n > 0 {
                    return Ok(n);
                }
            },
        }
    }

    /// Reads the rest of the body, keeping it only if `capture` and it fits the limit.
    pub(super) fn drain<S: Stream>(
        &mut self,
        conn: &mut Conn<'_, S>,
        capture: bool,
    ) -> Result<Captured, ConnError> {
        let mut piece = [0u8; 16 * 1024];
        let mut length = 0u64;
        let mut data = capture.then(Vec::new);
        loop {
            let n = self.read(conn, &mut piece)?;
            if n == 0 {
                return Ok(Captured { length, data });
            }
            length += n as u64;
            if let Some(kept) = &mut data {
                if kept.len() + n > CAPTURE_LIMIT {
                    data = None;
                } else {
                    kept.extend_from_slice(&piece[..n]);
                }
            }
        }
    }
}
