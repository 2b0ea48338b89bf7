//! TLS listeners: SNI choice (exact, wildcard, default, strict) checked by the certificate
//! actually served, `X-Forwarded-Proto: https` and curl through it, plain HTTP and bad
//! handshakes beside a good client, session resumption across workers, and rotation of
//! a Kubernetes-style mounted certificate under the real binary.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rustls::client::{ClientSessionMemoryCache, Resumption};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use rustls::{ClientConfig, ClientConnection, RootCertStore, StreamOwned};
use serde_json::Value;
use strait::tls::{generate_demo_certs, DemoCerts};

use crate::support::child::{strait, ChildProcess};
use crate::support::client::IO_TIMEOUT;
use crate::support::{driver_line, echo, eventually, get, Client, Harness, SETTLE};

/// A fresh directory under the test target dir.
pub(crate) fn temp_dir(name: &str) -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("it-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Generates a CA and a certificate for `names` into `dir/<stem>.*`.
pub(crate) fn certs(dir: &Path, stem: &str, names: &[&str]) -> DemoCerts {
    let sub = dir.join(stem);
    std::fs::create_dir_all(&sub).unwrap();
    generate_demo_certs(&sub, stem, names).unwrap()
}

pub(crate) fn der(path: &Path) -> CertificateDer<'static> {
    CertificateDer::pem_file_iter(path)
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
}

/// A rustls client config trusting the CAs of `sets`, resuming through `cache` when given.
pub(crate) fn client_config(
    sets: &[&DemoCerts],
    cache: Option<Arc<ClientSessionMemoryCache>>,
) -> Arc<ClientConfig> {
    let mut roots = RootCertStore::empty();
    for s in sets {
        roots.add(der(&s.ca_file)).unwrap();
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.resumption = match cache {
        Some(c) => Resumption::store(c),
        None => Resumption::disabled(),
    };
    Arc::new(config)
}

/// A keep-alive HTTPS connection made with rustls.
pub(crate) struct Tls {
    stream: BufReader<StreamOwned<ClientConnection, TcpStream>>,
}

impl Tls {
    /// Connects and handshakes; `sni: None` sends no SNI (the certificate is still
    /// verified against `name`).
    pub(crate) fn connect(
        addr: SocketAddr,
        config: Arc<ClientConfig>,
        name: &str,
        sni: bool,
    ) -> std::io::Result<Tls> {
        let config = if sni {
            config
        } else {
            let mut c = (*config).clone();
            c.enable_sni = false;
            Arc::new(c)
        };
        let conn = ClientConnection::new(config, ServerName::try_from(name.to_string()).unwrap())
            .map_err(std::io::Error::other)?;
        let tcp = TcpStream::connect_timeout(&addr, IO_TIMEOUT)?;
        tcp.set_read_timeout(Some(IO_TIMEOUT))?;
        tcp.set_write_timeout(Some(IO_TIMEOUT))?;
        let mut s = StreamOwned::new(conn, tcp);
        while s.conn.is_handshaking() {
            s.conn.complete_io(&mut s.sock)?;
        }
        Ok(Tls {
            stream: BufReader::new(s),
        })
    }

    fn conn(&self) -> &ClientConnection {
        &self.stream.get_ref().conn
    }

    /// The leaf certificate the server presented.
    pub(crate) fn served(&self) -> CertificateDer<'static> {
        self.conn().peer_certificates().unwrap()[0]
            .clone()
            .into_owned()
    }

    /// Sends a GET and reads the response: status and body (Content-Length framed).
    pub(crate) fn get(&mut self, host: &str, path: &str) -> (u16, String) {
        self.stream
            .get_mut()
            .write_all(get(host, path).as_bytes())
            .unwrap();
        let mut status = String::new();
        self.stream.read_line(&mut status).unwrap();
        let code = status.split_whitespace().nth(1).unwrap().parse().unwrap();
        let mut len = 0;
        loop {
            let mut line = String::new();
            self.stream.read_line(&mut line).unwrap();
            if line == "\r\n" {
                break;
            }
            if let Some((k, v)) = line.split_once(':') {
                if k.eq_ignore_ascii_case("content-length") {
                    len = v.trim().parse().unwrap();
                }
            }
        }
        let mut body = vec![0; len];
        self.stream.read_exact(&mut body).unwrap();
        (code, String::from_utf8(body).unwrap())
    }
}

