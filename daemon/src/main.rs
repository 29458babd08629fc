//! `pacerd`: parse the command line, load the configuration, set up logging, claim the sockets
//! (or take them from systemd), serve.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::Parser;
use pacer_daemon::{Config, Setup, listener, logging, signals};

/// The pacer daemon: one shared rate-limit budget per API key and model class for every process
/// on this machine.
#[derive(Debug, Parser)]
#[command(version)]
struct Args {
    /// Socket to listen on [default: $XDG_RUNTIME_DIR/pacer/pacer.sock, else a private directory
    /// under the temp dir]. Ignored when systemd hands a socket over (socket activation).
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
    /// State file [default: [state] file, else $XDG_STATE_HOME/pacer/state].
    #[arg(long, env = "PACER_STATE", value_name = "PATH")]
    state: Option<PathBuf>,
    /// Log directory [default: [log] dir, else $XDG_STATE_HOME/pacer/logs].
    #[arg(long, env = "PACER_LOG_DIR", value_name = "PATH")]
    log_dir: Option<PathBuf>,
    /// Also log to stderr (always on when stderr is a terminal).
    #[arg(long)]
    log_stderr: bool,
}

fn main() -> ExitCode {
    let args = Args::parse();
    #[cfg(unix)]
    // SAFETY: no other thread has been started yet.
    let inherited = match unsafe { pacer_daemon::activation::take() } {
        Ok(inherited) => inherited,
        Err(e) => {
            eprintln!("pacerd: cannot take the sockets handed over by systemd: {e}");
            return ExitCode::FAILURE;
        }
    };
    let config = match load_config(&args) {
        Ok(config) => config,
        Err(e) => {
            eprintln!("pacerd: {e:#}");
            return ExitCode::FAILURE;
        }
    };
    let _log_guard = match logging::init(&config.log, args.log_stderr) {
        Ok(guard) => guard,
        Err(e) => {
            eprintln!("pacerd: {e:#}");
            return ExitCode::FAILURE;
        }
    };
    #[cfg(unix)]
    let result = serve(args, config, inherited);
    #[cfg(not(unix))]
    let result = serve(args, config);
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e:#}");
            eprintln!("pacerd: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn load_config(args: &Args) -> anyhow::Result<Config> {
    let mut config = Config::load(args.config.as_deref())?;
    if let Some(addr) = args.gateway {
        config.gateway.listen = Some(addr);
    }
    if args.no_gateway {
        config.gateway.listen = None;
    }
    if let Some(upstream) = &args.upstream {
        config.gateway.upstream = upstream.clone();
    }
    if let Some(state) = &args.state {
        config.state_file = Some(state.clone());
    }
    if let Some(dir) = &args.log_dir {
        config.log.dir = Some(dir.clone());
    }
    Ok(config)
}

fn serve(
    args: Args,
    config: Config,
    #[cfg(unix)] inherited: pacer_daemon::activation::Inherited,
) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("pacerd")
        .build()
        .context("cannot start the async runtime")?;
    runtime.block_on(async {
        #[cfg(unix)]
        let (listener, gateway_listener, socket) = match inherited.socket {
            Some(fd) => {
                let listener =
                    listener::from_fd(fd).context("cannot use the socket systemd handed over")?;
                (listener, inherited.gateway, "(from systemd)".to_owned())
            }
            None => {
                let path = args
                    .socket
                    .unwrap_or_else(pacer_protocol::endpoint::default_endpoint);
                (
                    listener::bind(&path).await?,
                    inherited.gateway,
                    path.display().to_string(),
                )
            }
        };
        #[cfg(not(unix))]
        let (listener, gateway_listener, socket) = {
            let path = args
                .socket
                .unwrap_or_else(pacer_protocol::endpoint::default_endpoint);
            (
                listener::bind(&path).await?,
                None,
                path.display().to_string(),
            )
        };
        let signals = signals::listen().context("cannot install signal handlers")?;
        match &config.path {
            Some(path) if path.exists() => {
                tracing::info!(config = %path.display(), "configuration loaded")
            }
            _ => tracing::info!(
                "no configuration file: limits will be learned from response headers"
            ),
        }
        tracing::info!(
            socket,
            version = env!("CARGO_PKG_VERSION"),
            "pacerd listening"
        );
        let setup = Setup {
            config,
            listener,
            gateway_listener,
        };
        pacer_daemon::serve(setup, signals).await
    })
}
