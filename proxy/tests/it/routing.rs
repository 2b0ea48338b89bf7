//! Routing: exact and wildcard hosts, path prefixes and strip, methods, 404 and 405, the
//! route-level upstream, and a reload reaching an open keep-alive connection.

use std::io::{BufReader, Write};
use std::sync::{mpsc, Mutex};

use crate::support::{eventually, get, read_head, Harness, RawBackend, IO_TIMEOUT};

const SEED: &str = "
services:
  - name: sd-app
    hosts: [sd.httpbin.org]
    path_prefix: /v1
    upstream: httpbin
    routes:
      - name: anything
        path: /anything
        strip_prefix: true
upstreams:
  - name: httpbin
    nodes:
      - address: '{b0}'
";

#[test]
fn seed_example_strips_v1_so_the_upstream_sees_get_anything() {
    let h = Harness::start(&["127.0.0.2"], SEED);
    let resp = h.get("sd.httpbin.org", "/v1/anything?x=1");
    assert_eq!(resp.status, 200, "{}", resp.text());
    let json = resp.json();
    assert_eq!(json["method"], "GET");
    assert_eq!(json["url"], "http://sd.httpbin.org/anything?x=1");
    assert_eq!(json["args"]["x"], "1");
    assert_eq!(resp.backend(), h.backend_name(0));

    let resp = h.get("sd.httpbin.org", "/v1/anything/deeper");
    assert_eq!(resp.json()["url"], "http://sd.httpbin.org/anything/deeper");

    // Outside the route, the prefix or the host: no route.
    for (host, path) in [
        ("sd.httpbin.org", "/anything"),
        ("sd.httpbin.org", "/v1/other"),
        ("sd.httpbin.org", "/v1/anythingelse"),
        ("other.httpbin.org", "/v1/anything"),
    ] {
        assert_eq!(h.get(host, path).status, 404, "{host}{path}");
    }
    assert_eq!(h.backends[0].requests_served(), 2);
}

const HOSTS: &str = "
services:
  - name: exact
    hosts: [api.example.com]
    upstream: a
  - name: wild
    hosts: ['*.example.com']
    upstream: b
  - name: deeper-wild
    hosts: ['*.eu.example.com']
    upstream: c
upstreams:
  - {name: a, nodes: [{address: '{b0}'}]}
  - {name: b, nodes: [{address: '{b1}'}]}
  - {name: c, nodes: [{address: '{b2}'}]}
";

#[test]
fn exact_host_beats_wildcard_and_the_longest_wildcard_suffix_wins() {
    let h = Harness::start(&["127.0.1.2", "127.0.1.3", "127.0.1.4"], HOSTS);
    for (host, backend) in [
        ("api.example.com", 0),
        ("www.example.com", 1),
        ("a.b.example.com", 1),
        ("x.eu.example.com", 2),
        ("a.b.eu.example.com", 2),
    ] {
        let resp = h.get(host, "/");
        assert_eq!(resp.status, 200, "{host}");
        assert_eq!(resp.backend(), h.backend_name(backend), "{host}");
    }
    // A wildcard does not match its bare suffix, and there is no default service.
    assert_eq!(h.get("example.com", "/").status, 404);
    assert_eq!(h.get("api.example.org", "/").status, 404);
}

#[test]
fn host_matching_ignores_case_and_port_and_passes_host_unchanged() {
    let h = Harness::start(&["127.0.1.5", "127.0.1.6", "127.0.1.7"], HOSTS);
    for (host, backend) in [
        ("API.Example.COM", 0),
        ("api.example.com:8080", 0),
        ("Api.Example.Com:80", 0),
        ("WWW.EXAMPLE.COM:9000", 1),
    ] {
        let resp = h.get(host, "/x");
        assert_eq!(resp.status, 200, "{host}");
        assert_eq!(resp.backend(), h.backend_name(backend), "{host}");
        assert_eq!(
            resp.json()["headers"]["Host"],
            host,
            "Host is passed as sent"
        );
    }
}