fn tls_listener(name: &str, ip: &str, certs: &[&DemoCerts], extra: &str) -> String {
    let mut s =
        format!("  - name: {name}\n    address: {ip}:0\n    tls:\n{extra}      certificates:\n");
    for c in certs {
        s.push_str(&format!(
            "        - {{cert_file: '{}', key_file: '{}'}}\n",
            c.cert_file.display(),
            c.key_file.display()
        ));
    }
    s
}

fn handshakes(admin: SocketAddr, result: &str) -> u64 {
    crate::support::metric(
        admin,
        &format!("strait_tls_handshakes_total{{result=\"{result}\"}}"),
    )
}

#[test]
fn sni_picks_the_exact_then_the_wildcard_then_the_default_certificate_and_strict_refuses() {
    let dir = temp_dir("tls-sni");
    let a = certs(&dir, "a", &["a.test"]);
    let w = certs(&dir, "w", &["*.w.test"]);
    let template = format!(
        "listeners:\n  - name: http\n    address: 127.0.0.1:0\n{}{}services:\n  - {{name: s, upstream: u}}\nupstreams:\n  - {{name: u, nodes: [{{address: '{{b0}}'}}]}}\n",
        tls_listener("https", "127.0.15.11", &[&a, &w], ""),
        tls_listener("strict", "127.0.15.12", &[&a, &w], "      sni_strict: true\n"),
    );
    let h = Harness::start(&["127.0.15.1"], &template);
    let https = h.gateway_ref().listen_addr("https").unwrap();
    let strict = h.gateway_ref().listen_addr("strict").unwrap();
    let admin = h.gateway_ref().admin_addr().unwrap();
    let config = client_config(&[&a, &w], None);

    let mut exact = Tls::connect(https, config.clone(), "a.test", true).unwrap();
    assert_eq!(exact.served(), der(&a.cert_file), "exact name");
    let (status, body) = exact.get("a.test", "/x");
    assert_eq!(status, 200);
    let json: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(json["headers"]["X-Forwarded-Proto"], "https");
    // The same connection serves a second request (keep-alive over TLS).
    assert_eq!(exact.get("a.test", "/y").0, 200);

    let wild = Tls::connect(https, config.clone(), "x.w.test", true).unwrap();
    assert_eq!(
        wild.served(),
        der(&w.cert_file),
        "one label under the wildcard"
    );
    // A wildcard serves one label only: two labels get the default (which the client
    // cannot verify for that name).
    assert!(Tls::connect(https, config.clone(), "y.x.w.test", true).is_err());

    let default = Tls::connect(https, config.clone(), "a.test", false).unwrap();
    assert_eq!(
        default.served(),
        der(&a.cert_file),
        "no SNI: the first certificate"
    );
    assert!(default.conn().protocol_version() == Some(rustls::ProtocolVersion::TLSv1_3));

    // sni_strict: an unknown name and no SNI are refused; a known one is served.
    assert!(Tls::connect(strict, config.clone(), "other.test", true).is_err());
    assert!(Tls::connect(strict, config.clone(), "a.test", false).is_err());
    let ok = Tls::connect(strict, config.clone(), "x.w.test", true).unwrap();
    assert_eq!(ok.served(), der(&w.cert_file));
    eventually("the refusals to be counted", || {
        (handshakes(admin, "unknown_sni") >= 2).then_some(())
    });

    // openssl s_client, another real client: the wildcard certificate, verified.
    let out = Command::new("openssl")
        .args([
            "s_client",
            "-connect",
            &https.to_string(),
            "-servername",
            "x.w.test",
            "-CAfile",
        ])
        .arg(&w.ca_file)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("CN = *.w.test"), "{text}");
    assert!(text.contains("Verify return code: 0 (ok)"), "{text}");

    // curl, a real client, through the HTTPS listener.
    let out = Command::new("curl")
        .args(["-sS", "--max-time", "10", "--cacert"])
        .arg(&a.ca_file)
        .args([
            "--resolve",
            &format!("a.test:{}:{}", https.port(), https.ip()),
        ])
        .arg(format!("https://a.test:{}/curl", https.port()))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "curl: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let json: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(json["headers"]["X-Forwarded-Proto"], "https");
    // TLS 1.2 too, when the client asks for it.
    let out = Command::new("curl")
        .args([
            "-sS",
            "--max-time",
            "10",
            "--tlsv1.2",
            "--tls-max",
            "1.2",
            "-o",
            "/dev/null",
            "-w",
            "%{http_code}",
            "--cacert",
        ])
        .arg(&a.ca_file)
        .args([
            "--resolve",
            &format!("a.test:{}:{}", https.port(), https.ip()),
        ])
        .arg(format!("https://a.test:{}/", https.port()))
        .output()
        .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "200",
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn plain_http_garbage_and_stalled_handshakes_are_answered_or_cut_beside_a_good_client() {
    let dir = temp_dir("tls-bad");
    let a = certs(&dir, "a", &["a.test"]);
    let template = format!(
        "listeners:\n  - name: http\n    address: 127.0.0.1:0\n{}services:\n  - {{name: s, upstream: u}}\nupstreams:\n  - {{name: u, nodes: [{{address: '{{b0}}'}}]}}\n",
        tls_listener("https", "127.0.15.13", &[&a], "      handshake_timeout: 300ms\n"),
    );
    let h = Harness::start(&["127.0.15.2"], &template);
    let https = h.gateway_ref().listen_addr("https").unwrap();
    let admin = h.gateway_ref().admin_addr().unwrap();
    let config = client_config(&[&a], None);
    // A good client holds its connection through everything below.
    let mut good = Tls::connect(https, config.clone(), "a.test", true).unwrap();
    assert_eq!(good.get("a.test", "/").0, 200);

    // Plain HTTP on the TLS port: nginx's 400, then close.
    let mut plain = Client::connect(https);
    plain.send(get("a.test", "/").as_bytes());
    let answer = String::from_utf8(plain.read_to_close()).unwrap();
    assert!(answer.starts_with("HTTP/1.1 400 "), "{answer}");
    assert!(
        answer.contains("The plain HTTP request was sent to HTTPS port"),
        "{answer}"
    );

    // Garbage that looks like a TLS record: closed (with an alert).
    let mut garbage = Client::connect(https);
    garbage.send(&[0x16, 0x03, 0x01, 0x00, 0x05, 1, 2, 3, 4, 5, 0xff, 0xff]);
    garbage.read_to_close();

    // A client that connects and says nothing: cut at handshake_timeout.
    let started = Instant::now();
    let mut stalled = TcpStream::connect(https).unwrap();
    stalled.set_read_timeout(Some(SETTLE)).unwrap();
    let mut buf = [0u8; 16];
    let n = stalled.read(&mut buf).unwrap_or(0);
    assert_eq!(n, 0, "closed without a byte");
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "cut after {:?}",
        started.elapsed()
    );

    assert_eq!(
        good.get("a.test", "/after").0,
        200,
        "the good client is unaffected"
    );
    eventually("every outcome to be counted", || {
        (handshakes(admin, "plaintext_http") == 1
            && handshakes(admin, "failed") >= 1
            && handshakes(admin, "timeout") == 1
            && handshakes(admin, "ok") >= 1)
            .then_some(())
    });
}

