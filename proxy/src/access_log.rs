//! The access log: one line per request, in one of three formats (`access_log.format`,
//! every field documented in CONFIG.md):
//!
//! - `strait` (default), in the spirit of the seed's APISIX log:
//!   ```text
//!   127.0.0.1 - - [22/Nov/2026:05:23:58 +0000] sd.httpbin.org "GET /v1/anything HTTP/1.1" 200 412 0.002 "-" "curl/7.88.1" 127.0.0.2:8080 200 0.001 0b5c…
//!   ```
//!   client address, local time (UTC), host, request line, status, bytes sent to the
//!   client (head and body: nginx's `$bytes_sent`), request time (s), referer, user agent,
//!   upstream address(es) (`a, b` when a request tried several), upstream status(es),
//!   upstream response time (s), request id (`-` when `http.request_id` is off); then, on a
//!   TLS listener only, the TLS version (`TLSv1.3`) and the SNI name (`-`: none);
//! - `apisix`: APISIX's default `log_format`, as the seed shows it: `$body_bytes_sent`,
//!   and the upstream URL last (`"http://sd.httpbin.org/anything"`);
//! - `json`: one JSON object per line, every field named, both byte counts.
//!
//! Runs on: each worker owns an [`AccessLog`] writer (its own file descriptor) and formats
//! into a reused buffer; one `write(2)` per line, so lines from workers never interleave.
//! Off by default. Never logs header values other than Referer and User-Agent.

use std::cell::{Cell, RefCell};
use std::fs::File;
use std::io::Write;
use std::time::{SystemTime, UNIX_EPOCH};

use crate::transport::ClientAddr;

/// How each line is written (`access_log.format`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Format {
    #[default]
    Strait,
    Apisix,
    Json,
}

/// One request's log fields.
#[derive(Debug, Default)]
pub struct Record {
    pub client: Option<ClientAddr>,
    pub host: String,
    pub request_line: String,
    pub referer: String,
    pub user_agent: String,
    pub status: u16,
    /// Bytes sent to the client, heads and body (nginx's `$bytes_sent`).
    pub bytes_sent: u64,
    /// Of those, the response body's (nginx's `$body_bytes_sent`).
    pub body_bytes_sent: u64,
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
    /// The request as sent upstream: `http`/`https`, its `Host` (empty: the endpoint's
    /// address, `pass_host: node`) and its target; the scheme is empty when the request
    /// was not forwarded.
    pub upstream_scheme: &'static str,
    pub upstream_host: String,
    pub upstream_uri: String,
}

impl Record {
    pub fn clear(&mut self) {
        self.host.clear();
        self.request_line.clear();
        self.referer.clear();
        self.user_agent.clear();
        self.status = 0;
        self.bytes_sent = 0;
        self.body_bytes_sent = 0;
        self.request_time = 0.0;
        self.upstream_addr.clear();
        self.upstream_status.clear();
        self.upstream_time = 0.0;
        self.request_id.clear();
        self.upstream_scheme = "";
        self.upstream_host.clear();
        self.upstream_uri.clear();
    }

    /// The upstream URL (`scheme://host/target`, APISIX's `$upstream_scheme://
    /// $upstream_host$upstream_uri`), when the request was forwarded.
    fn upstream_url(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(self.upstream_scheme.as_bytes());
        out.extend_from_slice(b"://");
        let host = if self.upstream_host.is_empty() {
            // `pass_host: node`: the (last) endpoint tried.
            self.upstream_addr.rsplit(", ").next().unwrap_or_default()
        } else {
            &self.upstream_host
        };
        out.extend_from_slice(host.as_bytes());
        out.extend_from_slice(self.upstream_uri.as_bytes());
    }
}

/// A worker's access-log writer.
#[derive(Debug)]
pub struct AccessLog {
    out: RefCell<File>,
    format: Format,
    line: RefCell<Vec<u8>>,
    /// Cached `[dd/Mon/yyyy:hh:mm:ss +0000]` for `stamp_second`.
    stamp: RefCell<String>,
    stamp_second: Cell<u64>,
}

