//! The `/anything` document, as httpbin writes it: the request's args, data, json,
//! headers, method, origin and url, plus the backend that answered and the body's length.
//!
//! Runs on: an echo connection thread. Pure.

use serde_json::{Map, Value};

use super::conn::{Captured, Request};

/// The `/anything` answer to `req`. `origin`: the client's IP (`unix:` on a Unix socket).
pub(super) fn anything_json(
    req: &Request,
    host: Option<&str>,
    origin: &str,
    backend: &str,
    body: &Captured,
) -> Value {
    let mut headers = Map::new();
    for (name, value) in &req.headers {
        let value = String::from_utf8_lossy(value).into_owned();
        let same = headers
            .keys()
            .find(|k| k.eq_ignore_ascii_case(name))
            .cloned();
        match same.and_then(|k| headers.get_mut(&k)) {
            Some(Value::String(joined)) => {
                joined.push_str(", ");
                joined.push_str(&value);
            }
            _ => {
                headers.insert(name.clone(), Value::String(value));
            }
        }
    }
    let (_, query) = req.path_and_query();
    let url = if req.target.starts_with('/') {
        format!("http://{}{}", host.unwrap_or(backend), req.target)
    } else {
        req.target.clone() // absolute-form (or `*`)
    };
    let data = body.data.as_deref().unwrap_or_default();
    let json = if data.is_empty() {
        Value::Null
    } else {
        serde_json::from_slice(data).unwrap_or(Value::Null)
    };
    let mut out = Map::new();
    out.insert("args".into(), Value::Object(parse_args(query)));
    out.insert(
        "data".into(),
        String::from_utf8_lossy(data).into_owned().into(),
    );
    out.insert("json".into(), json);
    out.insert("headers".into(), Value::Object(headers));
    out.insert("method".into(), req.method.clone().into());
    out.insert("origin".into(), origin.into());
    out.insert("url".into(), url.into());
    out.insert("backend".into(), backend.into());
    out.insert("body_length".into(), body.length.into());
    Value::Object(out)
}

/// Query string → httpbin-style args: a string per name, a list when a name repeats.
pub(super) fn parse_args(query: &str) -> Map<String, Value> {
    let mut args = Map::new();
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
        let value = Value::String(percent_decode(value));
        match args.get_mut(&percent_decode(name)) {
            Some(Value::Array(items)) => items.push(value),
            Some(first) => *first = Value::Array(vec![first.take(), value]),
            None => {
                args.insert(percent_decode(name), value);
            }
        }
    }
    args
}

/// `application/x-www-form-urlencoded` decoding: `+` is a space, bad `%` escapes stay as is.
fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = |at: usize| bytes.get(at).and_then(|&b| (b as char).to_digit(16));
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' => match (hex(i + 1), hex(i + 2)) {
                (Some(hi), Some(lo)) => {
                    out.push((hi * 16 + lo) as u8);
                    i += 2;
                }
                _ => out.push(b'%'),
            },
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}