#[test]
fn a_session_ticket_resumes_on_whichever_worker_the_client_lands() {
    let dir = temp_dir("tls-resume");
    let a = certs(&dir, "a", &["a.test"]);
    let template = format!(
        "workers: 2\nlisteners:\n  - name: http\n    address: 127.0.0.1:0\n{}services:\n  - {{name: s, upstream: u}}\nupstreams:\n  - {{name: u, nodes: [{{address: '{{b0}}'}}]}}\n",
        tls_listener("https", "127.0.15.14", &[&a], ""),
    );
    let h = Harness::start(&["127.0.15.3"], &template);
    let https = h.gateway_ref().listen_addr("https").unwrap();
    let cache = Arc::new(ClientSessionMemoryCache::new(64));
    let config = client_config(&[&a], Some(cache));
    let mut first = Tls::connect(https, config.clone(), "a.test", true).unwrap();
    // TLS 1.3 tickets arrive after the handshake: a request makes sure they are read.
    assert_eq!(first.get("a.test", "/").0, 200);
    assert_eq!(
        first.conn().handshake_kind(),
        Some(rustls::HandshakeKind::Full)
    );
    drop(first);
    // SO_REUSEPORT spreads these over both workers (each from its own source port);
    // with keys per worker, about half would fall back to a full handshake.
    for i in 0..16 {
        let mut c = Tls::connect(https, config.clone(), "a.test", true).unwrap();
        assert_eq!(c.get("a.test", "/").0, 200);
        assert_eq!(
            c.conn().handshake_kind(),
            Some(rustls::HandshakeKind::Resumed),
            "connection {i} was not resumed"
        );
    }
}

