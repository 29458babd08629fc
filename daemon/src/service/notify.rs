//! Talking to the service manager (systemd `Type=notify`): READY once the state is loaded and
//! the sockets are open, STOPPING on shutdown, a one-line STATUS, and watchdog pings from a task
//! that must get hold of the broker first — a wedged daemon stops pinging and is restarted.
//! Without `NOTIFY_SOCKET` (not under systemd, or not on Unix) all of this does nothing.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;

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
pub async fn keep_alive(hub: Arc<Hub>, mut stop: watch::Receiver<bool>) {
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
                _ = stop.changed() => return,
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
        let _ = (hub, stop.changed().await, STATUS_INTERVAL);
    }
}