#[test]
fn absolute_form_target_is_routed_by_its_authority() {
    let h = Harness::start(&["127.0.1.8", "127.0.1.9", "127.0.1.10"], HOSTS);
    let mut c = h.client();
    let resp =
        c.request("GET http://www.example.com/abs?q=1 HTTP/1.1\r\nHost: api.example.com\r\n\r\n");
    assert_eq!(resp.status, 200);
    assert_eq!(resp.backend(), h.backend_name(1));
    assert_eq!(resp.json()["url"], "http://www.example.com/abs?q=1");
}

#[test]
fn a_service_without_hosts_takes_every_other_host() {
    let h = Harness::start(
        &["127.0.1.11", "127.0.1.12"],
        "
services:
  - name: named
    hosts: [named.test]
    upstream: a
  - name: fallback
    upstream: b
upstreams:
  - {name: a, nodes: [{address: '{b0}'}]}
  - {name: b, nodes: [{address: '{b1}'}]}
",
    );
    assert_eq!(h.get("named.test", "/").backend(), h.backend_name(0));
    assert_eq!(h.get("anything.else", "/").backend(), h.backend_name(1));
    assert_eq!(h.get("127.0.0.1", "/").backend(), h.backend_name(1));
    // HTTP/1.0 without Host also lands on the default service.
    let resp = h.client().request("GET /no-host HTTP/1.0\r\n\r\n");
    assert_eq!(resp.status, 200);
    assert_eq!(resp.backend(), h.backend_name(1));
}

const PREFIXES: &str = "
services:
  - name: s
    hosts: [p.test]
    upstream: a
    routes:
      - {name: api, path: /api}
      - {name: api-v2, path: /api/v2, upstream: b}
      - {name: root-files, path: /static/, upstream: b}
upstreams:
  - {name: a, nodes: [{address: '{b0}'}]}
  - {name: b, nodes: [{address: '{b1}'}]}
";

#[test]
fn longest_prefix_wins_at_segment_boundaries() {
    let h = Harness::start(&["127.0.2.2", "127.0.2.3"], PREFIXES);
    for (path, want) in [
        ("/api", Some(0)),
        ("/api/", Some(0)),
        ("/api/x", Some(0)),
        ("/api?q=/api/v2", Some(0)),
        ("/api/v2", Some(1)),
        ("/api/v2/", Some(1)),
        ("/api/v2/deep/er?x=1", Some(1)),
        ("/api/v2x", Some(0)),
        ("/api/v", Some(0)),
        ("/static/a.css", Some(1)),
        ("/apix", None),
        ("/", None),
        ("/other", None),
    ] {
        let resp = h.get("p.test", path);
        match want {
            Some(i) => {
                assert_eq!(resp.status, 200, "{path}: {}", resp.text());
                assert_eq!(resp.backend(), h.backend_name(i), "{path}");
                // No strip_prefix: the path goes upstream unchanged.
                assert_eq!(resp.json()["url"], format!("http://p.test{path}"));
            }
            None => assert_eq!(resp.status, 404, "{path}"),
        }
    }
}

#[test]
fn no_route_is_a_404_whose_body_names_the_reason_and_keeps_the_connection() {
    let h = Harness::start(&["127.0.2.4", "127.0.2.12"], PREFIXES);
    let mut c = h.client();
    let resp = c.request(&get("nobody.test", "/api"));
    assert_eq!(
        (resp.minor, resp.status, resp.reason.as_str()),
        (1, 404, "Not Found")
    );
    assert!(resp.text().contains("no route"), "{:?}", resp.text());
    assert!(resp
        .header("content-type")
        .is_some_and(|t| t.starts_with("text/plain")));
    assert_eq!(
        resp.header("content-length"),
        Some(resp.body.len().to_string().as_str())
    );
    // The 404 consumed the request exactly: the connection still works.
    assert_eq!(c.request(&get("p.test", "/api")).status, 200);
    // HEAD gets the same head without the body.
    let resp = c.request("HEAD /nothing HTTP/1.1\r\nHost: p.test\r\n\r\n");
    assert_eq!(resp.status, 404);
    assert!(resp.body.is_empty());
    assert_eq!(c.request(&get("p.test", "/api")).status, 200);
}

