//! A fixed-count HTTP/1.1 load client for `bench/wrk/run.sh MODE=callgrind`: wrk runs for
//! a duration, but an instruction count per request needs a known number of requests.
//!
//! `fixed-load ADDR CONNECTIONS REQUESTS [PATH]` opens CONNECTIONS keep-alive connections
//! to ADDR (an `ip:port`), sends REQUESTS `GET PATH` requests in all (split evenly, one
//! request in flight per connection, like wrk), reads each response (Content-Length or
//! chunked framing), and prints `requests=N non2xx=N errors=N`. Exits non-zero on any
//! error or non-2xx response.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::ExitCode;
use std::thread;

#[derive(Default)]
struct Tally {
    ok: u64,
    non2xx: u64,
    errors: u64,
}

fn read_response(r: &mut BufReader<TcpStream>, line: &mut String) -> std::io::Result<u16> {
    line.clear();
    r.read_line(line)?;
    let status: u16 = line
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| std::io::Error::other(format!("bad status line {line:?}")))?;
    let mut length: Option<usize> = None;
    let mut chunked = false;
    loop {
        line.clear();
        if r.read_line(line)? == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        let l = line.trim_end();
        if l.is_empty() {
            break;
        }
        if let Some((name, value)) = l.split_once(':') {
            if name.eq_ignore_ascii_case("content-length") {
                length = value.trim().parse().ok();
            } else if name.eq_ignore_ascii_case("transfer-encoding") {
                chunked = value.to_ascii_lowercase().contains("chunked");
            }
        }
    }
    if chunked {
        loop {
            line.clear();
            r.read_line(line)?;
            let size = usize::from_str_radix(line.trim_end().split(';').next().unwrap_or(""), 16)
                .map_err(|_| std::io::Error::other("bad chunk size"))?;
            let mut skip = vec![0; size + 2];
            r.read_exact(&mut skip)?;
            if size == 0 {
                break;
            }
        }
    } else if let Some(n) = length {
        std::io::copy(&mut r.by_ref().take(n as u64), &mut std::io::sink())?;
    } else {
        return Err(std::io::Error::other("response without a length"));
    }
    Ok(status)
}

fn connection(addr: SocketAddr, path: &str, requests: u64) -> Tally {
    let mut t = Tally::default();
    let request = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\n\r\n");
    let mut line = String::new();
    let mut conn: Option<(TcpStream, BufReader<TcpStream>)> = None;
    for _ in 0..requests {
        let result = (|| -> std::io::Result<u16> {
            if conn.is_none() {
                let s = TcpStream::connect(addr)?;
                s.set_nodelay(true)?;
                conn = Some((s.try_clone()?, BufReader::new(s)));
            }
            let (w, r) = conn
                .as_mut()
                .ok_or_else(|| std::io::Error::other("no connection"))?;
            w.write_all(request.as_bytes())?;
            read_response(r, &mut line)
        })();
        match result {
            Ok(s) if (200..300).contains(&s) => t.ok += 1,
            Ok(_) => t.non2xx += 1,
            Err(e) => {
                eprintln!("fixed-load: {e}");
                t.errors += 1;
                conn = None;
            }
        }
    }
    t
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().collect();
    let usage = || {
        eprintln!("usage: fixed-load ADDR CONNECTIONS REQUESTS [PATH]");
        ExitCode::from(2)
    };
    let (Some(addr), Some(conns), Some(total)) = (
        args.get(1).and_then(|a| a.parse::<SocketAddr>().ok()),
        args.get(2)
            .and_then(|a| a.parse::<u64>().ok())
            .filter(|c| *c > 0),
        args.get(3).and_then(|a| a.parse::<u64>().ok()),
    ) else {
        return usage();
    };
    let path = args.get(4).cloned().unwrap_or_else(|| "/".to_owned());
    let threads: Vec<_> = (0..conns)
        .map(|i| {
            let share = total / conns + u64::from(i < total % conns);
            let path = path.clone();
            thread::spawn(move || connection(addr, &path, share))
        })
        .collect();
    let mut sum = Tally::default();
    for t in threads {
        let t = t.join().unwrap_or(Tally {
            ok: 0,
            non2xx: 0,
            errors: 1,
        });
        sum.ok += t.ok;
        sum.non2xx += t.non2xx;
        sum.errors += t.errors;
    }
    println!(
        "requests={} non2xx={} errors={}",
        sum.ok + sum.non2xx,
        sum.non2xx,
        sum.errors
    );
    if sum.non2xx + sum.errors > 0 {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}
