//! Real gRPC peers for the HTTP/2 tests: `tests/it/grpc_peer.py` run by Python's grpcio
//! (the C-core HTTP/2 stack, not ours), as servers (pods) and clients.
//!
//! grpcio is installed once per target directory into a venv (`target/grpc-venv`), the way
//! `deploy/validate.sh` installs its checker: `./dev test` finds it there, or this
//! creates it on first use (python3-venv and pip come with the machine's set-up).
//!
//! Runs on: the test threads; each peer is a process of its own.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::OnceLock;

use serde_json::Value;

use super::child::ChildProcess;

/// The grpcio version the venv holds.
const GRPCIO: &str = "grpcio==1.85.3";

fn venv() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/grpc-venv")
}

/// The venv's python, with grpcio importable; made on first use.
pub(crate) fn python() -> PathBuf {
    static READY: OnceLock<PathBuf> = OnceLock::new();
    READY
        .get_or_init(|| {
            let dir = venv();
            let py = dir.join("bin/python");
            let marker = dir.join(".installed");
            if std::fs::read_to_string(&marker).ok().as_deref() != Some(GRPCIO) {
                let _ = std::fs::remove_dir_all(&dir);
                let made = Command::new("python3")
                    .args(["-m", "venv"])
                    .arg(&dir)
                    .status();
                assert!(made.is_ok_and(|s| s.success()), "python3 -m venv {dir:?}");
                let pip = Command::new(dir.join("bin/pip"))
                    .args(["install", "--quiet", "--disable-pip-version-check", GRPCIO])
                    .status();
                assert!(pip.is_ok_and(|s| s.success()), "pip install {GRPCIO}");
                std::fs::write(&marker, GRPCIO).unwrap();
            }
            py
        })
        .clone()
}

fn script() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/it/grpc_peer.py")
}

/// A gRPC server process (h2c) answering as `name`.
pub(crate) struct GrpcServer {
    process: ChildProcess,
}

impl GrpcServer {
    /// Starts one on `addr` and waits until it listens.
    pub(crate) fn start(addr: SocketAddr, name: &str) -> GrpcServer {
        let process = ChildProcess::spawn(
            Command::new(python())
                .arg(script())
                .args(["server", "--listen", &addr.to_string(), "--name", name])
                .stderr(Stdio::null()),
        );
        process.line_after("listening");
        GrpcServer { process }
    }

    /// SIGTERM: a graceful stop (GOAWAY, in-flight calls finish), then waits for the exit.
    pub(crate) fn terminate(&mut self) {
        self.process.signal("TERM");
        self.process.wait_exit();
    }
}

/// A port free on `ip` now (bound and released).
pub(crate) fn free_port(ip: &str) -> u16 {
    let l = std::net::TcpListener::bind(format!("{ip}:0")).unwrap();
    l.local_addr().unwrap().port()
}

/// Runs the peer script's `args` (a client mode) against `target` with `:authority`
/// `authority`; its JSON output.
pub(crate) fn client(target: SocketAddr, authority: &str, args: &[&str]) -> Value {
    let out = Command::new(python())
        .arg(script())
        .args(args)
        .args(["--target", &target.to_string(), "--authority", authority])
        .stderr(Stdio::inherit())
        .output()
        .expect("the gRPC client runs");
    let text = String::from_utf8_lossy(&out.stdout);
    let line = text.lines().last().unwrap_or_default();
    serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: gRPC client printed {text:?}"))
}

/// A gRPC client process left running (the load mode); its stdout lines.
pub(crate) fn spawn_client(target: SocketAddr, authority: &str, args: &[&str]) -> ChildProcess {
    ChildProcess::spawn(
        Command::new(python())
            .arg(script())
            .args(args)
            .args(["--target", &target.to_string(), "--authority", authority])
            .stderr(Stdio::null()),
    )
}
