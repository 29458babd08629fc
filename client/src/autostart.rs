//! Starting `pacerd` in the background when none answers: finding the executable, the
//! environment it gets (no API key), where its output goes. `pacer run` and the Python package
//! start the daemon this way; a library user asks for it with [`connect_or_start`].

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use crate::builder::ClientBuilder;
use crate::client::Client;
use crate::error::Error;
use crate::fail_mode::FailMode;

/// How long a freshly started daemon has to come up.
pub const STARTUP_TIMEOUT: Duration = Duration::from_secs(10);

/// The variables a daemon started this way keeps: what it needs to find its files, reach the
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

/// Why no daemon could be started.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// Connecting failed for a reason a new daemon would not fix (access refused, an untrusted
    /// socket, another release).
    #[error(transparent)]
    Connect(#[from] Error),
    #[error(
        "no pacerd is running, and none can be started: cannot find pacerd next to {} or on \
         PATH (install it with `cargo install --locked --path daemon`, or the .deb)",
        beside.display()
    )]
    NotFound { beside: PathBuf },
    #[error("no pacerd is running, and starting {} failed: {source}", path.display())]
    Spawn {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("pacerd exited at once ({status}){}", log_hint(log))]
    Exited {
        status: std::process::ExitStatus,
        log: Option<PathBuf>,
    },
    #[error("pacerd did not answer within {}s{}", STARTUP_TIMEOUT.as_secs(), log_hint(log))]
    NoAnswer { log: Option<PathBuf> },
}

fn log_hint(log: &Option<PathBuf>) -> String {
    match log {
        Some(path) => format!("; its log is {}", path.display()),
        None => String::new(),
    }
}

/// A daemon this process started.
#[derive(Debug, Clone)]
pub struct Started {
    pub pid: u32,
    /// Where its output goes (see [`start_log`]).
    pub log: Option<PathBuf>,
}

/// Whether a variable may pass to a daemon started here (see [`KEPT_VARIABLES`]).
/// What Windows programs need besides (names there are in any case): the system directory
/// (without `SystemRoot`, sockets cannot be opened), the user's name (the default pipe is named
/// after it) and profile, temporary and application data directories.
#[cfg(windows)]
const KEPT_ON_WINDOWS: [&str; 11] = [
    "SYSTEMROOT",
    "WINDIR",
    "USERNAME",
    "USERPROFILE",
    "APPDATA",
    "LOCALAPPDATA",
    "TEMP",
    "TMP",
    "PATHEXT",
    "COMSPEC",
    "PROGRAMDATA",
];

fn kept(name: &str) -> bool {
    #[cfg(windows)]
    {
        let upper = name.to_ascii_uppercase();
        if KEPT_ON_WINDOWS.contains(&upper.as_str()) || upper == "PATH" {
            return true;
        }
    }
    KEPT_VARIABLES.contains(&name)
        || name.starts_with("LC_")
        || matches!(
            name,
            "https_proxy" | "http_proxy" | "no_proxy" | "ALL_PROXY" | "all_proxy" | "SSL_CERT_DIR"
        )
}

/// `pacerd` next to this program, else on `PATH`; always an absolute path.
pub fn pacerd_path() -> Result<PathBuf, StartError> {
    let name = format!("pacerd{}", std::env::consts::EXE_SUFFIX);
    let exe = std::env::current_exe().unwrap_or_default();
    let beside = exe.with_file_name(&name);
    if beside.is_file() {
        return Ok(beside);
    }
    std::env::var_os("PATH")
        .into_iter()
        .flat_map(|path| std::env::split_paths(&path).collect::<Vec<_>>())
        .map(|dir| dir.join(&name))
        .find(|candidate| candidate.is_file() && candidate.is_absolute())
        .ok_or(StartError::NotFound {
            beside: exe.parent().map(Path::to_owned).unwrap_or_default(),
        })
}

/// Where a daemon started here writes its output: `pacerd.log` in pacer's state directory
/// (`$XDG_STATE_HOME/pacer`, else `~/.local/state/pacer`), opened for appending.
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

/// Connects as `builder` says; when no daemon answers, starts `pacerd` in the background (on the
/// builder's socket, if it names one) and connects to it. Returns the daemon started, if any.
pub async fn connect_or_start(
    builder: ClientBuilder,
) -> Result<(Client, Option<Started>), StartError> {
    let socket = builder.socket().map(Path::to_owned);
    let probe = builder.clone().fail_mode(FailMode::Closed);
    match probe.clone().connect().await {
        Ok(client) => return Ok((reuse(client, &builder).await?, None)),
        Err(e) if e.is_unreachable() => {}
        Err(e) => return Err(e.into()),
    }
    let pacerd = pacerd_path()?;
    let log = start_log();
    let mut command = std::process::Command::new(&pacerd);
    command.env_clear();
    command.envs(std::env::vars_os().filter(|(name, _)| name.to_str().is_some_and(kept)));
    // The socket the probe tried, named outright: the daemon's own default could differ (its
    // environment is not this one).
    let endpoint = socket.unwrap_or_else(pacer_protocol::endpoint::default_endpoint);
    command.arg("--socket").arg(&endpoint);
    command.stdin(Stdio::null()).stdout(Stdio::null());
    match log.as_ref().and_then(|(_, file)| file.try_clone().ok()) {
        Some(file) => command.stderr(file),
        None => command.stderr(Stdio::null()),
    };
    detach(&mut command);
    let mut child = command.spawn().map_err(|source| StartError::Spawn {
        path: pacerd.clone(),
        source,
    })?;
    let started = Started {
        pid: child.id(),
        log: log.map(|(path, _)| path),
    };
    tracing::info!(pid = started.pid, "started pacerd in the background");
    let since = Instant::now();
    loop {
        match probe.clone().connect().await {
            Ok(client) => return Ok((reuse(client, &builder).await?, Some(started))),
            Err(e) if !e.is_unreachable() => return Err(e.into()),
            Err(_) => {}
        }
        if let Ok(Some(status)) = child.try_wait() {
            // Another process may have started one at the same moment: use it if it answers.
            if let Ok(client) = probe.clone().connect().await {
                return Ok((reuse(client, &builder).await?, None));
            }
            return Err(StartError::Exited {
                status,
                log: started.log,
            });
        }
        if since.elapsed() > STARTUP_TIMEOUT {
            return Err(StartError::NoAnswer { log: started.log });
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The probe's client when the caller wanted one that fails closed; else a client with the
/// caller's own settings, now that a daemon answers.
async fn reuse(probe: Client, builder: &ClientBuilder) -> Result<Client, Error> {
    if builder.mode() == FailMode::Closed {
        Ok(probe)
    } else {
        builder.clone().connect().await
    }
}

/// Keeps the daemon out of the terminal's process group, so Ctrl-C in the terminal reaches the
/// command that started it, not the shared daemon.
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_and_tokens_never_reach_the_daemon() {
        for name in [
            "ANTHROPIC_API_KEY",
            "ANTHROPIC_AUTH_TOKEN",
            "CLAUDE_CODE_OAUTH_TOKEN",
        ] {
            assert!(!kept(name), "{name}");
        }
        for name in [
            "PATH",
            "PACER_SOCKET",
            "LC_ALL",
            "https_proxy",
            "SSL_CERT_DIR",
        ] {
            assert!(kept(name), "{name}");
        }
    }
}
