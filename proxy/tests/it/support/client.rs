//! A tiny blocking HTTP/1.1 client over a `std::net::TcpStream` (or a Unix socket), with
//! control over the raw bytes: the caller writes request bytes as they are, and reads
//! responses framed by `Content-Length`, chunked encoding or the close, exactly as they
//! arrive.
//!
//! Runs on: the test thread (and upload and load threads). Every read and write has a
//! socket timeout ([`IO_TIMEOUT`]), so a hang fails the test instead of blocking it.
//!
//! Each step has a `try_` form returning an `io::Result` (for the load generator, which
//! records failures instead of failing the test) and a form that fails the test.

use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::Duration;

use serde_json::Value;

/// Timeout of every socket read and write (and connect).
pub(crate) const IO_TIMEOUT: Duration = Duration::from_secs(10);

/// How a response body was framed on the wire.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Framing {
    /// No body by the rules (HEAD, 1xx, 204, 304).
    None,
    /// `Content-Length`.
    Length(u64),
    /// `Transfer-Encoding: chunked`, with the size of each data chunk.
    Chunked(Vec<usize>),
    /// Read until the server closed.
    Close,
}

/// One response as read off the wire.
#[derive(Debug, Clone)]
pub(crate) struct Response {
    /// HTTP/1.`minor` of the status line.
    pub(crate) minor: u8,
    pub(crate) status: u16,
    pub(crate) reason: String,
    /// Header fields in order, names as sent.
    pub(crate) headers: Vec<(String, String)>,
    pub(crate) body: Vec<u8>,
    pub(crate) framing: Framing,
    /// Status codes of interim (1xx) responses read before this one.
    pub(crate) interim: Vec<u16>,
}

impl Response {
    /// The first value of header `name` (any case).
    pub(crate) fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// Every value of header `name` (any case).
    pub(crate) fn header_all(&self, name: &str) -> Vec<&str> {
        self.headers
            .iter()
            .filter(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
            .collect()
    }

    /// The body as text (UTF-8, lossy).
    pub(crate) fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// The body parsed as JSON (the echo backend's `/anything` answer).
    pub(crate) fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| {
            panic!(
                "response {} is not JSON ({e}): {:?}",
                self.status,
                self.text()
            )
        })
    }

    /// The `backend` field of an echo answer: which backend served the request.
    pub(crate) fn backend(&self) -> String {
        match &self.json()["backend"] {
            Value::String(s) => s.clone(),
            other => panic!("no backend in the answer: {other}"),
        }
    }

    /// Whether the header `Connection` lists `token`.
    pub(crate) fn connection_has(&self, token: &str) -> bool {
        self.header_all("connection")
            .iter()
            .flat_map(|v| v.split(','))
            .any(|t| t.trim().eq_ignore_ascii_case(token))
    }
}

/// A client connection: TCP, or a Unix socket ([`Client::connect_unix`]).
pub(crate) struct Client<S = TcpStream> {
    reader: BufReader<S>,
}

impl Client<UnixStream> {
    /// Connects to the Unix socket at `path`; timeouts on every read and write.
    pub(crate) fn connect_unix(path: &Path) -> Client<UnixStream> {
        let stream = UnixStream::connect(path)
            .unwrap_or_else(|e| panic!("connect to {}: {e}", path.display()));
        stream.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
        stream.set_write_timeout(Some(IO_TIMEOUT)).unwrap();
        Client {
            reader: BufReader::with_capacity(64 * 1024, stream),
        }
    }
}

impl Client {
    /// Connects to `addr`; timeouts on every read and write.
    pub(crate) fn connect(addr: SocketAddr) -> Client {
        Client::try_connect(addr).unwrap_or_else(|e| panic!("connect to {addr}: {e}"))
    }

    pub(crate) fn try_connect(addr: SocketAddr) -> io::Result<Client> {
        let stream = TcpStream::connect_timeout(&addr, IO_TIMEOUT)?;
        stream.set_read_timeout(Some(IO_TIMEOUT))?;
        stream.set_write_timeout(Some(IO_TIMEOUT))?;
        stream.set_nodelay(true)?;
        Ok(Client {
            reader: BufReader::with_capacity(64 * 1024, stream),
        })
    }

