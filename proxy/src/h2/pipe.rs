//! An HTTP/2 stream as the HTTP/1.1 engine's client connection: a [`Transport`] whose
//! reads give an HTTP/1.1 request (a head made from the stream's headers, then its DATA,
//! chunked when the length is unknown) and whose writes take the engine's HTTP/1.1
//! response (its head becomes the stream's HEADERS, its body, de-chunked, DATA frames
//! within the stream's flow-control window). So an HTTP/2 request to an `http1` upstream
//! is routed, limited, retried, pooled, counted and logged by the same code as an
//! HTTP/1.1 one.
//!
//! Runs on: a worker, inside a stream's task. The two sides share nothing: `into_split`
//! gives each its own half.

#![allow(unsafe_code)]

use std::cell::RefCell;
use std::future::poll_fn;
use std::io;
use std::rc::Rc;

use bytes::Bytes;
use h2::server::SendResponse;
use h2::{RecvStream, SendStream};
use monoio::buf::{IoBuf, IoBufMut, IoVecBuf, IoVecBufMut};
use monoio::io::{AsyncReadRent, AsyncWriteRent};
use monoio::BufResult;

use crate::http::chunked::ChunkedDecoder;
use crate::transport::{Idle, Transport};

/// Headers a response head may carry on HTTP/1.1 but not on HTTP/2 (RFC 9113 §8.2.2).
const HOP_BY_HOP: [&str; 5] = [
    "connection",
    "keep-alive",
    "proxy-connection",
    "transfer-encoding",
    "upgrade",
];

/// The request side: what the engine reads.
pub(super) struct RequestSide {
    /// The synthesized HTTP/1.1 head, then framed body bytes, handed out from `pos`.
    bytes: Vec<u8>,
    pos: usize,
    body: Option<RecvStream>,
    chunked: bool,
}

/// How the response body is framed on the HTTP/1.1 side.
enum Framing {
    /// Not known yet: the head has not been written whole.
    Head,
    Length(u64),
    Chunked(ChunkedDecoder),
    /// Until the engine shuts the write side down.
    Close,
    /// No body (HEAD, 204, 304), or the body ended.
    Done,
}

/// The response side: what the engine writes.
pub(super) struct ResponseSide {
    respond: Option<SendResponse<Bytes>>,
    send: Option<SendStream<Bytes>>,
    /// Response head bytes until the head is complete.
    head: Vec<u8>,
    framing: Framing,
    head_request: bool,
    /// The status sent, once sent.
    pub(super) status: Option<u16>,
}

/// Both sides, before a split.
pub(super) struct StreamPipe {
    req: Rc<RefCell<RequestSide>>,
    resp: Rc<RefCell<ResponseSide>>,
}

pub(super) struct PipeRead(Rc<RefCell<RequestSide>>);
pub(super) struct PipeWrite(Rc<RefCell<ResponseSide>>);

impl StreamPipe {
    /// A pipe whose reads start with `head` (an HTTP/1.1 request head) and go on with
    /// `body` (chunk-framed when `chunked`).
    pub(super) fn new(
        head: Vec<u8>,
        body: Option<RecvStream>,
        chunked: bool,
        respond: SendResponse<Bytes>,
        head_request: bool,
    ) -> (StreamPipe, Rc<RefCell<ResponseSide>>) {
        let resp = Rc::new(RefCell::new(ResponseSide {
            respond: Some(respond),
            send: None,
            head: Vec::new(),
            framing: Framing::Head,
            head_request,
            status: None,
        }));
        let pipe = StreamPipe {
            req: Rc::new(RefCell::new(RequestSide {
                bytes: head,
                pos: 0,
                body,
                chunked,
            })),
            resp: resp.clone(),
        };
        (pipe, resp)
    }
}

impl ResponseSide {
    /// Ends the stream if the engine did not: a reset when no response was sent whole.
    pub(super) fn finish(&mut self) {
        if let Some(mut respond) = self.respond.take() {
            respond.send_reset(h2::Reason::INTERNAL_ERROR);
        }
        if let Some(mut send) = self.send.take() {
            match self.framing {
                Framing::Close => {
                    let _ = send.send_data(Bytes::new(), true);
                }
                Framing::Done => {}
                _ => send.send_reset(h2::Reason::INTERNAL_ERROR),
            }
        }
    }
}

