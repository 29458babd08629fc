//! Telling an alert: a command (`sh -c`, the facts in `PACER_*`), a webhook (a POST of JSON,
//! or Slack's `{"text": …}`), a desktop notification (`notify-send` on Linux, `osascript` on
//! macOS). Each destination takes at most `max_per_minute` alerts a minute (the rest are
//! counted in the log), and each is tried off the watcher's loop, with a timeout. A destination
//! that fails is logged once, until it works again.

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant, SystemTime};

use serde_json::json;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use super::{Alert, View, Watcher};
use crate::config::AlertsConfig;
use crate::hub::Hub;

/// How often the watcher looks.
const EVERY: Duration = Duration::from_secs(1);
/// How long a command or a webhook may take.
const TIMEOUT: Duration = Duration::from_secs(30);

/// Watches the hub and tells what [`Watcher`] finds, until `stop`; `config` follows reloads.
pub async fn alert_task(
    hub: Arc<Hub>,
    mut config: watch::Receiver<AlertsConfig>,
    utc_offset: i32,
    stop: CancellationToken,
) {
    let mut watcher = Watcher::new(config.borrow().clone(), utc_offset);
    let mut deliveries = Deliveries::new(config.borrow().clone());
    loop {
        tokio::select! {
            () = tokio::time::sleep(EVERY) => {}
            changed = config.changed() => {
                if changed.is_err() {
                    return;
                }
                let new = config.borrow_and_update().clone();
                watcher.configure(new.clone());
                deliveries.configure(new);
                continue;
            }
            () = stop.cancelled() => return,
        }
        if !deliveries.config.enabled() {
            continue;
        }
        let view = hub.read(|broker, now| View {
            budgets: broker.status(now),
            accounts: broker.accounts(now),
            clients: broker.clients(now),
        });
        for alert in watcher.observe(&view, SystemTime::now()) {
            tracing::info!(event = alert.event.as_str(), "{}", alert.message);
            deliveries.send(alert);
        }
    }
}

/// One destination's state: its recent sends (the throttle) and whether it is failing.
#[derive(Default)]
struct Destination {
    sent: VecDeque<Instant>,
    dropped: u64,
    failing: Arc<AtomicBool>,
}

impl Destination {
    /// Whether one more may go now.
    fn admit(&mut self, name: &str, per_minute: u32, now: Instant) -> bool {
        while self
            .sent
            .front()
            .is_some_and(|at| now.saturating_duration_since(*at) >= Duration::from_secs(60))
        {
            self.sent.pop_front();
        }
        if self.sent.len() >= per_minute as usize {
            self.dropped += 1;
            if self.dropped == 1 {
                tracing::warn!(
                    "alerts to the {name} come faster than {per_minute} a minute ([alerts] \
                     max_per_minute): the rest of this minute's are not sent"
                );
            }
            return false;
        }
        if self.dropped > 1 {
            tracing::warn!(
                "{} alerts were not sent to the {name} (too many a minute)",
                self.dropped
            );
        }
        self.dropped = 0;
        self.sent.push_back(now);
        true
    }
}

/// The destinations, and the HTTP client for the webhook.
pub struct Deliveries {
    config: AlertsConfig,
    http: reqwest::Client,
    command: Destination,
    webhook: Destination,
    desktop: Destination,
}

impl Deliveries {
    pub fn new(config: AlertsConfig) -> Deliveries {
        Deliveries {
            config,
            http: reqwest::Client::builder()
                .timeout(TIMEOUT)
                .build()
                .unwrap_or_default(),
            command: Destination::default(),
            webhook: Destination::default(),
            desktop: Destination::default(),
        }
    }

    fn configure(&mut self, config: AlertsConfig) {
        self.config = config;
    }

    /// Sends `alert` to every destination set, each in a task of its own.
    pub fn send(&mut self, alert: Alert) {
        let now = Instant::now();
        let per_minute = self.config.max_per_minute;
        if let Some(command) = self.config.command.clone()
            && self.command.admit("command", per_minute, now)
        {
            let (alert, failing) = (alert.clone(), self.command.failing.clone());
            tokio::spawn(async move {
                report("command", &failing, run_command(&command, &alert).await)
            });
        }
        if let Some(url) = self.config.webhook.clone()
            && self.webhook.admit("webhook", per_minute, now)
        {
            let body = match self.config.slack {
                true => json!({"text": alert.message}),
                false => serde_json::to_value(&alert).unwrap_or_default(),
            };
            let (http, failing) = (self.http.clone(), self.webhook.failing.clone());
            tokio::spawn(async move { report("webhook", &failing, post(&http, url, body).await) });
        }
        if self.config.desktop && self.desktop.admit("desktop", per_minute, now) {
            let failing = self.desktop.failing.clone();
            tokio::spawn(async move { report("desktop", &failing, notify(&alert.message).await) });
        }
    }
}

