//! The installed `kubectl` against the fake server, so the fixture stays honest: a JSON list and
//! a `-w` watch over plain http (anonymous reads: kubectl sends no token over http), and a
//! Table list over TLS with a kubeconfig carrying the CA and the token. Skipped, saying so, only
//! when `kubectl` is not on PATH.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use strait_fake_apiserver::{Auth, FakeApiServer, Kind, Options, Verb};

use crate::support::{scratch_dir, slice, DEADLINE};

/// `kubectl` if on PATH; otherwise prints why the test is skipped.
fn kubectl(test: &str) -> Option<PathBuf> {
    let found = std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|p| p.join("kubectl"))
            .find(|p| p.is_file())
    });
    if found.is_none() {
        eprintln!(
            "SKIPPED {test}: kubectl is not on PATH (install it, e.g. the `kubectl` apt package)"
        );
    }
    found
}

/// A kubectl command isolated from the user's kubeconfig and discovery cache.
fn command(kubectl: &Path, dir: &Path, kubeconfig: &Path) -> Command {
    let mut cmd = Command::new(kubectl);
    cmd.arg("--kubeconfig")
        .arg(kubeconfig)
        .arg("--cache-dir")
        .arg(dir.join("cache"))
        .arg("--request-timeout=20s")
        .env_remove("KUBECONFIG")
        .stdin(Stdio::null());
    cmd
}

fn empty_kubeconfig(dir: &Path) -> PathBuf {
    let path = dir.join("empty.kubeconfig");
    std::fs::write(&path, "apiVersion: v1\nkind: Config\n").expect("write kubeconfig");
    path
}

fn run(cmd: &mut Command) -> String {
    let out = cmd.output().expect("kubectl runs");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "kubectl failed: {}\nstdout: {stdout}\nstderr: {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

fn fake_with_slices(options: Options) -> FakeApiServer {
    let fake = FakeApiServer::start(options);
    fake.apply_yaml(include_str!("../fixtures/httpbin.yaml"));
    fake.apply(&slice("other", "web-a", "web", &["127.0.0.9"]));
    fake
}

#[test]
fn kubectl_lists_endpointslices_as_json_over_plain_http() {
    let Some(kubectl) = kubectl("kubectl_lists_endpointslices_as_json_over_plain_http") else {
        return;
    };
    let fake = fake_with_slices(Options::default().anonymous_reads());
    let dir = scratch_dir("kubectl-json");
    let out = run(command(&kubectl, &dir, &empty_kubeconfig(&dir)).args([
        "--server",
        &fake.url(),
        "get",
        "endpointslices",
        "-A",
        "-o",
        "json",
    ]));
    let list: serde_json::Value = serde_json::from_str(&out).expect("kubectl printed JSON");
    let names: Vec<&str> = list["items"]
        .as_array()
        .expect("items")
        .iter()
        .map(|i| i["metadata"]["name"].as_str().expect("name"))
        .collect();
    assert_eq!(names, ["httpbin-abc12", "web-a"]);
    assert_eq!(
        list["items"][0]["kind"], "EndpointSlice",
        "kubectl re-adds the type"
    );
    assert!(fake.count(Verb::List, Kind::EndpointSlice) >= 1);
    assert!(fake.requests().iter().any(|r| r.verb == Verb::Discovery));
    assert!(
        fake.requests().iter().all(|r| r.status == 200),
        "{:#?}",
        fake.requests()
    );
}

/// Reads a child's stdout lines on a thread, so the test can wait with a deadline.
fn lines_of(child: &mut Child) -> mpsc::Receiver<String> {
    let stdout = child.stdout.take().expect("piped stdout");
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    rx
}

/// Waits for a line containing `needle`; returns it, or panics with everything seen.
fn wait_line(rx: &mpsc::Receiver<String>, seen: &mut Vec<String>, needle: &str) -> String {
    let deadline = Instant::now() + DEADLINE;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left.max(Duration::from_millis(1))) {
            Ok(line) => {
                seen.push(line.clone());
                if line.contains(needle) {
                    return line;
                }
            }
            Err(_) => panic!("no kubectl line containing {needle:?}; saw {seen:#?}"),
        }
    }
}

