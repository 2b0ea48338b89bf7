//! The floor: the least an HTTP/1.1 reverse proxy can do, for `bench/wrk/run.sh`.
//!
//! `floor LISTEN UPSTREAM [io_uring|legacy]` accepts on LISTEN (an `ip:port`) and, for each
//! request, reads it from the client up to the end of its head (bench requests have no
//! body), writes it unchanged to a pooled keep-alive connection to UPSTREAM, reads the
//! response (head, then Content-Length bytes), writes it back and returns the upstream
//! connection to the pool. No parsing beyond the two framing scans, no routing, no header
//! added, no timeout, no log. One thread on the runtime strait's workers use (same driver
//! choice, same ring set-up: `strait::worker::build_runtime`), so what strait costs above
//! it is what strait does, not what the runtime or kernel does.
//!
//! A measuring instrument, not a proxy: a malformed request or response closes the
//! connection.

use std::cell::RefCell;
use std::net::SocketAddr;
use std::process::ExitCode;
use std::rc::Rc;

use monoio::io::{AsyncReadRent, AsyncWriteRentExt};
use monoio::net::{TcpListener, TcpStream};
use strait::config::Driver;

/// Largest response the floor holds (bench responses are 100 B or 16 KiB).
const MAX_RESPONSE: usize = 1 << 20;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (listen, upstream) = match (args.first(), args.get(1)) {
        (Some(l), Some(u)) => match (l.parse::<SocketAddr>(), u.parse::<SocketAddr>()) {
            (Ok(l), Ok(u)) => (l, u),
            _ => return usage("LISTEN and UPSTREAM are ip:port"),
        },
        _ => return usage("missing arguments"),
    };
    let driver = match args.get(2).map(String::as_str) {
        None | Some("auto") => Driver::Auto,
        Some("io_uring") => Driver::IoUring,
        Some("legacy") => Driver::Legacy,
        Some(other) => return usage(&format!("unknown driver {other}")),
    };
    let (mut rt, kind, ring) = match strait::worker::build_runtime(driver) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("floor: cannot build the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    eprintln!("floor: listening on {listen}, upstream {upstream}, driver={kind:?} ring={ring:?}");
    rt.block_on(async move {
        let listener = match TcpListener::bind(listen) {
            Ok(l) => l,
            Err(e) => {
                eprintln!("floor: cannot listen on {listen}: {e}");
                return ExitCode::FAILURE;
            }
        };
        let pool: Rc<RefCell<Vec<TcpStream>>> = Rc::default();
        loop {
            let Ok((client, _)) = listener.accept().await else {
                continue;
            };
            let _ = client.set_nodelay(true);
            monoio::spawn(serve(client, upstream, pool.clone()));
        }
    })
}

fn usage(why: &str) -> ExitCode {
    eprintln!("floor: {why}\nusage: floor LISTEN UPSTREAM [auto|io_uring|legacy]");
    ExitCode::from(2)
}

/// Where `needle` starts in `hay`, searching from `from`.
fn find(hay: &[u8], from: usize, needle: &[u8]) -> Option<usize> {
    hay.get(from..)?
        .windows(needle.len())
        .position(|w| w == needle)
        .map(|p| p + from)
}

/// The Content-Length of a response head (0 when absent).
fn content_length(head: &[u8]) -> Option<usize> {
    for line in head.split(|&b| b == b'\n') {
        if line.len() > 15 && line[..15].eq_ignore_ascii_case(b"content-length:") {
            let v = std::str::from_utf8(&line[15..]).ok()?;
            return v.trim().parse().ok();
        }
    }
    Some(0)
}

async fn serve(mut client: TcpStream, upstream: SocketAddr, pool: Rc<RefCell<Vec<TcpStream>>>) {
    let mut req: Vec<u8> = Vec::with_capacity(16 * 1024);
    let mut resp: Vec<u8> = Vec::with_capacity(64 * 1024);
    loop {
        // The request head.
        req.clear();
        loop {
            let scanned = req.len().saturating_sub(3);
            let (res, b) = client.read(req).await;
            req = b;
            match res {
                Ok(n) if n > 0 => {}
                _ => return,
            }
            if find(&req, scanned, b"\r\n\r\n").is_some() {
                break;
            }
            if req.len() == req.capacity() {
                return;
            }
        }
        // A pooled upstream connection, or a new one.
        let pooled = pool.borrow_mut().pop();
        let mut up = match pooled {
            Some(up) => up,
            None => match TcpStream::connect(upstream).await {
                Ok(up) => {
                    let _ = up.set_nodelay(true);
                    up
                }
                Err(_) => return,
            },
        };
        let (res, b) = up.write_all(req).await;
        req = b;
        if res.is_err() {
            return;
        }
        // The response: head, then its Content-Length.
        resp.clear();
        let mut total = None;
        loop {
            if resp.capacity() == resp.len() {
                if resp.len() >= MAX_RESPONSE {
                    return;
                }
                resp.reserve(resp.len());
            }
            let scanned = resp.len().saturating_sub(3);
            let (res, b) = up.read(resp).await;
            resp = b;
            match res {
                Ok(n) if n > 0 => {}
                _ => return,
            }
            if total.is_none() {
                if let Some(end) = find(&resp, scanned, b"\r\n\r\n") {
                    match content_length(&resp[..end]) {
                        Some(len) => total = Some(end + 4 + len),
                        None => return,
                    }
                }
            }
            if total.is_some_and(|t| resp.len() >= t) {
                break;
            }
        }
        let (res, b) = client.write_all(resp).await;
        resp = b;
        pool.borrow_mut().push(up);
        if res.is_err() {
            return;
        }
    }
}
