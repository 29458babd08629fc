//! `pacerd`: parse the command line, load the configuration, set up logging, then run the
//! daemon until a signal stops it.

use std::process::ExitCode;

use anyhow::Context;
use clap::Parser;
use pacer_daemon::cli::Args;
use pacer_daemon::service::{self, Setup, logging};

fn main() -> ExitCode {
    let args = Args::parse();
    match start(args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e:#}");
            eprintln!("pacerd: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn start(args: Args) -> anyhow::Result<()> {
    service::process::private_files();
    #[cfg_attr(not(unix), allow(unused_mut))]
    let mut setup = Setup::new(args.load_config()?, args.socket.clone());
    #[cfg(unix)]
    {
        // SAFETY: no other thread has been started yet.
        setup.inherited = unsafe { service::activation::take() }
            .context("cannot take the sockets handed over by systemd")?;
    }
    let _log_guard = logging::init(&setup.config.log, args.log_stderr)?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name(format!("pacerd[{}]", std::process::id()))
        .build()
        .context("cannot start the async runtime")?;
    runtime.block_on(async {
        let (controller, control) = service::control();
        service::forward_signals(controller).context("cannot install signal handlers")?;
        service::run(setup, control).await
    })
}