const METHODS: &str = "
services:
  - name: s
    hosts: [m.test]
    upstream: a
    routes:
      - {name: read, path: /items, methods: [GET, HEAD]}
      - {name: write, path: /items/new, methods: [post, put]}
upstreams:
  - {name: a, nodes: [{address: '{b0}'}]}
";

#[test]
fn a_method_mismatch_is_a_405_with_allow() {
    let h = Harness::start(&["127.0.2.5"], METHODS);
    let mut c = h.client();
    let resp = c.request("DELETE /items/1 HTTP/1.1\r\nHost: m.test\r\n\r\n");
    assert_eq!(resp.status, 405, "{}", resp.text());
    assert_eq!(resp.reason, "Method Not Allowed");
    let allow: Vec<&str> = resp
        .header("allow")
        .expect("Allow header")
        .split(',')
        .map(str::trim)
        .collect();
    assert_eq!(allow, ["GET", "HEAD"]);
    assert!(!resp.body.is_empty(), "a body names the reason");
    // The connection stays usable after the 405.
    let resp = c.request("GET /items/1 HTTP/1.1\r\nHost: m.test\r\n\r\n");
    assert_eq!(resp.status, 200);
    assert_eq!(resp.json()["method"], "GET");
    // A longer route that refuses the method falls back to a shorter one allowing it.
    let resp = c.request("GET /items/new HTTP/1.1\r\nHost: m.test\r\n\r\n");
    assert_eq!(resp.status, 200);
    let resp = c.request("PUT /items/new HTTP/1.1\r\nHost: m.test\r\nContent-Length: 2\r\n\r\nhi");
    assert_eq!(resp.status, 200);
    assert_eq!(resp.json()["data"], "hi");
    // Neither route allows PATCH: both routes' methods are listed.
    let resp = c.request("PATCH /items/new HTTP/1.1\r\nHost: m.test\r\n\r\n");
    assert_eq!(resp.status, 405);
    let allow = resp.header("allow").unwrap();
    for m in ["GET", "HEAD", "POST", "PUT"] {
        assert!(allow.contains(m), "{allow}");
    }
}

#[test]
fn a_405_to_a_request_with_a_body_closes_the_connection() {
    let h = Harness::start(&["127.0.2.6"], METHODS);
    let mut c = h.client();
    let resp = c.request("POST /items HTTP/1.1\r\nHost: m.test\r\nContent-Length: 5\r\n\r\nhello");
    assert_eq!(resp.status, 405);
    // The unread body must not be parsed as the next request: either the proxy drains
    // it, or it closes.
    if resp.connection_has("close") {
        assert!(c.closed());
    } else {
        assert_eq!(c.request(&get("m.test", "/items")).status, 200);
    }
}

#[test]
fn a_route_level_upstream_overrides_the_services() {
    let h = Harness::start(
        &["127.0.2.7", "127.0.2.8"],
        "
services:
  - name: s
    hosts: [o.test]
    path_prefix: /svc
    upstream: main
    routes:
      - {name: default, path: /}
      - {name: admin, path: /admin, upstream: admin, strip_prefix: true}
upstreams:
  - {name: main, nodes: [{address: '{b0}'}]}
  - {name: admin, nodes: [{address: '{b1}'}]}
",
    );
    let resp = h.get("o.test", "/svc/page");
    assert_eq!(resp.backend(), h.backend_name(0));
    assert_eq!(resp.json()["url"], "http://o.test/svc/page");
    let resp = h.get("o.test", "/svc/admin/users");
    assert_eq!(resp.backend(), h.backend_name(1));
    assert_eq!(resp.json()["url"], "http://o.test/admin/users");
    assert_eq!(h.get("o.test", "/admin").status, 404);
}

