//! The head tests: parsing, framing rules, the heads written, path normalisation.

use super::*;
use crate::{BodyKind, HeadError};

fn parse(buf: &[u8]) -> Result<Option<(usize, BodyKind, bool)>, HeadError> {
    let mut h = header_buf();
    let Some(req) = parse_request(buf, &mut h)? else {
        return Ok(None);
    };
    let info = analyze_request(&req)?;
    Ok(Some((req.len, info.framing.body, info.framing.close)))
}

#[test]
fn a_head_split_at_every_byte_parses_the_same() {
    let raw =
        b"POST /v1/anything?x=1 HTTP/1.1\r\nHost: sd.httpbin.org\r\nContent-Length: 5\r\n\r\nhello";
    let full = parse(raw).unwrap().unwrap();
    assert_eq!(full, (raw.len() - 5, BodyKind::Length(5), false));
    for cut in 0..raw.len() - 5 {
        assert!(parse(&raw[..cut]).unwrap().is_none(), "cut {cut}");
    }
}

#[test]
fn framing_rules() {
    let p = |s: &str| parse(s.as_bytes()).map(|o| o.map(|(_, b, c)| (b, c)));
    assert_eq!(
        p("GET / HTTP/1.0\r\n\r\n").unwrap(),
        Some((BodyKind::None, true))
    );
    assert_eq!(
        p("GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n").unwrap(),
        Some((BodyKind::None, false))
    );
    assert_eq!(
        p("POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n").unwrap(),
        Some((BodyKind::Chunked, false))
    );
    assert_eq!(
        p("GET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n").unwrap(),
        Some((BodyKind::None, true))
    );
    for (bad, status) in [
        ("GET / HTTP/1.1\r\n\r\n", 400),
        ("GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n", 400),
        (
            "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n",
            400,
        ),
        (
            "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n",
            400,
        ),
        (
            "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: -1\r\n\r\n",
            400,
        ),
        (
            "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip\r\n\r\n",
            400,
        ),
        (
            "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked, gzip\r\n\r\n",
            400,
        ),
        ("GET / HTTP/2.0\r\nHost: a\r\n\r\n", 505),
        ("GET / HTTP/1.1\r\nHost : a\r\n\r\n", 400),
        ("GET / HTTP/1.1\r\nHost: a\r\n folded\r\n\r\n", 400),
        ("GET x HTTP/1.1\r\nHost: a\r\n\r\n", 400),
        ("GET / HTTP/1.1\nHost: a\r\n\r\n", 400),
        ("GET / HTTP/1.1\r\nHost: a\nX: b\r\n\r\n", 400),
        ("GET / HTTP/1.1\r\nHost: a\n\n", 400),
        ("GET http:///a HTTP/1.1\r\nHost: a\r\n\r\n", 400),
        (
            "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 1, 1\r\n\r\n",
            400,
        ),
    ] {
        assert_eq!(p(bad).map(|_| ()).unwrap_err().status, status, "{bad:?}");
    }
}

#[test]
fn identical_content_lengths_are_collapsed() {
    let raw = b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 2\r\ncontent-length: 2\r\n\r\nok";
    assert_eq!(parse(raw).unwrap().unwrap().1, BodyKind::Length(2));
}

#[test]
fn a_bare_lf_is_refused_before_the_head_is_complete() {
    let mut h = header_buf();
    let e = parse_request(b"GET / HTTP/1.1\nHost", &mut h).unwrap_err();
    assert_eq!(e.status, 400);
}

#[test]
fn request_line_length_is_checked_with_or_without_its_end() {
    let line = |n: usize| format!("GET /{} HTTP/1.1", "a".repeat(n - 14));
    assert_eq!(line(40).len(), 40);
    let ok = format!("\r\n{}\r\nHost: a\r\n\r\n", line(40));
    assert_eq!(check_request_line(ok.as_bytes(), 40), Ok(()));
    let long = format!("{}\r\n", line(41));
    assert_eq!(
        check_request_line(long.as_bytes(), 40).unwrap_err().status,
        414
    );
    // Unfinished: refused once it is longer than the limit, not before.
    assert_eq!(check_request_line(&long.as_bytes()[..40], 40), Ok(()));
    assert_eq!(
        check_request_line(&long.as_bytes()[..41], 40)
            .unwrap_err()
            .status,
        414
    );
    assert_eq!(
        check_request_line(&long.as_bytes()[..42], 40)
            .unwrap_err()
            .status,
        414
    );
}

