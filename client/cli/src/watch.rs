//! `pacer watch`: the daemon's events as they happen.

use std::process::ExitCode;
use std::time::SystemTime;

use pacer_client::{Client, Event};
use serde_json::{Value, json};

use crate::clock::rfc3339;

pub async fn watch(client: &Client, as_json: bool) -> anyhow::Result<ExitCode> {
    let mut events = client.subscribe().await?;
    while let Some(event) = events.next().await {
        let now = humantime::format_rfc3339_millis(SystemTime::now());
        if as_json {
            println!(
                "{}",
                json!({ "at": now.to_string(), "event": event_json(&event) })
            );
        } else {
            println!("{now} {}", describe(&event));
        }
    }
    anyhow::bail!("pacerd closed the connection")
}

fn describe(event: &Event) -> String {
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
    }
}