/// Copies as much of `src` as fits into `buf`'s spare room; how much.
fn copy_into<T: IoBufMut>(buf: &mut T, src: &[u8]) -> usize {
    let n = buf.bytes_total().min(src.len());
    // SAFETY: IoBufMut promises `write_ptr` is valid for writes of `bytes_total` bytes (a
    // read fills from there, as the kernel would); `src` (ours) does not overlap them.
    // The first n bytes are then initialised.
    unsafe {
        std::ptr::copy_nonoverlapping(src.as_ptr(), buf.write_ptr(), n);
        buf.set_init(n);
    }
    n
}

async fn read_request<T: IoBufMut>(
    side: &Rc<RefCell<RequestSide>>,
    mut buf: T,
) -> BufResult<usize, T> {
    loop {
        {
            let mut s = side.borrow_mut();
            if s.pos < s.bytes.len() {
                let s = &mut *s;
                let n = copy_into(&mut buf, &s.bytes[s.pos..]);
                s.pos += n;
                return (Ok(n), buf);
            }
            s.bytes.clear();
            s.pos = 0;
        }
        let body = side.borrow_mut().body.take();
        let Some(mut body) = body else {
            return (Ok(0), buf);
        };
        let data = body.data().await;
        let mut s = side.borrow_mut();
        match data {
            Some(Ok(data)) => {
                let _ = body.flow_control().release_capacity(data.len());
                if s.chunked {
                    if !data.is_empty() {
                        s.bytes
                            .extend_from_slice(format!("{:x}\r\n", data.len()).as_bytes());
                        s.bytes.extend_from_slice(&data);
                        s.bytes.extend_from_slice(b"\r\n");
                    }
                } else {
                    s.bytes.extend_from_slice(&data);
                }
                s.body = Some(body);
            }
            Some(Err(e)) => {
                return (Err(io::Error::other(e)), buf);
            }
            None => {
                // Trailers are not forwarded to an HTTP/1.1 upstream.
                if s.chunked {
                    s.bytes.extend_from_slice(b"0\r\n\r\n");
                }
            }
        }
    }
}

/// [`read_request`] into the first non-empty buffer of an iovec list.
async fn readv_request<T: IoVecBufMut>(
    side: &Rc<RefCell<RequestSide>>,
    mut buf: T,
) -> BufResult<usize, T> {
    // SAFETY: IoVecBufMut promises `write_iovec_ptr` points to `write_iovec_len` iovecs.
    let vecs = unsafe { std::slice::from_raw_parts(buf.write_iovec_ptr(), buf.write_iovec_len()) };
    let Some((ptr, len)) = vecs
        .iter()
        .find(|v| v.iov_len > 0)
        .map(|v| (v.iov_base.cast::<u8>(), v.iov_len))
    else {
        return (Ok(0), buf);
    };
    let (res, tmp) = read_request(side, Vec::with_capacity(len)).await;
    if let Ok(n) = res {
        // SAFETY: `ptr` holds `len` ≥ n writable bytes (IoVecBufMut) and `tmp` n readable
        // ones; they do not overlap (`tmp` is ours). The first n are now set.
        unsafe {
            std::ptr::copy_nonoverlapping(tmp.as_ptr(), ptr, n);
            buf.set_init(n);
        }
    }
    (res, buf)
}

/// Sends `data` on `send` as the window allows.
async fn send_all(send: &mut SendStream<Bytes>, mut data: Bytes, end: bool) -> io::Result<()> {
    while !data.is_empty() {
        send.reserve_capacity(data.len());
        let granted = poll_fn(|cx| send.poll_capacity(cx)).await;
        let n = match granted {
            Some(Ok(n)) => n.min(data.len()),
            Some(Err(e)) => return Err(io::Error::other(e)),
            None => return Err(io::ErrorKind::BrokenPipe.into()),
        };
        if n == 0 {
            continue;
        }
        let chunk = data.split_to(n);
        let last = end && data.is_empty();
        send.send_data(chunk, last).map_err(io::Error::other)?;
        if last {
            return Ok(());
        }
    }
    if end {
        send.send_data(Bytes::new(), true)
            .map_err(io::Error::other)?;
    }
    Ok(())
}