#[test]
fn upstream_head_drops_hop_by_hop_and_sets_forwarding_headers() {
    let raw = b"GET http://sd.httpbin.org/v1/a HTTP/1.1\r\nHost: ignored\r\nConnection: close, X-Secret\r\nX-Secret: 1\r\nKeep-Alive: 5\r\nX-Forwarded-For: 10.0.0.1\r\nAccept: */*\r\n\r\n";
    let mut h = header_buf();
    let req = parse_request(raw, &mut h).unwrap().unwrap();
    let info = analyze_request(&req).unwrap();
    assert_eq!(info.host, "sd.httpbin.org");
    assert_eq!(info.path, "/v1/a");
    let mut out = Vec::new();
    write_upstream_head(
        &mut out,
        &req,
        &info,
        "/a",
        Some("127.0.0.9".parse().unwrap()),
        HostHeader::Pass,
    );
    finish_upstream_head(&mut out, false);
    let s = String::from_utf8(out).unwrap();
    assert_eq!(
        s,
        "GET /a HTTP/1.1\r\nHost: sd.httpbin.org\r\nAccept: */*\r\nX-Forwarded-For: 10.0.0.1, 127.0.0.9\r\nX-Forwarded-Proto: http\r\nX-Forwarded-Host: sd.httpbin.org\r\n\r\n"
    );
}

