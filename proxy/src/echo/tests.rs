//! Tests of the echo backend, with real sockets on 127.0.0.1.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::thread;
use std::time::{Duration, Instant};

use serde_json::Value;

use super::conn::READ_BUF;
use super::*;

const DEADLINE: Duration = Duration::from_secs(5);

fn server() -> EchoServer {
    EchoServer::start("127.0.0.1:0".parse().unwrap()).unwrap()
}

struct Client {
    reader: BufReader<TcpStream>,
}

#[derive(Debug)]
struct Response {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
    /// Sizes of the chunks, when the body was chunked.
    chunks: Option<Vec<usize>>,
}

impl Response {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap()
    }
}

impl Client {
    fn connect(server: &EchoServer) -> Client {
        let stream = TcpStream::connect_timeout(&server.addr(), DEADLINE).unwrap();
        stream.set_read_timeout(Some(DEADLINE)).unwrap();
        stream.set_write_timeout(Some(DEADLINE)).unwrap();
        Client {
            reader: BufReader::new(stream),
        }
    }

    fn send(&mut self, bytes: &[u8]) {
        self.reader.get_mut().write_all(bytes).unwrap();
    }

    fn line(&mut self) -> String {
        let mut line = String::new();
        self.reader.read_line(&mut line).unwrap();
        assert!(line.ends_with("\r\n"), "line not CRLF-terminated: {line:?}");
        line.truncate(line.len() - 2);
        line
    }

    /// Reads one response; `head` says it answers a HEAD request.
    fn response(&mut self, head: bool) -> Response {
        let mut raw = Vec::new();
        loop {
            let line = self.line();
            let done = line.is_empty();
            raw.extend_from_slice(line.as_bytes());
            raw.extend_from_slice(b"\r\n");
            if done && !raw.starts_with(b"\r\n") {
                break;
            }
        }
        let mut headers = [httparse::EMPTY_HEADER; 64];
        let mut parsed = httparse::Response::new(&mut headers);
        assert!(parsed.parse(&raw).unwrap().is_complete());
        let mut resp = Response {
            status: parsed.code.unwrap(),
            headers: parsed
                .headers
                .iter()
                .map(|h| {
                    (
                        h.name.to_owned(),
                        String::from_utf8(h.value.to_vec()).unwrap(),
                    )
                })
                .collect(),
            body: Vec::new(),
            chunks: None,
        };
        if head || resp.status == 204 || resp.status == 304 || resp.status < 200 {
            return resp;
        }
        if resp.header("transfer-encoding") == Some("chunked") {
            let mut sizes = Vec::new();
            loop {
                let size = usize::from_str_radix(&self.line(), 16).unwrap();
                if size == 0 {
                    while !self.line().is_empty() {}
                    break;
                }
                sizes.push(size);
                let at = resp.body.len();
                resp.body.resize(at + size, 0);
                self.reader.read_exact(&mut resp.body[at..]).unwrap();
                assert_eq!(self.line(), "", "chunk data not followed by CRLF");
            }
            resp.chunks = Some(sizes);
        } else if let Some(len) = resp.header("content-length") {
            resp.body.resize(len.parse().unwrap(), 0);
            self.reader.read_exact(&mut resp.body).unwrap();
        } else {
            self.reader.read_to_end(&mut resp.body).unwrap();
        }
        resp
    }

    fn request(&mut self, raw: &str) -> Response {
        self.send(raw.as_bytes());
        self.response(raw.starts_with("HEAD "))
    }

    /// True if the server closed the connection (EOF before the deadline).
    fn closed(&mut self) -> bool {
        let mut rest = Vec::new();
        matches!(self.reader.read_to_end(&mut rest), Ok(0))
    }
}

fn get(path: &str) -> String {
    format!("GET {path} HTTP/1.1\r\nHost: example.test\r\n\r\n")
}

#[test]
fn anything_reports_method_url_args_headers_origin_and_backend() {
    let server = server();
    let mut client = Client::connect(&server);
    let resp = client.request(
        "GET /anything/x?a=1&b=two+words&b=3&c=%2Fslash HTTP/1.1\r\nHost: example.test\r\n\
         X-Custom: hello\r\nx-custom: again\r\n\r\n",
    );
    assert_eq!(resp.status, 200);
    assert_eq!(resp.header("content-type"), Some("application/json"));
    let backend = server.addr().to_string();
    assert_eq!(resp.header("x-backend"), Some(backend.as_str()));
    let json = resp.json();
    assert_eq!(json["method"], "GET");
    assert_eq!(
        json["url"],
        "http://example.test/anything/x?a=1&b=two+words&b=3&c=%2Fslash"
    );
    assert_eq!(json["args"]["a"], "1");
    assert_eq!(json["args"]["b"], serde_json::json!(["two words", "3"]));
    assert_eq!(json["args"]["c"], "/slash");
    assert_eq!(json["headers"]["Host"], "example.test");
    assert_eq!(json["headers"]["X-Custom"], "hello, again");
    assert_eq!(json["origin"], "127.0.0.1");
    assert_eq!(json["backend"], backend.as_str());
    assert_eq!(json["data"], "");
    assert_eq!(json["body_length"], 0);
}