/// Points `dir/..data` at `dir/<version>` the way the kubelet updates a Secret mount: a
/// new symlink renamed over the old one.
fn swap_data(dir: &Path, version: &str) {
    let tmp = dir.join("..data_tmp");
    let _ = std::fs::remove_file(&tmp);
    std::os::unix::fs::symlink(version, &tmp).unwrap();
    std::fs::rename(&tmp, dir.join("..data")).unwrap();
}

/// Writes a certificate version `version` of `set` into the mount `dir`.
fn write_version(dir: &Path, version: &str, cert: &[u8], key: &[u8]) {
    let v = dir.join(version);
    std::fs::create_dir_all(&v).unwrap();
    std::fs::write(v.join("tls.crt"), cert).unwrap();
    std::fs::write(v.join("tls.key"), key).unwrap();
}

#[test]
fn a_rotated_certificate_mount_serves_new_clients_keeps_open_ones_and_a_bad_one_is_refused() {
    let dir = temp_dir("tls-rotate");
    let one = certs(&dir, "one", &["a.test"]);
    let two = certs(&dir, "two", &["a.test"]);
    let mount = dir.join("mount");
    std::fs::create_dir_all(&mount).unwrap();
    let read = |p: &Path| std::fs::read(p).unwrap();
    write_version(&mount, "v1", &read(&one.cert_file), &read(&one.key_file));
    swap_data(&mount, "v1");
    std::os::unix::fs::symlink("..data/tls.crt", mount.join("tls.crt")).unwrap();
    std::os::unix::fs::symlink("..data/tls.key", mount.join("tls.key")).unwrap();
    let backend = echo("127.0.15.4");
    let yaml = format!(
        "{}workers: 1\nadmin: {{listen: '127.0.0.1:0'}}\nlisteners:\n  - name: https\n    address: 127.0.0.1:0\n    tls:\n      certificates:\n        - {{cert_file: '{}', key_file: '{}'}}\nservices:\n  - {{name: s, upstream: u}}\nupstreams:\n  - {{name: u, nodes: [{{address: '{}'}}]}}\n",
        driver_line(),
        mount.join("tls.crt").display(),
        mount.join("tls.key").display(),
        backend.addr()
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
    let config = client_config(&[&one, &two], None);

    let mut kept = Tls::connect(addr, config.clone(), "a.test", true).unwrap();
    assert_eq!(kept.served(), der(&one.cert_file));
    assert_eq!(kept.get("a.test", "/").0, 200);

    // The kubelet swaps in a new version: new clients get the new certificate.
    write_version(&mount, "v2", &read(&two.cert_file), &read(&two.key_file));
    swap_data(&mount, "v2");
    eventually("new handshakes to get the new certificate", || {
        let c = Tls::connect(addr, config.clone(), "a.test", true).ok()?;
        (c.served() == der(&two.cert_file)).then_some(())
    });
    assert_eq!(
        kept.get("a.test", "/still").0,
        200,
        "the open connection is untouched"
    );
    assert_eq!(kept.served(), der(&one.cert_file));

    // A version whose key does not match: refused with the file named, v2 stays.
    write_version(&mount, "v3", &read(&one.cert_file), &read(&two.key_file));
    swap_data(&mount, "v3");
    let log = child.log.as_ref().unwrap();
    let deadline = Instant::now() + SETTLE;
    loop {
        let line = log
            .recv_timeout(deadline.saturating_duration_since(Instant::now()))
            .expect("a refusal naming the key file");
        if line.contains("reload refused") {
            assert!(
                line.contains("tls.key") && line.contains("does not match"),
                "{line}"
            );
            break;
        }
    }
    let c = Tls::connect(addr, config.clone(), "a.test", true).unwrap();
    assert_eq!(
        c.served(),
        der(&two.cert_file),
        "the last good certificate serves"
    );
}

#[test]
fn strait_check_refuses_a_key_that_does_not_match_naming_the_file() {
    let dir = temp_dir("tls-check");
    let one = certs(&dir, "one", &["a.test"]);
    let two = certs(&dir, "two", &["a.test"]);
    let yaml = format!(
        "listeners:\n  - name: https\n    address: 127.0.0.1:0\n    tls:\n      certificates:\n        - {{cert_file: '{}', key_file: '{}'}}\nservices:\n  - {{name: s, upstream: u}}\nupstreams:\n  - {{name: u, nodes: [{{address: '127.0.0.1:1'}}]}}\n",
        one.cert_file.display(),
        two.key_file.display()
    );
    let path = dir.join("bad.yaml");
    std::fs::write(&path, yaml).unwrap();
    let out = strait()
        .args(["check", path.to_str().unwrap()])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(err.contains("listeners[0].tls.certificates[0]"), "{err}");
    assert!(
        err.contains(&two.key_file.display().to_string()) && err.contains("does not match"),
        "{err}"
    );
    assert!(
        !err.contains("PRIVATE KEY"),
        "no key material in errors: {err}"
    );
}

#[test]
fn upstream_tls_verifies_the_endpoint_with_the_ca_refuses_a_wrong_one_and_pools() {
    let dir = temp_dir("tls-upstream");
    let a = certs(&dir, "a", &["a.test"]);
    let other = certs(&dir, "other", &["a.test"]);
    // The TLS endpoint: a gateway with an HTTPS listener in front of an echo backend.
    let inner = Harness::start(
        &["127.0.15.21"],
        &format!(
            "listeners:\n  - name: http\n    address: 127.0.15.22:0\n{}services:\n  - {{name: s, upstream: u}}\nupstreams:\n  - {{name: u, nodes: [{{address: '{{b0}}'}}]}}\n",
            tls_listener("https", "127.0.15.23", &[&a], ""),
        ),
    );
    let endpoint = inner.gateway_ref().listen_addr("https").unwrap();
    let upstream = |name: &str, tls: &str| {
        format!("  - {{name: {name}, nodes: [{{address: '{endpoint}'}}], tls: {tls}}}\n")
    };
    let front = Harness::with_addrs(
        &format!(
            "services:\n  - {{name: good, hosts: [good.test], upstream: good}}\n  - {{name: bad, hosts: [bad.test], upstream: bad}}\n  - {{name: blind, hosts: [blind.test], upstream: blind}}\nupstreams:\n{}{}{}",
            upstream("good", &format!("{{sni: a.test, ca_file: '{}'}}", a.ca_file.display())),
            upstream("bad", &format!("{{sni: a.test, ca_file: '{}'}}", other.ca_file.display())),
            upstream("blind", &format!("{{sni: a.test, ca_file: '{}', verify: false}}", other.ca_file.display())),
        ),
        &[],
    );
    // Verified: the request goes through TLS (the endpoint sees https) on a pooled
    // connection: the second request comes from the same source port.
    let mut c = front.client();
    let r = c.request(&get("good.test", "/one"));
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["headers"]["X-Forwarded-Proto"], "https");
    let first = r.json()["origin"].clone();
    let r = c.request(&get("good.test", "/two"));
    assert_eq!(r.status, 200);
    assert_eq!(r.json()["origin"], first);
    // A CA that did not sign the endpoint's certificate: 502, said so.
    let r = front.client().request(&get("bad.test", "/"));
    assert_eq!(r.status, 502);
    assert!(
        r.text().contains("TLS handshake with the upstream failed"),
        "{}",
        r.text()
    );
    // verify: false, on purpose: served.
    assert_eq!(front.client().request(&get("blind.test", "/")).status, 200);
}