/// Takes in `data` from the engine's response.
async fn write_response(side: &Rc<RefCell<ResponseSide>>, data: &[u8]) -> io::Result<usize> {
    let mut body_start = 0;
    {
        let mut s = side.borrow_mut();
        if matches!(s.framing, Framing::Head) {
            s.head.extend_from_slice(data);
            loop {
                let parsed = parse_head(&mut s)?;
                let Some(used) = parsed else {
                    return Ok(data.len());
                };
                // Body bytes are what followed the head in this write.
                let head_len = s.head.len();
                let rest = head_len - used;
                body_start = data.len() - rest;
                s.head.clear();
                if !matches!(s.framing, Framing::Head) {
                    break;
                }
                // A 1xx was dropped: parse what follows it.
                s.head.extend_from_slice(&data[body_start..]);
                if s.head.is_empty() {
                    return Ok(data.len());
                }
            }
        }
    }
    let body = &data[body_start..];
    if body.is_empty() {
        return Ok(data.len());
    }
    let (out, end) = {
        let mut s = side.borrow_mut();
        let mut out = Vec::new();
        let end = match &mut s.framing {
            Framing::Length(left) => {
                let n = (*left).min(body.len() as u64) as usize;
                out.extend_from_slice(&body[..n]);
                *left -= n as u64;
                *left == 0
            }
            Framing::Chunked(dec) => {
                let progress = dec
                    .feed(body, |r| out.extend_from_slice(&body[r]))
                    .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e.0))?;
                progress.done
            }
            Framing::Close => {
                out.extend_from_slice(body);
                false
            }
            Framing::Done | Framing::Head => return Ok(data.len()),
        };
        if end {
            s.framing = Framing::Done;
        }
        (out, end)
    };
    let send = side.borrow_mut().send.take();
    if let Some(mut send) = send {
        let res = send_all(&mut send, Bytes::from(out), end).await;
        if !end {
            side.borrow_mut().send = Some(send);
        }
        res?;
    }
    Ok(data.len())
}

/// Parses the response head in `s.head`; sends it (a final one) and sets the framing.
/// `Some(len)`: the head's length (a 1xx leaves the framing at `Head`).
fn parse_head(s: &mut ResponseSide) -> io::Result<Option<usize>> {
    let mut headers = [httparse::EMPTY_HEADER; 128];
    let mut r = httparse::Response::new(&mut headers);
    let used = match r.parse(&s.head) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(e) => return Err(io::Error::new(io::ErrorKind::InvalidData, e)),
    };
    let status = r.code.unwrap_or(502);
    if (100..200).contains(&status) {
        return Ok(Some(used));
    }
    let mut builder = http::Response::builder().status(status);
    let mut length = None;
    let mut chunked = false;
    for h in r.headers.iter() {
        let name = h.name.to_ascii_lowercase();
        if name == "transfer-encoding" {
            chunked = true;
        }
        if HOP_BY_HOP.contains(&name.as_str()) {
            continue;
        }
        if name == "content-length" {
            length = std::str::from_utf8(h.value)
                .ok()
                .and_then(|v| v.trim().parse::<u64>().ok());
        }
        builder = builder.header(name, h.value);
    }
    let response = builder
        .body(())
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
    let no_body = s.head_request || status == 204 || status == 304;
    s.framing = if no_body {
        Framing::Done
    } else if chunked {
        Framing::Chunked(ChunkedDecoder::new())
    } else {
        match length {
            Some(0) => Framing::Done,
            Some(n) => Framing::Length(n),
            None => Framing::Close,
        }
    };
    let end = matches!(s.framing, Framing::Done);
    let Some(mut respond) = s.respond.take() else {
        return Err(io::ErrorKind::BrokenPipe.into());
    };
    let send = respond
        .send_response(response, end)
        .map_err(io::Error::other)?;
    s.status = Some(status);
    if !end {
        s.send = Some(send);
    }
    Ok(Some(used))
}