    /// The local (client) address: tells two connections apart.
    pub(crate) fn local_addr(&self) -> SocketAddr {
        self.reader.get_ref().local_addr().unwrap()
    }
}

/// A socket a [`Client`] talks over.
pub(crate) trait Stream: Read + Write + Send + Sized + 'static {
    /// A second handle on the same socket.
    fn try_clone(&self) -> io::Result<Self>;
}

impl Stream for TcpStream {
    fn try_clone(&self) -> io::Result<Self> {
        TcpStream::try_clone(self)
    }
}

impl Stream for UnixStream {
    fn try_clone(&self) -> io::Result<Self> {
        UnixStream::try_clone(self)
    }
}

impl<S: Stream> Client<S> {
    /// A second handle on the socket, for writing from another thread while this one
    /// reads (a large upload to an endpoint that answers while the body arrives).
    pub(crate) fn writer(&self) -> S {
        self.reader.get_ref().try_clone().unwrap()
    }

    /// Writes raw bytes.
    pub(crate) fn send(&mut self, bytes: &[u8]) {
        self.try_send(bytes)
            .unwrap_or_else(|e| panic!("write to the proxy: {e}"));
    }

    pub(crate) fn try_send(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.reader.get_mut().write_all(bytes)
    }

    /// Sends a raw request and reads its final response (the body is skipped when the
    /// request is a HEAD).
    pub(crate) fn request(&mut self, raw: &str) -> Response {
        self.send(raw.as_bytes());
        self.response(raw.starts_with("HEAD "))
    }

    /// Reads the next final response, collecting interim 1xx ones in `interim`.
    pub(crate) fn response(&mut self, head_request: bool) -> Response {
        self.try_response(head_request)
            .unwrap_or_else(|e| panic!("read a response: {e}"))
    }

    pub(crate) fn try_response(&mut self, head_request: bool) -> io::Result<Response> {
        let mut interim = Vec::new();
        loop {
            let mut resp = self.try_read_head()?;
            if (100..200).contains(&resp.status) && resp.status != 101 {
                interim.push(resp.status);
                continue;
            }
            let mut body = Vec::new();
            self.try_read_body(&mut resp, head_request, |piece| {
                body.extend_from_slice(piece)
            })?;
            resp.body = body;
            resp.interim = interim;
            return Ok(resp);
        }
    }

    /// Reads a response head (status line and header fields); the body is left unread.
    pub(crate) fn read_head(&mut self) -> Response {
        self.try_read_head()
            .unwrap_or_else(|e| panic!("read a response head: {e}"))
    }

    pub(crate) fn try_read_head(&mut self) -> io::Result<Response> {
        let status_line = self.line()?;
        let bad_status = || malformed(format!("bad status line {status_line:?}"));
        let mut parts = status_line.splitn(3, ' ');
        let version = parts.next().unwrap_or_default();
        let minor = match version {
            "HTTP/1.1" => 1,
            "HTTP/1.0" => 0,
            _ => return Err(bad_status()),
        };
        let status = parts
            .next()
            .and_then(|s| s.parse().ok())
            .ok_or_else(bad_status)?;
        let reason = parts.next().unwrap_or_default().to_owned();
        let mut headers = Vec::new();
        loop {
            let line = self.line()?;
            if line.is_empty() {
                break;
            }
            let (name, value) = line
                .split_once(':')
                .ok_or_else(|| malformed(format!("bad header line {line:?}")))?;
            headers.push((name.to_owned(), value.trim().to_owned()));
        }
        Ok(Response {
            minor,
            status,
            reason,
            headers,
            body: Vec::new(),
            framing: Framing::None,
            interim: Vec::new(),
        })
    }

    /// Reads the body of `resp` (whose head was just read), handing it to `sink` piece by
    /// piece without holding it, and records its framing in `resp.framing`.
    pub(crate) fn read_body(
        &mut self,
        resp: &mut Response,
        head_request: bool,
        sink: impl FnMut(&[u8]),
    ) {
        self.try_read_body(resp, head_request, sink)
            .unwrap_or_else(|e| panic!("read a response body: {e}"));
    }

