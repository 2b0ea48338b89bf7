//! The `strait` binary: `strait run --config FILE`, `strait check FILE`, `strait demo`,
//! `strait probe --socket PATH [/readyz]`, `strait echo --listen ADDR`.
//!
//! Thin on purpose: parses arguments, sets up logging, turns signals into
//! [`strait::Control`]s ([`Control::from_signals`]), then calls into the library
//! ([`strait::run`]), which the tests drive the same way.

use std::path::PathBuf;

use anyhow::Context;
use clap::{Parser, Subcommand};
use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};
use strait::config::Config;
use strait::{ConfigSource, Control, Gateway};

#[derive(Parser)]
#[command(
    name = "strait",
    version,
    about = "A thread-per-core Kubernetes-native HTTP gateway"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the gateway with a config file. SIGTERM drains, SIGINT stops at once, SIGHUP
    /// (or editing the file) reloads.
    Run {
        /// The YAML config file.
        #[arg(long, short)]
        config: PathBuf,
        /// Worker threads (overrides `workers:` in the file).
        #[arg(long)]
        workers: Option<usize>,
    },
    /// Validate a config file and exit (non-zero with the error on a bad file).
    Check {
        /// The YAML config file.
        file: PathBuf,
    },
    /// Start the demo: the gateway on 127.0.0.1:9080 in front of three built-in echo
    /// backends on 127.0.0.2-4:8080.
    Demo {
        /// Worker threads (the demo uses one so round-robin is visible).
        #[arg(long)]
        workers: Option<usize>,
    },
    /// Ask a running strait's admin Unix socket (`admin.socket`) for `PATH` (`/readyz`,
    /// `/healthz`…): prints the answer, exits 0 on a 200 and 1 otherwise. An exec probe:
    /// on the host network every pod shares the admin port, but each container has its
    /// own socket file, so the probe asks its own process.
    Probe {
        /// The admin Unix socket.
        #[arg(long)]
        socket: PathBuf,
        /// The admin path to ask for.
        #[arg(default_value = "/readyz")]
        path: String,
    },
    /// Run one httpbin-like echo backend (the demo's) until SIGTERM or SIGINT: a stand-in
    /// pod for tests, benches and trying a deployment out.
    Echo {
        /// The address to listen on (port 0 picks a free port), or `unix:/path`.
        #[arg(long)]
        listen: String,
    },
}

fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("STRAIT_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn,strait=info")),
        )
        .with_writer(std::io::stderr)
        // Colours only for a person at a terminal, not for kubectl logs or a file.
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    match Cli::parse().command {
        Command::Check { file } => {
            let config = Config::load(&file).unwrap_or_else(|e| exit(&e));
            // Secrets are not fetched here: only the files are checked.
            let secrets = strait::tls::Secrets::default();
            if let Err(mut e) = strait::tls::load(&config, None, &secrets, strait::tls::Files::Read)
            {
                e.file = Some(file.clone());
                exit(&e);
            }
            for w in config.warnings() {
                eprintln!("{}: warning: {w}", file.display());
            }
            println!("{}: ok", file.display());
            Ok(())
        }
        Command::Run { config, workers } => {
            let mut parsed = Config::load(&config).map_err(|e| anyhow::anyhow!("{e}"))?;
            parsed.override_workers(workers)?;
            serve(
                parsed,
                Some(ConfigSource {
                    path: config,
                    workers,
                }),
            )
        }
        Command::Demo { workers } => {
            let mut config =
                Config::from_yaml(strait::DEMO_CONFIG).map_err(|e| anyhow::anyhow!("{e}"))?;
            config.override_workers(workers)?;
            // HTTPS beside HTTP, with a CA and certificate made now, in a directory of
            // this run's own.
            let dir = std::env::temp_dir().join(format!("strait-demo-{}", std::process::id()));
            std::fs::create_dir_all(&dir).with_context(|| format!("{}", dir.display()))?;
            let (https, certs) = strait::tls::demo_listener(&dir)
                .map_err(|e| anyhow::anyhow!("demo certificates: {e}"))?;
            config.listeners.push(https);
            // Kept until the gateway stops.
            let backends = strait::echo::EchoServer::start_demo_backends().context("demo")?;
            for b in &backends {
                println!("demo backend listening on {}", b.name());
            }
            println!("try: curl -H 'Host: sd.httpbin.org' http://127.0.0.1:9080/v1/anything");
            println!(
                "and: curl --cacert {} --resolve sd.httpbin.org:9443:127.0.0.1 https://sd.httpbin.org:9443/v1/anything",
                certs.ca_file.display()
            );
            serve(config, None)
        }
        Command::Probe { socket, path } => {
            let (status, body) = strait::admin::probe(&socket, &path)
                .with_context(|| format!("{}", socket.display()))?;
            print!("{body}");
            std::process::exit(if status == 200 { 0 } else { 1 })
        }
        Command::Echo { listen } => {
            let control = Control::from_signals(&[SIGINT, SIGTERM])?;
            let server = strait::echo::EchoServer::start_at(&listen)
                .with_context(|| format!("echo backend {listen}"))?;
            println!("echo backend listening on {}", server.name());
            let _ = control.recv();
            Ok(())
        }
    }
}

/// Runs the gateway until a signal stops it (see [`strait::run`]).
fn serve(config: Config, source: Option<ConfigSource>) -> anyhow::Result<()> {
    let control = Control::from_signals(&[SIGINT, SIGTERM, SIGHUP])?;
    match strait::sys::raise_nofile_limit() {
        Ok((soft, _)) => tracing::debug!(soft, "open-file limit"),
        Err(e) => tracing::warn!(error = %e, "cannot raise the open-file limit"),
    }
    strait::run(config, source, &control, announce)?;
    Ok(())
}

/// Prints where the gateway listens.
fn announce(gateway: &Gateway) {
    for l in &gateway.config().listeners {
        let bound = gateway.listener(&l.name).unwrap_or(&l.addr);
        println!(
            "strait listening on {bound} ({}), {} workers, drivers {:?}",
            l.name,
            gateway.workers(),
            gateway.drivers()
        );
    }
    if let Some(addr) = gateway.admin_addr() {
        println!("strait admin on http://{addr} (/healthz /readyz /metrics /debug/snapshot)");
    }
}

/// Prints `e` and exits with status 1 (`strait check` on a bad file).
fn exit(e: &dyn std::fmt::Display) -> ! {
    eprintln!("{e}");
    std::process::exit(1)
}
