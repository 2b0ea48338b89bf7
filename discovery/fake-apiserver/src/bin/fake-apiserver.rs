//! `fake-apiserver`: runs the fake kube-apiserver by hand, for kubectl checks. Plain http with
//! anonymous reads by default (kubectl sends no token over http), or `--tls` with a generated
//! CA, writing a kubeconfig that carries the CA and the token. Loads fixture YAML files, prints
//! the URL, and serves until killed. Runs on: main (waits) + the server's own thread.
//!
//! ```text
//! fake-apiserver --addr 127.0.0.1:6443 fixtures/httpbin.yaml
//! kubectl --server http://127.0.0.1:6443 get endpointslices -A -w
//! fake-apiserver --tls --kubeconfig /tmp/fake.kubeconfig fixtures/httpbin.yaml
//! KUBECONFIG=/tmp/fake.kubeconfig kubectl get endpointslices -A
//! ```

use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::Context as _;
use clap::Parser;
use strait_fake_apiserver::{FakeApiServer, Options};

/// A fake Kubernetes API server (endpoints, services, namespaces, endpointslices).
#[derive(Parser, Debug)]
#[command(name = "fake-apiserver", version)]
struct Args {
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:6443")]
    addr: SocketAddr,
    /// Serve HTTPS with a generated CA; requires the bearer token.
    #[arg(long)]
    tls: bool,
    /// Bearer token to accept (default: random).
    #[arg(long)]
    token: Option<String>,
    /// Refuse requests without a token even over plain http.
    #[arg(long)]
    require_token: bool,
    /// Where to write a kubeconfig (default with --tls: ./fake-apiserver.kubeconfig).
    #[arg(long)]
    kubeconfig: Option<PathBuf>,
    /// Send a BOOKMARK on bookmark-enabled watches every this many seconds.
    #[arg(long)]
    bookmark_seconds: Option<u64>,
    /// Print one line per request on stderr.
    #[arg(long, short)]
    verbose: bool,
    /// Fixture YAML files (multi-document) to load at start.
    fixtures: Vec<PathBuf>,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let mut options = Options {
        addr: args.addr,
        tls: args.tls,
        token: args.token,
        anonymous_reads: !args.tls && !args.require_token,
        log_requests: args.verbose,
        ..Options::default()
    };
    options.bookmark_interval = args.bookmark_seconds.map(std::time::Duration::from_secs);
    let server = FakeApiServer::try_start(options)?;
    for path in &args.fixtures {
        let yaml =
            std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        let versions = server
            .try_apply_yaml(&yaml)
            .with_context(|| format!("loading {}", path.display()))?;
        eprintln!("loaded {} objects from {}", versions.len(), path.display());
    }
    let kubeconfig = match (&args.kubeconfig, args.tls) {
        (Some(path), _) => Some(path.clone()),
        (None, true) => Some(PathBuf::from("fake-apiserver.kubeconfig")),
        (None, false) => None,
    };
    if let Some(path) = &kubeconfig {
        std::fs::write(path, server.kubeconfig())
            .with_context(|| format!("writing {}", path.display()))?;
        eprintln!("kubeconfig: {}", path.display());
    }
    println!("{}", server.url());
    eprintln!("token: {}", server.token());
    loop {
        std::thread::park();
    }
}