    pub(crate) fn try_read_body(
        &mut self,
        resp: &mut Response,
        head_request: bool,
        mut sink: impl FnMut(&[u8]),
    ) -> io::Result<()> {
        let chunked = resp
            .header_all("transfer-encoding")
            .iter()
            .flat_map(|v| v.split(','))
            .map(str::trim)
            .rfind(|c| !c.is_empty())
            .is_some_and(|c| c.eq_ignore_ascii_case("chunked"));
        resp.framing = if head_request || resp.status < 200 || [204, 304].contains(&resp.status) {
            Framing::None
        } else if chunked {
            let mut sizes = Vec::new();
            loop {
                let line = self.line()?;
                let size = line.split(';').next().unwrap_or_default().trim();
                let size = usize::from_str_radix(size, 16)
                    .map_err(|_| malformed(format!("bad chunk-size line {line:?}")))?;
                if size == 0 {
                    while !self.line()?.is_empty() {} // trailers
                    break;
                }
                self.read_exact_into(size as u64, &mut sink)?;
                if !self.line()?.is_empty() {
                    return Err(malformed("a chunk must end with CRLF".into()));
                }
                sizes.push(size);
            }
            Framing::Chunked(sizes)
        } else if let Some(len) = resp.header("content-length") {
            let len: u64 = len
                .parse()
                .map_err(|_| malformed(format!("bad Content-Length {len:?}")))?;
            self.read_exact_into(len, &mut sink)?;
            Framing::Length(len)
        } else {
            loop {
                let buf = self.reader.fill_buf()?;
                if buf.is_empty() {
                    break;
                }
                let n = buf.len();
                sink(buf);
                self.reader.consume(n);
            }
            Framing::Close
        };
        Ok(())
    }

    fn read_exact_into(&mut self, mut n: u64, sink: &mut impl FnMut(&[u8])) -> io::Result<()> {
        while n > 0 {
            let buf = self.reader.fill_buf()?;
            if buf.is_empty() {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    format!("connection closed with {n} body bytes to go"),
                ));
            }
            let take = buf.len().min(usize::try_from(n).unwrap_or(usize::MAX));
            sink(&buf[..take]);
            self.reader.consume(take);
            n -= take as u64;
        }
        Ok(())
    }

    /// Reads one CRLF-terminated line, without the CRLF.
    fn line(&mut self) -> io::Result<String> {
        let mut line = Vec::new();
        if self.reader.read_until(b'\n', &mut line)? == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "connection closed while a line was expected",
            ));
        }
        if !line.ends_with(b"\r\n") {
            return Err(malformed(format!("line without CRLF: {line:?}")));
        }
        line.truncate(line.len() - 2);
        String::from_utf8(line).map_err(|_| malformed("a head line is not UTF-8".into()))
    }

    /// True when the server closes (or resets) the connection without sending another
    /// byte; false when bytes arrive. Waits up to [`IO_TIMEOUT`]; a timeout fails.
    pub(crate) fn closed(&mut self) -> bool {
        if !self.reader.buffer().is_empty() {
            return false;
        }
        let mut byte = [0u8; 1];
        match self.reader.get_mut().read(&mut byte) {
            Ok(0) => true,
            Ok(_) => false,
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => true,
            Err(e) => panic!("waiting for the close: {e}"),
        }
    }

    /// Reads exactly `n` raw bytes (after a head: tunnelled bytes, say).
    pub(crate) fn read_exact(&mut self, n: usize) -> Vec<u8> {
        let mut bytes = vec![0u8; n];
        self.reader
            .read_exact(&mut bytes)
            .unwrap_or_else(|e| panic!("read {n} bytes: {e}"));
        bytes
    }

    /// Reads everything up to the server's close (or a reset), buffered bytes included.
    pub(crate) fn read_to_close(&mut self) -> Vec<u8> {
        let mut rest = Vec::new();
        match self.reader.read_to_end(&mut rest) {
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => {}
            Err(e) => panic!("waiting for the close: {e}"),
        }
        rest
    }
}

/// A response that breaks HTTP/1.1 framing.
fn malformed(what: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, what)
}

/// A GET request for `path` on `host`, HTTP/1.1.
pub(crate) fn get(host: &str, path: &str) -> String {
    format!("GET {path} HTTP/1.1\r\nHost: {host}\r\n\r\n")
}