async fn shutdown_response(side: &Rc<RefCell<ResponseSide>>) -> io::Result<()> {
    side.borrow_mut().finish();
    Ok(())
}

impl AsyncReadRent for StreamPipe {
    fn read<T: IoBufMut>(
        &mut self,
        buf: T,
    ) -> impl std::future::Future<Output = BufResult<usize, T>> {
        let side = self.req.clone();
        async move { read_request(&side, buf).await }
    }

    fn readv<T: IoVecBufMut>(
        &mut self,
        buf: T,
    ) -> impl std::future::Future<Output = BufResult<usize, T>> {
        let side = self.req.clone();
        async move { readv_request(&side, buf).await }
    }
}

impl AsyncReadRent for PipeRead {
    fn read<T: IoBufMut>(
        &mut self,
        buf: T,
    ) -> impl std::future::Future<Output = BufResult<usize, T>> {
        let side = self.0.clone();
        async move { read_request(&side, buf).await }
    }

    fn readv<T: IoVecBufMut>(
        &mut self,
        buf: T,
    ) -> impl std::future::Future<Output = BufResult<usize, T>> {
        let side = self.0.clone();
        async move { readv_request(&side, buf).await }
    }
}

/// The initialised bytes of an owned buffer.
fn bytes_of<T: IoBuf>(buf: &T) -> &[u8] {
    // SAFETY: IoBuf promises `read_ptr` is valid for `bytes_init` initialised bytes for as
    // long as `buf` lives, which the returned slice's borrow of `buf` ensures.
    unsafe { std::slice::from_raw_parts(buf.read_ptr(), buf.bytes_init()) }
}

/// The initialised bytes of an owned iovec list, copied.
fn bytes_of_iovec<T: IoVecBuf>(buf: &T) -> Vec<u8> {
    // SAFETY: IoVecBuf promises `read_iovec_ptr` points to `read_iovec_len` iovecs, each
    // describing `iov_len` initialised bytes, for as long as `buf` lives.
    let vecs = unsafe { std::slice::from_raw_parts(buf.read_iovec_ptr(), buf.read_iovec_len()) };
    let mut out = Vec::new();
    for v in vecs {
        // SAFETY: as above.
        out.extend_from_slice(unsafe {
            std::slice::from_raw_parts(v.iov_base.cast::<u8>(), v.iov_len)
        });
    }
    out
}

macro_rules! write_impl {
    ($t:ty, $f:tt) => {
        impl AsyncWriteRent for $t {
            fn write<T: IoBuf>(
                &mut self,
                buf: T,
            ) -> impl std::future::Future<Output = BufResult<usize, T>> {
                let side = self.$f.clone();
                async move {
                    let res = write_response(&side, bytes_of(&buf)).await;
                    (res, buf)
                }
            }

            fn writev<T: IoVecBuf>(
                &mut self,
                buf: T,
            ) -> impl std::future::Future<Output = BufResult<usize, T>> {
                let side = self.$f.clone();
                async move {
                    let data = bytes_of_iovec(&buf);
                    let res = write_response(&side, &data).await;
                    (res, buf)
                }
            }

            fn flush(&mut self) -> impl std::future::Future<Output = io::Result<()>> {
                async { Ok(()) }
            }

            fn shutdown(&mut self) -> impl std::future::Future<Output = io::Result<()>> {
                let side = self.$f.clone();
                async move { shutdown_response(&side).await }
            }
        }
    };
}

write_impl!(StreamPipe, resp);
write_impl!(PipeWrite, 0);

impl Transport for StreamPipe {
    type Read = PipeRead;
    type Write = PipeWrite;

    fn into_split(self) -> (PipeRead, PipeWrite) {
        (PipeRead(self.req), PipeWrite(self.resp))
    }

    fn set_nodelay(&self) {}

    fn idle_state(&self) -> Idle {
        Idle::Unusable
    }
}