#[test]
fn a_client_without_an_ip_adds_no_forwarded_for_hop() {
    let head = |raw: &[u8]| {
        let mut h = header_buf();
        let req = parse_request(raw, &mut h).unwrap().unwrap();
        let info = analyze_request(&req).unwrap();
        let mut out = Vec::new();
        write_upstream_head(&mut out, &req, &info, "/", None, HostHeader::Pass);
        finish_upstream_head(&mut out, false);
        String::from_utf8(out).unwrap()
    };
    assert_eq!(
        head(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n"),
        "GET / HTTP/1.1\r\nHost: a\r\nX-Forwarded-Proto: http\r\nX-Forwarded-Host: a\r\n\r\n"
    );
    let two = head(b"GET / HTTP/1.1\r\nHost: a\r\nX-Forwarded-For: 10.0.0.1\r\nX-Forwarded-For: 10.0.0.2\r\n\r\n");
    assert!(
        two.contains("\r\nX-Forwarded-For: 10.0.0.1, 10.0.0.2\r\n"),
        "{two}"
    );
}

#[test]
fn an_upgrade_request_keeps_upgrade_and_connection_upgrade_only() {
    let head = |raw: &str| {
        let mut h = header_buf();
        let req = parse_request(raw.as_bytes(), &mut h).unwrap().unwrap();
        let info = analyze_request(&req).unwrap();
        let asked = upgrade(&req, &info).map(<[u8]>::to_vec);
        let mut out = Vec::new();
        let ip = Some("127.0.0.9".parse().unwrap());
        write_upstream_head(&mut out, &req, &info, "/", ip, HostHeader::Pass);
        finish_upstream_head(&mut out, false);
        (asked, String::from_utf8(out).unwrap())
    };
    let (asked, out) = head(
        "GET / HTTP/1.1\r\nHost: a\r\nConnection: keep-alive, Upgrade, X-Hop\r\nX-Hop: 1\r\nUpgrade: websocket\r\nSec-WebSocket-Key: k\r\n\r\n",
    );
    assert_eq!(asked.as_deref(), Some(&b"websocket"[..]));
    assert!(out.contains("\r\nUpgrade: websocket\r\n"), "{out}");
    assert!(out.ends_with("\r\nConnection: upgrade\r\n\r\n"), "{out}");
    assert!(
        out.contains("Sec-WebSocket-Key: k\r\n") && !out.contains("X-Hop"),
        "{out}"
    );
    // Not an upgrade: no `upgrade` token, HTTP/1.0, or a body.
    for raw in [
        "GET / HTTP/1.1\r\nHost: a\r\nUpgrade: websocket\r\n\r\n",
        "GET / HTTP/1.0\r\nConnection: upgrade\r\nUpgrade: websocket\r\n\r\n",
        "POST / HTTP/1.1\r\nHost: a\r\nConnection: upgrade\r\nUpgrade: h2c\r\nContent-Length: 1\r\n\r\nx",
    ] {
        let (asked, out) = head(raw);
        assert_eq!(asked, None, "{raw}");
        assert!(!out.to_ascii_lowercase().contains("upgrade"), "{out}");
    }
}

#[test]
fn a_connect_names_an_authority_and_carries_no_content() {
    let connect = |raw: &str| {
        let mut h = header_buf();
        let req = parse_request(raw.as_bytes(), &mut h).unwrap().unwrap();
        analyze_connect(&req)
            .map(str::to_owned)
            .map_err(|e| e.status)
    };
    for (raw, authority) in [
        (
            "CONNECT a.test:443 HTTP/1.1\r\nHost: a.test:443\r\n\r\n",
            "a.test:443",
        ),
        (
            "CONNECT A.test:443 HTTP/1.1\r\nHost: a.TEST:443\r\n\r\n",
            "A.test:443",
        ),
        ("CONNECT 10.0.0.1:22 HTTP/1.0\r\n\r\n", "10.0.0.1:22"),
        (
            "CONNECT [::1]:8443 HTTP/1.1\r\nHost: [::1]:8443\r\nContent-Length: 0\r\n\r\n",
            "[::1]:8443",
        ),
    ] {
        assert_eq!(connect(raw), Ok(authority.to_owned()), "{raw:?}");
    }
    for raw in [
        "CONNECT /anything HTTP/1.1\r\nHost: a.test\r\n\r\n",
        "CONNECT http://a.test:443/ HTTP/1.1\r\nHost: a.test:443\r\n\r\n",
        "CONNECT a.test HTTP/1.1\r\nHost: a.test\r\n\r\n",
        "CONNECT a.test: HTTP/1.1\r\nHost: a.test:\r\n\r\n",
        "CONNECT :443 HTTP/1.1\r\nHost: :443\r\n\r\n",
        "CONNECT a.test:0 HTTP/1.1\r\nHost: a.test:0\r\n\r\n",
        "CONNECT a.test:65536 HTTP/1.1\r\nHost: a.test:65536\r\n\r\n",
        "CONNECT a.test:+443 HTTP/1.1\r\nHost: a.test:+443\r\n\r\n",
        "CONNECT u@a.test:443 HTTP/1.1\r\nHost: u@a.test:443\r\n\r\n",
        "CONNECT a.test:443:1 HTTP/1.1\r\nHost: a.test:443:1\r\n\r\n",
        "CONNECT [a.test]:443 HTTP/1.1\r\nHost: [a.test]:443\r\n\r\n",
        "CONNECT * HTTP/1.1\r\nHost: a.test\r\n\r\n",
        // The Host names another authority, or none on HTTP/1.1.
        "CONNECT a.test:443 HTTP/1.1\r\nHost: b.test:443\r\n\r\n",
        "CONNECT a.test:443 HTTP/1.1\r\nHost: a.test\r\n\r\n",
        "CONNECT a.test:443 HTTP/1.1\r\n\r\n",
        // Content.
        "CONNECT a.test:443 HTTP/1.1\r\nHost: a.test:443\r\nContent-Length: 2\r\n\r\nhi",
        "CONNECT a.test:443 HTTP/1.1\r\nHost: a.test:443\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
    ] {
        assert_eq!(connect(raw), Err(400), "{raw:?}");
    }
}

#[test]
fn dot_segments_are_resolved_or_refused() {
    let n = |p: &str| {
        normalize_path(p)
            .map(|c| c.into_owned())
            .map_err(|e| e.status)
    };
    assert_eq!(n("/a/b"), Ok("/a/b".into()));
    assert_eq!(n("/public/../admin/users"), Ok("/admin/users".into()));
    assert_eq!(n("/a/./b/."), Ok("/a/b/".into()));
    assert_eq!(n("/a/.."), Ok("/".into()));
    assert_eq!(n("/a/.hidden"), Ok("/a/.hidden".into()));
    assert_eq!(n("/.."), Err(400));
    assert_eq!(n("/a/%2e%2E/b"), Err(400));
    assert_eq!(n("/a/%2e/b"), Err(400));
    assert_eq!(n("/a/x%2ey"), Ok("/a/x%2ey".into()));
}

#[test]
fn response_framing() {
    let f = |raw: &str| {
        let mut h = header_buf();
        let r = parse_response(raw.as_bytes(), &mut h).unwrap().unwrap();
        analyze_response(&r).map(|f| (f.body, f.close))
    };
    assert_eq!(
        f("HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\n").unwrap(),
        (BodyKind::Length(3), false)
    );
    assert_eq!(
        f("HTTP/1.1 200 OK\r\n\r\n").unwrap(),
        (BodyKind::Close, true)
    );
    assert_eq!(
        f("HTTP/1.0 200 OK\r\nContent-Length: 3\r\n\r\n").unwrap(),
        (BodyKind::Length(3), true)
    );
    assert_eq!(
        f("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n").unwrap(),
        (BodyKind::Chunked, false)
    );
    assert_eq!(
        f("HTTP/1.1 200 OK\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\n")
            .unwrap_err()
            .status,
        502
    );
    assert_eq!(
        f("HTTP/1.1 200 OK\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n")
            .unwrap_err()
            .status,
        502
    );
    for bad in [
        "HTTP/1.1 200 OK\nContent-Length: 3\r\n\r\n",
        "HTTP/1.1 099 OK\r\n\r\n",
        "HTTP/1.1 600 OK\r\n\r\n",
        "HTTP/1.1 200 OK\r\nX: a\r\n b\r\n\r\n",
        "HTTP/1.1 200 OK\r\nX : a\r\n\r\n",
    ] {
        let mut h = header_buf();
        assert!(parse_response(bad.as_bytes(), &mut h).is_err(), "{bad:?}");
    }
}
