//! `pacer run` and `pacer env`: point a command (Claude Code, an SDK script) at pacerd's HTTP
//! gateway, starting the daemon first if none is running.
//!
//! Where the command's traffic goes:
//! - `ANTHROPIC_BASE_URL` unset: to the daemon's upstream (`[gateway] upstream`, by default the
//!   public API).
//! - `ANTHROPIC_BASE_URL` set to another endpoint (a company gateway, a LiteLLM proxy, a local
//!   server): that endpoint is registered with the daemon as a route, and the command's base URL
//!   names the route: its calls are paced and go where they went before.
//! - `ANTHROPIC_BASE_URL` already pointing at this gateway (`pacer run` inside `pacer run`): left
//!   as it is, one hop.
//! - `CLAUDE_CODE_USE_BEDROCK` / `CLAUDE_CODE_USE_VERTEX` set: Claude Code talks to Bedrock or
//!   Vertex, not to any base URL, so its calls bypass pacer; `pacer run` says so (and refuses
//!   with `--strict`).

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, bail};
use pacer_client::Priority;
use pacer_protocol::gateway;

use crate::pacerd::ensure_daemon;

/// The variable every Anthropic client reads its base URL from.
const BASE_URL_ENV: &str = "ANTHROPIC_BASE_URL";
/// The variables that make Claude Code talk to another cloud's API instead.
const BYPASS_ENV: [(&str, &str); 2] = [
    ("CLAUDE_CODE_USE_BEDROCK", "Amazon Bedrock"),
    ("CLAUDE_CODE_USE_VERTEX", "Google Vertex AI"),
];

#[derive(Debug, clap::Args)]
pub struct RunArgs {
    /// interactive, normal or batch: who goes first when the budget is spent, and how far it
    /// may bring a subscription's windows [default: interactive when started from a terminal,
    /// normal otherwise (cron, a script)].
    #[arg(long)]
    priority: Option<Priority>,
    /// The client name requests are queued under [default: the command's name and pacer's pid].
    #[arg(long)]
    name: Option<String>,
    /// Cap the command's use of each subscription window at this share of it, per window
    /// (10%, 2.5%, 0.1): past it, its calls are held until the window resets while other
    /// clients go on.
    #[arg(long, value_name = "SHARE", value_parser = gateway::parse_max_share)]
    max_share: Option<u16>,
    /// Refuse to run a command whose calls would bypass pacer (Bedrock, Vertex).
    #[arg(long)]
    strict: bool,
    /// The command to run, and its arguments.
    #[arg(
        required = true,
        trailing_var_arg = true,
        allow_hyphen_values = true,
        value_name = "CMD"
    )]
    command: Vec<OsString>,
}

#[derive(Debug, clap::Args)]
pub struct EnvArgs {
    /// interactive, normal or batch.
    #[arg(long, default_value = "normal")]
    priority: Priority,
    /// The client name requests are queued under [default: shell-<parent pid>].
    #[arg(long)]
    name: Option<String>,
    /// Cap the shell's use of each subscription window at this share of it, per window
    /// (10%, 0.1).
    #[arg(long, value_name = "SHARE", value_parser = gateway::parse_max_share)]
    max_share: Option<u16>,
    /// Refuse when the shell's calls would bypass pacer (Bedrock, Vertex).
    #[arg(long)]
    strict: bool,
}

/// A command started from a terminal has a person waiting for it: interactive. One without a
/// terminal (cron, `claude -p` in a script) is normal.
fn default_priority() -> Priority {
    use std::io::IsTerminal;
    if std::io::stdin().is_terminal() || std::io::stdout().is_terminal() {
        Priority::Interactive
    } else {
        Priority::Normal
    }
}

pub async fn run(socket: Option<PathBuf>, args: RunArgs) -> anyhow::Result<ExitCode> {
    let program = PathBuf::from(&args.command[0]);
    let shown = program.display().to_string();
    check_bypass(&shown, args.strict)?;
    let name = args.name.unwrap_or_else(|| {
        let base = program
            .file_name()
            .map_or("cmd".into(), |n| n.to_string_lossy().into_owned());
        format!("{base}-{}", std::process::id())
    });
    let priority = args.priority.unwrap_or_else(default_priority);
    let wrapped = wrap(socket, &name, (priority, args.max_share)).await?;
    eprintln!("pacer: {shown} {}", wrapped.note);
    let mut command = std::process::Command::new(&program);
    command.args(&args.command[1..]);
    if let Some(url) = &wrapped.base_url {
        command.env(BASE_URL_ENV, url);
    }
    exec(command, &program)
}