#[test]
fn strip_prefix_of_the_whole_path_sends_slash() {
    let h = Harness::start(
        &["127.0.2.9"],
        "
services:
  - name: s
    hosts: [s.test]
    path_prefix: /v1
    upstream: a
    routes:
      - {name: all, path: /, strip_prefix: true}
upstreams:
  - {name: a, nodes: [{address: '{b0}'}]}
",
    );
    assert_eq!(h.get("s.test", "/v1").json()["url"], "http://s.test/");
    assert_eq!(
        h.get("s.test", "/v1?q=1").json()["url"],
        "http://s.test/?q=1"
    );
    assert_eq!(
        h.get("s.test", "/v1/a/b").json()["url"],
        "http://s.test/a/b"
    );
}

#[test]
fn reload_adds_a_route_while_a_keep_alive_connection_stays_open_and_is_reused() {
    let before = "
services:
  - name: s
    hosts: [r.test]
    upstream: a
    routes:
      - {name: old, path: /old}
upstreams:
  - {name: a, nodes: [{address: '{b0}'}]}
  - {name: b, nodes: [{address: '{b1}'}]}
";
    let after = "
services:
  - name: s
    hosts: [r.test]
    upstream: a
    routes:
      - {name: old, path: /old}
      - {name: new, path: /new, upstream: b}
upstreams:
  - {name: a, nodes: [{address: '{b0}'}]}
  - {name: b, nodes: [{address: '{b1}'}]}
";
    let mut h = Harness::start(&["127.0.2.10", "127.0.2.11"], before);
    let mut c = h.client();
    let local = c.local_addr();
    assert_eq!(c.request(&get("r.test", "/old")).status, 200);
    assert_eq!(c.request(&get("r.test", "/new")).status, 404);

    h.reload(after);
    let resp = eventually("the new route on the open connection", || {
        let resp = c.request(&get("r.test", "/new/x"));
        assert!(
            !resp.connection_has("close"),
            "the connection must stay open"
        );
        (resp.status == 200).then_some(resp)
    });
    assert_eq!(resp.backend(), h.backend_name(1));
    assert_eq!(c.request(&get("r.test", "/old")).status, 200);
    // The same TCP connection answered before and after the reload.
    assert_eq!(c.local_addr(), local);
    assert_eq!(h.backends[0].connections_accepted(), 1);

    // A new connection sees the new table at once.
    assert_eq!(h.get("r.test", "/new").backend(), h.backend_name(1));
}

#[test]
fn reload_removing_a_route_lets_a_request_in_flight_finish() {
    // The backend reports each request head and answers only when the test says so, so
    // the first request is certainly in flight while the reload happens.
    let (arrived_tx, arrived) = mpsc::channel::<String>();
    let (go, go_rx) = mpsc::channel::<()>();
    let arrived_tx = Mutex::new(arrived_tx);
    let go_rx = Mutex::new(go_rx);
    let backend = RawBackend::start("127.0.2.13", move |stream, _| {
        let mut reader = BufReader::new(stream.try_clone().unwrap());
        let mut stream = stream;
        while let Some(head) = read_head(&mut reader) {
            let gated = head.starts_with("GET /gated HTTP/1.1");
            let _ = arrived_tx.lock().unwrap().send(head);
            if gated {
                let _ = go_rx.lock().unwrap().recv_timeout(IO_TIMEOUT);
            }
            let _ = stream.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\ndone");
        }
    });
    let with = "
services:
  - name: s
    hosts: [f.test]
    upstream: a
    routes:
      - {name: gated, path: /gated}
      - {name: other, path: /other}
upstreams:
  - {name: a, nodes: [{address: '{b0}'}]}
";
    let without = "
services:
  - name: s
    hosts: [f.test]
    upstream: a
    routes:
      - {name: other, path: /other}
upstreams:
  - {name: a, nodes: [{address: '{b0}'}]}
";
    let mut h = Harness::with_addrs(with, &[backend.addr()]);
    let mut slow = h.client();
    slow.send(get("f.test", "/gated").as_bytes());
    let head = arrived.recv_timeout(IO_TIMEOUT).unwrap();
    assert!(head.starts_with("GET /gated "), "{head}");

    h.reload(without);
    let mut c = h.client();
    // Probes under the same route are answered at once until the route is gone.
    eventually("the route gone", || {
        (c.request(&get("f.test", "/gated/probe")).status == 404).then_some(())
    });
    go.send(()).unwrap();
    let resp = slow.response(false);
    assert_eq!(resp.status, 200, "the request in flight completes");
    assert_eq!(resp.body, b"done");
    assert_eq!(slow.request(&get("f.test", "/other")).status, 200);
}

