//! Tests of the run loop as the binary drives it: a gateway from a real file, in front of
//! a real echo backend, told what a signal would tell it. Real sockets on 127.0.0.1.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{mpsc, Arc};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam_channel::Sender;

use super::*;
use crate::admin::AdminState;
use crate::echo::EchoServer;

/// How long a condition may take to become true.
const SETTLE: Duration = Duration::from_secs(10);

/// A config file with one route `path` on host `a.test`, in front of `backend`.
fn yaml(backend: SocketAddr, path: &str, delay: &str) -> String {
    format!(
        "workers: 1\n\
         listeners: [{{name: http, address: 127.0.0.1:0}}]\n\
         admin: {{listen: 127.0.0.1:0}}\n\
         shutdown: {{delay: {delay}, timeout: 30s}}\n\
         upstreams: [{{name: u, nodes: [{{address: {backend}}}]}}]\n\
         services: [{{name: s, hosts: [a.test], upstream: u, routes: [{{name: r, path: {path}}}]}}]\n"
    )
}

/// A temporary config file, removed on drop.
struct File(std::path::PathBuf);

impl File {
    fn new(text: &str) -> File {
        static N: AtomicUsize = AtomicUsize::new(0);
        let path = std::env::temp_dir().join(format!(
            "strait-control-{}-{}.yaml",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::write(&path, text).unwrap();
        File(path)
    }

    fn write(&self, text: &str) {
        std::fs::write(&self.0, text).unwrap();
    }
}

impl Drop for File {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// A gateway running [`run`] on its own thread.
struct Running {
    control: Option<Sender<Control>>,
    addr: SocketAddr,
    admin: Arc<AdminState>,
    thread: JoinHandle<Result<(), StartError>>,
}

fn start(file: &Path) -> Running {
    let config = Config::load(file).unwrap();
    let source = ConfigSource {
        path: file.to_owned(),
        workers: None,
    };
    let (control, controls) = crossbeam_channel::unbounded();
    let (tx, rx) = mpsc::channel();
    let thread = std::thread::spawn(move || {
        run(config, Some(source), &controls, |g| {
            let addr = g.listen_addr("http").unwrap();
            tx.send((addr, g.admin().clone())).unwrap();
        })
    });
    let (addr, admin) = rx.recv_timeout(SETTLE).expect("the gateway starts");
    Running {
        control: Some(control),
        addr,
        admin,
        thread,
    }
}

impl Running {
    fn send(&self, c: Control) {
        self.control.as_ref().unwrap().send(c).unwrap();
    }

    /// Waits for `run` to return (within [`SETTLE`]) and checks it returned `Ok`.
    fn stopped(self) {
        let deadline = Instant::now() + SETTLE;
        while !self.thread.is_finished() {
            assert!(Instant::now() < deadline, "the gateway did not stop");
            std::thread::park_timeout(Duration::from_millis(5));
        }
        self.thread.join().unwrap().unwrap();
    }
}

/// `GET path` on host `a.test`, one request per connection: the status line and the rest.
fn get(addr: SocketAddr, path: &str) -> String {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(SETTLE)).unwrap();
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: a.test\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    out
}

fn status(addr: SocketAddr, path: &str) -> u16 {
    get(addr, path)[9..12].parse().unwrap()
}

/// Waits until `probe` holds.
fn eventually(what: &str, mut probe: impl FnMut() -> bool) {
    let deadline = Instant::now() + SETTLE;
    while !probe() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::park_timeout(Duration::from_millis(5));
    }
}

#[test]
fn reload_reads_the_file_again_and_a_bad_file_leaves_the_running_config() {
    let echo = EchoServer::start("127.0.0.1:0".parse().unwrap()).unwrap();
    let file = File::new(&yaml(echo.addr(), "/a", "0s"));
    let g = start(&file.0);
    assert_eq!(status(g.addr, "/a"), 200);
    assert_eq!(status(g.addr, "/b"), 404);
    // The file did not change, so only the control can cause this reload.
    g.send(Control::Reload);
    eventually("the reload", || {
        g.admin.reloads_ok.load(Ordering::Relaxed) == 1
    });
    // A bad file (seen by the watcher, then asked for again) is refused twice; the
    // running routes stay.
    file.write("listeners: [oops\n");
    eventually("the watcher's refusal", || {
        g.admin.reloads_refused.load(Ordering::Relaxed) == 1
    });
    g.send(Control::Reload);
    eventually("the second refusal", || {
        g.admin.reloads_refused.load(Ordering::Relaxed) == 2
    });
    assert_eq!(status(g.addr, "/a"), 200);
    // A good edit is picked up by the watcher.
    file.write(&yaml(echo.addr(), "/b", "0s"));
    eventually("the new route", || status(g.addr, "/b") == 200);
    assert_eq!(status(g.addr, "/a"), 404);
    g.send(Control::Drain);
    g.stopped();
}

#[test]
fn drain_answers_the_request_in_flight_then_returns() {
    let echo = EchoServer::start("127.0.0.1:0".parse().unwrap()).unwrap();
    let file = File::new(&yaml(echo.addr(), "/", "0s"));
    let g = start(&file.0);
    let addr = g.addr;
    let slow = std::thread::spawn(move || get(addr, "/delay/300"));
    eventually("the request to reach the backend", || {
        echo.connections_accepted() == 1
    });
    g.send(Control::Drain);
    let answer = slow.join().unwrap();
    assert!(answer.starts_with("HTTP/1.1 200 "), "{answer}");
    assert!(!g.admin.ready(), "readiness is off from the drain on");
    g.stopped();
}

#[test]
fn a_second_stop_request_cuts_a_graceful_stop_short() {
    let echo = EchoServer::start("127.0.0.1:0".parse().unwrap()).unwrap();
    // An hour of `shutdown.delay`: only the second request can end this stop in time.
    let file = File::new(&yaml(echo.addr(), "/", "1h"));
    let g = start(&file.0);
    g.send(Control::Drain);
    eventually("readiness off", || !g.admin.ready());
    // Reloads are ignored while stopping; the stop goes on.
    g.send(Control::Reload);
    assert_eq!(status(g.addr, "/"), 200, "still serving during the delay");
    g.send(Control::Stop);
    g.stopped();
}

#[test]
fn stop_returns_at_once_and_a_dropped_sender_drains() {
    let echo = EchoServer::start("127.0.0.1:0".parse().unwrap()).unwrap();
    let file = File::new(&yaml(echo.addr(), "/", "0s"));
    let g = start(&file.0);
    g.send(Control::Stop);
    g.stopped();
    let mut g = start(&file.0);
    assert_eq!(status(g.addr, "/"), 200);
    drop(g.control.take());
    g.stopped();
}
