//! `pacer`: the command line for pacerd.
//!
//! - `commands`: the command line and which module runs each command;
//! - `run`: `pacer run` and `pacer env` (a command pointed at the gateway);
//! - `status`: `pacer status`; `watch`: `pacer watch`; `top`: `pacer top`;
//! - `clock`: times as a person reads them;
//! - `lease`: `pacer acquire`, `report`, `release`, `pause` (permits for shell scripts);
//! - `probe`: `pacer probe`;
//! - `service`: `pacer service install|uninstall|status`;
//! - `statusline`: `pacer statusline`, for Claude Code's status bar;
//! - `completions`: shell completions and man pages, from the same clap definitions;
//! - `args`: arguments several commands share; `pacerd`: finding the daemon's executable.
//! - `output`: standard output that ends quietly on a closed pipe.

mod args;
mod clock;
mod commands;
mod completions;
mod hook;
mod lease;
mod mcp;
mod output;
mod pacerd;
mod probe;
mod quota;
mod run;
mod service;
mod settings;
mod status;
mod statusline;
mod top;
mod watch;

use std::process::ExitCode;

use clap::Parser;
use tracing_subscriber::EnvFilter;

fn main() -> ExitCode {
    let args = match commands::Args::try_parse() {
        Ok(args) => args,
        // Claude Code takes a hook's exit status 2 as "block this prompt (or tool call)":
        // a hook command line pacer cannot read must not block every turn. It says why on
        // stderr and exits 1, which Claude Code shows and passes over.
        Err(e) if hook::is_hook_call() && e.use_stderr() => {
            eprintln!("pacer hook: {e}");
            return ExitCode::FAILURE;
        }
        Err(e) => e.exit(),
    };
    tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .without_time()
        .with_target(false)
        .init();
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("pacer: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(commands::run(args)) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("pacer: {e:#}");
            ExitCode::FAILURE
        }
    }
}