#[test]
fn the_first_request_after_a_reload_on_an_idle_keep_alive_connection_sees_the_new_table() {
    let before = "
services:
  - name: s
    hosts: [k.test]
    upstream: a
    routes:
      - {name: old, path: /old}
upstreams:
  - {name: a, nodes: [{address: '{b0}'}]}
";
    let after = "
services:
  - name: s
    hosts: [k.test]
    upstream: a
    routes:
      - {name: old, path: /old}
      - {name: new, path: /new}
upstreams:
  - {name: a, nodes: [{address: '{b0}'}]}
";
    let mut h = Harness::start(&["127.0.2.15"], before);
    let mut idle = h.client();
    assert_eq!(idle.request(&get("k.test", "/old")).status, 200);
    // The connection is now idle, waiting for its next request.
    h.reload(after);
    // One worker: once a new connection sees the new route, the worker has swapped.
    eventually("the worker to swap in the new table", || {
        (h.get("k.test", "/new").status == 200).then_some(())
    });
    let resp = idle.request(&get("k.test", "/new"));
    assert_eq!(resp.status, 200, "{}", resp.text());
}

#[test]
fn a_reload_reaches_every_worker() {
    let before = "
workers: 2
services:
  - {name: s, hosts: [w.test], upstream: a, routes: [{name: old, path: /old}]}
upstreams:
  - {name: a, nodes: [{address: '{b0}'}]}
";
    let after = "
workers: 2
services:
  - {name: s, hosts: [w.test], upstream: a, routes: [{name: new, path: /new}]}
upstreams:
  - {name: a, nodes: [{address: '{b0}'}]}
";
    let mut h = Harness::start(&["127.0.2.16"], before);
    h.reload(after);
    // New connections spread over both workers (SO_REUSEPORT); once 64 in a row see the
    // new table, both workers have it.
    eventually("64 new connections in a row on the new table", || {
        (0..64)
            .all(|_| h.get("w.test", "/new").status == 200)
            .then_some(())
    });
    assert_eq!(h.get("w.test", "/old").status, 404);
}

#[test]
fn dot_segments_cannot_escape_a_route() {
    let h = Harness::start(
        &["127.0.2.17", "127.0.2.18"],
        "
services:
  - name: s
    hosts: [dot.test]
    upstream: public
    routes:
      - {name: public, path: /public}
      - {name: admin, path: /admin, methods: [GET], upstream: admin}
upstreams:
  - {name: public, nodes: [{address: '{b0}'}]}
  - {name: admin, nodes: [{address: '{b1}'}]}
",
    );
    let mut c = h.client();
    let resp = c.request("DELETE /admin/users HTTP/1.1\r\nHost: dot.test\r\n\r\n");
    assert_eq!(resp.status, 405);
    // The same target spelt with dot segments must not reach an upstream as a DELETE
    // on /admin (nginx and the seed's APISIX normalise the path before matching).
    let resp = c.request("DELETE /public/../admin/users HTTP/1.1\r\nHost: dot.test\r\n\r\n");
    assert!(
        resp.status == 405 || resp.status == 400,
        "{} from {:?}: {}",
        resp.status,
        resp.header("x-backend"),
        resp.text()
    );
}
