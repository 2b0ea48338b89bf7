//! Drift guards: each `FIELDS`/`VARIANTS` list matches what serde accepts, and CONFIG.md
//! names every key and value.

use super::*;
use serde::de::DeserializeOwned;

/// What serde accepts for `T`, read from the error it gives for an unknown key (or
/// variant): "unknown field `x`, expected one of `a`, `b`".
fn accepted<T: DeserializeOwned + std::fmt::Debug>(probe: &str) -> Vec<String> {
    let err = serde_norway::from_str::<T>(probe).expect_err("the probe must be refused");
    let msg = err.to_string();
    let (_, expected) = msg
        .split_once("expected")
        .unwrap_or_else(|| panic!("no `expected` in {msg:?}"));
    expected
        .split('`')
        .skip(1)
        .step_by(2)
        .map(str::to_owned)
        .collect()
}

/// Every struct and enum of the file form, with its list.
fn all() -> Vec<(&'static str, Vec<String>, &'static [&'static str])> {
    const KEY: &str = "no_such_key: 0";
    const VALUE: &str = "no_such_value";
    vec![
        (
            "FileConfig",
            accepted::<FileConfig>(KEY),
            FileConfig::FIELDS,
        ),
        (
            "FileDriver",
            accepted::<FileDriver>(VALUE),
            FileDriver::VARIANTS,
        ),
        (
            "FileListener",
            accepted::<FileListener>(KEY),
            FileListener::FIELDS,
        ),
        (
            "FileListenerTls",
            accepted::<FileListenerTls>(KEY),
            FileListenerTls::FIELDS,
        ),
        (
            "FileSniRoute",
            accepted::<FileSniRoute>(KEY),
            FileSniRoute::FIELDS,
        ),
        (
            "FileUpstreamTls",
            accepted::<FileUpstreamTls>(KEY),
            FileUpstreamTls::FIELDS,
        ),
        (
            "FileCertificate",
            accepted::<FileCertificate>(KEY),
            FileCertificate::FIELDS,
        ),
        (
            "FileSecretRef",
            accepted::<FileSecretRef>(KEY),
            FileSecretRef::FIELDS,
        ),
        (
            "FileProtocol",
            accepted::<FileProtocol>(VALUE),
            FileProtocol::VARIANTS,
        ),
        (
            "FileBalance",
            accepted::<FileBalance>(VALUE),
            FileBalance::VARIANTS,
        ),
        ("FileHash", accepted::<FileHash>(KEY), FileHash::FIELDS),
        (
            "FileHashKey",
            accepted::<FileHashKey>(VALUE),
            FileHashKey::VARIANTS,
        ),
        (
            "FileOutlier",
            accepted::<FileOutlier>(KEY),
            FileOutlier::FIELDS,
        ),
        (
            "FileHealthCheck",
            accepted::<FileHealthCheck>(KEY),
            FileHealthCheck::FIELDS,
        ),
        (
            "FileCheckType",
            accepted::<FileCheckType>(VALUE),
            FileCheckType::VARIANTS,
        ),
        (
            "FileLocality",
            accepted::<FileLocality>(KEY),
            FileLocality::FIELDS,
        ),
        (
            "FilePrefer",
            accepted::<FilePrefer>(VALUE),
            FilePrefer::VARIANTS,
        ),
        (
            "FileGatewayNode",
            accepted::<FileGatewayNode>(KEY),
            FileGatewayNode::FIELDS,
        ),
        (
            "FileUpstreamProtocol",
            accepted::<FileUpstreamProtocol>(VALUE),
            FileUpstreamProtocol::VARIANTS,
        ),
        (
            "FileAccessLog",
            accepted::<FileAccessLog>(KEY),
            FileAccessLog::FIELDS,
        ),
        ("FileHttp", accepted::<FileHttp>(KEY), FileHttp::FIELDS),
        ("FileHttp2", accepted::<FileHttp2>(KEY), FileHttp2::FIELDS),
        (
            "FileService",
            accepted::<FileService>(KEY),
            FileService::FIELDS,
        ),
        ("FileRoute", accepted::<FileRoute>(KEY), FileRoute::FIELDS),
        (
            "FileUpstream",
            accepted::<FileUpstream>(KEY),
            FileUpstream::FIELDS,
        ),
        ("FileNode", accepted::<FileNode>(KEY), FileNode::FIELDS),
        (
            "FileDiscovery",
            accepted::<FileDiscovery>(KEY),
            FileDiscovery::FIELDS,
        ),
        (
            "FileRegistry",
            accepted::<FileRegistry>(KEY),
            FileRegistry::FIELDS,
        ),
        (
            "FileResource",
            accepted::<FileResource>(VALUE),
            FileResource::VARIANTS,
        ),
        (
            "FileTimeouts",
            accepted::<FileTimeouts>(KEY),
            FileTimeouts::FIELDS,
        ),
        (
            "FilePassHost",
            accepted::<FilePassHost>(VALUE),
            FilePassHost::VARIANTS,
        ),
        (
            "FileKeepalive",
            accepted::<FileKeepalive>(KEY),
            FileKeepalive::FIELDS,
        ),
        (
            "FilePassiveHealth",
            accepted::<FilePassiveHealth>(KEY),
            FilePassiveHealth::FIELDS,
        ),
        (
            "FileShutdown",
            accepted::<FileShutdown>(KEY),
            FileShutdown::FIELDS,
        ),
        ("FileAdmin", accepted::<FileAdmin>(KEY), FileAdmin::FIELDS),
        (
            "FilePathMatch",
            accepted::<FilePathMatch>(VALUE),
            FilePathMatch::VARIANTS,
        ),
        (
            "FileValueMatch",
            accepted::<FileValueMatch>(KEY),
            FileValueMatch::FIELDS,
        ),
        (
            "FileBackend",
            accepted::<FileBackend>(KEY),
            FileBackend::FIELDS,
        ),
        (
            "FileHeaderEdits",
            accepted::<FileHeaderEdits>(KEY),
            FileHeaderEdits::FIELDS,
        ),
        (
            "FileRewrite",
            accepted::<FileRewrite>(KEY),
            FileRewrite::FIELDS,
        ),
        (
            "FileRedirect",
            accepted::<FileRedirect>(KEY),
            FileRedirect::FIELDS,
        ),
        (
            "FileDirectResponse",
            accepted::<FileDirectResponse>(KEY),
            FileDirectResponse::FIELDS,
        ),
        (
            "FileRateLimit",
            accepted::<FileRateLimit>(KEY),
            FileRateLimit::FIELDS,
        ),
        (
            "FileRateKey",
            accepted::<FileRateKey>(VALUE),
            FileRateKey::VARIANTS,
        ),
        (
            "FileRequestId",
            accepted::<FileRequestId>(KEY),
            FileRequestId::FIELDS,
        ),
        (
            "FileProxyProtocol",
            accepted::<FileProxyProtocol>(VALUE),
            FileProxyProtocol::VARIANTS,
        ),
        (
            "FileLogFormat",
            accepted::<FileLogFormat>(VALUE),
            FileLogFormat::VARIANTS,
        ),
    ]
}

#[test]
fn each_field_list_matches_what_serde_accepts() {
    for (name, serde, listed) in all() {
        assert_eq!(
            serde, listed,
            "{name}: its FIELDS/VARIANTS list is out of date"
        );
    }
}

#[test]
fn config_md_names_every_key_and_value() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../CONFIG.md");
    let doc = std::fs::read_to_string(path).expect("CONFIG.md next to the workspace root");
    let mut missing = Vec::new();
    for (name, _, listed) in all() {
        for key in listed {
            if !doc.contains(&format!("`{key}`")) {
                missing.push(format!("{name}.{key}"));
            }
        }
    }
    assert!(
        missing.is_empty(),
        "CONFIG.md does not document: {missing:?}"
    );
}
