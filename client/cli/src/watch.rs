//! `pacer watch`: the daemon's events as they happen — each call's outcome, each refusal by
//! pacer, pauses, limits learned, windows — across daemon restarts.

use std::process::ExitCode;
use std::time::{Duration, SystemTime};

use pacer_client::{Client, Event};
use serde_json::{Value, json};

use crate::clock::rfc3339;

/// How often a watch whose daemon went away tries to reach it again.
const RECONNECT_EVERY: Duration = Duration::from_secs(1);

pub async fn watch(client: &Client, as_json: bool, grants: bool) -> anyhow::Result<ExitCode> {
    let mut lines = Lines::default();
    loop {
        let mut events = client.subscribe().await?;
        while let Some(event) = events.next().await {
            let now = humantime::format_rfc3339_millis(SystemTime::now());
            if as_json {
                crate::outln!(
                    "{}",
                    json!({ "at": now.to_string(), "event": event_json(&event) })
                );
            } else if grants || !matches!(event, Event::Granted { .. }) {
                lines.print(&now.to_string(), describe(&event));
            }
        }
        lines.flush();
        eprintln!("pacer watch: pacerd went away; waiting for it to come back…");
        while client.status().await.is_err() {
            tokio::time::sleep(RECONNECT_EVERY).await;
        }
        eprintln!("pacer watch: pacerd is back");
    }
}

/// Prints lines, folding a run of identical ones into one line and a count.
#[derive(Default)]
struct Lines {
    last: Option<String>,
    repeats: u32,
}

impl Lines {
    fn print(&mut self, at: &str, line: String) {
        if self.last.as_deref() == Some(line.as_str()) {
            self.repeats += 1;
            return;
        }
        self.flush();
        crate::outln!("{at} {line}");
        self.last = Some(line);
    }

    fn flush(&mut self) {
        if self.repeats > 0 {
            crate::outln!("  … the line above {} more times", self.repeats);
            self.repeats = 0;
        }
    }
}

/// An event in one line, as `pacer watch` and `pacer top` print it.
pub fn describe(event: &Event) -> String {
    match event {
        Event::Granted {
            budget,
            lease,
            priority,
            client_id,
            waited,
        } => format!(
            "granted {budget} lease={lease} priority={priority} client={client_id} waited={:.3}s",
            waited.as_secs_f64()
        ),
        Event::PauseStarted {
            budget,
            until,
            reason,
        } => format!(
            "pause {budget} until {} ({reason})",
            humantime::format_rfc3339_seconds(*until)
        ),
        Event::PauseEnded { budget } => format!("resume {budget}"),
        Event::LimitLearned {
            budget,
            kind,
            limit,
        } => format!("limit {budget} {}={limit}", kind.short_name()),
        Event::Overloaded { model_class, until } => format!(
            "overloaded {model_class} until {}",
            humantime::format_rfc3339_seconds(*until)
        ),
        Event::KeyLinked { key, account } => format!("account {account} key={key} joined"),
        Event::Window { owner, window } => format!(
            "window {owner} {}",
            crate::status::window(window, SystemTime::now())
        ),
        Event::LockedOut {
            owner,
            model_class,
            until,
            reason,
        } => format!(
            "locked out {owner}/{} until {} ({reason})",
            model_class.as_deref().unwrap_or("*"),
            humantime::format_rfc3339_seconds(*until)
        ),
        Event::LockoutEnded { owner, model_class } => format!(
            "lockout ended {owner}/{}",
            model_class.as_deref().unwrap_or("*")
        ),
        Event::Settled {
            budget,
            client_id,
            outcome,
            input_tokens,
            output_tokens,
            waited,
        } => format!(
            "done {budget} client={client_id} {} in={input_tokens} out={output_tokens} \
             waited={:.3}s",
            outcome.as_str(),
            waited.as_secs_f64()
        ),
        Event::Refused {
            budget,
            client_id,
            reason,
        } => format!(
            "refused {} client={client_id}: {reason}",
            budget.as_ref().map_or("-".to_owned(), ToString::to_string)
        ),
        Event::StartPace {
            account,
            per_minute,
        } => {
            let whose = account
                .as_ref()
                .map_or("this machine".to_owned(), ToString::to_string);
            match per_minute {
                Some(rate) => format!(
                    "starts {whose}: new sessions one at a time, {rate:.1} a minute (bare 429s \
                     met sessions starting)"
                ),
                None => format!("starts {whose}: new sessions start at once again"),
            }
        }
    }
}

fn event_json(event: &Event) -> Value {
    match event {
        Event::Granted {
            budget,
            lease,
            priority,
            client_id,
            waited,
        } => {
            json!({"type": "granted", "owner": budget.owner.to_string(), "model_class": budget.model_class,
            "lease": lease.0, "priority": priority.as_str(), "client_id": client_id, "waited_ms": waited.as_millis() as u64})
        }
        Event::PauseStarted {
            budget,
            until,
            reason,
        } => {
            json!({"type": "pause_started", "owner": budget.owner.to_string(), "model_class": budget.model_class,
            "until": rfc3339(Some(*until)), "reason": reason})
        }
        Event::PauseEnded { budget } => {
            json!({"type": "pause_ended", "owner": budget.owner.to_string(), "model_class": budget.model_class})
        }
        Event::LimitLearned {
            budget,
            kind,
            limit,
        } => {
            json!({"type": "limit_learned", "owner": budget.owner.to_string(), "model_class": budget.model_class,
            "limit": kind.short_name(), "value": limit})
        }
        Event::Overloaded { model_class, until } => {
            json!({"type": "overloaded", "model_class": model_class, "until": rfc3339(Some(*until))})
        }
        Event::KeyLinked { key, account } => {
            json!({"type": "key_linked", "key": key.to_string(), "account": account})
        }
        Event::Window { owner, window } => {
            json!({"type": "window", "owner": owner.to_string(), "window": crate::status::window_json(window)})
        }
        Event::LockedOut {
            owner,
            model_class,
            until,
            reason,
        } => {
            json!({"type": "locked_out", "owner": owner.to_string(), "model_class": model_class,
            "until": rfc3339(Some(*until)), "reason": reason})
        }
        Event::LockoutEnded { owner, model_class } => {
            json!({"type": "lockout_ended", "owner": owner.to_string(), "model_class": model_class})
        }
        Event::Settled {
            budget,
            client_id,
            outcome,
            input_tokens,
            output_tokens,
            waited,
        } => {
            json!({"type": "settled", "owner": budget.owner.to_string(), "model_class": budget.model_class,
            "client_id": client_id, "outcome": outcome.as_str(), "input_tokens": input_tokens,
            "output_tokens": output_tokens, "waited_ms": waited.as_millis() as u64})
        }
        Event::Refused {
            budget,
            client_id,
            reason,
        } => {
            json!({"type": "refused", "owner": budget.as_ref().map(|b| b.owner.to_string()),
            "model_class": budget.as_ref().map(|b| b.model_class.clone()),
            "client_id": client_id, "reason": reason})
        }
        Event::StartPace {
            account,
            per_minute,
        } => {
            json!({"type": "start_pace", "account": account.as_ref().map(ToString::to_string),
            "per_minute": per_minute})
        }
    }
}
