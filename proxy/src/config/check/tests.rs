//! Tests of the loader: the seed config, every key, and one refusal per check, each naming
//! its field path and line. Runs on: the test harness; pure (no files but CONFIG.md).

use super::*;
use std::path::PathBuf;

use strait_discovery::route::MethodSet;
use strait_discovery::spec::{
    Connection, NodeSpec, PassHost, PassiveHealth, PoolSettings, Resource, RouteSpec, ServicePort,
    ServiceSpec, UpstreamSettings, UpstreamSource, UpstreamSpec,
};

use crate::config::{
    AccessLogConfig, AdminConfig, HttpConfig, ListenerConfig, Protocol, ShutdownConfig, TcpConfig,
};

fn refused(yaml: &str) -> ConfigError {
    from_yaml(yaml).expect_err("the config must be refused")
}

/// A valid config with one listener and one upstream `u`, then `services`.
fn with_services(services: &str) -> String {
    format!(
        "listeners:\n  - name: http\n    address: 127.0.0.1:9080\n\
         upstreams:\n  - name: u\n    nodes:\n      - address: 127.0.0.2:8080\n\
         services:\n{services}"
    )
}

/// A valid config with one listener and one service using upstream `u`, then `upstreams`.
fn with_upstreams(upstreams: &str) -> String {
    format!(
        "listeners:\n  - name: http\n    address: 127.0.0.1:9080\n\
         services:\n  - name: s\n    upstream: u\n\
         upstreams:\n{upstreams}"
    )
}

const SEED: &str = "\
workers: 2
listeners:
  - name: http
    address: 127.0.0.1:9080
services:
  - name: sd-app
    hosts: [sd.httpbin.org]
    path_prefix: /v1
    upstream: httpbin
    routes:
      - name: anything
        path: /anything
        strip_prefix: true
upstreams:
  - name: httpbin
    nodes:
      - address: 127.0.0.2:8080
      - address: 127.0.0.3:8080
      - address: 127.0.0.4:8080
";

#[test]
fn seed_config_parses_into_the_expected_config() {
    let config = from_yaml(SEED).expect("seed config");
    let node = |a: &str| NodeSpec {
        addr: a.parse().unwrap(),
        weight: 1,
    };
    let expected = Config {
        workers: NonZeroUsize::new(2),
        driver: Driver::Auto,
        listeners: vec![ListenerConfig {
            name: "http".into(),
            addr: ListenAddr::Inet("127.0.0.1:9080".parse().unwrap()),
            mode: None,
            protocol: Protocol::Http,
            tls: None,
            trusted_proxies: Vec::new(),
            proxy_protocol: false,
        }],
        access_log: AccessLogConfig::default(),
        http: HttpConfig::default(),
        shutdown: ShutdownConfig::default(),
        admin: AdminConfig::default(),
        spec: Spec {
            registries: Vec::new(),
            tls_secrets: Vec::new(),
            node: Default::default(),
            services: vec![ServiceSpec {
                name: "sd-app".into(),
                hosts: vec!["sd.httpbin.org".into()],
                path_prefix: "/v1".into(),
                upstream: Some("httpbin".into()),
                routes: vec![RouteSpec {
                    name: "anything".into(),
                    path: "/anything".into(),
                    strip_prefix: true,
                    methods: MethodSet::ANY,
                    ..RouteSpec::default()
                }],
            }],
            upstreams: vec![UpstreamSpec {
                name: "httpbin".into(),
                source: UpstreamSource::Static(vec![
                    node("127.0.0.2:8080"),
                    node("127.0.0.3:8080"),
                    node("127.0.0.4:8080"),
                ]),
                settings: UpstreamSettings::default(),
            }],
        },
    };
    assert_eq!(config, expected);
}

