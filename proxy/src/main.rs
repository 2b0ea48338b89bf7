//! The `strait` binary: `strait run --config FILE`, `strait check FILE`, `strait demo`,
//! `strait echo --listen ADDR`.
//!
//! Thin on purpose: parses arguments, sets up logging and signals, then calls into the
//! library ([`strait::Gateway`]), which the tests drive the same way.

use std::path::PathBuf;

use anyhow::Context;
use clap::{Parser, Subcommand};
use strait::config::Config;
use strait::Gateway;

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
    /// Run the gateway with a config file.
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
    /// Run one httpbin-like echo backend (the demo's) until SIGTERM or SIGINT: a stand-in
    /// pod for tests, benches and trying a deployment out.
    Echo {
        /// The address to listen on (port 0 picks a free port).
        #[arg(long)]
        listen: std::net::SocketAddr,
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
        Command::Check { file } => match Config::load(&file) {
            Ok(config) => {
                for w in config.warnings() {
                    eprintln!("{}: warning: {w}", file.display());
                }
                println!("{}: ok", file.display());
                Ok(())
            }
            Err(e) => {
                eprintln!("{e}");
                std::process::exit(1);
            }
        },
        Command::Run {
            config: file,
            workers,
        } => {
            let mut config = Config::load(&file).map_err(|e| anyhow::anyhow!("{e}"))?;
            override_workers(&mut config, workers)?;
            serve(
                config,
                Some((file, workers)),
                Vec::<strait::demo::EchoServer>::new(),
            )
        }
        Command::Demo { workers } => {
            let mut config =
                Config::from_yaml(strait::DEMO_CONFIG).map_err(|e| anyhow::anyhow!("{e}"))?;
            override_workers(&mut config, workers)?;
            let mut backends = Vec::new();
            for ip in ["127.0.0.2", "127.0.0.3", "127.0.0.4"] {
                let addr = format!("{ip}:8080").parse()?;
                backends.push(
                    strait::demo::EchoServer::start(addr)
                        .with_context(|| format!("demo backend {addr}"))?,
                );
                println!("demo backend listening on {addr}");
            }
            println!("try: curl -H 'Host: sd.httpbin.org' http://127.0.0.1:9080/v1/anything");
            serve(config, None, backends)
        }
        Command::Echo { listen } => {
            let mut signals = signal_hook::iterator::Signals::new([
                signal_hook::consts::SIGINT,
                signal_hook::consts::SIGTERM,
            ])?;
            let server = strait::demo::EchoServer::start(listen)
                .with_context(|| format!("echo backend {listen}"))?;
            println!("echo backend listening on {}", server.addr());
            signals.forever().next();
            drop(server);
            Ok(())
        }
    }
}

fn override_workers(config: &mut Config, workers: Option<usize>) -> anyhow::Result<()> {
    if let Some(n) = workers {
        config.workers =
            Some(std::num::NonZeroUsize::new(n).context("--workers must be at least 1")?);
    }
    Ok(())
}

/// Runs until a signal. SIGTERM stops gracefully (readiness off, `shutdown.delay`,
/// drain within `shutdown.timeout`, exit 0); SIGINT, or a second signal during the
/// graceful stop, stops at once. With a config file, SIGHUP or a change of the file
/// reloads it (CONFIG.md, "Reload").
fn serve<T>(
    config: Config,
    file: Option<(PathBuf, Option<usize>)>,
    keep_alive: Vec<T>,
) -> anyhow::Result<()> {
    use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};
    let mut signals = signal_hook::iterator::Signals::new([SIGINT, SIGTERM, SIGHUP])?;
    let (sig_tx, sig_rx) = crossbeam_channel::unbounded();
    std::thread::Builder::new()
        .name("strait-signals".into())
        .spawn(move || {
            for sig in signals.forever() {
                if sig_tx.send(sig).is_err() {
                    break;
                }
            }
        })?;
    match strait::sys::raise_nofile_limit() {
        Ok((soft, _)) => tracing::debug!(soft, "open-file limit"),
        Err(e) => tracing::warn!(error = %e, "cannot raise the open-file limit"),
    }
    let mut gateway = Gateway::start(config)?;
    for (name, addr) in gateway.config().listeners.iter().map(|l| (&l.name, l.addr)) {
        let bound = gateway.listen_addr(name).unwrap_or(addr);
        println!(
            "strait listening on {bound} ({name}), {} workers, drivers {:?}",
            gateway.workers(),
            gateway.drivers()
        );
    }
    if let Some(addr) = gateway.admin_addr() {
        println!("strait admin on http://{addr} (/healthz /readyz /metrics /debug/snapshot)");
    }
    let changed = match &file {
        Some((path, _)) => strait::reload::watch(path.clone(), strait::reload::POLL)?,
        None => crossbeam_channel::never(),
    };
    let reload = |gateway: &mut Gateway| {
        if let Some((path, workers)) = &file {
            strait::reload::apply(gateway, path, *workers);
        }
    };
    loop {
        crossbeam_channel::select! {
            recv(changed) -> _ => reload(&mut gateway),
            recv(sig_rx) -> sig => match sig {
                Ok(SIGHUP) => reload(&mut gateway),
                Ok(SIGTERM) => {
                    gateway.begin_shutdown();
                    loop {
                        crossbeam_channel::select! {
                            recv(gateway.exited()) -> _ => tracing::info!("drained; exiting"),
                            recv(sig_rx) -> sig => {
                                if sig == Ok(SIGHUP) {
                                    continue; // no reload while stopping
                                }
                                tracing::info!(signal = ?sig.ok(), "second signal: stopping now");
                            }
                        }
                        break;
                    }
                    break;
                }
                sig => {
                    tracing::info!(signal = ?sig.ok(), "stopping now");
                    break;
                }
            },
        }
    }
    gateway.shutdown();
    drop(keep_alive);
    Ok(())
}
