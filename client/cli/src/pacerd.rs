//! Reaching pacerd, and starting it in the background when none runs: finding the executable,
//! the environment it gets (no API key), where its output goes.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use pacer_client::{Client, FailMode};

/// How long a freshly started daemon has to come up.
const STARTUP_TIMEOUT: Duration = Duration::from_secs(10);

/// The variables a daemon started by `pacer` keeps: what it needs to find its files, reach the
/// upstream (proxies, certificates) and log. Everything else — API keys and tokens above all —
/// stays out of its environment (`/proc/<pid>/environ`) for its whole life.
const KEPT_VARIABLES: [&str; 21] = [
    "PATH",
    "HOME",
    "USER",
    "LOGNAME",
    "LANG",
    "TZ",
    "TMPDIR",
    "RUST_LOG",
    "XDG_RUNTIME_DIR",
    "XDG_STATE_HOME",
    "XDG_CONFIG_HOME",
    "PACER_SOCKET",
    "PACER_CONFIG",
    "PACER_GATEWAY",
    "PACER_UPSTREAM",
    "PACER_STATE",
    "PACER_LOG_DIR",
    "HTTPS_PROXY",
    "HTTP_PROXY",
    "NO_PROXY",
    "SSL_CERT_FILE",
];

/// Whether a variable may pass to a daemon `pacer` starts (see [`KEPT_VARIABLES`]).
fn kept(name: &str) -> bool {
    KEPT_VARIABLES.contains(&name)
        || name.starts_with("LC_")
        || matches!(
            name,
            "https_proxy" | "http_proxy" | "no_proxy" | "ALL_PROXY" | "all_proxy" | "SSL_CERT_DIR"
        )
}

/// `pacerd` next to this `pacer`, else on `PATH`; always an absolute path.
pub fn path() -> anyhow::Result<PathBuf> {
    let name = format!("pacerd{}", std::env::consts::EXE_SUFFIX);
    let beside = std::env::current_exe()?.with_file_name(&name);
    if beside.exists() {
        return Ok(beside);
    }
    std::env::var_os("PATH")
        .into_iter()
        .flat_map(|path| std::env::split_paths(&path).collect::<Vec<_>>())
        .map(|dir| dir.join(&name))
        .find(|candidate| candidate.is_file())
        .context(
            "cannot find pacerd next to pacer or on PATH \
             (install it with `cargo install --path daemon`)",
        )
}

/// Where a daemon started by `pacer run` writes its output: `pacerd.log` in pacer's state
/// directory (`$XDG_STATE_HOME/pacer`, else `~/.local/state/pacer`), opened for appending.
pub fn start_log() -> Option<(PathBuf, std::fs::File)> {
    let dir = pacer_protocol::endpoint::state_dir()?;
    std::fs::create_dir_all(&dir).ok()?;
    let path = dir.join("pacerd.log");
    let file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&path)
        .ok()?;
    Some((path, file))
}

pub fn connect(socket: Option<&Path>) -> impl Future<Output = Result<Client, pacer_client::Error>> {
    let mut builder = Client::builder()
        .fail_mode(FailMode::Closed)
        .client_name("pacer run");
    if let Some(path) = socket {
        builder = builder.endpoint(path);
    }
    builder.connect()
}

/// Connects to the daemon, starting `pacerd` in the background if none answers.
pub async fn ensure_daemon(socket: Option<PathBuf>) -> anyhow::Result<Client> {
    match connect(socket.as_deref()).await {
        Ok(client) => return Ok(client),
        Err(e) if e.is_unreachable() => {}
        Err(e) => return Err(e.into()),
    }
    let pacerd = path().context("no pacerd is running, and none can be started")?;
    let log = start_log();
    let mut command = std::process::Command::new(&pacerd);
    command.env_clear();
    command.envs(std::env::vars_os().filter(|(name, _)| name.to_str().is_some_and(kept)));
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