#[test]
fn client_ca_file_requires_a_client_certificate_its_ca_signed() {
    let dir = temp_dir("tls-mtls");
    let a = certs(&dir, "a", &["a.test"]);
    let client = certs(&dir, "client", &["client.test"]);
    let stranger = certs(&dir, "stranger", &["client.test"]);
    let template = format!(
        "listeners:\n  - name: http\n    address: 127.0.0.1:0\n{}services:\n  - {{name: s, upstream: u}}\nupstreams:\n  - {{name: u, nodes: [{{address: '{{b0}}'}}]}}\n",
        tls_listener(
            "https",
            "127.0.15.31",
            &[&a],
            &format!("      client_ca_file: '{}'\n", client.ca_file.display())
        ),
    );
    let h = Harness::start(&["127.0.15.32"], &template);
    let https = h.gateway_ref().listen_addr("https").unwrap();
    let with_cert = |who: &DemoCerts| {
        let mut roots = RootCertStore::empty();
        roots.add(der(&a.ca_file)).unwrap();
        let key = rustls::pki_types::PrivateKeyDer::from_pem_file(&who.key_file).unwrap();
        let config =
            ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
                .with_safe_default_protocol_versions()
                .unwrap()
                .with_root_certificates(roots)
                .with_client_auth_cert(vec![der(&who.cert_file)], key)
                .unwrap();
        Arc::new(config)
    };
    // Signed by the listener's client CA: served.
    let mut ok = Tls::connect(https, with_cert(&client), "a.test", true).unwrap();
    assert_eq!(ok.get("a.test", "/").0, 200);
    // No certificate, or one another CA signed: refused (TLS 1.3 reports it on the first
    // read after the handshake).
    for config in [client_config(&[&a], None), with_cert(&stranger)] {
        let refused = Tls::connect(https, config, "a.test", true).and_then(|mut c| {
            c.stream
                .get_mut()
                .write_all(get("a.test", "/").as_bytes())?;
            let mut line = String::new();
            c.stream.read_line(&mut line)?;
            if line.is_empty() {
                Err(std::io::Error::other("closed"))
            } else {
                Ok(line)
            }
        });
        assert!(
            refused.is_err(),
            "served without a trusted client certificate: {refused:?}"
        );
    }
}

