//! Unix domain sockets on both sides of the gateway, held to the assertions the TCP tests
//! make: a `unix:` listener (HTTP and `tcp`) and `unix:` upstream nodes forward, keep
//! connections alive, stream chunked bodies both ways, retry a dead endpoint, drain an
//! endpoint that leaves and finish what is in flight at a graceful stop; the socket file
//! gets its mode, replaces a stale one, refuses a path that is not a socket and goes away
//! at the stop.
//!
//! Each test works in its own directory under the system temp dir (removed on drop); the
//! echo backends on Unix sockets are the same `strait echo` server as on TCP.

use std::io::{Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};

use strait::echo::{pattern_matches, EchoServer};
use strait::Gateway;
use strait_discovery::{Endpoint, EndpointAddr, EndpointState};

use crate::forwarding::echo_upload;
use crate::support::harness::{config, render};
use crate::support::{eventually, get, Client, Framing, SETTLE};

/// A directory of its own for one test's sockets, removed with them on drop.
struct Dir(PathBuf);

impl Dir {
    fn new() -> Dir {
        static N: AtomicUsize = AtomicUsize::new(0);
        let dir = std::env::temp_dir().join(format!(
            "strait-it-unix-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&dir).unwrap();
        Dir(dir)
    }

    fn path(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }
}

impl Drop for Dir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn start(yaml: &str) -> Gateway {
    let yaml = render(yaml, &[]);
    Gateway::start(config(&yaml)).unwrap_or_else(|e| panic!("gateway start: {e}\n{yaml}"))
}

fn unix(path: &Path) -> EndpointAddr {
    format!("unix:{}", path.display()).parse().unwrap()
}

#[test]
fn http_on_a_unix_listener_forwards_keeps_alive_and_streams_chunked_bodies_both_ways() {
    let dir = Dir::new();
    let sock = dir.path("http.sock");
    let backend = crate::support::echo("127.0.21.2");
    let g = start(&format!(
        "
workers: 2
listeners:
  - {{name: http, address: 'unix:{}', mode: '0660'}}
services:
  - {{name: s, upstream: u}}
upstreams:
  - {{name: u, nodes: [{{address: '{}'}}]}}
",
        sock.display(),
        backend.addr()
    ));
    assert_eq!(
        g.listener("http").unwrap().to_string(),
        format!("unix:{}", sock.display())
    );
    let mode = std::fs::metadata(&sock).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o660, "the socket file's mode");

    let mut c = Client::connect_unix(&sock);
    let resp = c.request(&get("u.test", "/anything?x=1"));
    assert_eq!(resp.status, 200);
    let json = resp.json();
    assert_eq!(json["url"], "http://u.test/anything?x=1");
    // A client with no address adds no hop; the rest of the forwarding headers are set.
    assert_eq!(json["headers"]["X-Forwarded-For"], serde_json::Value::Null);
    assert_eq!(json["headers"]["X-Forwarded-Proto"], "http");
    assert_eq!(json["headers"]["X-Forwarded-Host"], "u.test");

    // Kept alive, and chunked both ways on the same connection.
    let resp = c.request(&get("u.test", "/stream-bytes/100000?chunk_size=1000"));
    assert!(matches!(resp.framing, Framing::Chunked(_)));
    assert_eq!(resp.body.len(), 100_000);
    assert!(pattern_matches(0, &resp.body));
    echo_upload(&mut c, 900_007, true, 10_007);
    echo_upload(&mut c, 100_003, false, 65_536);
    assert_eq!(c.request(&get("u.test", "/")).status, 200);
    assert_eq!(
        backend.connections_accepted(),
        1,
        "one pooled upstream connection"
    );

    // A malformed request gets its 400 and the close, as on TCP.
    let mut bad = Client::connect_unix(&sock);
    let resp = bad.request("GET / HTTP/1.1\r\nHost: a\r\nBad Header\r\n\r\n");
    assert_eq!(resp.status, 400);
    assert!(bad.closed());
    g.shutdown();
    assert!(!sock.exists(), "the socket file is removed at the stop");
}

#[test]
fn unix_upstreams_are_balanced_pooled_and_a_dead_one_is_retried() {
    let dir = Dir::new();
    let (a, b, dead) = (
        dir.path("a.sock"),
        dir.path("b.sock"),
        dir.path("dead.sock"),
    );
    let ea = EchoServer::start_unix(&a).unwrap();
    let eb = EchoServer::start_unix(&b).unwrap();
    // A socket file nobody listens on: connecting to it is refused.
    drop(UnixListener::bind(&dead).unwrap());
    let g = start(&format!(
        "
services:
  - {{name: s, upstream: u}}
upstreams:
  - name: u
    pass_host: node
    nodes: [{{address: 'unix:{}'}}, {{address: 'unix:{}'}}, {{address: 'unix:{}'}}]
",
        a.display(),
        b.display(),
        dead.display()
    ));
    let mut c = Client::connect(g.listen_addr("http").unwrap());
    let mut seen = Vec::new();
    for _ in 0..9 {
        let resp = c.request(&get("u.test", "/anything"));
        assert_eq!(resp.status, 200, "the dead endpoint's refusal is retried");
        let json = resp.json();
        assert_eq!(json["headers"]["Host"], "localhost", "pass_host: node");
        seen.push(resp.backend());
    }
    for e in [&ea, &eb] {
        assert!(
            seen.iter().any(|s| s == e.name()),
            "{} got none of {seen:?}",
            e.name()
        );
        assert_eq!(
            e.connections_accepted(),
            1,
            "{}: one pooled connection",
            e.name()
        );
    }
    let resp = c.request(&get("u.test", "/bytes/300000"));
    assert_eq!(resp.framing, Framing::Length(300_000));
    assert!(pattern_matches(0, &resp.body));
    // `/echo` answers while the upload arrives, and strait reads the answer once the
    // body is sent: the upload must fit the echo's socket buffer (about 200 KiB on a Unix
    // socket by default; TCP on loopback autotunes to megabytes).
    echo_upload(&mut c, 150_000, true, 9_999);
    g.shutdown();
}

#[test]
fn a_unix_endpoint_that_leaves_finishes_its_request_and_its_connection_is_not_reused() {
    let dir = Dir::new();
    let (a, b) = (dir.path("a.sock"), dir.path("b.sock"));
    let ea = EchoServer::start_unix(&a).unwrap();
    let eb = EchoServer::start_unix(&b).unwrap();
    let mut g = start(&format!(
        "
services:
  - {{name: s, upstream: u}}
upstreams:
  - {{name: u, nodes: [{{address: 'unix:{}'}}]}}
",
        a.display()
    ));
    let addr = g.listen_addr("http").unwrap();
    let mut c = Client::connect(addr);
    assert_eq!(c.request(&get("u.test", "/")).backend(), ea.name());
    // In flight on A's pooled connection when A leaves the table.
    c.send(get("u.test", "/delay/300").as_bytes());
    eventually("the delayed request to reach A", || {
        (ea.requests_served() == 2).then_some(())
    });
    let ready = |p: &Path| Endpoint {
        addr: unix(p),
        weight: 1,
        state: EndpointState::Ready,
    };
    g.set_endpoints("u", vec![ready(&b)]).unwrap();
    for _ in 0..4 {
        assert_eq!(
            Client::connect(addr).request(&get("u.test", "/")).backend(),
            eb.name()
        );
    }
    let resp = c.response(false);
    assert_eq!((resp.status, resp.backend()), (200, ea.name().to_owned()));
    // Back in the table, A gets a new connection: the old one was not pooled.
    g.set_endpoints("u", vec![ready(&a)]).unwrap();
    assert_eq!(c.request(&get("u.test", "/")).backend(), ea.name());
    assert_eq!(ea.connections_accepted(), 2);
    g.shutdown();
}

#[test]
fn a_tcp_listener_on_a_unix_socket_copies_to_a_unix_upstream_and_back() {
    let dir = Dir::new();
    let (front, back) = (dir.path("front.sock"), dir.path("back.sock"));
    let echo = EchoServer::start_unix(&back).unwrap();
    let g = start(&format!(
        "
listeners:
  - {{name: tcp, address: 'unix:{}', protocol: tcp, upstream: u}}
upstreams:
  - {{name: u, nodes: [{{address: 'unix:{}'}}]}}
",
        front.display(),
        back.display()
    ));
    // Bytes pass unchanged: the echo server's HTTP answer comes back through the copy,
    // and a half-close is passed on (the echo server closes after `Connection: close`).
    let mut s = UnixStream::connect(&front).unwrap();
    s.set_read_timeout(Some(SETTLE)).unwrap();
    s.write_all(b"GET /bytes/200000 HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
        .unwrap();
    s.shutdown(std::net::Shutdown::Write).unwrap();
    let mut out = Vec::new();
    s.read_to_end(&mut out).unwrap();
    let head_end = out.windows(4).position(|w| w == b"\r\n\r\n").unwrap() + 4;
    assert!(out.starts_with(b"HTTP/1.1 200 "));
    assert_eq!(out.len() - head_end, 200_000);
    assert!(pattern_matches(0, &out[head_end..]));
    assert_eq!(echo.connections_accepted(), 1);
    g.shutdown();
}

#[test]
fn a_stale_socket_file_is_replaced_another_file_is_refused_and_a_stop_finishes_its_requests() {
    let dir = Dir::new();
    let sock = dir.path("http.sock");
    let backend = crate::support::echo("127.0.21.3");
    let yaml = |path: &Path| {
        format!(
            "
workers: 2
listeners:
  - {{name: http, address: 'unix:{}'}}
shutdown: {{delay: 0s, timeout: 10s}}
services:
  - {{name: s, upstream: u}}
upstreams:
  - {{name: u, nodes: [{{address: '{}'}}]}}
",
            path.display(),
            backend.addr()
        )
    };
    // Left by a process that died: bound, never removed.
    drop(UnixListener::bind(&sock).unwrap());
    let mut g = start(&yaml(&sock));
    let mut c = Client::connect_unix(&sock);
    c.send(get("u.test", "/delay/300").as_bytes());
    eventually("the request to reach the backend", || {
        (backend.connections_accepted() == 1).then_some(())
    });
    // Both workers accept on the one socket; the first to stop shuts it for both.
    g.begin_shutdown();
    // The request in flight is answered (with the close), then the file is gone.
    let resp = c.response(false);
    assert_eq!(resp.status, 200);
    assert!(resp.connection_has("close"));
    assert!(g.wait_stopped(SETTLE));
    assert!(!sock.exists(), "the socket file is removed at the stop");
    assert!(UnixStream::connect(&sock).is_err());
    g.shutdown();

    // Not a socket: refused, naming the field; the file is left alone.
    std::fs::write(&sock, "data").unwrap();
    let err = Gateway::start(config(&render(&yaml(&sock), &[]))).unwrap_err();
    let msg = err.to_string();
    assert!(msg.starts_with("listeners[0].address: "), "{msg}");
    assert!(msg.contains("not a socket"), "{msg}");
    assert_eq!(std::fs::read_to_string(&sock).unwrap(), "data");
    // A directory that does not exist.
    let missing = dir.path("no/such/dir/http.sock");
    let msg = Gateway::start(config(&render(&yaml(&missing), &[])))
        .unwrap_err()
        .to_string();
    assert!(msg.starts_with("listeners[0].address: "), "{msg}");
    assert!(msg.contains("No such file or directory"), "{msg}");
    // A start that fails after binding the socket (the admin port is taken) leaves no
    // socket file behind.
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let sock = dir.path("again.sock");
    let yaml = format!(
        "{}admin: {{listen: '{}'}}\n",
        yaml(&sock),
        taken.local_addr().unwrap()
    );
    let msg = Gateway::start(config(&render(&yaml, &[])))
        .unwrap_err()
        .to_string();
    assert!(msg.starts_with("admin.listen: "), "{msg}");
    assert!(!sock.exists(), "the failed start removed its socket file");
}

#[test]
fn unix_addresses_are_checked_with_the_field_named() {
    let long = format!("/{}", "a".repeat(120));
    for (yaml, field, says) in [
        (
            format!("listeners: [{{name: h, address: 'unix:{long}'}}]\nservices: []\nupstreams: []\n"),
            "listeners[0].address",
            "longer than",
        ),
        (
            "listeners: [{name: h, address: 'unix:'}]\nservices: []\nupstreams: []\n".into(),
            "listeners[0].address",
            "needs a path",
        ),
        (
            "listeners: [{name: h, address: '127.0.0.1:0', mode: '0660'}]\nservices: []\nupstreams: []\n".into(),
            "listeners[0].mode",
            "Unix socket listener",
        ),
        (
            "listeners: [{name: h, address: 'unix:/tmp/x.sock', mode: 'rw'}]\nservices: []\nupstreams: []\n".into(),
            "listeners[0].mode",
            "not a file mode",
        ),
        (
            "listeners: [{name: h, address: '127.0.0.1:0'}]\nservices: []\nupstreams:\n  - {name: u, nodes: [{address: 'unix:@abstract'}]}\n".into(),
            "upstreams[0].nodes[0].address",
            "abstract sockets are not supported",
        ),
    ] {
        let e = strait::config::Config::from_yaml(&yaml).unwrap_err();
        assert_eq!(e.field, field, "{yaml}");
        assert!(e.message.contains(says), "{}: {}", e.field, e.message);
    }
    // The same path twice is one address.
    let e = strait::config::Config::from_yaml(
        "listeners:\n  - {name: a, address: 'unix:/tmp/s.sock'}\n  - {name: b, address: 'unix:/tmp/s.sock'}\nservices: []\nupstreams: []\n",
    )
    .unwrap_err();
    assert_eq!(e.field, "listeners[1].address");
}

#[test]
fn strait_echo_listens_on_a_unix_socket_and_removes_it_at_sigterm() {
    use crate::support::child::{strait, ChildProcess};
    let dir = Dir::new();
    let sock = dir.path("pod.sock");
    let listen = format!("unix:{}", sock.display());
    let mut pod = ChildProcess::spawn(
        strait()
            .args(["echo", "--listen", &listen])
            .stderr(std::process::Stdio::null()),
    );
    assert_eq!(pod.line_after("echo backend listening on "), listen);
    let resp = Client::connect_unix(&sock).request(&get("pod.test", "/anything"));
    assert_eq!((resp.status, resp.backend()), (200, listen.clone()));
    assert_eq!(resp.json()["origin"], "unix:");
    pod.signal("TERM");
    assert!(pod.wait_exit().success());
    assert!(!sock.exists(), "the socket file is removed at the exit");
}
