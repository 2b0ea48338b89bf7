//! Hot reload of the real binary: `strait run` watches its config file (and takes
//! SIGHUP); a good change applies without a restart or a dropped connection, a bad file
//! is refused with its field named and the running config stays, a listener change is
//! reported as needing a restart.

use std::net::SocketAddr;
use std::process::Stdio;
use std::sync::mpsc;
use std::time::Instant;

use crate::process::temp_file;
use crate::support::child::{strait, ChildProcess};
use crate::support::{driver_line, echo, eventually, get, Client, SETTLE};

fn config(services: &str, upstreams: &str) -> String {
    format!(
        "{}workers: 1
admin: {{listen: '127.0.0.1:0'}}
listeners:
  - name: http
    address: 127.0.0.1:0
services:
{services}
upstreams:
{upstreams}",
        driver_line()
    )
}

/// Replaces the file the way a ConfigMap update or an editor does: a new file renamed
/// over the old one.
fn replace(path: &std::path::Path, text: &str) {
    let tmp = path.with_extension("new");
    std::fs::write(&tmp, text).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

/// Waits for a log line containing every one of `parts`.
fn log_line(log: &mpsc::Receiver<String>, parts: &[&str]) -> String {
    let deadline = Instant::now() + SETTLE;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let line = log
            .recv_timeout(left)
            .unwrap_or_else(|e| panic!("no log line with {parts:?}: {e}"));
        if parts.iter().all(|p| line.contains(p)) {
            return line;
        }
    }
}

fn reloads(admin: SocketAddr, result: &str) -> u64 {
    crate::support::metric(
        admin,
        &format!("strait_config_reloads_total{{result=\"{result}\"}}"),
    )
}

#[test]
fn a_changed_config_file_applies_without_a_restart_and_a_bad_one_is_refused() {
    let one = echo("127.0.14.20");
    let two = echo("127.0.14.21");
    let service_one = "  - {name: one, hosts: [one.test], upstream: u1}";
    let service_two = "  - {name: two, hosts: [two.test], upstream: u2}";
    let up_one = format!("  - {{name: u1, nodes: [{{address: '{}'}}]}}\n", one.addr());
    let up_two = format!("  - {{name: u2, nodes: [{{address: '{}'}}]}}\n", two.addr());
    let path = temp_file("reload.yaml", &config(service_one, &up_one));
    let child = ChildProcess::spawn(
        strait()
            .args(["run", "--config", path.to_str().unwrap()])
            .stderr(Stdio::piped()),
    );
    let rest = child.line_after("strait listening on ");
    let addr: SocketAddr = rest.split_whitespace().next().unwrap().parse().unwrap();
    let rest = child.line_after("strait admin on http://");
    let admin: SocketAddr = rest.split_whitespace().next().unwrap().parse().unwrap();
    let log = child.log.as_ref().unwrap();

    // A keep-alive client, open across every reload below.
    let mut kept = Client::connect(addr);
    let r = kept.request(&get("one.test", "/"));
    assert_eq!((r.status, r.backend()), (200, one.addr().to_string()));
    assert_eq!(
        Client::connect(addr).request(&get("two.test", "/")).status,
        404
    );

    // 1. A new service and upstream, by editing the file.
    let good = config(
        &format!("{service_one}\n{service_two}"),
        &(up_one.clone() + &up_two),
    );
    replace(&path, &good);
    eventually("two.test to be routed", || {
        let r = Client::connect(addr).request(&get("two.test", "/"));
        (r.status == 200).then_some(())
    });
    let r = Client::connect(addr).request(&get("two.test", "/"));
    assert_eq!(r.backend(), two.addr().to_string());
    let r = kept.request(&get("one.test", "/"));
    assert_eq!(r.status, 200, "the kept connection still serves");
    log_line(log, &["config reloaded"]);
    assert_eq!(reloads(admin, "ok"), 1);

    // 2. A bad file: refused, the field named, the running config stays.
    replace(
        &path,
        &good.replace(&two.addr().to_string(), "not-an-address"),
    );
    let line = log_line(
        log,
        &["config reload refused", "upstreams[1].nodes[0].address"],
    );
    assert!(line.contains("not-an-address"), "{line}");
    assert_eq!(reloads(admin, "refused"), 1);
    assert_eq!(
        Client::connect(addr).request(&get("two.test", "/")).status,
        200
    );
    assert_eq!(kept.request(&get("one.test", "/")).status, 200);

    // 3. A listener change needs a restart: reported, the rest applied, the old port kept.
    let moved = good
        .replace("address: 127.0.0.1:0", "address: 127.0.0.1:1")
        .replace("hosts: [two.test]", "hosts: [two.test, three.test]");
    replace(&path, &moved);
    log_line(log, &["listeners", "needs a restart"]);
    eventually("three.test to be routed", || {
        let r = Client::connect(addr).request(&get("three.test", "/"));
        (r.status == 200).then_some(())
    });
    assert_eq!(kept.request(&get("one.test", "/")).status, 200);

    // 4. SIGHUP reloads the file as it is.
    let before = reloads(admin, "ok");
    child.signal("HUP");
    eventually("SIGHUP to reload", || {
        (reloads(admin, "ok") == before + 1).then_some(())
    });
    assert_eq!(kept.request(&get("one.test", "/")).status, 200);
}