pub async fn env(socket: Option<PathBuf>, args: EnvArgs) -> anyhow::Result<ExitCode> {
    check_bypass("this shell", args.strict)?;
    let name = args
        .name
        .unwrap_or_else(|| format!("shell-{}", parent_id()));
    let wrapped = wrap(socket, &name, (args.priority, args.max_share)).await?;
    eprintln!("pacer: this shell {}", wrapped.note);
    match &wrapped.base_url {
        Some(url) => crate::outln!("export {BASE_URL_ENV}='{url}'"),
        None => crate::outln!("# {BASE_URL_ENV} already points at pacer's gateway"),
    }
    Ok(ExitCode::SUCCESS)
}

/// What a wrapped command gets.
struct Wrapped {
    /// Its new base URL; `None` keeps the one it has (already pacer's gateway).
    base_url: Option<String>,
    /// Where its calls will go, said once.
    note: String,
}

/// The gateway URL for a client, from a daemon that is running (started if need be), keeping
/// the client's own endpoint if it has one.
async fn wrap(
    socket: Option<PathBuf>,
    name: &str,
    how: (Priority, Option<u16>),
) -> anyhow::Result<Wrapped> {
    let client = ensure_daemon(socket).await?;
    let info = client.gateway_info().await?;
    let listen = info.listen.context(
        "pacerd runs without its HTTP gateway (--no-gateway, or [gateway] enabled = false); \
         restart it with the gateway to use pacer run",
    )?;
    let own = std::env::var(BASE_URL_ENV)
        .ok()
        .filter(|url| !url.trim().is_empty());
    match own {
        Some(url) if gateway::points_at_gateway(&url, &listen) => Ok(Wrapped {
            base_url: None,
            note: format!(
                "already goes through pacer's gateway ({BASE_URL_ENV}={url}): left as it is"
            ),
        }),
        Some(url) => {
            let route = client
                .register_route(&url, name)
                .await
                .with_context(|| format!("cannot keep {BASE_URL_ENV} as the upstream"))?;
            Ok(Wrapped {
                base_url: Some(gateway::base_url(&listen, name, how, Some(&route.id))),
                note: format!(
                    "will reach {} (its {BASE_URL_ENV}) through pacer's gateway at {listen}",
                    route.upstream
                ),
            })
        }
        None => Ok(Wrapped {
            base_url: Some(gateway::base_url(&listen, name, how, None)),
            note: format!(
                "will reach {} through pacer's gateway at {listen}",
                info.upstream
            ),
        }),
    }
}

/// Warns (or, with `strict`, refuses) when Claude Code is set to talk to Bedrock or Vertex:
/// those calls never go through the gateway.
fn check_bypass(what: &str, strict: bool) -> anyhow::Result<()> {
    for (variable, cloud) in BYPASS_ENV {
        let set = std::env::var(variable)
            .is_ok_and(|v| !v.trim().is_empty() && !matches!(v.trim(), "0" | "false"));
        if !set {
            continue;
        }
        if strict {
            bail!(
                "{variable} is set: {what}'s calls would go to {cloud}, bypassing pacer \
                 (unset it, or run without --strict)"
            );
        }
        eprintln!(
            "pacer: warning: {variable} is set: {what}'s calls go to {cloud}, bypassing pacer \
             (they are not paced)"
        );
    }
    Ok(())
}

/// Replaces this process with the command (Unix), so that its exit status and every signal pass
/// through untouched; elsewhere, runs it and passes its exit code on.
fn exec(mut command: std::process::Command, program: &Path) -> anyhow::Result<ExitCode> {
    #[cfg(unix)]
    {
        use std::os::unix::process::CommandExt;
        let error = command.exec();
        bail!("cannot run {}: {error}", program.display())
    }
    #[cfg(not(unix))]
    {
        let status = command
            .status()
            .with_context(|| format!("cannot run {}", program.display()))?;
        // Windows exit codes are 32 bits: pass them on whole (256 must not become 0).
        std::process::exit(status.code().unwrap_or(1))
    }
}

fn parent_id() -> u32 {
    #[cfg(unix)]
    {
        std::os::unix::process::parent_id()
    }
    #[cfg(not(unix))]
    {
        std::process::id()
    }
}
