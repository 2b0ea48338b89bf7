//! The in-process harness: echo backends on 127.0.0.x:0 plus a gateway started from a
//! YAML template whose `{b0}`, `{b1}`, … stand for the backends' bound addresses.
//!
//! Runs on: the test thread; the gateway's workers and the backends run on their own
//! threads. Dropping the harness shuts the gateway down and stops the backends.

use std::net::SocketAddr;

use strait::config::Config;
use strait::echo::EchoServer;
use strait::Gateway;
use strait_discovery::{Endpoint, EndpointState};

use super::client::{get, Client, Response};

/// Listener block prepended to a template that has none: one listener named `http` on
/// `127.0.0.1:0` (port 0 is resolved by the gateway and shared by its workers).
const LISTENER: &str = "listeners:\n  - name: http\n    address: 127.0.0.1:0\n";

/// The `driver:` line for `STRAIT_TEST_DRIVER` (`auto`, `io_uring` or `legacy`), so the
/// suite can run once per I/O driver; empty when the variable is not set.
pub(crate) fn driver_line() -> String {
    match std::env::var("STRAIT_TEST_DRIVER") {
        Ok(driver) if !driver.is_empty() => format!("driver: {driver}\n"),
        _ => String::new(),
    }
}

/// Replaces `{bN}` in `template` with `addrs[N]`, and adds `workers: 1`, the listener
/// block and the [`driver_line`] when the template does not set them.
pub(crate) fn render(template: &str, addrs: &[SocketAddr]) -> String {
    let mut yaml = String::new();
    if !template.contains("workers:") {
        yaml.push_str("workers: 1\n");
    }
    if !template.contains("driver:") {
        yaml.push_str(&driver_line());
    }
    if !template.contains("listeners:") {
        yaml.push_str(LISTENER);
    }
    yaml.push_str(template);
    for (i, addr) in addrs.iter().enumerate().rev() {
        yaml = yaml.replace(&format!("{{b{i}}}"), &addr.to_string());
    }
    assert!(
        !yaml.contains("{b"),
        "a placeholder was left unreplaced:\n{yaml}"
    );
    yaml
}

/// Parses a rendered YAML config, failing the test with the error.
/// Without an `admin:` section the admin server takes any free port on 127.0.0.1 (the
/// default 9901 would collide between the tests that run at once).
pub(crate) fn config(yaml: &str) -> Config {
    let mut config =
        Config::from_yaml(yaml).unwrap_or_else(|e| panic!("config refused: {e}\n{yaml}"));
    if !yaml.contains("admin:") {
        config.admin.listen = Some(SocketAddr::from(([127, 0, 0, 1], 0)));
    }
    config
}

/// An echo backend on `ip`, any free port.
pub(crate) fn echo(ip: &str) -> EchoServer {
    let addr: SocketAddr = format!("{ip}:0").parse().unwrap();
    EchoServer::start(addr).unwrap_or_else(|e| panic!("echo backend on {addr}: {e}"))
}

/// A ready endpoint with weight 1, as discovery would publish it.
pub(crate) fn endpoint(addr: SocketAddr) -> Endpoint {
    Endpoint {
        addr: addr.into(),
        weight: 1,
        state: EndpointState::Ready,
    }
}

/// A gateway with its echo backends.
pub(crate) struct Harness {
    gateway: Option<Gateway>,
    /// `{bN}` of the template is `backends[N]`, for echo backends.
    pub(crate) backends: Vec<EchoServer>,
    /// Every `{bN}` address, echo or not.
    pub(crate) addrs: Vec<SocketAddr>,
    /// The gateway's listener named `http` (or, when it has none, the one named `tcp`).
    pub(crate) addr: SocketAddr,
}

impl Harness {
    /// Starts an echo backend on each of `ips` (port 0), then a gateway from `template`.
    pub(crate) fn start(ips: &[&str], template: &str) -> Harness {
        let backends: Vec<EchoServer> = ips.iter().map(|ip| echo(ip)).collect();
        let addrs: Vec<SocketAddr> = backends.iter().map(EchoServer::addr).collect();
        let mut h = Harness::with_addrs(template, &addrs);
        h.backends = backends;
        h
    }

    /// Starts a gateway from `template` with `{bN}` = `addrs[N]` (raw backends, dead
    /// addresses), and no echo backends of its own.
    pub(crate) fn with_addrs(template: &str, addrs: &[SocketAddr]) -> Harness {
        let yaml = render(template, addrs);
        let gateway =
            Gateway::start(config(&yaml)).unwrap_or_else(|e| panic!("gateway start: {e}\n{yaml}"));
        let addr = gateway
            .listen_addr("http")
            .or_else(|| gateway.listen_addr("tcp"))
            .expect("a listener named http or tcp");
        Harness {
            gateway: Some(gateway),
            backends: Vec::new(),
            addrs: addrs.to_vec(),
            addr,
        }
    }

    pub(crate) fn gateway(&mut self) -> &mut Gateway {
        self.gateway.as_mut().expect("gateway running")
    }

    pub(crate) fn gateway_ref(&self) -> &Gateway {
        self.gateway.as_ref().expect("gateway running")
    }

    /// The bound address of echo backend `i` as text (the `backend` field of its answers).
    pub(crate) fn backend_name(&self, i: usize) -> String {
        self.backends[i].addr().to_string()
    }

    /// A new client connection to the gateway.
    pub(crate) fn client(&self) -> Client {
        Client::connect(self.addr)
    }

    /// `GET path` with `Host: host` on a new connection.
    pub(crate) fn get(&self, host: &str, path: &str) -> Response {
        self.client().request(&get(host, path))
    }

    /// Publishes the services, routes and upstreams of `template` (same placeholders).
    pub(crate) fn reload(&mut self, template: &str) {
        let yaml = render(template, &self.addrs.clone());
        let config = config(&yaml);
        self.gateway()
            .reload(config)
            .unwrap_or_else(|e| panic!("reload refused: {e}"));
    }

    /// Replaces the endpoints of upstream `name`.
    pub(crate) fn set_endpoints(&mut self, name: &str, addrs: &[SocketAddr]) {
        let endpoints = addrs.iter().copied().map(endpoint).collect();
        assert!(
            self.gateway().set_endpoints(name, endpoints).is_some(),
            "no upstream named {name}"
        );
    }
}

impl Drop for Harness {
    fn drop(&mut self) {
        if let Some(gateway) = self.gateway.take() {
            gateway.shutdown();
        }
    }
}
