//! The `pacer` commands: the command line, and which module runs each command.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{CommandFactory, Parser, Subcommand};
use pacer_client::{Client, FailMode};

use crate::args::KeyArgs;
use crate::{lease, probe, run, service, status, watch};

/// Share one Anthropic API budget between every Claude Code session and script on this machine.
#[derive(Debug, Parser)]
#[command(name = "pacer", version)]
pub struct Args {
    /// pacerd's socket [default: $XDG_RUNTIME_DIR/pacer/pacer.sock, else a private directory under
    /// the temp dir].
    #[arg(long, global = true, env = "PACER_SOCKET", value_name = "PATH")]
    socket: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run a command (such as `claude`) with ANTHROPIC_BASE_URL pointing at pacerd's gateway,
    /// starting pacerd first if it is not running.
    Run(run::RunArgs),
    /// Print the `export ANTHROPIC_BASE_URL=…` line for a shell.
    Env(run::EnvArgs),
    /// Make one minimal API call and show the key's rate limits from its headers.
    Probe(probe::ProbeArgs),
    /// Show every budget: limits, what is available now, calls in flight and waiting, pauses.
    Status {
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
        /// Also list the clients seen in the last 10 minutes (always in --json).
        #[arg(long)]
        clients: bool,
    },
    /// Wait for a permit for one API call and print its lease id (for shell scripts).
    Acquire(lease::AcquireArgs),
    /// Report how a call made under a lease went.
    Report(lease::ReportArgs),
    /// Give a lease back unused: everything it reserved is refunded.
    Release {
        /// The lease id printed by `pacer acquire`.
        #[arg(value_parser = lease::parse_lease)]
        lease: u64,
    },
    /// Pause a budget for everyone (`--for 0` lifts a pause).
    Pause(lease::PauseArgs),
    /// Print the daemon's events as they happen: grants, pauses, limits learned.
    Watch {
        /// Print one JSON object per line (every event, grants included).
        #[arg(long)]
        json: bool,
        /// Also print a line when each permit is granted (each call's outcome is always shown).
        #[arg(long)]
        grants: bool,
    },
    /// A live full-screen view: budgets, pauses, windows, clients, events (q quits).
    Top(crate::top::TopArgs),
    /// Print the fingerprint of an API key, as the configuration and status show it.
    KeyId(KeyArgs),
    /// Run pacerd as a user service (systemd on Linux, launchd on macOS).
    #[command(subcommand)]
    Service(service::ServiceCommand),
    /// Print one short line for Claude Code's status bar (its `statusLine` setting): this
    /// session's account, its windows, pauses and what is held. `--install` sets it up.
    Statusline(crate::statusline::StatuslineArgs),
    /// Answer one of Claude Code's hooks (its JSON on stdin): a line of context when this
    /// session's account crosses 75 % or 90 % of a window, a question before a subagent past
    /// 90 %. `--install` sets both up.
    Hook(crate::hook::HookArgs),
    /// Serve MCP over stdio, for `claude mcp add pacer -- pacer mcp`: tools that tell an agent
    /// its account's windows, whether a fan-out fits, and what is held. `--install` registers it.
    Mcp(crate::mcp::McpArgs),
    /// Print the completion script for a shell (bash, zsh, fish, elvish, powershell).
    Completions {
        /// The shell.
        shell: clap_complete::Shell,
    },
    /// Write the man pages (pacer.1, one per subcommand, pacerd.1) into DIR/man1/, where
    /// `MANPATH=DIR man pacer-status` finds them (~/.local/share/man is on man's default path).
    Man {
        /// The man directory (its man1/ is created).
        dir: PathBuf,
    },
}

pub async fn run(args: Args) -> anyhow::Result<ExitCode> {
    let socket = args.socket;
    let connect = |fail_mode: FailMode| {
        let socket = socket.clone();
        async move {
            let mut builder = Client::builder().fail_mode(fail_mode).client_name("pacer");
            if let Some(path) = socket {
                builder = builder.endpoint(path);
            }
            builder.connect().await
        }
    };
    match args.command {
        Command::Run(run) => run::run(socket, run).await,
        Command::Env(env) => run::env(socket, env).await,
        Command::Probe(probe) => probe::probe(&connect(FailMode::Open).await?, probe).await,
        Command::Status { json, clients } => {
            status::status(&connect(FailMode::Closed).await?, json, clients).await
        }
        Command::Acquire(acquire) => {
            let mode = if acquire.fail_closed {
                FailMode::Closed
            } else {
                FailMode::Open
            };
            lease::acquire(&connect(mode).await?, acquire).await
        }
        Command::Report(report) if report.is_unbrokered() => lease::report(None, report).await,
        Command::Report(report) => {
            let client = connect(FailMode::Closed).await?;
            lease::report(Some(&client), report).await
        }
        Command::Release { lease: 0 } => Ok(ExitCode::SUCCESS),
        Command::Release { lease } => {
            lease::release(&connect(FailMode::Closed).await?, lease).await
        }
        Command::Pause(pause) => lease::pause(&connect(FailMode::Closed).await?, pause).await,
        Command::Watch { json, grants } => {
            watch::watch(&connect(FailMode::Closed).await?, json, grants).await
        }
        Command::Top(args) => crate::top::top(&connect(FailMode::Closed).await?, args).await,
        Command::Service(command) => service::service(socket, command).await,
        Command::Statusline(args) => crate::statusline::statusline(socket, args).await,
        Command::Hook(args) => crate::hook::hook(socket, args).await,
        Command::Mcp(args) => crate::mcp::mcp(socket, args).await,
        Command::Completions { shell } => crate::completions::completions(shell, Args::command()),
        Command::Man { dir } => crate::completions::man_pages(Args::command(), &dir),
        Command::KeyId(key) => {
            crate::outln!("{}", key.fingerprint()?);
            Ok(ExitCode::SUCCESS)
        }
    }
}
