//! `pacer service install|uninstall|status`: run pacerd as a user service — systemd units on
//! Linux (socket-activated), a launchd LaunchAgent on macOS.

use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};

use anyhow::{Context, bail};
use clap::Subcommand;

const SYSTEMD_SOCKET: &str = include_str!("../../../systemd/pacerd.socket");
const SYSTEMD_SERVICE: &str = include_str!("../../../systemd/pacerd.service");
const LAUNCHD_PLIST: &str = include_str!("../../../systemd/dev.pacer.pacerd.plist");
/// The path of pacerd in the unit templates, replaced on install.
const TEMPLATE_PACERD: &str = "/usr/local/bin/pacerd";
const LAUNCHD_LABEL: &str = "dev.pacer.pacerd";

#[derive(Debug, Subcommand)]
pub enum ServiceCommand {
    /// Write the unit files (or LaunchAgent) for this user, pointing at this pacerd, and enable
    /// them with systemctl / launchctl when available (else print the commands).
    Install {
        /// Only write the files.
        #[arg(long)]
        no_start: bool,
    },
    /// Stop and disable the service, and remove its files.
    Uninstall {
        /// Only remove the files.
        #[arg(long)]
        no_stop: bool,
    },
    /// Show whether the service is installed and running.
    Status,
}

pub async fn service(socket: Option<PathBuf>, command: ServiceCommand) -> anyhow::Result<ExitCode> {
    let platform = Platform::detect()?;
    match command {
        ServiceCommand::Install { no_start } => platform.install(!no_start),
        ServiceCommand::Uninstall { no_stop } => platform.uninstall(!no_stop),
        ServiceCommand::Status => platform.status(socket).await,
    }
}

enum Platform {
    /// systemd user units in this directory.
    Systemd { dir: PathBuf },
    /// A LaunchAgent plist in this directory; logs in `logs`.
    Launchd { dir: PathBuf, logs: PathBuf },
}

impl Platform {
    fn detect() -> anyhow::Result<Platform> {
        let home = pacer_protocol::endpoint::home_dir();
        if cfg!(target_os = "macos") {
            let home = home.context("$HOME is not set")?;
            return Ok(Platform::Launchd {
                dir: home.join("Library/LaunchAgents"),
                logs: home.join("Library/Logs/pacer"),
            });
        }
        if cfg!(target_os = "linux") {
            let config = std::env::var_os("XDG_CONFIG_HOME")
                .filter(|p| !p.is_empty())
                .map(PathBuf::from)
                .or_else(|| home.map(|h| h.join(".config")))
                .context("neither $XDG_CONFIG_HOME nor $HOME is set")?;
            return Ok(Platform::Systemd {
                dir: config.join("systemd/user"),
            });
        }
        bail!("pacer service supports systemd (Linux) and launchd (macOS); run pacerd by hand here")
    }

    fn files(&self) -> Vec<PathBuf> {
        match self {
            Platform::Systemd { dir } => {
                vec![dir.join("pacerd.socket"), dir.join("pacerd.service")]
            }
            Platform::Launchd { dir, .. } => vec![dir.join(format!("{LAUNCHD_LABEL}.plist"))],
        }
    }

    fn install(&self, start: bool) -> anyhow::Result<ExitCode> {
        let pacerd = crate::pacerd::path()?;
        let pacerd_text = pacerd.to_string_lossy();
        match self {
            Platform::Systemd { dir } => {
                write(&dir.join("pacerd.socket"), SYSTEMD_SOCKET)?;
                write(
                    &dir.join("pacerd.service"),
                    &SYSTEMD_SERVICE.replace(TEMPLATE_PACERD, &pacerd_text),
                )?;
                let done = run_or_print(
                    start,
                    &[
                        &["systemctl", "--user", "daemon-reload"],
                        &["systemctl", "--user", "enable", "--now", "pacerd.socket"],
                    ],
                )?;
                if start && !done {
                    eprintln!("{NO_USER_MANAGER}");
                    return Ok(ExitCode::FAILURE);
                }
            }
            Platform::Launchd { dir, logs } => {
                std::fs::create_dir_all(logs)
                    .with_context(|| format!("cannot create {}", logs.display()))?;
                let home = dir.parent().and_then(Path::parent).unwrap_or(dir);
                let plist = LAUNCHD_PLIST
                    .replace(TEMPLATE_PACERD, &pacerd_text)
                    .replace("/Users/USER", &home.to_string_lossy());
                let path = dir.join(format!("{LAUNCHD_LABEL}.plist"));
                write(&path, &plist)?;
                let domain = launchd_domain();
                if start {
                    // An agent loaded by an earlier install would make `bootstrap` fail (error
                    // 5) and keep running the old plist: it goes first. Not loaded: nothing to do.
                    let target = format!("{domain}/{LAUNCHD_LABEL}");
                    if let Told::Yes = try_run(true, &["launchctl", "bootout", &target]) {
                        wait_until_unloaded(&target);
                    }
                }
                let done = run_or_print(
                    start,
                    &[&["launchctl", "bootstrap", &domain, &path.to_string_lossy()]],
                )?;
                if start && !done {
                    eprintln!("pacer: the LaunchAgent is written but not loaded; {RUN_BY_HAND}");
                    return Ok(ExitCode::FAILURE);
                }
            }
        }
        crate::outln!("pacerd: {}", pacerd.display());
        Ok(ExitCode::SUCCESS)
    }