#[test]
fn a_tcp_listener_passes_tls_through_by_sni_or_terminates_it() {
    let dir = temp_dir("tls-tcp");
    let a = certs(&dir, "a", &["a.test"]);
    let w = certs(&dir, "w", &["*.w.test"]);
    // Two TLS endpoints: gateways with HTTPS listeners, each in front of an echo backend.
    let endpoint = |ip: &str, backend: &str, set: &DemoCerts| {
        Harness::start(
            &[backend],
            &format!(
                "listeners:\n  - name: http\n    address: {ip}:0\n{}services:\n  - {{name: s, upstream: u}}\nupstreams:\n  - {{name: u, nodes: [{{address: '{{b0}}'}}]}}\n",
                tls_listener("https", &ip.replace(".4", ".5"), &[set], ""),
            ),
        )
    };
    let ea = endpoint("127.0.15.41", "127.0.15.42", &a);
    let ew = endpoint("127.0.15.43", "127.0.15.44", &w);
    let echo_backend = echo("127.0.15.46");
    let front = Harness::with_addrs(
        &format!(
            "listeners:\n  - name: http\n    address: 127.0.15.47:0\n  - name: tcp\n    address: 127.0.15.48:0\n    protocol: tcp\n    sni_routes:\n      - {{names: [a.test], upstream: ua}}\n      - {{names: ['*.w.test'], upstream: uw}}\n{}    protocol: tcp\n    upstream: plain\nupstreams:\n  - {{name: ua, nodes: [{{address: '{}'}}]}}\n  - {{name: uw, nodes: [{{address: '{}'}}]}}\n  - {{name: plain, nodes: [{{address: '{}'}}]}}\n",
            tls_listener("terminate", "127.0.15.49", &[&a], ""),
            ea.gateway_ref().listen_addr("https").unwrap(),
            ew.gateway_ref().listen_addr("https").unwrap(),
            echo_backend.addr(),
        ),
        &[],
    );
    let pass = front.gateway_ref().listen_addr("tcp").unwrap();
    let config = client_config(&[&a, &w], None);
    // Passthrough: the endpoint's own certificate reaches the client.
    let mut to_a = Tls::connect(pass, config.clone(), "a.test", true).unwrap();
    assert_eq!(to_a.served(), der(&a.cert_file));
    assert_eq!(to_a.get("a.test", "/").0, 200);
    let to_w = Tls::connect(pass, config.clone(), "x.w.test", true).unwrap();
    assert_eq!(to_w.served(), der(&w.cert_file));
    // No route and no default upstream: closed.
    assert!(Tls::connect(pass, config.clone(), "other.test", true).is_err());
    // Not TLS at all: closed without an answer.
    let mut plain = Client::connect(pass);
    plain.send(get("a.test", "/").as_bytes());
    assert!(plain.read_to_close().is_empty());
    // Termination on a tcp listener: the plaintext reaches the (HTTP) backend.
    let term = front.gateway_ref().listen_addr("terminate").unwrap();
    let mut c = Tls::connect(term, config, "a.test", true).unwrap();
    assert_eq!(c.served(), der(&a.cert_file));
    let (status, body) = c.get("a.test", "/through");
    assert_eq!(status, 200);
    let json: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(json["backend"], echo_backend.addr().to_string());
}