#[test]
fn every_key_is_read_into_the_checked_form() {
    let config = from_yaml(
        "\
workers: 4
driver: io_uring
listeners:
  - name: http
    address: '[::1]:0'
    protocol: http
  - name: db
    address: '[::1]:5432'
    protocol: tcp
    upstream: u
    idle_timeout: 10m
    drain_timeout: 30s
  - name: broker
    address: '[::1]:9092'
    protocol: tcp
    upstream: u
    drain_timeout: 0s
access_log:
  enabled: true
  path: /var/log/strait/access.log
  format: apisix
http:
  client_header_timeout: 10s
  client_body_timeout: 20s
  client_body_total_timeout: 2m
  keepalive_timeout: 1m
  max_request_line_bytes: 4096
  max_request_head_bytes: 8192
  max_headers: 50
  tunnel_idle_timeout: 30s
  max_connections_per_worker: 1000
  max_request_body_bytes: 0
  http2:
    enabled: false
    max_concurrent_streams: 10
    max_header_list_size: 4096
    initial_stream_window: 65535
    initial_connection_window: 131072
    max_send_buffer: 16384
    max_pending_resets: 5
    max_local_resets: 7
    stream_idle_timeout: 90s
    max_control_frames: 50
shutdown:
  delay: 0s
  timeout: 45s
services:
  - name: s
    hosts: [API.Example.com, '*.example.org']
    routes:
      - name: r
        path: /r
        methods: [get, Post]
        upstream: u
upstreams:
  - name: u
    nodes:
      - address: 10.0.0.1:80
        weight: 0
      - address: 10.0.0.2:80
        weight: 10000
    timeouts:
      connect: 250ms
      response_header: 2s
      read: 3s
      write: 4s
    retries: 0
    pass_host: rewrite
    upstream_host: example.com:8443
    keepalive:
      max_idle: 0
      idle_timeout: 5s
      max_requests: 0
    retry_body_bytes: 0
    passive_health:
      consecutive_failures: 5
      base_ejection: 1s
      max_ejection: 8s
      max_ejected_percent: 30
    protocol: h2c
",
    )
    .expect("valid config");
    assert_eq!(config.workers, NonZeroUsize::new(4));
    assert_eq!(config.driver, Driver::IoUring);
    assert_eq!(
        config.listeners[0].addr,
        ListenAddr::Inet("[::1]:0".parse().unwrap())
    );
    assert_eq!(config.listeners[0].protocol, Protocol::Http);
    assert_eq!(
        config.listeners[1].protocol,
        Protocol::Tcp(TcpConfig {
            upstream: Some("u".into()),
            sni_routes: Vec::new(),
            idle_timeout: Duration::from_secs(600),
            drain_timeout: Some(Duration::from_secs(30)),
        })
    );
    assert_eq!(
        config.listeners[2].protocol,
        Protocol::Tcp(TcpConfig {
            upstream: Some("u".into()),
            sni_routes: Vec::new(),
            idle_timeout: TcpConfig::DEFAULT_IDLE_TIMEOUT,
            drain_timeout: None,
        })
    );
    assert_eq!(
        config.access_log,
        AccessLogConfig {
            enabled: true,
            path: Some(PathBuf::from("/var/log/strait/access.log")),
            format: crate::access_log::Format::Apisix,
        }
    );
    assert_eq!(
        config.http,
        HttpConfig {
            client_header_timeout: Duration::from_secs(10),
            client_body_timeout: Duration::from_secs(20),
            client_body_total_timeout: Duration::from_secs(120),
            keepalive_timeout: Duration::from_secs(60),
            max_request_line_bytes: 4096,
            max_request_head_bytes: 8192,
            max_headers: 50,
            tunnel_idle_timeout: Duration::from_secs(30),
            max_connections_per_worker: 1000,
            max_request_body_bytes: 0,
            http2: crate::config::Http2Config {
                enabled: false,
                max_concurrent_streams: 10,
                max_header_list_size: 4096,
                initial_stream_window: 65535,
                initial_connection_window: 131072,
                max_send_buffer: 16384,
                max_pending_resets: 5,
                max_local_resets: 7,
                stream_idle_timeout: Duration::from_secs(90),
                max_control_frames: 50,
            },
            request_id: Default::default(),
        }
    );
    assert_eq!(
        config.shutdown,
        ShutdownConfig {
            delay: Duration::ZERO,
            timeout: Duration::from_secs(45),
        }
    );
    let service = &config.spec.services[0];
    assert_eq!(service.hosts, ["api.example.com", "*.example.org"]);
    assert_eq!(service.path_prefix, "/");
    let route = &service.routes[0];
    assert_eq!(route.methods.names().collect::<Vec<_>>(), ["GET", "POST"]);
    assert_eq!(route.upstream.as_deref(), Some("u"));
    let upstream = &config.spec.upstreams[0];
    let UpstreamSource::Static(nodes) = &upstream.source else {
        panic!("static nodes expected");
    };
    assert_eq!(
        nodes.iter().map(|n| n.weight).collect::<Vec<_>>(),
        [0, 10000]
    );
    assert_eq!(
        upstream.settings,
        UpstreamSettings {
            connect_timeout: Duration::from_millis(250),
            response_header_timeout: Duration::from_secs(2),
            read_timeout: Duration::from_secs(3),
            write_timeout: Duration::from_secs(4),
            retries: Some(0),
            retry_body_bytes: 0,
            pass_host: PassHost::Rewrite("example.com:8443".into()),
            pool: PoolSettings {
                max_idle_per_endpoint: 0,
                idle_timeout: Duration::from_secs(5),
                max_requests_per_connection: 0,
            },
            health: PassiveHealth {
                consecutive_failures: 5,
                base_ejection: Duration::from_secs(1),
                max_ejection: Duration::from_secs(8),
                max_ejected_percent: 30,
            },
            tls: None,
            protocol: strait_discovery::spec::UpstreamProtocol::H2c,
            ..UpstreamSettings::default()
        }
    );
}

