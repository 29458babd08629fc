//! `pacer status` and `pacer watch`.

use std::process::ExitCode;
use std::time::{Duration, SystemTime};

use pacer_client::{Client, Event, StatusSnapshot};
use pacer_protocol::message::BudgetStatus;
use serde_json::{Value, json};

pub async fn status(client: &Client, as_json: bool) -> anyhow::Result<ExitCode> {
    let snapshot = client.status().await?;
    if as_json {
        println!("{}", serde_json::to_string_pretty(&status_json(&snapshot))?);
    } else {
        print!("{}", status_table(&snapshot, SystemTime::now()));
    }
    Ok(ExitCode::SUCCESS)
}

fn rfc3339(at: Option<SystemTime>) -> Value {
    at.map_or(Value::Null, |at| {
        Value::String(humantime::format_rfc3339_seconds(at).to_string())
    })
}

fn status_json(snapshot: &StatusSnapshot) -> Value {
    let budgets: Vec<Value> = snapshot
        .budgets
        .iter()
        .map(|b| {
            json!({
                "key": b.budget.key.to_string(),
                "model_class": b.budget.model_class,
                "limits": {
                    "rpm": b.limits.rpm,
                    "itpm": b.limits.itpm,
                    "otpm": b.limits.otpm,
                    "max_in_flight": b.limits.max_in_flight,
                },
                "available": {
                    "requests": b.available.requests,
                    "input_tokens": b.available.input_tokens,
                    "output_tokens": b.available.output_tokens,
                },
                "in_flight": b.in_flight,
                "waiting": b.waiting,
                "paused_until": rfc3339(b.paused_until),
                "overloaded_until": rfc3339(b.overloaded_until),
                "granted": b.granted,
                "rate_limited": b.rate_limited,
            })
        })
        .collect();
    json!({ "daemon_version": snapshot.daemon_version, "budgets": budgets })
}

fn status_table(snapshot: &StatusSnapshot, now: SystemTime) -> String {
    if snapshot.budgets.is_empty() {
        return format!(
            "pacerd {}: no budgets yet (one appears with the first permit for a key and model class)\n",
            snapshot.daemon_version
        );
    }
    let header = [
        "KEY",
        "CLASS",
        "RPM",
        "ITPM",
        "OTPM",
        "AVAIL REQ",
        "AVAIL IN",
        "AVAIL OUT",
        "IN FLIGHT",
        "WAITING",
        "PAUSED",
        "GRANTED",
        "429S",
    ];
    let rows: Vec<[String; 13]> = snapshot.budgets.iter().map(|b| row(b, now)).collect();
    let widths: Vec<usize> = (0..header.len())
        .map(|i| {
            rows.iter()
                .map(|r| r[i].len())
                .chain([header[i].len()])
                .max()
                .unwrap_or(0)
        })
        .collect();
    let mut out = String::new();
    let mut line = |cells: &mut dyn Iterator<Item = &str>| {
        let text: Vec<String> = cells
            .zip(&widths)
            .map(|(cell, width)| format!("{cell:<width$}"))
            .collect();
        out.push_str(text.join("  ").trim_end());
        out.push('\n');
    };
    line(&mut header.iter().copied());
    for r in &rows {
        line(&mut r.iter().map(String::as_str));
    }
    out
}

fn row(b: &BudgetStatus, now: SystemTime) -> [String; 13] {
    let opt = |v: Option<u64>| v.map_or("-".to_owned(), |v| v.to_string());
    let avail = |v: Option<i64>| v.map_or("-".to_owned(), |v| v.to_string());
    let paused = match (b.paused_until, b.overloaded_until) {
        (Some(until), _) => format!("{} more", remaining(until, now)),
        (None, Some(until)) => format!("overloaded, {} more", remaining(until, now)),
        (None, None) => "-".to_owned(),
    };
    [
        b.budget.key.to_string(),
        b.budget.model_class.clone(),
        opt(b.limits.rpm),
        opt(b.limits.itpm),
        opt(b.limits.otpm),
        avail(b.available.requests),
        avail(b.available.input_tokens),
        avail(b.available.output_tokens),
        match b.limits.max_in_flight {
            Some(max) => format!("{}/{max}", b.in_flight),
            None => b.in_flight.to_string(),
        },
        b.waiting.to_string(),
        paused,
        b.granted.to_string(),
        b.rate_limited.to_string(),
    ]
}

