//! Question: what does strait pay, per request, to parse and validate an HTTP/1.1 head
//! on the worker (httparse in place over the connection buffer, then framing and
//! routing facts), and per response to parse and check the upstream's head?
//!
//! Inputs: a curl-like request head (`GET /v1/anything`, Host, User-Agent, Accept; 3
//! headers, 88 bytes), a browser-like request head (15 headers, 770 bytes, cookies and
//! client hints), and a typical upstream response head (`200 OK`, 6 headers with
//! Content-Length, 180 bytes). Each iteration parses into fresh header storage
//! (`header_buf`) and analyses the result (`analyze_request` / `analyze_response`), as
//! `http1/prepare.rs` does per request; the `_parse_only` cases stop after `parse_request`, so
//! the difference is the cost of the framing and routing analysis.
//! Precedent: sozu's `lib/benches` parse benchmarks (one head per case, ns/op).

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use strait::http::head::{
    analyze_request, analyze_response, header_buf, parse_request, parse_response,
};

const CURL: &[u8] = b"GET /v1/anything HTTP/1.1\r\n\
Host: sd.httpbin.org\r\n\
User-Agent: curl/8.5.0\r\n\
Accept: */*\r\n\
\r\n";

const BROWSER: &[u8] = b"GET /v1/anything/assets/app.js?v=3f2a9c HTTP/1.1\r\n\
Host: sd.httpbin.org\r\n\
Connection: keep-alive\r\n\
sec-ch-ua: \"Chromium\";v=\"124\", \"Google Chrome\";v=\"124\", \"Not-A.Brand\";v=\"99\"\r\n\
sec-ch-ua-mobile: ?0\r\n\
sec-ch-ua-platform: \"Linux\"\r\n\
Upgrade-Insecure-Requests: 1\r\n\
User-Agent: Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/124.0.0.0 Safari/537.36\r\n\
Accept: text/html,application/xhtml+xml,application/xml;q=0.9,image/avif,image/webp,*/*;q=0.8\r\n\
Sec-Fetch-Site: same-origin\r\n\
Sec-Fetch-Mode: navigate\r\n\
Sec-Fetch-Dest: document\r\n\
Referer: https://sd.httpbin.org/v1/anything/index.html\r\n\
Accept-Encoding: gzip, deflate, br, zstd\r\n\
Accept-Language: en-GB,en-US;q=0.9,en;q=0.8\r\n\
Cookie: session=7c3b1f0e9a8d4c2b; theme=dark; _ga=GA1.1.1234567890.1700000000\r\n\
\r\n";

const RESPONSE: &[u8] = b"HTTP/1.1 200 OK\r\n\
Server: nginx/1.22.1\r\n\
Date: Mon, 06 May 2024 10:00:00 GMT\r\n\
Content-Type: application/json\r\n\
Content-Length: 312\r\n\
Connection: keep-alive\r\n\
Cache-Control: no-cache\r\n\
\r\n";

fn request(buf: &[u8]) -> usize {
    let mut headers = header_buf();
    let req = parse_request(buf, &mut headers)
        .expect("valid head")
        .expect("complete head");
    let info = analyze_request(&req).expect("valid request");
    req.len + info.path.len()
}

fn request_parse_only(buf: &[u8]) -> usize {
    let mut headers = header_buf();
    let req = parse_request(buf, &mut headers)
        .expect("valid head")
        .expect("complete head");
    req.len + req.headers.len()
}

fn response(buf: &[u8]) -> usize {
    let mut headers = header_buf();
    let resp = parse_response(buf, &mut headers)
        .expect("valid head")
        .expect("complete head");
    let framing = analyze_response(&resp).expect("valid response");
    resp.len + usize::from(framing.close)
}

fn bench(c: &mut Criterion) {
    let mut g = c.benchmark_group("http_parse");
    for (name, head) in [("request_curl_3h", CURL), ("request_browser_15h", BROWSER)] {
        g.throughput(Throughput::Bytes(head.len() as u64));
        g.bench_function(name, |b| b.iter(|| request(black_box(head))));
        g.bench_function(format!("{name}_parse_only"), |b| {
            b.iter(|| request_parse_only(black_box(head)))
        });
    }
    g.throughput(Throughput::Bytes(RESPONSE.len() as u64));
    g.bench_function("response_6h", |b| b.iter(|| response(black_box(RESPONSE))));
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