#[test]
fn the_example_in_config_md_is_accepted() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../CONFIG.md");
    let doc = std::fs::read_to_string(path).expect("CONFIG.md next to the workspace root");
    let start = doc.find("```yaml\n").expect("a ```yaml block") + "```yaml\n".len();
    let len = doc[start..].find("```").expect("the block's end");
    if let Err(e) = from_yaml(&doc[start..start + len]) {
        panic!("CONFIG.md's first example is refused: {e}");
    }
}

#[test]
fn an_unknown_key_is_refused_with_its_path_and_line() {
    let e = refused(&with_services(
        "  - name: s\n    routes:\n      - name: r\n        path: /\n        upstrem: u\n",
    ));
    assert_eq!(e.field, "services[0].routes[0].upstrem");
    assert_eq!(e.line, Some(13));
    assert!(
        e.message.starts_with("unknown field `upstrem`"),
        "{}",
        e.message
    );
    assert!(!e.message.contains("line"), "{}", e.message);

    let e = refused("listeners: []\n\nlistner: 1\n");
    assert_eq!((e.field.as_str(), e.line), ("listner", Some(3)));
}

#[test]
fn an_undefined_upstream_names_the_route_field_and_line() {
    let e = refused(&with_services(
        "  - name: s\n    routes:\n      - name: r\n        path: /\n        upstream: nope\n",
    ));
    assert_eq!(e.field, "services[0].routes[0].upstream");
    assert_eq!(e.line, Some(13));
    assert_eq!(e.message, "upstream \"nope\" is not defined");
}

#[test]
fn a_route_without_any_upstream_is_refused() {
    let e = refused(&with_services(
        "  - name: s\n    routes:\n      - name: r\n        path: /\n",
    ));
    assert_eq!(e.field, "services[0].routes[0].upstream");
    assert_eq!(e.line, Some(11), "falls back to the route's line");
    let e = refused(&with_services("  - name: s\n"));
    assert_eq!(e.field, "services[0].upstream");
}

#[test]
fn error_display_names_file_line_and_field() {
    let yaml = "\
# strait.yaml
workers: 1
listeners:
  - name: http
    address: 127.0.0.1:9080
upstreams:
  - name: u
    nodes:
      - address: 127.0.0.2:8080
services:
  - name: s
    upstream: x
";
    let mut e = refused(yaml);
    e.file = Some(PathBuf::from("strait.yaml"));
    assert_eq!(
        e.to_string(),
        "strait.yaml:line 12: services[0].upstream: upstream \"x\" is not defined"
    );
}

