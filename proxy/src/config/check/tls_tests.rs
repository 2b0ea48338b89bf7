//! Tests of `listeners[].tls.certificates[]`: files or a Secret, and the Secrets the spec
//! asks discovery to watch. Runs on: the test harness; pure.

use super::*;
use strait_discovery::spec::SecretRef;

use crate::config::{CertSource, ConfigError};

fn listener(certificates: &str, registries: &str) -> String {
    format!(
        "listeners:\n  - name: https\n    address: 127.0.0.1:9443\n    tls:\n      certificates:\n{certificates}\
         upstreams:\n  - name: u\n    nodes:\n      - address: 127.0.0.2:8080\n\
         services:\n  - {{name: s, upstream: u}}\n{registries}"
    )
}

const REGISTRY: &str =
    "registries:\n  - {name: local, server: 'https://127.0.0.1:6443', token: t}\n";

fn refused(yaml: &str) -> ConfigError {
    from_yaml(yaml).expect_err("the config must be refused")
}

#[test]
fn a_secret_certificate_names_its_registry_and_is_watched_once() {
    let certs = "        - secret: {registry: local, namespace: apisix, name: httpbin-tls}\n\
                 \x20       - {secret: {registry: local, namespace: apisix, name: httpbin-tls}, names: [a.test]}\n\
                 \x20       - {cert_file: /tls/a.crt, key_file: /tls/a.key}\n";
    let config = from_yaml(&listener(certs, REGISTRY)).unwrap();
    let secret = SecretRef {
        registry: "local".into(),
        namespace: "apisix".into(),
        name: "httpbin-tls".into(),
    };
    assert_eq!(config.spec.tls_secrets, vec![secret.clone()]);
    let tls = config.listeners[0].tls.as_ref().unwrap();
    assert_eq!(tls.certificates[0].source, CertSource::Secret(secret));
    assert_eq!(
        tls.certificates[1].names.as_deref(),
        Some(&["a.test".to_string()][..])
    );
    assert!(tls.certificates[2].files().is_some());
}

#[test]
fn a_certificate_needs_files_or_a_secret_in_a_configured_enabled_registry() {
    let unknown = "        - secret: {registry: other, namespace: apisix, name: x}\n";
    let e = refused(&listener(unknown, REGISTRY));
    assert_eq!(e.field, "listeners[0].tls.certificates[0].secret.registry");
    assert!(e.message.contains("no registry named \"other\""), "{e}");

    let disabled = REGISTRY.replace("token: t}", "token: t, enabled: false}");
    let e = refused(&listener(
        "        - secret: {registry: local, namespace: apisix, name: x}\n",
        &disabled,
    ));
    assert!(e.message.contains("disabled"), "{e}");

    let both = "        - {cert_file: /a.crt, key_file: /a.key, secret: {registry: local, namespace: n, name: x}}\n";
    let e = refused(&listener(both, REGISTRY));
    assert_eq!(e.field, "listeners[0].tls.certificates[0]");

    let half = "        - {cert_file: /a.crt}\n";
    assert_eq!(
        refused(&listener(half, REGISTRY)).field,
        "listeners[0].tls.certificates[0].key_file"
    );

    let empty = "        - secret: {registry: local, namespace: '', name: x}\n";
    assert_eq!(
        refused(&listener(empty, REGISTRY)).field,
        "listeners[0].tls.certificates[0].secret.namespace"
    );
}