impl AccessLog {
    pub fn new(out: File, format: Format) -> AccessLog {
        AccessLog {
            out: RefCell::new(out),
            format,
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
        match self.format {
            Format::Strait => self.strait_line(&mut line, r),
            Format::Apisix => self.apisix_line(&mut line, r),
            Format::Json => json_line(&mut line, r, now),
        }
        line.push(b'\n');
        let _ = self.out.borrow_mut().write_all(&line);
    }

    /// The fields the `strait` and `apisix` formats share, up to the upstream response
    /// time, with `bytes` as the byte count.
    fn common_fields(&self, line: &mut Vec<u8>, r: &Record, bytes: u64) {
        push_client(line, r);
        // Written piece by piece into the reused line buffer: no per-field allocation.
        let _ = write!(
            line,
            " - - {} {} \"{}\" {} {} {:.3} \"{}\" \"{}\" {} {} ",
            self.stamp.borrow(),
            dash(&r.host),
            r.request_line,
            r.status,
            bytes,
            r.request_time,
            dash(&r.referer),
            dash(&r.user_agent),
            dash(&r.upstream_addr),
            dash(&r.upstream_status),
        );
        push_upstream_time(line, r);
    }

    fn strait_line(&self, line: &mut Vec<u8>, r: &Record) {
        self.common_fields(line, r, r.bytes_sent);
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
    }

    /// APISIX's default: `$remote_addr - $remote_user [$time_local] $http_host "$request"
    /// $status $body_bytes_sent $request_time "$http_referer" "$http_user_agent"
    /// $upstream_addr $upstream_status $upstream_response_time
    /// "$upstream_scheme://$upstream_host$upstream_uri"`.
    fn apisix_line(&self, line: &mut Vec<u8>, r: &Record) {
        self.common_fields(line, r, r.body_bytes_sent);
        line.extend_from_slice(b" \"");
        if r.upstream_scheme.is_empty() {
            line.push(b'-');
        } else {
            r.upstream_url(line);
        }
        line.push(b'"');
    }
}

/// `-` for an empty field.
fn dash(s: &str) -> &str {
    if s.is_empty() {
        "-"
    } else {
        s
    }
}

/// The client's address: its IP, `unix:` for a Unix socket peer (nginx's `$remote_addr`
/// for one), `-` when unknown.
fn push_client(line: &mut Vec<u8>, r: &Record) {
    match r.client.map(|c| c.ip()) {
        Some(Some(ip)) => {
            let _ = write!(line, "{ip}");
        }
        Some(None) => line.extend_from_slice(b"unix:"),
        None => line.push(b'-'),
    }
}

fn push_upstream_time(line: &mut Vec<u8>, r: &Record) {
    let _ = if r.upstream_addr.is_empty() {
        write!(line, "-")
    } else {
        write!(line, "{:.3}", r.upstream_time)
    };
}

/// One JSON object: every field named, strings escaped, absent ones `null`.
fn json_line(line: &mut Vec<u8>, r: &Record, now: u64) {
    let (method, rest) = r
        .request_line
        .split_once(' ')
        .unwrap_or((&r.request_line, ""));
    let (uri, protocol) = rest.rsplit_once(' ').unwrap_or((rest, ""));
    let client = r.client.and_then(|c| c.ip()).map(|ip| ip.to_string());
    let client = match (r.client, &client) {
        (Some(_), Some(ip)) => Some(ip.as_str()),
        (Some(_), None) => Some("unix:"),
        (None, _) => None,
    };
    let mut url = Vec::new();
    if !r.upstream_scheme.is_empty() {
        r.upstream_url(&mut url);
    }
    let url = String::from_utf8_lossy(&url);
    let opt = |s: &str| (!s.is_empty()).then_some(s.to_owned());
    let fields: [(&str, Json); 20] = [
        ("time", Json::Str(Some(rfc3339(now)))),
        ("remote_addr", Json::Str(client.map(str::to_owned))),
        ("host", Json::Str(opt(&r.host))),
        ("request", Json::Str(opt(&r.request_line))),
        ("method", Json::Str(opt(method))),
        ("uri", Json::Str(opt(uri))),
        ("protocol", Json::Str(opt(protocol))),
        ("status", Json::Num(u64::from(r.status))),
        ("body_bytes_sent", Json::Num(r.body_bytes_sent)),
        ("bytes_sent", Json::Num(r.bytes_sent)),
        ("request_time", Json::Secs(r.request_time)),
        ("referer", Json::Str(opt(&r.referer))),
        ("user_agent", Json::Str(opt(&r.user_agent))),
        ("upstream_addr", Json::Str(opt(&r.upstream_addr))),
        ("upstream_status", Json::Str(opt(&r.upstream_status))),
        (
            "upstream_response_time",
            match r.upstream_addr.is_empty() {
                true => Json::Str(None),
                false => Json::Secs(r.upstream_time),
            },
        ),
        ("upstream_url", Json::Str(opt(&url))),
        ("request_id", Json::Str(opt(&r.request_id))),
        (
            "tls_version",
            Json::Str(r.tls.as_ref().map(|t| t.version.to_string())),
        ),
        (
            "sni",
            Json::Str(
                r.tls
                    .as_ref()
                    .and_then(|t| t.sni.as_deref().map(str::to_owned)),
            ),
        ),
    ];
    line.push(b'{');
    for (i, (name, value)) in fields.iter().enumerate() {
        if i > 0 {
            line.push(b',');
        }
        push_json_str(line, name);
        line.push(b':');
        match value {
            Json::Str(None) => line.extend_from_slice(b"null"),
            Json::Str(Some(s)) => push_json_str(line, s),
            Json::Num(n) => {
                let _ = write!(line, "{n}");
            }
            Json::Secs(t) => {
                let _ = write!(line, "{t:.3}");
            }
        }
    }
    line.push(b'}');
}

/// A JSON value of a log line.
enum Json {
    Str(Option<String>),
    Num(u64),
    Secs(f64),
}

/// `s` as a JSON string: `"` and `\\` escaped, control bytes as `\\u00XX`.
fn push_json_str(out: &mut Vec<u8>, s: &str) {
    out.push(b'"');
    for c in s.chars() {
        match c {
            '"' => out.extend_from_slice(b"\\\""),
            '\\' => out.extend_from_slice(b"\\\\"),
            c if (c as u32) < 0x20 || c == '\u{7f}' => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => {
                let mut buf = [0u8; 4];
                out.extend_from_slice(c.encode_utf8(&mut buf).as_bytes());
            }
        }
    }
    out.push(b'"');
}

/// `2026-11-22T05:23:58Z` for seconds since the epoch.
fn rfc3339(secs: u64) -> String {
    let (y, mo, d) = civil(secs / 86_400);
    let rem = secs % 86_400;
    format!(
        "{y:04}-{mo:02}-{d:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

/// (year, month, day) of a day count since the epoch (Howard Hinnant's civil-from-days).
fn civil(days: u64) -> (i64, u32, u32) {
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (yoe + era * 400 + i64::from(month <= 2), month, day)
}

/// `[22/Nov/2026:05:23:58 +0000]` for seconds since the epoch (UTC).
pub fn clf_time(secs: u64) -> String {
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let (year, month, day) = civil(secs / 86_400);
    let rem = secs % 86_400;
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
        assert_eq!(rfc3339(1_709_208_000), "2024-02-29T12:00:00Z");
    }

    #[test]
    fn json_strings_are_escaped() {
        let mut out = Vec::new();
        push_json_str(&mut out, "a\"b\\c\u{1}é");
        assert_eq!(String::from_utf8(out).unwrap(), "\"a\\\"b\\\\c\\u0001é\"");
    }
}