    fn uninstall(&self, stop: bool) -> anyhow::Result<ExitCode> {
        if !self.files().iter().any(|f| f.exists()) {
            crate::outln!("the pacerd service is not installed: nothing to remove");
            return Ok(ExitCode::SUCCESS);
        }
        // The files go whether or not the manager could be told (it may not be reachable):
        // removing them is the uninstall; telling the manager stops what it runs now.
        let told = match self {
            Platform::Systemd { .. } => try_run(
                stop,
                &[
                    "systemctl",
                    "--user",
                    "disable",
                    "--now",
                    "pacerd.socket",
                    "pacerd.service",
                ],
            ),
            Platform::Launchd { .. } => {
                let target = format!("{}/{LAUNCHD_LABEL}", launchd_domain());
                try_run(stop, &["launchctl", "bootout", &target])
            }
        };
        for file in self.files() {
            match std::fs::remove_file(&file) {
                Ok(()) => crate::outln!("removed {}", file.display()),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => {
                    return Err(e).with_context(|| format!("cannot remove {}", file.display()));
                }
            }
        }
        match told {
            Told::Yes => {
                if let Platform::Systemd { .. } = self {
                    // Only tidies the manager's view of the removed units; nothing hangs on it.
                    let _ = try_run(true, &["systemctl", "--user", "daemon-reload"]);
                }
                crate::outln!("the pacerd service is uninstalled and stopped");
            }
            Told::NotAsked => crate::outln!(
                "the pacerd service is uninstalled; a pacerd it started keeps running until it \
                 stops or you log out (`pkill -x pacerd` stops it now)"
            ),
            Told::Failed(reason) => crate::outln!(
                "the pacerd service is uninstalled (its files are removed), but the service \
                 manager could not be told ({reason}), so a pacerd it started may still run: \
                 `pacer service status` says whether one answers, `pkill -x pacerd` stops it"
            ),
        }
        Ok(ExitCode::SUCCESS)
    }

    async fn status(&self, socket: Option<PathBuf>) -> anyhow::Result<ExitCode> {
        let mut installed = true;
        for file in self.files() {
            let present = file.exists();
            installed &= present;
            crate::outln!(
                "{:<9} {}",
                if present { "installed" } else { "missing" },
                file.display()
            );
        }
        let manager = match self {
            Platform::Systemd { .. } => output(&[
                "systemctl",
                "--user",
                "is-active",
                "pacerd.socket",
                "pacerd.service",
            ]),
            Platform::Launchd { .. } => output(&[
                "launchctl",
                "print",
                &format!("{}/{LAUNCHD_LABEL}", launchd_domain()),
            ])
            .map(|text| {
                text.lines()
                    .find(|l| l.trim_start().starts_with("state"))
                    .unwrap_or("loaded")
                    .trim()
                    .to_owned()
            }),
        };
        match manager {
            Some(text) => crate::outln!(
                "manager   {}",
                text.split_whitespace().collect::<Vec<_>>().join(" ")
            ),
            None => crate::outln!("manager   (not available)"),
        }
        let mut builder = pacer_client::Client::builder().fail_mode(pacer_client::FailMode::Closed);
        if let Some(path) = socket {
            builder = builder.endpoint(path);
        }
        match builder.connect().await {
            Ok(client) => crate::outln!(
                "daemon    pacerd {} answers at {}",
                client.daemon_version().await?,
                client.endpoint().display()
            ),
            Err(e) => crate::outln!("daemon    not answering: {e}"),
        }
        Ok(if installed {
            ExitCode::SUCCESS
        } else {
            ExitCode::from(3)
        })
    }
}