fn remaining(until: SystemTime, now: SystemTime) -> String {
    let left = until.duration_since(now).unwrap_or_default();
    humantime::format_duration(Duration::from_secs(left.as_secs_f64().ceil() as u64)).to_string()
}

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
            json!({"type": "granted", "key": budget.key.to_string(), "model_class": budget.model_class,
            "lease": lease.0, "priority": priority.as_str(), "client_id": client_id, "waited_ms": waited.as_millis() as u64})
        }
        Event::PauseStarted {
            budget,
            until,
            reason,
        } => {
            json!({"type": "pause_started", "key": budget.key.to_string(), "model_class": budget.model_class,
            "until": rfc3339(Some(*until)), "reason": reason})
        }
        Event::PauseEnded { budget } => {
            json!({"type": "pause_ended", "key": budget.key.to_string(), "model_class": budget.model_class})
        }
        Event::LimitLearned {
            budget,
            kind,
            limit,
        } => {
            json!({"type": "limit_learned", "key": budget.key.to_string(), "model_class": budget.model_class,
            "limit": kind.short_name(), "value": limit})
        }
        Event::Overloaded { model_class, until } => {
            json!({"type": "overloaded", "model_class": model_class, "until": rfc3339(Some(*until))})
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use pacer_protocol::KeyFingerprint;
    use pacer_protocol::message::{Available, BudgetId, Limits};

    fn snapshot(paused_until: Option<SystemTime>) -> StatusSnapshot {
        StatusSnapshot {
            daemon_version: "0.1.0".into(),
            budgets: vec![BudgetStatus {
                budget: BudgetId {
                    key: KeyFingerprint::of("k"),
                    model_class: "sonnet".into(),
                },
                limits: Limits {
                    rpm: Some(50),
                    ..Default::default()
                },
                available: Available {
                    requests: Some(-2),
                    ..Default::default()
                },
                in_flight: 3,
                waiting: 4,
                paused_until,
                overloaded_until: None,
                granted: 10,
                rate_limited: 1,
            }],
        }
    }

    #[test]
    fn json_has_the_documented_shape() {
        let at = SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000);
        let value = status_json(&snapshot(Some(at)));
        let budget = &value["budgets"][0];
        assert_eq!(budget["key"], KeyFingerprint::of("k").to_string());
        assert_eq!(budget["model_class"], "sonnet");
        assert_eq!(budget["limits"]["rpm"], 50);
        assert_eq!(budget["limits"]["itpm"], Value::Null);
        assert_eq!(budget["available"]["requests"], -2);
        assert_eq!(budget["in_flight"], 3);
        assert_eq!(budget["waiting"], 4);
        assert_eq!(budget["paused_until"], "2027-01-15T08:00:00Z");
        assert_eq!(budget["granted"], 10);
        assert_eq!(budget["rate_limited"], 1);
        let unpaused = status_json(&snapshot(None));
        assert_eq!(unpaused["budgets"][0]["paused_until"], Value::Null);
    }

    #[test]
    fn the_table_shows_every_column() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000);
        let table = status_table(&snapshot(Some(now + Duration::from_secs(28))), now);
        let lines: Vec<&str> = table.lines().collect();
        assert!(lines[0].starts_with("KEY"));
        assert!(lines[1].contains("sonnet"));
        assert!(lines[1].contains("28s more"));
        assert!(lines[1].contains("-2"));
    }
}
