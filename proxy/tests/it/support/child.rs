//! The real `strait` binary as a child process (a gateway for the process tests, echo
//! pods for the rolling update): spawn it, wait for a line it prints, signal it, wait for
//! its exit.
//!
//! Runs on: the test thread, plus one thread per child reading its stdout. A child is
//! killed and reaped on drop, so a failing test leaves no process behind.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::time::Instant;

use super::{eventually, SETTLE};

/// A command running the `strait` binary cargo built for these tests.
pub(crate) fn strait() -> Command {
    Command::new(env!("CARGO_BIN_EXE_strait"))
}

/// Sends signal `name` (`TERM`, `KILL`) to process `pid` with kill(1); whether it was
/// delivered.
pub(crate) fn signal(pid: u32, name: &str) -> bool {
    Command::new("kill")
        .args([format!("-{name}"), pid.to_string()])
        .status()
        .is_ok_and(|s| s.success())
}

/// A running child whose stdout is read line by line; killed and reaped on drop.
pub(crate) struct ChildProcess {
    child: Child,
    /// The child's stdout lines, sent by the reader thread.
    lines: mpsc::Receiver<String>,
    /// The child's stderr lines (its log), when the command piped stderr.
    pub(crate) log: Option<mpsc::Receiver<String>>,
}

/// Sends each line of `from` to the returned channel, on a thread of its own, until the
/// pipe closes or the receiver is dropped.
fn lines(from: impl std::io::Read + Send + 'static) -> mpsc::Receiver<String> {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(from).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    rx
}

impl ChildProcess {
    /// Spawns `command` with its stdout piped to a reader thread (and its stderr, when
    /// the command pipes it, to another: [`ChildProcess::log`]).
    pub(crate) fn spawn(command: &mut Command) -> ChildProcess {
        let mut child = command
            .stdout(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {command:?}: {e}"));
        let stdout = child.stdout.take().expect("stdout is piped");
        let log = child.stderr.take().map(lines);
        ChildProcess {
            child,
            lines: lines(stdout),
            log,
        }
    }

    /// Whether the child has exited (reaping it if so).
    pub(crate) fn exited(&mut self) -> Option<ExitStatus> {
        self.child.try_wait().unwrap()
    }

    pub(crate) fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The rest of the first stdout line (from now on) that starts with `prefix`; fails
    /// the test if none comes within [`SETTLE`] or the child closes its stdout.
    pub(crate) fn line_after(&self, prefix: &str) -> String {
        let deadline = Instant::now() + SETTLE;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let line = self
                .lines
                .recv_timeout(left)
                .unwrap_or_else(|e| panic!("waiting for {prefix:?} from the child: {e}"));
            if let Some(rest) = line.strip_prefix(prefix) {
                return rest.to_owned();
            }
        }
    }

    /// Sends signal `name` (`TERM`, `KILL`) to the child.
    pub(crate) fn signal(&self, name: &str) {
        assert!(signal(self.pid(), name), "kill -{name} {}", self.pid());
    }

    /// Waits for the child to exit, failing the test after [`SETTLE`].
    pub(crate) fn wait_exit(&mut self) -> ExitStatus {
        let child = &mut self.child;
        eventually("the child to exit", || child.try_wait().unwrap())
    }

    /// SIGKILLs the child and reaps it.
    pub(crate) fn kill(&mut self) -> ExitStatus {
        self.child.kill().unwrap();
        self.child.wait().unwrap()
    }
}

impl Drop for ChildProcess {
    fn drop(&mut self) {
        // Both fail harmlessly when the child was already reaped.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
