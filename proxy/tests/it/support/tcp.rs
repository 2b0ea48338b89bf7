//! Plain TCP for the `tcp` listener tests: a deterministic byte stream and its checksum,
//! backends that greet with their own address and then echo, sink or source bytes, and a
//! client that reads the greeting.
//!
//! Runs on: the test threads; each backend is a [`RawBackend`] (one thread per accepted
//! connection). Every socket has timeouts, so a hang fails the test.

use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::sync::mpsc::{self, Receiver};
use std::sync::Mutex;

use super::{RawBackend, IO_TIMEOUT};

/// `len` pseudo-random bytes from `seed` (xorshift64*): the same for the same seed.
pub(crate) fn pattern(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed | 1;
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        out.extend_from_slice(&x.wrapping_mul(0x2545_f491_4f6c_dd1d).to_le_bytes());
    }
    out.truncate(len);
    out
}

/// A running checksum: FNV-1a 64 over the bytes, and their count.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Sum {
    pub(crate) hash: u64,
    pub(crate) len: u64,
}

impl Default for Sum {
    fn default() -> Self {
        Sum {
            hash: 0xcbf2_9ce4_8422_2325,
            len: 0,
        }
    }
}

impl Sum {
    pub(crate) fn of(bytes: &[u8]) -> Sum {
        let mut s = Sum::default();
        s.add(bytes);
        s
    }

    pub(crate) fn add(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.hash = (self.hash ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3);
        }
        self.len += bytes.len() as u64;
    }

    /// Reads `r` to its end (EOF), summing what came.
    pub(crate) fn read_to_end(r: &mut impl Read) -> io::Result<Sum> {
        let mut s = Sum::default();
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            match r.read(&mut buf)? {
                0 => return Ok(s),
                n => s.add(&buf[..n]),
            }
        }
    }
}

/// A backend that writes its own address and `\n`, then echoes every byte until the
/// client half-closes, then half-closes too; the [`Sum`] of what each connection read
/// goes to the receiver when the connection ends.
pub(crate) fn echo(ip: &str) -> (RawBackend, Receiver<Sum>) {
    echo_at(format!("{ip}:0").parse().unwrap())
}

/// [`echo`] on a given address (pods of one Service share a port).
pub(crate) fn echo_at(addr: SocketAddr) -> (RawBackend, Receiver<Sum>) {
    let (tx, rx) = mpsc::channel();
    let tx = Mutex::new(tx);
    let backend = RawBackend::start_at(addr, move |mut stream, _| {
        let _ = greet(&mut stream);
        let mut sum = Sum::default();
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            match stream.read(&mut buf) {
                Ok(0) => {
                    let _ = stream.shutdown(Shutdown::Write);
                    break;
                }
                Ok(k) => {
                    sum.add(&buf[..k]);
                    if stream.write_all(&buf[..k]).is_err() {
                        break;
                    }
                }
                Err(_) => break,
            }
        }
        // Until the proxy closes its side.
        let _ = stream.read(&mut buf);
        let _ = tx.lock().unwrap().send(sum);
    });
    (backend, rx)
}

/// A backend that greets, reads until the client half-closes, then answers with the
/// checksum of what it read (`hash len\n`) and closes; the [`Sum`] also goes to the
/// receiver.
pub(crate) fn sink(ip: &str) -> (RawBackend, Receiver<Sum>) {
    let (tx, rx) = mpsc::channel();
    let tx = Mutex::new(tx);
    let backend = RawBackend::start(ip, move |mut stream, _| {
        let _ = greet(&mut stream);
        let Ok(sum) = Sum::read_to_end(&mut stream) else {
            return;
        };
        let _ = tx.lock().unwrap().send(sum);
        let _ = stream.write_all(format!("{:x} {}\n", sum.hash, sum.len).as_bytes());
    });
    (backend, rx)
}

/// A backend that greets, writes `pattern(seed, len)`, half-closes, then reads what the
/// client still sends until it half-closes too; the [`Sum`] of that goes to the receiver.
pub(crate) fn source(ip: &str, seed: u64, len: usize) -> (RawBackend, Receiver<Sum>) {
    let (tx, rx) = mpsc::channel();
    let tx = Mutex::new(tx);
    let data = pattern(seed, len);
    let backend = RawBackend::start(ip, move |mut stream, _| {
        if greet(&mut stream).is_err() || stream.write_all(&data).is_err() {
            return;
        }
        let _ = stream.shutdown(Shutdown::Write);
        if let Ok(sum) = Sum::read_to_end(&mut stream) {
            let _ = tx.lock().unwrap().send(sum);
        }
    });
    (backend, rx)
}

fn greet(stream: &mut TcpStream) -> io::Result<()> {
    let me = stream.local_addr()?;
    stream.write_all(format!("{me}\n").as_bytes())
}

/// A client connection through a `tcp` listener, with the greeting of the backend it
/// reached already read.
pub(crate) struct Conn {
    pub(crate) reader: BufReader<TcpStream>,
    pub(crate) stream: TcpStream,
    /// The backend's address, from its greeting.
    pub(crate) backend: SocketAddr,
}

impl Conn {
    /// Connects to `addr` and reads the backend's greeting; fails the test on error.
    pub(crate) fn open(addr: SocketAddr) -> Conn {
        Conn::try_open(addr).unwrap_or_else(|e| panic!("tcp connection through {addr}: {e}"))
    }

    /// Connects to `addr` and reads the backend's greeting. An `UnexpectedEof` means the
    /// proxy closed the connection without reaching a backend.
    pub(crate) fn try_open(addr: SocketAddr) -> io::Result<Conn> {
        let stream = TcpStream::connect_timeout(&addr, IO_TIMEOUT)?;
        stream.set_read_timeout(Some(IO_TIMEOUT))?;
        stream.set_write_timeout(Some(IO_TIMEOUT))?;
        stream.set_nodelay(true)?;
        let mut reader = BufReader::new(stream.try_clone()?);
        let mut line = String::new();
        if reader.read_line(&mut line)? == 0 {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
        let backend = line
            .trim_end()
            .parse()
            .map_err(|_| io::Error::other(format!("not a greeting: {line:?}")))?;
        Ok(Conn {
            reader,
            stream,
            backend,
        })
    }

    /// Writes `bytes` and reads as many back (an echo), failing the test on error.
    pub(crate) fn echo(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).unwrap();
        let mut back = vec![0u8; bytes.len()];
        self.reader.read_exact(&mut back).unwrap();
        assert!(back == bytes, "the echo differs");
    }

    /// True once the proxy closed the connection: a read returns EOF or a reset.
    pub(crate) fn closed(&mut self) -> bool {
        let mut byte = [0u8; 1];
        match self.reader.read(&mut byte) {
            Ok(0) => true,
            Ok(_) => false,
            Err(e) => e.kind() != io::ErrorKind::WouldBlock && e.kind() != io::ErrorKind::TimedOut,
        }
    }
}
