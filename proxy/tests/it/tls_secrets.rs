//! Certificates from Kubernetes Secrets: the real binary watches a `kubernetes.io/tls`
//! Secret through the real kube client against the fake API server; rotating the Secret
//! serves new handshakes the new certificate while an open connection keeps its session,
//! and a bad or deleted Secret leaves the last good certificate serving, said by a metric.

use std::net::SocketAddr;
use std::process::Stdio;
use std::time::Instant;

use serde_json::json;
use strait::tls::DemoCerts;
use strait_fake_apiserver::{FakeApiServer, Kind, Options, Verb};

use crate::support::child::{strait, ChildProcess};
use crate::support::{driver_line, echo, eventually, get, Client, SETTLE};
use crate::tls::{certs, client_config, der, temp_dir, Tls};

const SOURCE: &str = "secret local/apisix/httpbin-tls";

/// Applies Secret `apisix/httpbin-tls` with this certificate and key (as `stringData`, which
/// the API server turns into base64 `data`, as kubectl does).
fn apply_secret(api: &FakeApiServer, cert: &DemoCerts, key: &DemoCerts) {
    let read = |p: &std::path::Path| std::fs::read_to_string(p).unwrap();
    api.apply(&json!({
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": "httpbin-tls", "namespace": "apisix"},
        "type": "kubernetes.io/tls",
        "stringData": {"tls.crt": read(&cert.cert_file), "tls.key": read(&key.key_file)},
    }));
}

/// `/metrics` of the admin server at `admin`.
fn metrics(admin: SocketAddr) -> String {
    Client::connect(admin)
        .request(&get("admin", "/metrics"))
        .text()
}

fn refused_line() -> String {
    format!("strait_tls_certificate_refused{{source=\"{SOURCE}\"}} 1")
}

#[test]
fn a_secret_certificate_rotates_live_and_a_bad_or_deleted_secret_keeps_the_last_good_one() {
    let dir = temp_dir("tls-secret");
    let one = certs(&dir, "one", &["sd.httpbin.org"]);
    let two = certs(&dir, "two", &["sd.httpbin.org"]);
    let api = FakeApiServer::start(Options::default());
    apply_secret(&api, &one, &one);
    let backend = echo("127.0.15.9");
    let yaml = format!(
        "{driver}workers: 2\nadmin: {{listen: '127.0.0.1:0'}}
registries:
  - {{name: local, server: '{url}', token: '{token}'}}
listeners:
  - name: https
    address: 127.0.0.1:0
    tls:
      certificates:
        - secret: {{registry: local, namespace: apisix, name: httpbin-tls}}
services:
  - {{name: s, upstream: u}}
upstreams:
  - {{name: u, nodes: [{{address: '{backend}'}}]}}
",
        driver = driver_line(),
        url = api.url(),
        token = api.token(),
        backend = backend.addr(),
    );
    let path = dir.join("strait.yaml");
    std::fs::write(&path, &yaml).unwrap();
    let child = ChildProcess::spawn(
        strait()
            .args(["run", "--config", path.to_str().unwrap()])
            .stderr(Stdio::piped()),
    );
    let rest = child.line_after("strait listening on ");
    let addr: SocketAddr = rest.split_whitespace().next().unwrap().parse().unwrap();
    let rest = child.line_after("strait admin on http://");
    let admin: SocketAddr = rest.split_whitespace().next().unwrap().parse().unwrap();
    eventually("/readyz once the Secret is read", || {
        let r = Client::connect(admin).request(&get("admin", "/readyz"));
        (r.status == 200).then_some(())
    });
    // Listed by name (what a Role with resourceNames allows), not every Secret.
    let by_name = api.requests().iter().any(|r| {
        r.is(Verb::List, Kind::Secret)
            && r.param("fieldSelector").as_deref() == Some("metadata.name=httpbin-tls")
    });
    assert!(by_name, "{:?}", api.requests());
    let config = client_config(&[&one, &two], None);
    let mut kept = Tls::connect(addr, config.clone(), "sd.httpbin.org", true).unwrap();
    assert_eq!(
        kept.served(),
        der(&one.cert_file),
        "the Secret's certificate"
    );
    assert_eq!(kept.get("sd.httpbin.org", "/").0, 200);

    // cert-manager renews: new handshakes get the new certificate, the open one is kept.
    apply_secret(&api, &two, &two);
    eventually("new handshakes to get the renewed certificate", || {
        let c = Tls::connect(addr, config.clone(), "sd.httpbin.org", true).ok()?;
        (c.served() == der(&two.cert_file)).then_some(())
    });
    assert_eq!(kept.get("sd.httpbin.org", "/still").0, 200, "untouched");
    assert_eq!(kept.served(), der(&one.cert_file));
    assert!(!metrics(admin).contains(&refused_line()));

    // A key that does not match: refused with the Secret named, the renewed one serves.
    apply_secret(&api, &one, &two);
    let log = child.log.as_ref().unwrap();
    let deadline = Instant::now() + SETTLE;
    loop {
        let line = log
            .recv_timeout(deadline.saturating_duration_since(Instant::now()))
            .expect("a refusal naming the Secret");
        if line.contains("certificate refused") {
            assert!(
                line.contains(SOURCE) && line.contains("does not match"),
                "{line}"
            );
            assert!(!line.contains("PRIVATE KEY"), "no key in the log: {line}");
            break;
        }
    }
    eventually("the refusal in the metrics", || {
        metrics(admin).contains(&refused_line()).then_some(())
    });
    let c = Tls::connect(addr, config.clone(), "sd.httpbin.org", true).unwrap();
    assert_eq!(c.served(), der(&two.cert_file), "the last good one serves");

    // Deleted: still the last good one; a good version again clears the metric.
    api.delete(Kind::Secret, "apisix", "httpbin-tls").unwrap();
    eventually("the deletion to be seen", || {
        let line = log.try_recv().ok()?;
        line.contains("does not exist").then_some(())
    });
    let mut c = Tls::connect(addr, config.clone(), "sd.httpbin.org", true).unwrap();
    assert_eq!(c.served(), der(&two.cert_file));
    assert_eq!(c.get("sd.httpbin.org", "/").0, 200);
    apply_secret(&api, &one, &one);
    eventually("the restored Secret to serve", || {
        let c = Tls::connect(addr, config.clone(), "sd.httpbin.org", true).ok()?;
        (c.served() == der(&one.cert_file)).then_some(())
    });
    eventually("the refusal to clear", || {
        (!metrics(admin).contains(&refused_line())).then_some(())
    });
    let m = metrics(admin);
    assert!(
        m.lines().any(|l| l.starts_with(&format!(
            "strait_tls_certificate_expiry_seconds{{listener=\"https\",source=\"{SOURCE}\"}} "
        ))),
        "{m}"
    );
}
