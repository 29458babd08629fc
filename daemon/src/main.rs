//! `pacerd`: parse the command line, load the configuration, claim the socket, serve.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::Parser;
use pacer_daemon::{Config, listener, signals};
use tracing_subscriber::EnvFilter;

/// The pacer daemon: one shared rate-limit budget per API key and model class for every process
/// on this machine.
#[derive(Debug, Parser)]
#[command(version)]
struct Args {
    /// Socket to listen on [default: $XDG_RUNTIME_DIR/pacer/pacer.sock, else a private directory
    /// under the temp dir].
    #[arg(long, env = "PACER_SOCKET", value_name = "PATH")]
    socket: Option<PathBuf>,
    /// Configuration file [default: $XDG_CONFIG_HOME/pacer/config.toml, optional].
    #[arg(long, env = "PACER_CONFIG", value_name = "PATH")]
    config: Option<PathBuf>,
    /// Address of the HTTP gateway [default: [gateway] listen, else 127.0.0.1:4141].
    #[arg(
        long,
        env = "PACER_GATEWAY",
        value_name = "ADDR",
        conflicts_with = "no_gateway"
    )]
    gateway: Option<SocketAddr>,
    /// Do not serve the HTTP gateway.
    #[arg(long)]
    no_gateway: bool,
    /// The API the gateway forwards to [default: [gateway] upstream, else https://api.anthropic.com].
    #[arg(long, env = "PACER_UPSTREAM", value_name = "URL", value_parser = pacer_daemon::config::parse_upstream)]
    upstream: Option<reqwest::Url>,
}

fn main() -> ExitCode {
    let args = Args::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    match run(args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("pacerd: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(args: Args) -> anyhow::Result<()> {
    let mut config = Config::load(args.config.as_deref())?;
    if let Some(addr) = args.gateway {
        config.gateway.listen = Some(addr);
    }
    if args.no_gateway {
        config.gateway.listen = None;
    }
    if let Some(upstream) = args.upstream {
        config.gateway.upstream = upstream;
    }
    let socket = args
        .socket
        .unwrap_or_else(pacer_protocol::endpoint::default_endpoint);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("pacerd")
        .build()
        .context("cannot start the async runtime")?;
    runtime.block_on(async {
        let listener = listener::bind(&socket).await?;
        let shutdown = signals::shutdown().context("cannot install signal handlers")?;
        match &config.path {
            Some(path) if path.exists() => tracing::info!(config = %path.display(), "configuration loaded"),
            _ => tracing::info!("no configuration file: limits will be learned from response headers"),
        }
        tracing::info!(socket = %socket.display(), version = env!("CARGO_PKG_VERSION"), "pacerd listening");
        pacer_daemon::run(config, listener, shutdown).await
    })
}