#[test]
fn bad_durations_are_refused() {
    let node = "  - name: u\n    nodes:\n      - address: 127.0.0.2:8080\n";
    let e = refused(&with_upstreams(&format!(
        "{node}    timeouts:\n      connect: 5 parsecs\n"
    )));
    assert_eq!(e.field, "upstreams[0].timeouts.connect");
    assert_eq!(e.line, Some(12));
    assert!(
        e.message.starts_with("invalid duration \"5 parsecs\""),
        "{}",
        e.message
    );

    let e = refused(&with_upstreams(&format!(
        "{node}    keepalive:\n      idle_timeout: 0s\n"
    )));
    assert_eq!(e.field, "upstreams[0].keepalive.idle_timeout");
    assert_eq!(e.message, "duration must be greater than 0");

    let e =
        refused("listeners: [{name: a, address: '127.0.0.1:1'}]\nhttp:\n  keepalive_timeout: 5\n");
    assert_eq!(
        (e.field.as_str(), e.line),
        ("http.keepalive_timeout", Some(3))
    );
}

#[test]
fn bad_addresses_are_refused() {
    let e = refused(&with_upstreams(
        "  - name: u\n    nodes:\n      - address: localhost:8080\n",
    ));
    assert_eq!(e.field, "upstreams[0].nodes[0].address");
    assert_eq!(e.line, Some(10));
    assert!(
        e.message.contains("an IP address and port"),
        "{}",
        e.message
    );

    let e = refused("listeners:\n  - name: a\n    address: 127.0.0.1\n");
    assert_eq!(
        (e.field.as_str(), e.line),
        ("listeners[0].address", Some(3))
    );

    let e = refused(&with_upstreams(
        "  - name: u\n    nodes:\n      - address: 127.0.0.2:0\n",
    ));
    assert!(e.message.contains("port 0"), "{}", e.message);
}

#[test]
fn duplicate_names_and_addresses_are_refused() {
    let e = refused(&with_services(
        "  - name: s\n    upstream: u\n  - name: s\n    upstream: u\n",
    ));
    assert_eq!(e.field, "services[1].name");
    assert_eq!(e.line, Some(11));
    assert_eq!(e.message, "duplicate service name \"s\" (also services[0])");

    let e = refused(&with_services(
            "  - name: s\n    upstream: u\n    routes:\n      - {name: r, path: /a}\n      - {name: r, path: /b}\n",
        ));
    assert_eq!(e.field, "services[0].routes[1].name");

    let e = refused(&with_upstreams(
            "  - name: u\n    nodes: [{address: '127.0.0.2:1'}]\n  - name: u\n    nodes: [{address: '127.0.0.3:1'}]\n",
        ));
    assert_eq!((e.field.as_str(), e.line), ("upstreams[1].name", Some(10)));

    let e = refused(&with_services("  - name: ''\n    upstream: u\n"));
    assert_eq!(e.message, "service name must not be empty");

    let e = refused(
            "listeners:\n  - {name: a, address: '127.0.0.1:80'}\n  - {name: b, address: '127.0.0.1:80'}\n",
        );
    assert_eq!(
        (e.field.as_str(), e.line),
        ("listeners[1].address", Some(3))
    );

    let e = refused(&with_upstreams(
        "  - name: u\n    nodes: [{address: '127.0.0.2:1'}, {address: '127.0.0.2:1'}]\n",
    ));
    assert_eq!(e.field, "upstreams[0].nodes[1].address");
}

#[test]
fn hosts_paths_and_methods_are_checked() {
    let e = refused(&with_services(
        "  - name: s\n    upstream: u\n    hosts: [a.*.com]\n",
    ));
    assert_eq!(
        (e.field.as_str(), e.line),
        ("services[0].hosts[0]", Some(11))
    );
    let e = refused(&with_services(
        "  - name: s\n    upstream: u\n    hosts: ['a.com:80']\n",
    ));
    assert!(e.message.contains("without a port"), "{}", e.message);
    let e = refused(&with_services(
        "  - name: s\n    upstream: u\n    hosts: [a.com, A.com]\n",
    ));
    assert_eq!(e.field, "services[0].hosts[1]");

    let e = refused(&with_services(
        "  - name: s\n    upstream: u\n    path_prefix: v1\n",
    ));
    assert_eq!(
        (e.field.as_str(), e.line),
        ("services[0].path_prefix", Some(11))
    );
    let e = refused(&with_services(
        "  - name: s\n    upstream: u\n    routes: [{name: r, path: x}]\n",
    ));
    assert_eq!(e.field, "services[0].routes[0].path");

    let e = refused(&with_services(
            "  - name: s\n    upstream: u\n    routes:\n      - name: r\n        path: /\n        methods: [GET, FETCH]\n",
        ));
    assert_eq!(e.field, "services[0].routes[0].methods[1]");
    assert_eq!(e.line, Some(14));
    assert!(
        e.message.starts_with("unknown method \"FETCH\""),
        "{}",
        e.message
    );
}