/// Logs a failure once, until the destination works again.
fn report(name: &str, failing: &AtomicBool, outcome: Result<(), String>) {
    match outcome {
        Ok(()) => {
            if failing.swap(false, Ordering::Relaxed) {
                tracing::info!("alerts reach the {name} again");
            }
        }
        Err(e) => {
            if !failing.swap(true, Ordering::Relaxed) {
                tracing::warn!(
                    "an alert could not be sent to the {name}: {e} (said once, until it works again)"
                );
            }
        }
    }
}

async fn run_command(command: &str, alert: &Alert) -> Result<(), String> {
    // `sh -c` (on Windows, `cmd /C`), as a person would type the command.
    let (shell, flag) = if cfg!(windows) {
        ("cmd", "/C")
    } else {
        ("sh", "-c")
    };
    let mut child = tokio::process::Command::new(shell);
    child
        .arg(flag)
        .arg(command)
        .envs(alert.env())
        .stdin(std::process::Stdio::null())
        .kill_on_drop(true);
    let status = tokio::time::timeout(TIMEOUT, child.status())
        .await
        .map_err(|_| format!("`{command}` took longer than {}s", TIMEOUT.as_secs()))?
        .map_err(|e| format!("cannot run `{shell} {flag} {command}`: {e}"))?;
    if status.success() {
        Ok(())
    } else {
        Err(format!("`{command}` failed ({status})"))
    }
}

async fn post(
    http: &reqwest::Client,
    url: reqwest::Url,
    body: serde_json::Value,
) -> Result<(), String> {
    let shown = crate::config::shown_url(&url);
    let response = http
        .post(url)
        .header(http::header::CONTENT_TYPE, "application/json")
        .body(body.to_string())
        .send()
        .await
        .map_err(|e| format!("{shown}: {e}"))?;
    match response.status() {
        status if status.is_success() => Ok(()),
        status => Err(format!("{shown} answered {status}")),
    }
}

/// A desktop notification with the tool the platform has.
async fn notify(message: &str) -> Result<(), String> {
    let mut command = if cfg!(target_os = "macos") {
        let script = format!(
            "display notification {} with title \"pacer\"",
            serde_json::Value::from(message)
        );
        let mut command = tokio::process::Command::new("osascript");
        command.arg("-e").arg(script);
        command
    } else {
        let mut command = tokio::process::Command::new("notify-send");
        command.args(["--app-name=pacer", "pacer"]).arg(message);
        command
    };
    let status = tokio::time::timeout(TIMEOUT, command.kill_on_drop(true).status())
        .await
        .map_err(|_| "the notification took too long".to_owned())?
        .map_err(|e| {
            format!("cannot show a desktop notification (is notify-send installed?): {e}")
        })?;
    if status.success() {
        Ok(())
    } else {
        Err(format!("the notification tool failed ({status})"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_destination_takes_so_many_a_minute() {
        let mut destination = Destination::default();
        let t0 = Instant::now();
        for i in 0..3 {
            assert!(destination.admit("command", 3, t0 + Duration::from_secs(i)));
        }
        assert!(!destination.admit("command", 3, t0 + Duration::from_secs(10)));
        assert!(!destination.admit("command", 3, t0 + Duration::from_secs(59)));
        assert_eq!(destination.dropped, 2);
        assert!(destination.admit("command", 3, t0 + Duration::from_secs(60)));
        assert_eq!(destination.dropped, 0);
    }

    #[tokio::test]
    async fn a_failing_command_is_said_once_and_its_facts_are_in_the_environment() {
        let failing = AtomicBool::new(false);
        let alert = Alert {
            event: super::super::Kind::Window,
            account: "org-1".into(),
            window: Some("5h".into()),
            utilization: Some(0.91),
            threshold: Some(0.9),
            reset: None,
            until: None,
            subject: None,
            message: "pacer: the 5-hour window is at 91 %".into(),
        };
        let ok = run_command(
            "test \"$PACER_UTILIZATION\" = 91 && test \"$PACER_WINDOW\" = 5h",
            &alert,
        );
        assert_eq!(ok.await, Ok(()));
        let failed = run_command("exit 3", &alert).await;
        assert!(
            failed.as_ref().is_err_and(|e| e.contains("exit 3")),
            "{failed:?}"
        );
        report("command", &failing, failed);
        assert!(failing.load(Ordering::Relaxed));
        report("command", &failing, Ok(()));
        assert!(!failing.load(Ordering::Relaxed));
    }
}
