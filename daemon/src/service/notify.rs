//! Talking to the service manager (systemd `Type=notify`): READY once the state is loaded and
//! the sockets are open, STOPPING on shutdown, a one-line STATUS, and watchdog pings from a task
//! that must get hold of the broker first — a wedged daemon stops pinging and is restarted.
//! Without `NOTIFY_SOCKET` (not under systemd, or not on Unix) all of this does nothing.

use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::hub::Hub;

/// How often the STATUS line is refreshed when no watchdog asks for more.
const STATUS_INTERVAL: Duration = Duration::from_secs(10);

#[cfg(unix)]
fn send(states: &[sd_notify::NotifyState]) {
    if std::env::var_os("NOTIFY_SOCKET").is_some()
        && let Err(e) = sd_notify::notify(states)
    {
        tracing::debug!("cannot notify the service manager: {e}");
    }
}

pub fn ready(hub: &Hub) {
    #[cfg(unix)]
    send(&[
        sd_notify::NotifyState::Ready,
        sd_notify::NotifyState::Status(&hub.summary()),
    ]);
    #[cfg(not(unix))]
    let _ = hub;
}

pub fn stopping() {
    #[cfg(unix)]
    send(&[
        sd_notify::NotifyState::Stopping,
        sd_notify::NotifyState::Status("stopping: waiting for calls in flight to report"),
    ]);
}

/// Pings the watchdog (when systemd set one) and refreshes the STATUS line until `stop`.
pub async fn keep_alive(hub: Arc<Hub>, stop: CancellationToken) {
    #[cfg(unix)]
    {
        if std::env::var_os("NOTIFY_SOCKET").is_none() {
            return;
        }
        let watchdog = sd_notify::watchdog_enabled();
        let interval = watchdog.map_or(STATUS_INTERVAL, |timeout| {
            (timeout / 2).min(STATUS_INTERVAL)
        });
        loop {
            tokio::select! {
                () = tokio::time::sleep(interval) => {}
                () = stop.cancelled() => return,
            }
            // Taking the broker's lock is the liveness check: a deadlocked daemon never gets here.
            let summary = hub.summary();
            let mut states = vec![sd_notify::NotifyState::Status(&summary)];
            if watchdog.is_some() {
                states.push(sd_notify::NotifyState::Watchdog);
            }
            send(&states);
        }
    }
    #[cfg(not(unix))]
    {
        let _ = (hub, stop.cancelled().await, STATUS_INTERVAL);
    }
}

/// What a person who started pacerd in a terminal does next: where it listens, where it logs,
/// and the commands that use it.
pub fn next_steps(ready: &super::Ready, log_dir: Option<&std::path::Path>) -> String {
    let mut out = format!("\npacerd {} is ready.\n", env!("CARGO_PKG_VERSION"));
    out.push_str(&format!("  socket   {}\n", ready.socket));
    match ready.gateway {
        Some(addr) => out.push_str(&format!(
            "  gateway  http://{addr} (forwards to {})\n",
            ready.upstream
        )),
        None => out.push_str("  gateway  off (--no-gateway)\n"),
    }
    match log_dir {
        Some(dir) => out.push_str(&format!("  logs     {} (and here)\n", dir.display())),
        None => out.push_str("  logs     here only\n"),
    }
    if !on_path("pacer") {
        // Started with `cargo run` from the repository, before installing anything.
        out.push_str(
            "\n`pacer` is not on your PATH yet. From the repository:\n  cargo install \
             --locked --path daemon && cargo install --locked --path client/cli\n",
        );
    }
    out.push_str("\nIn another terminal:\n");
    out.push_str("  pacer run -- claude       Claude Code through pacer (any command works)\n");
    out.push_str("  pacer status              the budgets; `pacer top` for a live view\n");
    if let Some(addr) = ready.gateway {
        out.push_str(&format!(
            "  export ANTHROPIC_BASE_URL=http://{addr}   for SDK scripts you start yourself\n"
        ));
    }
    out.push_str("Ctrl-C stops it (calls in flight get 10 s to report).\n\n");
    out
}

/// Whether `program` is found on the `PATH`.
fn on_path(program: &str) -> bool {
    let file = format!("{program}{}", std::env::consts::EXE_SUFFIX);
    std::env::var_os("PATH")
        .is_some_and(|path| std::env::split_paths(&path).any(|dir| dir.join(&file).is_file()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn next_steps_name_the_gateway_the_logs_and_the_commands() {
        let ready = super::super::Ready {
            socket: "/run/user/1000/pacer/pacer.sock".into(),
            socket_path: None,
            gateway: Some("127.0.0.1:4141".parse().unwrap()),
            upstream: "https://api.anthropic.com/".into(),
        };
        let text = next_steps(
            &ready,
            Some(std::path::Path::new("/home/u/.local/state/pacer/logs")),
        );
        for part in [
            "socket   /run/user/1000/pacer/pacer.sock",
            "gateway  http://127.0.0.1:4141 (forwards to https://api.anthropic.com/)",
            "logs     /home/u/.local/state/pacer/logs",
            "pacer run -- claude",
            "export ANTHROPIC_BASE_URL=http://127.0.0.1:4141",
        ] {
            assert!(text.contains(part), "{part}: {text}");
        }
    }
}