#[test]
fn a_route_may_name_connect_in_any_case() {
    let config = from_yaml(&with_services(
        "  - name: s\n    upstream: u\n    routes:\n      - name: tcp\n        path: /\n        methods: [connect, GET]\n",
    ))
    .expect("CONNECT is a method a route may name");
    let methods = config.spec.services[0].routes[0].methods;
    assert_eq!(methods.names().collect::<Vec<_>>(), ["GET", "CONNECT"]);
    assert!(methods.names_method("CONNECT"));
    // A near miss is still refused, naming the field.
    let e = refused(&with_services(
        "  - name: s\n    upstream: u\n    routes:\n      - name: tcp\n        path: /\n        methods: [CONNEKT]\n",
    ));
    assert_eq!(e.field, "services[0].routes[0].methods[0]");
    assert!(e.message.contains("CONNECT"), "{}", e.message);
}

#[test]
fn node_weights_are_checked() {
    let e = refused(&with_upstreams(
        "  - name: u\n    nodes:\n      - address: 127.0.0.2:1\n        weight: 10001\n",
    ));
    assert_eq!(
        (e.field.as_str(), e.line),
        ("upstreams[0].nodes[0].weight", Some(11))
    );
    let e = refused(&with_upstreams(
            "  - name: u\n    nodes:\n      - {address: '127.0.0.2:1', weight: 0}\n      - {address: '127.0.0.3:1', weight: 0}\n",
        ));
    assert_eq!(e.field, "upstreams[0].nodes");
    assert!(
        e.message.starts_with("every node has weight 0"),
        "{}",
        e.message
    );
    let e = refused(&with_upstreams("  - name: u\n    nodes: []\n"));
    assert_eq!(e.message, "at least one node is required");
}

#[test]
fn pass_host_and_upstream_host_must_agree() {
    let node = "  - name: u\n    nodes: [{address: '127.0.0.2:1'}]\n";
    let e = refused(&with_upstreams(&format!("{node}    pass_host: rewrite\n")));
    assert_eq!(
        (e.field.as_str(), e.line),
        ("upstreams[0].pass_host", Some(10))
    );
    let e = refused(&with_upstreams(&format!(
        "{node}    upstream_host: a.com\n"
    )));
    assert_eq!(e.field, "upstreams[0].upstream_host");
    let e = refused(&with_upstreams(&format!(
        "{node}    pass_host: sometimes\n"
    )));
    assert_eq!(e.field, "upstreams[0].pass_host");
    assert!(e.message.contains("unknown variant"), "{}", e.message);
}

#[test]
fn the_seed_registry_and_a_discovery_upstream_are_read() {
    let yaml = [
        "listeners: [{name: http, address: '127.0.0.1:9080'}]",
        "registries:",
        "  - name: my-k8s-cluster",
        "    server: https://10.0.0.1:6443",
        "    token_file: /var/run/token",
        "    ca_file: /etc/ca.pem",
        "    namespaces: ^apisix$",
        "    label_selector: app=httpbin",
        "    resource: endpoints",
        "  - name: off",
        "    enabled: false",
        "upstreams:",
        "  - name: httpbin",
        "    discovery: {registry: my-k8s-cluster, namespace: apisix, service: httpbin, port: 80}",
        "services:",
        "  - name: sd-app",
        "    hosts: [sd.httpbin.org]",
        "    upstream: httpbin",
    ]
    .join("\n");
    let yaml = yaml.as_str();
    let config = from_yaml(yaml).unwrap();
    let r = &config.spec.registries;
    assert_eq!(r.len(), 2);
    assert_eq!(r[0].namespaces.as_deref(), Some("^apisix$"));
    assert_eq!(r[0].resource, Resource::Endpoints);
    assert!(matches!(
        &r[0].connection,
        Connection::Explicit { server, credentials, insecure_skip_tls_verify: false, .. }
            if server == "https://10.0.0.1:6443" && credentials.token_file.is_some()
    ));
    assert_eq!(r[1].connection, Connection::InCluster);
    assert!(!r[1].enabled);
    assert!(matches!(
        &config.spec.upstreams[0].source,
        UpstreamSource::Discovery(d) if d.port == ServicePort::Number(80) && d.registry == "my-k8s-cluster"
    ));
}

