//! A raw HTTP/2 client for the abuse tests: it writes frames byte by byte as an attacker
//! would (no library in between to refuse them) and reads what the server sends back.
//!
//! Runs on: the test threads.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

pub(crate) const DATA: u8 = 0x0;
pub(crate) const HEADERS: u8 = 0x1;
pub(crate) const RST_STREAM: u8 = 0x3;
pub(crate) const SETTINGS: u8 = 0x4;
pub(crate) const PING: u8 = 0x6;
pub(crate) const GOAWAY: u8 = 0x7;
pub(crate) const CONTINUATION: u8 = 0x9;
pub(crate) const END_STREAM: u8 = 0x1;
pub(crate) const END_HEADERS: u8 = 0x4;
/// GOAWAY's ENHANCE_YOUR_CALM.
pub(crate) const ENHANCE_YOUR_CALM: u32 = 0xb;

/// One frame's bytes.
pub(crate) fn frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
    let len = payload.len() as u32;
    let mut f = vec![(len >> 16) as u8, (len >> 8) as u8, len as u8, kind, flags];
    f.extend_from_slice(&(stream & 0x7fff_ffff).to_be_bytes());
    f.extend_from_slice(payload);
    f
}

/// An HPACK block for `method` `path` on `authority` (literal fields, no Huffman).
pub(crate) fn request_block(method: &str, authority: &str, path: &str) -> Vec<u8> {
    let mut b = Vec::new();
    b.push(if method == "POST" { 0x83 } else { 0x82 });
    b.push(0x86); // :scheme http
    for (index, value) in [(0x04u8, path), (0x01u8, authority)] {
        b.push(index); // literal without indexing, indexed name
        b.push(value.len() as u8);
        b.extend_from_slice(value.as_bytes());
    }
    b
}

/// A connection that sent the client preface and an empty SETTINGS (or `settings`).
pub(crate) struct RawH2 {
    pub(crate) stream: TcpStream,
    read: Vec<u8>,
}

impl RawH2 {
    pub(crate) fn connect(addr: SocketAddr, settings: &[(u16, u32)]) -> RawH2 {
        let mut stream = TcpStream::connect(addr).unwrap();
        stream
            .set_write_timeout(Some(Duration::from_secs(5)))
            .unwrap();
        let mut payload = Vec::new();
        for (id, value) in settings {
            payload.extend_from_slice(&id.to_be_bytes());
            payload.extend_from_slice(&value.to_be_bytes());
        }
        let mut hello = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_vec();
        hello.extend(frame(SETTINGS, 0, 0, &payload));
        stream.write_all(&hello).unwrap();
        RawH2 {
            stream,
            read: Vec::new(),
        }
    }

    /// Waits for the server's SETTINGS and acknowledges them, so that its limits apply.
    pub(crate) fn ack_settings(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            let frames = self.frames(Duration::from_millis(100));
            if frames.iter().any(|f| f.0 == SETTINGS && f.1 & 0x1 == 0) {
                assert!(self.send(&frame(SETTINGS, 0x1, 0, &[])));
                return;
            }
        }
        panic!("no SETTINGS from the server");
    }

    /// A second handle on the connection, to read while this one writes.
    pub(crate) fn reader(&self) -> RawH2 {
        RawH2 {
            stream: self.stream.try_clone().unwrap(),
            read: Vec::new(),
        }
    }

    /// Writes `bytes`; false once the server stopped taking them (closed, reset, or
    /// not reading for the write timeout).
    pub(crate) fn send(&mut self, bytes: &[u8]) -> bool {
        self.stream.write_all(bytes).is_ok()
    }

    /// The frames the server sends until it closes or `within` passes: `(type, flags,
    /// stream, payload)`.
    pub(crate) fn frames(&mut self, within: Duration) -> Vec<(u8, u8, u32, Vec<u8>)> {
        let deadline = Instant::now() + within;
        let mut out = Vec::new();
        self.collect(deadline, &mut out);
        out
    }

    /// The frames that arrive until `want` holds for what came so far, or `within` passes.
    pub(crate) fn frames_until(
        &mut self,
        within: Duration,
        want: impl Fn(&[(u8, u8, u32, Vec<u8>)]) -> bool,
    ) -> Vec<(u8, u8, u32, Vec<u8>)> {
        let deadline = Instant::now() + within;
        let mut out = Vec::new();
        while !want(&out) && Instant::now() < deadline {
            let step = (Instant::now() + Duration::from_millis(50)).min(deadline);
            if !self.collect(step, &mut out) {
                break;
            }
        }
        out
    }

    /// Reads frames into `out` until `deadline`; false once the connection closed.
    fn collect(&mut self, deadline: Instant, out: &mut Vec<(u8, u8, u32, Vec<u8>)>) -> bool {
        let mut buf = [0u8; 16384];
        loop {
            while self.read.len() >= 9 {
                let len =
                    u32::from_be_bytes([0, self.read[0], self.read[1], self.read[2]]) as usize;
                if self.read.len() < 9 + len {
                    break;
                }
                let f: Vec<u8> = self.read.drain(..9 + len).collect();
                let stream = u32::from_be_bytes([f[5], f[6], f[7], f[8]]) & 0x7fff_ffff;
                out.push((f[3], f[4], stream, f[9..].to_vec()));
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return true;
            }
            self.stream.set_read_timeout(Some(left)).unwrap();
            match self.stream.read(&mut buf) {
                Ok(0) => return false,
                Err(e)
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    ) =>
                {
                    return true
                }
                Err(_) => return false,
                Ok(n) => self.read.extend_from_slice(&buf[..n]),
            }
        }
    }

    /// The error code of the GOAWAY the server sends within `within`, if it sends one.
    pub(crate) fn goaway(&mut self, within: Duration) -> Option<u32> {
        let deadline = Instant::now() + within;
        while Instant::now() < deadline {
            let frames = self.frames(deadline.saturating_duration_since(Instant::now()));
            if let Some((_, _, _, p)) = frames.iter().find(|f| f.0 == GOAWAY) {
                return Some(u32::from_be_bytes([p[4], p[5], p[6], p[7]]));
            }
            if frames.is_empty() {
                return None;
            }
        }
        None
    }
}
