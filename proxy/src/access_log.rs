//! The access log: one line per request, in the spirit of the seed's APISIX log.
//!
//! ```text
//! 127.0.0.1 - - [22/Nov/2026:05:23:58 +0000] sd.httpbin.org "GET /v1/anything HTTP/1.1" 200 412 0.002 "-" "curl/7.88.1" 127.0.0.2:8080 200 0.001 0b5c…
//! ```
//! Fields: client address, local time (UTC), host, request line, status, bytes sent to the
//! client (body and head), request time (s), referer, user agent, upstream address(es)
//! (`a, b` when a request tried several), upstream status(es), upstream response time (s),
//! request id (`-` when `http.request_id` is off); then, on a TLS listener only, the TLS version (`TLSv1.3`) and the SNI name (`-`: none).
//!
//! Runs on: each worker owns an [`AccessLog`] writer (its own file descriptor) and formats
//! into a reused buffer; one `write(2)` per line, so lines from workers never interleave.
//! Off by default. Never logs header values other than Referer and User-Agent.

use std::cell::{Cell, RefCell};
use std::fs::File;
use std::io::Write;
use std::time::{SystemTime, UNIX_EPOCH};

use crate::transport::ClientAddr;

/// One request's log fields.
#[derive(Debug, Default)]
pub struct Record {
    pub client: Option<ClientAddr>,
    pub host: String,
    pub request_line: String,
    pub referer: String,
    pub user_agent: String,
    pub status: u16,
    pub bytes_sent: u64,
    pub request_time: f64,
    /// `addr` of each attempt, comma-separated.
    pub upstream_addr: String,
    pub upstream_status: String,
    pub upstream_time: f64,
    /// The connection's TLS version and SNI, on a TLS listener (kept across requests).
    pub tls: Option<crate::tls::TlsFacts>,
    /// The request came on an HTTP/2 stream (the request line says `HTTP/2.0`).
    pub h2: bool,
    /// The request id (`http.request_id`), empty when off.
    pub request_id: String,
}

impl Record {
    pub fn clear(&mut self) {
        self.host.clear();
        self.request_line.clear();
        self.referer.clear();
        self.user_agent.clear();
        self.status = 0;
        self.bytes_sent = 0;
        self.request_time = 0.0;
        self.upstream_addr.clear();
        self.upstream_status.clear();
        self.upstream_time = 0.0;
        self.request_id.clear();
    }
}

/// A worker's access-log writer.
#[derive(Debug)]
pub struct AccessLog {
    out: RefCell<File>,
    line: RefCell<Vec<u8>>,
    /// Cached `[dd/Mon/yyyy:hh:mm:ss +0000]` for `stamp_second`.
    stamp: RefCell<String>,
    stamp_second: Cell<u64>,
}

impl AccessLog {
    pub fn new(out: File) -> AccessLog {
        AccessLog {
            out: RefCell::new(out),
            line: RefCell::new(Vec::with_capacity(512)),
            stamp: RefCell::new(String::new()),
            stamp_second: Cell::new(u64::MAX),
        }
    }

    /// Formats and writes one line. Write errors are ignored (logging must not fail a
    /// request).
    pub fn write(&self, r: &Record) {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        if self.stamp_second.get() != now {
            *self.stamp.borrow_mut() = clf_time(now);
            self.stamp_second.set(now);
        }
        let mut line = self.line.borrow_mut();
        line.clear();
        // Written piece by piece into the reused line buffer: no per-field allocation.
        fn dash(s: &str) -> &str {
            if s.is_empty() {
                "-"
            } else {
                s
            }
        }
        match r.client.map(|c| c.ip()) {
            Some(Some(ip)) => {
                let _ = write!(line, "{ip}");
            }
            // A client on a Unix socket, as nginx logs one.
            Some(None) => line.extend_from_slice(b"unix:"),
            None => line.push(b'-'),
        }
        let _ = write!(
            line,
            " - - {} {} \"{}\" {} {} {:.3} \"{}\" \"{}\" {} {} ",
            self.stamp.borrow(),
            dash(&r.host),
            r.request_line,
            r.status,
            r.bytes_sent,
            r.request_time,
            dash(&r.referer),
            dash(&r.user_agent),
            dash(&r.upstream_addr),
            dash(&r.upstream_status),
        );
        let _ = if r.upstream_addr.is_empty() {
            write!(line, "-")
        } else {
            write!(line, "{:.3}", r.upstream_time)
        };
        line.push(b' ');
        line.extend_from_slice(dash(&r.request_id).as_bytes());
        // On a TLS listener only: the version and the SNI name (`-` without one).
        if let Some(tls) = &r.tls {
            let _ = write!(
                line,
                " {} {}",
                tls.version,
                tls.sni.as_deref().unwrap_or("-")
            );
        }
        line.push(b'\n');
        let _ = self.out.borrow_mut().write_all(&line);
    }
}

/// `[22/Nov/2026:05:23:58 +0000]` for seconds since the epoch (UTC).
pub fn clf_time(secs: u64) -> String {
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    // Howard Hinnant's civil-from-days.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "[{:02}/{}/{}:{:02}:{:02}:{:02} +0000]",
        day,
        MONTHS[(month - 1) as usize],
        year,
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clf_time_formats_known_instants() {
        assert_eq!(clf_time(0), "[01/Jan/1970:00:00:00 +0000]");
        assert_eq!(clf_time(1_673_253_133), "[09/Jan/2023:08:32:13 +0000]");
        assert_eq!(clf_time(1_709_208_000), "[29/Feb/2024:12:00:00 +0000]");
    }
}