#[test]
fn registry_settings_that_contradict_each_other_are_refused() {
    let reg = |body: &str| {
        format!("listeners: [{{name: http, address: '127.0.0.1:9080'}}]\nregistries:\n  - name: k\n{body}")
    };
    let e = refused(&reg("    kubeconfig: /k\n    server: https://x\n"));
    assert_eq!(
        (e.field.as_str(), e.line),
        ("registries[0].kubeconfig", Some(4))
    );
    let e = refused(&reg("    token: abc\n"));
    assert_eq!(e.field, "registries[0].server");
    let e = refused(&reg(
        "    server: https://x\n    token: a\n    token_file: /t\n",
    ));
    assert_eq!(e.field, "registries[0].token_file");
    let e = refused(&reg("    server: https://x\n    client_cert: /c\n"));
    assert_eq!(e.field, "registries[0].client_key");
    let e = refused(&reg("    namespaces: '(unclosed'\n"));
    assert_eq!(
        (e.field.as_str(), e.line),
        ("registries[0].namespaces", Some(4))
    );
    assert!(
        e.message.starts_with("not a valid regular expression"),
        "{}",
        e.message
    );
    let e = refused(&reg("    server: ftp://x\n"));
    assert_eq!(e.field, "registries[0].server");
    let e = refused(&reg("    resource: pods\n"));
    assert_eq!(e.field, "registries[0].resource");
    // The token never appears in an error.
    let e = refused(&reg(
        "    server: https://x\n    token: s3cr3t\n    token_file: /t\n",
    ));
    assert!(!e.to_string().contains("s3cr3t"));
}

#[test]
fn a_discovery_upstream_of_an_unconfigured_registry_is_accepted_with_a_warning() {
    let config = from_yaml(&with_upstreams(
        "  - name: u\n    discovery:\n      registry: k8s\n      namespace: default\n      service: web\n      port: http\n",
    ))
    .unwrap();
    assert_eq!(
        config.warnings(),
        ["upstream \"u\": registry \"k8s\" is not configured; the upstream answers 503 until it is"]
    );
    let e = refused(&with_upstreams(
        "  - name: u\n    discovery: {registry: '', namespace: n, service: s, port: 80}\n",
    ));
    assert_eq!(e.field, "upstreams[0].discovery.registry");
}

#[test]
fn discovery_and_nodes_exclude_each_other() {
    let e = refused(&with_upstreams(
            "  - name: u\n    nodes: [{address: '127.0.0.2:1'}]\n    discovery: {registry: k, namespace: n, service: s, port: 80}\n",
        ));
    assert_eq!(e.field, "upstreams[0].discovery");
    let e = refused(&with_upstreams("  - name: u\n"));
    assert_eq!((e.field.as_str(), e.line), ("upstreams[0]", Some(8)));
    let e = refused(&with_upstreams(
        "  - name: u\n    discovery: {registry: k, namespace: n, service: s, port: 70000}\n",
    ));
    assert_eq!(e.field, "upstreams[0].discovery.port");
}

#[test]
fn workers_listeners_and_syntax_errors_are_reported() {
    let e = refused("workers: 0\nlisteners: [{name: a, address: '127.0.0.1:1'}]\n");
    assert_eq!((e.field.as_str(), e.line), ("workers", Some(1)));
    let e = refused("workers: -1\n");
    assert_eq!((e.field.as_str(), e.line), ("workers", Some(1)));
    let e = refused("workers: 1\n");
    assert_eq!(e.field, "listeners");
    assert_eq!(e.message, "at least one listener is required");
    let e = refused("listeners:\n  - name: a\n   address: x\n");
    assert_eq!((e.field.as_str(), e.line), ("", Some(3)));
    assert!(
        e.message.starts_with("did not find expected"),
        "{}",
        e.message
    );
    let e = refused("listeners:\n  - name: a\n    address: '127.0.0.1:1'\n    name: b\n");
    assert_eq!((e.field.as_str(), e.line), ("listeners[0].name", Some(4)));
    assert_eq!(e.message, "duplicate key `name` (first at line 2)");
    let e = refused("listeners:\n  - address: '127.0.0.1:1'\n");
    assert_eq!(e.field, "listeners[0]");
    assert!(e.message.contains("missing field `name`"), "{}", e.message);
}

