//! The README's first commands, as a newcomer runs them: `strait demo` (the binary
//! `./dev demo` starts), then every command of the README's "With the demo running" block,
//! run by `sh` as written (the CA path put in for its `PID` placeholder), with their
//! output checked against what the README says it is. The README cannot drift from the
//! demo without this test failing.
//!
//! The demo listens on its fixed ports (9080, 9443) and backends (127.0.0.2–4:8080), as
//! the README says; the seed example test binds the same backends, so the two take turns
//! (`SEED_PODS`).

use std::process::Command;

use serde_json::Value;

use crate::support::child::{strait, ChildProcess};
use crate::support::eventually;

/// The commands of the README's block after "With the demo running:" (comments and
/// blank lines left out).
fn readme_commands() -> Vec<String> {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../README.md");
    let readme = std::fs::read_to_string(path).expect("README.md");
    let after = readme
        .split_once("With the demo running:")
        .expect("the README's demo block")
        .1;
    let block = after
        .split_once("```sh\n")
        .and_then(|(_, rest)| rest.split_once("```"))
        .expect("a ```sh block after it")
        .0;
    block
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(|l| l.split(" #").next().unwrap_or(l).trim().to_owned())
        .collect()
}

/// Runs `command` with `sh -c`; its stdout, failing the test when it fails.
fn sh(command: &str) -> String {
    let out = Command::new("sh")
        .args(["-c", command])
        .output()
        .expect("sh runs");
    assert!(
        out.status.success(),
        "{command}: {}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn the_readme_commands_work_against_strait_demo() {
    let commands = readme_commands();
    assert_eq!(commands.len(), 3, "{commands:#?}");
    let _held = crate::support::SEED_PODS
        .lock()
        .unwrap_or_else(|e| e.into_inner());
    let demo = ChildProcess::spawn(strait().args(["demo"]));
    let ca = demo.line_after("and: curl --cacert ");
    let ca = ca
        .split_whitespace()
        .next()
        .expect("the CA path")
        .to_owned();
    demo.line_after("strait admin on ");
    let run = |c: &str| sh(&c.replace("/tmp/strait-demo-PID/ca.pem", &ca));

    // 1. `curl … /v1/anything`: 200 and the JSON echo of the request, prefix stripped.
    let json: Value = serde_json::from_str(&run(&commands[0])).expect("a JSON echo");
    assert_eq!(json["url"], "http://sd.httpbin.org/anything", "{json}");

    // 2. Three requests, each answered by one of the three backends.
    let out = run(&commands[1]);
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 3, "{out}");
    for line in &lines {
        let named = ["127.0.0.2:8080", "127.0.0.3:8080", "127.0.0.4:8080"]
            .iter()
            .any(|b| line.trim() == format!("\"backend\": \"{b}\","));
        assert!(named, "{line}");
    }
    // Round-robin: over enough requests, every backend answers.
    eventually("every demo backend to answer", || {
        let out = run(&commands[1]);
        ["127.0.0.2", "127.0.0.3", "127.0.0.4"]
            .iter()
            .all(|b| out.contains(b))
            .then_some(())
    });

    // 3. HTTPS with the CA the demo made.
    let json: Value = serde_json::from_str(&run(&commands[2])).expect("a JSON echo");
    assert_eq!(json["headers"]["X-Forwarded-Proto"], "https", "{json}");
}