fn write(path: &Path, text: &str) -> anyhow::Result<()> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    }
    std::fs::write(path, text).with_context(|| format!("cannot write {}", path.display()))?;
    crate::outln!("wrote {}", path.display());
    Ok(())
}

/// Says what to do when systemd's user manager cannot be reached.
const NO_USER_MANAGER: &str = "pacer: the units are written, but the service is not running: \
systemd's user manager cannot be reached from here (no user session bus, as in a container, \
an ssh session without a login session, or su). Log in through a session that starts one, or \
have root run `loginctl enable-linger $USER` so your user manager runs without a login, then \
run the commands above; until then, run `pacerd` in a terminal (or under nohup or tmux), or \
let `pacer run -- COMMAND` start it in the background.";
/// How to go on without a service manager.
const RUN_BY_HAND: &str = "until then, run `pacerd` in a terminal (or under nohup or tmux), or \
let `pacer run -- COMMAND` start it in the background.";

/// Waits (up to 5 s) for launchd to finish unloading `target`: `bootout` returns before it has.
fn wait_until_unloaded(target: &str) {
    for _ in 0..50 {
        let loaded = Command::new("launchctl")
            .args(["print", target])
            .output()
            .is_ok_and(|out| out.status.success());
        if !loaded {
            return;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
}

/// Whether the service manager was told of a change.
enum Told {
    Yes,
    /// `--no-stop`: not asked to.
    NotAsked,
    /// It could not be: why (the tool is missing, or what it printed).
    Failed(String),
}

/// Runs `command` when `run` is set, saying what became of it.
fn try_run(run: bool, command: &[&str]) -> Told {
    if !run {
        return Told::NotAsked;
    }
    if !which(command[0]) {
        return Told::Failed(format!("`{}` is not installed", command[0]));
    }
    match Command::new(command[0]).args(&command[1..]).output() {
        Ok(out) if out.status.success() => {
            crate::outln!("ran {}", command.join(" "));
            Told::Yes
        }
        Ok(out) => Told::Failed(format!(
            "`{}`: {}",
            command.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        )),
        Err(e) => Told::Failed(format!("`{}`: {e}", command.join(" "))),
    }
}

/// Runs each command in turn when `run` is set and the tool exists; otherwise (or when one fails)
/// prints the commands left for the user to run. Returns whether every command ran.
fn run_or_print(run: bool, commands: &[&[&str]]) -> anyhow::Result<bool> {
    for (i, command) in commands.iter().enumerate() {
        let available = run && which(command[0]);
        let failure = if available {
            match Command::new(command[0]).args(&command[1..]).output() {
                Ok(out) if out.status.success() => {
                    crate::outln!("ran {}", command.join(" "));
                    continue;
                }
                Ok(out) => Some(String::from_utf8_lossy(&out.stderr).trim().to_owned()),
                Err(e) => Some(e.to_string()),
            }
        } else {
            None
        };
        if let Some(reason) = failure {
            eprintln!("pacer: `{}` failed: {reason}", command.join(" "));
        }
        crate::outln!("to finish, run:");
        for rest in &commands[i..] {
            crate::outln!("  {}", rest.join(" "));
        }
        return Ok(false);
    }
    Ok(true)
}

fn which(tool: &str) -> bool {
    std::env::var_os("PATH")
        .map(|path| std::env::split_paths(&path).any(|dir| dir.join(tool).is_file()))
        .unwrap_or(false)
}

fn output(command: &[&str]) -> Option<String> {
    if !which(command[0]) {
        return None;
    }
    let out = Command::new(command[0]).args(&command[1..]).output().ok()?;
    let text = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    (!text.is_empty()).then_some(text)
}

fn launchd_domain() -> String {
    #[cfg(unix)]
    // SAFETY: getuid has no preconditions and cannot fail.
    let uid = unsafe { libc::getuid() };
    #[cfg(not(unix))]
    let uid = 0;
    format!("gui/{uid}")
}
