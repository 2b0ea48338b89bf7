//! Echo "pods" as real processes: `strait echo --listen IP:PORT`, each on its own
//! 127.0.0.x address and, like the pods behind one EndpointSlice, all on one port.
//!
//! Runs on: the test thread (the pod is a child process). A pod records when it was
//! spawned and when its exit was seen, so a test can tell whether a response could have
//! come from it. It is killed and reaped on drop.

use std::net::SocketAddr;
use std::process::Stdio;
use std::time::Instant;

use super::child::{strait, ChildProcess};

/// What the echo backend prints once it listens.
const LISTENING: &str = "echo backend listening on ";

/// One pod process.
pub(crate) struct Pod {
    process: ChildProcess,
    /// Where it listens; the port is 0 until [`Pod::listening`] for a pod spawned on 0.
    addr: SocketAddr,
    /// Taken before the spawn: no response from this pod arrived earlier.
    pub(crate) spawned: Instant,
    /// Taken once its exit was seen: no request sent later reached it.
    pub(crate) exited: Option<Instant>,
}

impl Pod {
    /// Spawns a pod on `ip:port` (0: a free port, known once it listens) without
    /// waiting for it to listen.
    pub(crate) fn spawn(ip: &str, port: u16) -> Pod {
        let addr: SocketAddr = format!("{ip}:{port}").parse().unwrap();
        let spawned = Instant::now();
        let process = ChildProcess::spawn(
            strait()
                .args(["echo", "--listen", &addr.to_string()])
                .stderr(Stdio::null()),
        );
        Pod {
            process,
            addr,
            spawned,
            exited: None,
        }
    }

    /// Waits until the pod listens (it says so on stdout); its address.
    pub(crate) fn listening(&mut self) -> SocketAddr {
        let addr: SocketAddr = self.process.line_after(LISTENING).parse().unwrap();
        assert!(
            addr.ip() == self.addr.ip() && (self.addr.port() == 0 || addr == self.addr),
            "the pod for {} listens on {addr}",
            self.addr
        );
        self.addr = addr;
        addr
    }

    pub(crate) fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// SIGTERM, as the kubelet sends it once the preStop hook is done; waits for the
    /// exit, which must be clean.
    pub(crate) fn terminate(&mut self) {
        self.process.signal("TERM");
        let status = self.process.wait_exit();
        self.exited = Some(Instant::now());
        assert!(status.success(), "pod {} exited with {status}", self.addr);
    }

    /// SIGKILL: no preStop hook, no grace period; waits for the exit.
    pub(crate) fn kill(&mut self) {
        self.process.kill();
        self.exited = Some(Instant::now());
    }
}
