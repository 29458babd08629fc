//! `pacer run` and `pacer env`: point a command (Claude Code, an SDK script) at pacerd's HTTP
//! gateway, starting the daemon first if none is running.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::{ExitCode, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use pacer_client::{Client, FailMode, Priority};
use pacer_protocol::gateway;

/// The variable every Anthropic client reads its base URL from.
const BASE_URL_ENV: &str = "ANTHROPIC_BASE_URL";
/// How long a freshly started daemon has to come up.
const STARTUP_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Debug, clap::Args)]
pub struct RunArgs {
    /// interactive, normal or batch: who goes first when the budget is spent.
    #[arg(long, default_value = "normal")]
    priority: Priority,
    /// The client name requests are queued under [default: the command's name and pacer's pid].
    #[arg(long)]
    name: Option<String>,
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
}

pub async fn run(socket: Option<PathBuf>, args: RunArgs) -> anyhow::Result<ExitCode> {
    let program = PathBuf::from(&args.command[0]);
    let name = args.name.unwrap_or_else(|| {
        let base = program
            .file_name()
            .map_or("cmd".into(), |n| n.to_string_lossy().into_owned());
        format!("{base}-{}", std::process::id())
    });
    let url = base_url(socket, &name, args.priority).await?;
    let mut command = std::process::Command::new(&program);
    command.args(&args.command[1..]).env(BASE_URL_ENV, &url);
    exec(command, &program)
}

pub async fn env(socket: Option<PathBuf>, args: EnvArgs) -> anyhow::Result<ExitCode> {
    let name = args
        .name
        .unwrap_or_else(|| format!("shell-{}", parent_id()));
    let url = base_url(socket, &name, args.priority).await?;
    println!("export {BASE_URL_ENV}='{url}'");
    Ok(ExitCode::SUCCESS)
}

/// The gateway URL for a client, from a daemon that is running (started if need be).
async fn base_url(
    socket: Option<PathBuf>,
    name: &str,
    priority: Priority,
) -> anyhow::Result<String> {
    let client = ensure_daemon(socket).await?;
    let info = client.gateway_info().await?;
    let listen = info.listen.context(
        "pacerd runs without its HTTP gateway (--no-gateway, or [gateway] enabled = false); \
         restart it with the gateway to use pacer run",
    )?;
    Ok(gateway::base_url(&listen, name, priority))
}

fn connect(socket: Option<&Path>) -> impl Future<Output = Result<Client, pacer_client::Error>> {
    let mut builder = Client::builder()
        .fail_mode(FailMode::Closed)
        .client_name("pacer run");
    if let Some(path) = socket {
        builder = builder.endpoint(path);
    }
    builder.connect()
}

/// Connects to the daemon, starting `pacerd` in the background if none answers.
async fn ensure_daemon(socket: Option<PathBuf>) -> anyhow::Result<Client> {
    match connect(socket.as_deref()).await {
        Ok(client) => return Ok(client),
        Err(e) if e.is_unreachable() => {}
        Err(e) => return Err(e.into()),
    }
    let pacerd = crate::pacerd::path().context("no pacerd is running, and none can be started")?;
    let log = crate::pacerd::start_log();
    let mut command = std::process::Command::new(&pacerd);
    if let Some(path) = &socket {
        command.arg("--socket").arg(path);
    }
    command.stdin(Stdio::null()).stdout(Stdio::null());
    match log.as_ref().and_then(|(_, file)| file.try_clone().ok()) {
        Some(file) => command.stderr(file),
        None => command.stderr(Stdio::null()),
    };
    detach(&mut command);
    let mut child = command.spawn().with_context(|| {
        format!(
            "no pacerd is running, and starting {} failed",
            pacerd.display()
        )
    })?;
    eprintln!(
        "pacer: started pacerd (pid {}) in the background",
        child.id()
    );
    let started = Instant::now();
    loop {
        match connect(socket.as_deref()).await {
            Ok(client) => return Ok(client),
            Err(e) if !e.is_unreachable() => return Err(e.into()),
            Err(_) => {}
        }
        let log_hint = || match &log {
            Some((path, _)) => format!("; its log is {}", path.display()),
            None => String::new(),
        };
        if let Some(status) = child.try_wait()? {
            // Another pacer may have started one at the same moment: use it if it answers.
            if let Ok(client) = connect(socket.as_deref()).await {
                return Ok(client);
            }
            bail!("pacerd exited at once ({status}){}", log_hint());
        }
        if started.elapsed() > STARTUP_TIMEOUT {
            bail!(
                "pacerd did not answer within {}s{}",
                STARTUP_TIMEOUT.as_secs(),
                log_hint()
            );
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Keeps the daemon out of the terminal's process group, so Ctrl-C in the terminal reaches the
/// wrapped command, not the shared daemon.
fn detach(command: &mut std::process::Command) {
    #[cfg(unix)]
    {
        use std::os::unix::process::CommandExt;
        command.process_group(0);
    }
    #[cfg(windows)]
    {
        use std::os::windows::process::CommandExt;
        const CREATE_NEW_PROCESS_GROUP: u32 = 0x0000_0200;
        const DETACHED_PROCESS: u32 = 0x0000_0008;
        command.creation_flags(CREATE_NEW_PROCESS_GROUP | DETACHED_PROCESS);
    }
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
        Ok(ExitCode::from(status.code().unwrap_or(1) as u8))
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