#[test]
fn kubectl_watch_prints_a_line_when_a_slice_changes() {
    let Some(kubectl) = kubectl("kubectl_watch_prints_a_line_when_a_slice_changes") else {
        return;
    };
    let fake = fake_with_slices(Options::default().anonymous_reads());
    let dir = scratch_dir("kubectl-watch");
    let mut child = command(&kubectl, &dir, &empty_kubeconfig(&dir))
        .args(["--server", &fake.url(), "get", "endpointslices", "-A", "-w"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("kubectl starts");
    let rx = lines_of(&mut child);
    let mut seen = Vec::new();
    let header = wait_line(&rx, &mut seen, "ADDRESSTYPE");
    assert!(header.starts_with("NAMESPACE"), "{header}");
    let row = wait_line(&rx, &mut seen, "httpbin-abc12");
    assert!(row.contains("127.0.0.2,127.0.0.3,127.0.0.4"), "{row}");
    assert!(
        fake.wait_for(DEADLINE, |f| f.watch_count() == 1),
        "kubectl opened a watch"
    );

    fake.apply(&slice("apisix", "httpbin-new", "httpbin", &["127.0.0.42"]));
    let added = wait_line(&rx, &mut seen, "httpbin-new");
    assert!(
        added.starts_with("apisix") && added.contains("127.0.0.42"),
        "{added}"
    );
    fake.delete(Kind::EndpointSlice, "other", "web-a");
    let deleted = wait_line(&rx, &mut seen, "web-a");
    assert!(deleted.contains("127.0.0.9"), "{deleted}");

    let _ = child.kill();
    let _ = child.wait();
    let watch = fake
        .requests()
        .into_iter()
        .find(|r| r.is(Verb::Watch, Kind::EndpointSlice))
        .expect("kubectl watched");
    assert_eq!(watch.path, "/apis/discovery.k8s.io/v1/endpointslices");
    assert_eq!(watch.auth, Auth::Anonymous);
}

#[test]
fn kubectl_over_tls_sends_the_kubeconfig_token_and_trusts_the_ca() {
    let Some(kubectl) = kubectl("kubectl_over_tls_sends_the_kubeconfig_token_and_trusts_the_ca")
    else {
        return;
    };
    let fake = fake_with_slices(Options::default().tls());
    let dir = scratch_dir("kubectl-tls");
    let kubeconfig = dir.join("fake.kubeconfig");
    std::fs::write(&kubeconfig, fake.kubeconfig()).expect("write kubeconfig");
    let out = run(command(&kubectl, &dir, &kubeconfig).args(["get", "endpointslices", "-A"]));
    let lines: Vec<&str> = out.lines().collect();
    assert!(
        lines[0].starts_with("NAMESPACE") && lines[0].contains("ENDPOINTS"),
        "{out}"
    );
    assert!(
        lines
            .iter()
            .any(|l| l.starts_with("apisix") && l.contains("httpbin-abc12")),
        "{out}"
    );
    let ep = run(command(&kubectl, &dir, &kubeconfig).args([
        "get",
        "endpoints",
        "httpbin",
        "-n",
        "apisix",
        "-o",
        "jsonpath={.subsets[0].addresses[*].ip}",
    ]));
    assert_eq!(ep, "127.0.0.2 127.0.0.3 127.0.0.4");
    // A TLS Secret written with stringData reads back as base64 data, as kubectl shows it.
    fake.apply(&serde_json::json!({
        "apiVersion": "v1", "kind": "Secret",
        "metadata": {"name": "httpbin-tls", "namespace": "apisix"},
        "type": "kubernetes.io/tls",
        "stringData": {"tls.crt": "CERT", "tls.key": "KEY"},
    }));
    let table = run(command(&kubectl, &dir, &kubeconfig).args(["get", "secrets", "-n", "apisix"]));
    let row = table.lines().nth(1).unwrap_or_default();
    let cells: Vec<&str> = row.split_whitespace().collect();
    assert_eq!(
        cells[..3],
        ["httpbin-tls", "kubernetes.io/tls", "2"],
        "{table}"
    );
    let crt = run(command(&kubectl, &dir, &kubeconfig).args([
        "get",
        "secret",
        "httpbin-tls",
        "-n",
        "apisix",
        "-o",
        "jsonpath={.data.tls\\.crt}",
    ]));
    assert_eq!(crt, "Q0VSVA==", "base64 of CERT");
    assert!(
        fake.requests().iter().all(|r| r.auth == Auth::Token),
        "{:#?}",
        fake.requests()
    );

    // A rotated token: kubectl's old one is refused with 401.
    fake.set_token("rotated");
    let out = command(&kubectl, &dir, &kubeconfig)
        .args(["get", "endpointslices", "-A"])
        .output()
        .expect("kubectl runs");
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("Unauthorized"), "{stderr}");
}