#[test]
fn keep_alive_serves_two_requests_on_one_connection() {
    let server = server();
    let mut client = Client::connect(&server);
    for path in ["/one", "/two"] {
        let resp = client.request(&get(path));
        assert_eq!(resp.status, 200);
        assert_eq!(resp.header("connection"), None);
        assert_eq!(resp.json()["url"], format!("http://example.test{path}"));
    }
    assert_eq!(server.connections_accepted(), 1);
    assert_eq!(server.requests_served(), 2);
}

#[test]
fn pipelined_requests_are_answered_in_order() {
    let server = server();
    let mut client = Client::connect(&server);
    client.send(format!("{}{}", get("/first"), get("/second")).as_bytes());
    assert_eq!(
        client.response(false).json()["url"],
        "http://example.test/first"
    );
    assert_eq!(
        client.response(false).json()["url"],
        "http://example.test/second"
    );
}

#[test]
fn connection_close_is_honoured() {
    let server = server();
    let mut client = Client::connect(&server);
    let resp = client.request("GET / HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n");
    assert_eq!(resp.status, 200);
    assert_eq!(resp.header("connection"), Some("close"));
    assert!(client.closed());
}

#[test]
fn http_1_0_closes_unless_keep_alive_is_asked_for() {
    let server = server();
    let mut client = Client::connect(&server);
    let resp = client.request("GET /a HTTP/1.0\r\nConnection: keep-alive\r\n\r\n");
    assert_eq!(resp.header("connection"), Some("keep-alive"));
    let url = format!("http://{}/a", server.addr());
    assert_eq!(
        resp.json()["url"],
        url.as_str(),
        "no Host: url uses the backend address"
    );
    let resp = client.request("GET /stream-bytes/100 HTTP/1.0\r\nConnection: keep-alive\r\n\r\n");
    assert_eq!(
        resp.header("transfer-encoding"),
        None,
        "no chunking for HTTP/1.0"
    );
    assert_eq!(resp.header("connection"), Some("close"));
    assert!(pattern_matches(0, &resp.body) && resp.body.len() == 100);
    assert_eq!(server.connections_accepted(), 1);

    let mut client = Client::connect(&server);
    let resp = client.request("GET / HTTP/1.0\r\n\r\n");
    assert_eq!(resp.header("connection"), Some("close"));
    assert!(client.closed());
}

#[test]
fn chunked_post_body_with_extensions_and_trailers_is_echoed_in_data() {
    let server = server();
    let mut client = Client::connect(&server);
    let resp = client.request(
        "POST /post HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n\
         5;ext=1\r\nhello\r\n7\r\n, world\r\n0\r\nX-Trailer: t\r\n\r\n",
    );
    let json = resp.json();
    assert_eq!(json["method"], "POST");
    assert_eq!(json["data"], "hello, world");
    assert_eq!(json["body_length"], 12);
    // The connection is still in sync after the trailers.
    assert_eq!(client.request(&get("/next")).status, 200);
    assert_eq!(server.connections_accepted(), 1);
}