#[test]
fn handshakes_beyond_max_handshakes_are_closed_at_once_and_a_good_client_still_gets_in() {
    let dir = temp_dir("tls-flood");
    let a = certs(&dir, "a", &["a.test"]);
    let template = format!(
        "listeners:\n  - name: http\n    address: 127.0.0.1:0\n{}services:\n  - {{name: s, upstream: u}}\nupstreams:\n  - {{name: u, nodes: [{{address: '{{b0}}'}}]}}\n",
        tls_listener("https", "127.0.15.61", &[&a], "      max_handshakes: 2\n      handshake_timeout: 2s\n"),
    );
    let h = Harness::start(&["127.0.15.62"], &template);
    let https = h.gateway_ref().listen_addr("https").unwrap();
    let admin = h.gateway_ref().admin_addr().unwrap();
    // Two connections that start a handshake and stall (a record header, no more).
    let stalled: Vec<TcpStream> = (0..2)
        .map(|_| {
            let mut s = TcpStream::connect(https).unwrap();
            s.write_all(&[0x16, 0x03, 0x01, 0x02, 0x00]).unwrap();
            s
        })
        .collect();
    eventually("both stalled handshakes to be in progress", || {
        // A third connection is refused at once while they are.
        let mut third = TcpStream::connect(https).ok()?;
        third
            .set_read_timeout(Some(Duration::from_millis(500)))
            .ok()?;
        let mut b = [0u8; 1];
        matches!(third.read(&mut b), Ok(0)).then_some(())
    });
    assert!(handshakes(admin, "overload") >= 1);
    // Once they are cut (handshake_timeout), handshakes get through again.
    drop(stalled);
    eventually("a good client to get in", || {
        let mut c = Tls::connect(https, client_config(&[&a], None), "a.test", true).ok()?;
        (c.get("a.test", "/").0 == 200).then_some(())
    });
}