#[test]
fn the_admin_address_defaults_to_localhost_and_must_not_take_a_listener_port() {
    let base = "listeners: [{name: http, address: '127.0.0.1:8080'}]\n";
    let c = from_yaml(base).unwrap();
    assert_eq!(c.admin.listen, Some("127.0.0.1:9901".parse().unwrap()));
    let c = from_yaml(&format!("{base}admin: {{listen: '0.0.0.0:9902'}}\n")).unwrap();
    assert_eq!(c.admin.listen, Some("0.0.0.0:9902".parse().unwrap()));
    let c = from_yaml(&format!("{base}admin: {{enabled: false}}\n")).unwrap();
    assert_eq!(c.admin.listen, None);
    let e = refused(&format!("{base}admin: {{listen: '127.0.0.1:8080'}}\n"));
    assert_eq!(e.field, "admin.listen");
    assert!(e.message.contains("listeners[0]"), "{}", e.message);
    let e = refused(&format!("{base}admin: {{listen: localhost}}\n"));
    assert_eq!(e.field, "admin.listen");
}

#[test]
fn a_tcp_listener_needs_a_defined_upstream_and_gets_the_documented_defaults() {
    let tcp = |extra: &str| {
        format!(
            "listeners:\n  - name: db\n    address: 127.0.0.1:5432\n    protocol: tcp\n{extra}\
             upstreams:\n  - name: u\n    nodes:\n      - address: 127.0.0.2:5432\n"
        )
    };
    // No services at all: a tcp-only gateway.
    let config = from_yaml(&tcp("    upstream: u\n")).expect("a tcp-only config");
    assert_eq!(
        config.listeners[0].protocol,
        Protocol::Tcp(TcpConfig {
            upstream: Some("u".into()),
            sni_routes: Vec::new(),
            idle_timeout: Duration::from_secs(3600),
            drain_timeout: Some(Duration::from_secs(300)),
        })
    );
    let e = refused(&tcp(""));
    assert_eq!(
        (e.field.as_str(), e.line),
        ("listeners[0].upstream", Some(2))
    );
    assert_eq!(
        e.message,
        "a `protocol: tcp` listener needs an `upstream` (or `sni_routes`)"
    );
    let e = refused(&tcp("    upstream: nope\n"));
    assert_eq!(
        (e.field.as_str(), e.line),
        ("listeners[0].upstream", Some(5))
    );
    assert_eq!(e.message, "upstream \"nope\" is not defined");
    let e = refused(&tcp("    upstream: u\n    idle_timeout: 0s\n"));
    assert_eq!(
        (e.field.as_str(), e.line),
        ("listeners[0].idle_timeout", Some(6))
    );
    let e = refused(&tcp("    upstream: u\n    drain_timeout: soon\n"));
    assert_eq!(
        (e.field.as_str(), e.line),
        ("listeners[0].drain_timeout", Some(6))
    );
    assert!(
        e.message.starts_with("invalid duration \"soon\""),
        "{}",
        e.message
    );
    let e = refused(&tcp("    upstream: u\n    protocol: udp\n"));
    assert_eq!(e.field, "listeners[0].protocol");
}

#[test]
fn an_http_listener_refuses_the_tcp_keys() {
    for (key, value) in [
        ("upstream", "u"),
        ("idle_timeout", "1m"),
        ("drain_timeout", "1m"),
    ] {
        let e = refused(
            &with_upstreams("  - name: u\n    nodes:\n      - address: 127.0.0.2:8080\n").replace(
                "address: 127.0.0.1:9080\n",
                &format!("address: 127.0.0.1:9080\n    {key}: {value}\n"),
            ),
        );
        assert_eq!(e.field, format!("listeners[0].{key}"));
        assert_eq!(e.line, Some(4));
        assert!(
            e.message.contains("only for `protocol: tcp` listeners"),
            "{}",
            e.message
        );
    }
}