#[test]
fn content_length_json_body_is_parsed() {
    let server = server();
    let mut client = Client::connect(&server);
    let body = r#"{"k":[1,2]}"#;
    let resp = client.request(&format!(
        "PUT /x HTTP/1.1\r\nHost: h\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    ));
    let json = resp.json();
    assert_eq!(json["data"], body);
    assert_eq!(json["json"], serde_json::json!({"k": [1, 2]}));
}

#[test]
fn large_body_is_counted_but_left_out_of_data() {
    let server = server();
    let mut client = Client::connect(&server);
    let len = 1024 * 1024 + 3;
    let mut body = vec![0u8; len];
    pattern_bytes(0, &mut body);
    let writer = client.reader.get_ref().try_clone().unwrap();
    let upload = thread::spawn(move || {
        let mut writer = writer;
        writer
            .write_all(
                format!("POST / HTTP/1.1\r\nHost: h\r\nContent-Length: {len}\r\n\r\n").as_bytes(),
            )
            .unwrap();
        writer.write_all(&body).unwrap();
    });
    let json = client.response(false).json();
    upload.join().unwrap();
    assert_eq!(json["data"], "");
    assert_eq!(json["body_length"], len as u64);
}

#[test]
fn expect_100_continue_gets_an_interim_response() {
    let server = server();
    let mut client = Client::connect(&server);
    client.send(b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 3\r\nExpect: 100-continue\r\n\r\n");
    assert_eq!(client.line(), "HTTP/1.1 100 Continue");
    assert_eq!(client.line(), "");
    client.send(b"abc");
    assert_eq!(client.response(false).json()["data"], "abc");
}

#[test]
fn bytes_body_matches_the_pattern() {
    let server = server();
    let mut client = Client::connect(&server);
    let n = 200_000;
    let resp = client.request(&get(&format!("/bytes/{n}")));
    assert_eq!(resp.status, 200);
    assert_eq!(resp.header("content-length"), Some("200000"));
    let mut want = vec![0u8; n];
    pattern_bytes(0, &mut want);
    assert!(resp.body == want);
    assert_eq!(client.request(&get("/bytes/0")).body.len(), 0);
}

#[test]
fn stream_bytes_uses_valid_chunked_framing() {
    let server = server();
    let mut client = Client::connect(&server);
    let resp = client.request(&get("/stream-bytes/40000"));
    assert_eq!(resp.header("content-length"), None);
    assert_eq!(resp.chunks, Some(vec![16384, 16384, 7232]));
    assert!(resp.body.len() == 40000 && pattern_matches(0, &resp.body));
    let resp = client.request(&get("/stream-bytes/10?chunk_size=3"));
    assert_eq!(resp.chunks, Some(vec![3, 3, 3, 1]));
    assert!(pattern_matches(0, &resp.body));
    let resp = client.request(&get("/stream-bytes/0"));
    assert_eq!(resp.chunks, Some(vec![]));
    assert_eq!(server.connections_accepted(), 1);
}

#[test]
fn close_delimited_body_ends_at_the_close() {
    let server = server();
    let mut client = Client::connect(&server);
    let resp = client.request(&get("/close-delimited/100000"));
    assert_eq!(resp.header("content-length"), None);
    assert_eq!(resp.header("transfer-encoding"), None);
    assert_eq!(resp.header("connection"), Some("close"));
    assert!(resp.body.len() == 100_000 && pattern_matches(0, &resp.body));
}

#[test]
fn echo_streams_a_large_chunked_upload_back() {
    let server = server();
    let mut client = Client::connect(&server);
    let len = 3 * 1024 * 1024 + 17;
    let writer = client.reader.get_ref().try_clone().unwrap();
    let upload = thread::spawn(move || {
        let mut writer = writer;
        writer
            .write_all(b"POST /echo HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n")
            .unwrap();
        let mut offset = 0;
        while offset < len {
            let mut piece = vec![0u8; (len - offset).min(100_000)];
            pattern_bytes(offset as u64, &mut piece);
            writer
                .write_all(format!("{:x}\r\n", piece.len()).as_bytes())
                .unwrap();
            writer.write_all(&piece).unwrap();
            writer.write_all(b"\r\n").unwrap();
            offset += piece.len();
        }
        writer.write_all(b"0\r\n\r\n").unwrap();
    });
    let resp = client.response(false);
    upload.join().unwrap();
    assert_eq!(resp.status, 200);
    assert!(resp.chunks.is_some());
    assert!(resp.body.len() == len && pattern_matches(0, &resp.body));
    let resp = client.request("POST /echo HTTP/1.1\r\nHost: h\r\nContent-Length: 5\r\n\r\nhello");
    assert_eq!(resp.body, b"hello");
    assert_eq!(server.connections_accepted(), 1);
}

#[test]
fn head_gets_get_headers_and_no_body() {
    let server = server();
    let mut client = Client::connect(&server);
    let resp = client.request("HEAD /bytes/1000 HTTP/1.1\r\nHost: h\r\n\r\n");
    assert_eq!(resp.header("content-length"), Some("1000"));
    let resp = client.request("HEAD /anything HTTP/1.1\r\nHost: h\r\n\r\n");
    assert_eq!(resp.status, 200);
    assert!(
        resp.header("content-length")
            .unwrap()
            .parse::<u64>()
            .unwrap()
            > 0
    );
    // Had a body been sent, this would read it as the next response's status line.
    let resp = client.request(&get("/after-head"));
    assert_eq!(resp.json()["url"], "http://example.test/after-head");
}

#[test]
fn status_204_and_304_have_no_body_and_others_an_empty_one() {
    let server = server();
    let mut client = Client::connect(&server);
    for code in [204, 304] {
        let resp = client.request(&get(&format!("/status/{code}")));
        assert_eq!(resp.status, code);
        assert_eq!(resp.header("content-length"), None);
    }
    let resp = client.request(&get("/status/503"));
    assert_eq!(resp.status, 503);
    assert_eq!(resp.header("content-length"), Some("0"));
    assert_eq!(client.request(&get("/status/99")).status, 400);
    assert_eq!(client.request(&get("/bytes/-1")).status, 400);
    // Still in sync: no stray body bytes after the 204/304.
    assert_eq!(client.request(&get("/x")).status, 200);
    assert_eq!(server.connections_accepted(), 1);
}

#[test]
fn malformed_requests_get_400_and_a_close() {
    let server = server();
    for raw in [
        "GARBAGE\r\n\r\n",
        "GET / HTTP/1.1\r\nBad Header\r\n\r\n",
        "POST / HTTP/1.1\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n",
        "POST / HTTP/1.1\r\nContent-Length: +5\r\n\r\nhello",
        "POST / HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n",
        "POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
        "POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabcX\r\n",
        "GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n",
    ] {
        let mut client = Client::connect(&server);
        let resp = client.request(raw);
        assert_eq!(resp.status, 400, "{raw:?}");
        assert_eq!(resp.header("connection"), Some("close"), "{raw:?}");
        assert!(client.closed(), "{raw:?}");
    }
    let mut client = Client::connect(&server);
    let resp = client.request("POST / HTTP/1.1\r\nTransfer-Encoding: gzip, chunked\r\n\r\n");
    assert_eq!(resp.status, 501);
}

#[test]
fn oversized_head_gets_431() {
    let server = server();
    let mut client = Client::connect(&server);
    let big = "a".repeat(READ_BUF);
    let resp = client.request(&format!("GET / HTTP/1.1\r\nX-Big: {big}\r\n\r\n"));
    assert_eq!(resp.status, 431);
}

#[test]
fn delay_waits_before_answering() {
    let server = server();
    let mut client = Client::connect(&server);
    let started = Instant::now();
    let resp = client.request(&get("/delay/150"));
    assert!(started.elapsed() >= Duration::from_millis(150));
    assert_eq!(resp.json()["url"], "http://example.test/delay/150");
}

#[test]
fn a_hundred_concurrent_keep_alive_connections_are_served() {
    let server = server();
    let clients: Vec<_> = (0..100)
        .map(|_| {
            let mut client = Client::connect(&server);
            thread::spawn(move || {
                for i in 0..3 {
                    let resp = client.request(&get(&format!("/bytes/{}", 1000 * i)));
                    assert!(resp.body.len() == 1000 * i && pattern_matches(0, &resp.body));
                }
            })
        })
        .collect();
    for client in clients {
        client.join().unwrap();
    }
    assert_eq!(server.connections_accepted(), 100);
    assert_eq!(server.requests_served(), 300);
}

#[test]
fn stop_frees_the_port_and_closes_idle_connections() {
    let server = server();
    let addr = server.addr();
    let mut client = Client::connect(&server);
    assert_eq!(client.request(&get("/")).status, 200);
    server.stop();
    assert!(client.closed(), "idle keep-alive connection is shut down");
    assert!(TcpStream::connect_timeout(&addr, DEADLINE).is_err());
    let again = EchoServer::start(addr).unwrap();
    assert_eq!(again.addr(), addr);
    assert_eq!(Client::connect(&again).request(&get("/")).status, 200);
}

#[test]
fn pattern_is_position_based_and_pinned() {
    let mut whole = vec![0u8; 1024];
    pattern_bytes(0, &mut whole);
    for offset in [1usize, 7, 8, 13, 500, 993] {
        for len in [0usize, 1, 5, 8, 9, 7] {
            let mut part = vec![0u8; len];
            pattern_bytes(offset as u64, &mut part);
            assert_eq!(
                part,
                whole[offset..offset + len],
                "offset {offset} len {len}"
            );
        }
    }
    assert!(pattern_matches(3, &whole[3..]));
    assert!(!pattern_matches(4, &whole[3..]));
    // The first SplitMix64 output for seed 42, little-endian.
    assert_eq!(
        u64::from_le_bytes(whole[..8].try_into().unwrap()),
        0xBDD7_3226_2FEB_6E95
    );
}
