//! `pacer status`: every budget, and every account with its subscription windows.
//!
//! - this file: the command and the tables a person reads;
//! - `json`: `--json`, the shape scripts read.

mod json;

use std::process::ExitCode;
use std::time::SystemTime;

use pacer_client::{Client, StatusSnapshot};
use pacer_protocol::message::{AccountStatus, BudgetStatus, RouteStatus, WindowStatus};

use crate::clock::{local, remaining};

pub use json::window as window_json;

pub async fn status(client: &Client, as_json: bool) -> anyhow::Result<ExitCode> {
    let snapshot = client.status().await?;
    if as_json {
        println!(
            "{}",
            serde_json::to_string_pretty(&json::status(&snapshot))?
        );
    } else {
        print!("{}", render(&snapshot, SystemTime::now()));
    }
    Ok(ExitCode::SUCCESS)
}

/// The tables of `pacer status`.
pub fn render(snapshot: &StatusSnapshot, now: SystemTime) -> String {
    if snapshot.budgets.is_empty() && snapshot.accounts.is_empty() {
        return format!(
            "pacerd {}: no budgets yet (one appears with the first permit for a key and model class)\n",
            snapshot.daemon_version
        );
    }
    let mut out = budgets_table(&snapshot.budgets, now);
    if !snapshot.accounts.is_empty() {
        out.push('\n');
        out.push_str(&accounts_table(&snapshot.accounts, now));
    }
    if !snapshot.routes.is_empty() {
        out.push('\n');
        out.push_str(&routes_table(&snapshot.routes, now));
    }
    out
}

fn routes_table(routes: &[RouteStatus], now: SystemTime) -> String {
    let rows: Vec<Vec<String>> = routes
        .iter()
        .map(|r| {
            vec![
                r.id.clone(),
                r.upstream.clone(),
                dash_if_empty(r.clients.join(", ")),
                format!("{} ago", remaining(now, r.last_used)),
            ]
        })
        .collect();
    table(&["ROUTE", "UPSTREAM", "CLIENTS", "LAST USED"], &rows)
}

fn budgets_table(budgets: &[BudgetStatus], now: SystemTime) -> String {
    let header = [
        "OWNER",
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
    let rows: Vec<Vec<String>> = budgets.iter().map(|b| budget_row(b, now)).collect();
    table(&header, &rows)
}

fn budget_row(b: &BudgetStatus, now: SystemTime) -> Vec<String> {
    let opt = |v: Option<u64>| v.map_or("-".to_owned(), |v| v.to_string());
    let avail = |v: Option<i64>| v.map_or("-".to_owned(), |v| v.to_string());
    let paused = match (b.paused_until, b.overloaded_until) {
        (Some(until), _) => format!("{} more", remaining(until, now)),
        (None, Some(until)) => format!("overloaded, {} more", remaining(until, now)),
        (None, None) => "-".to_owned(),
    };
    vec![
        b.budget.owner.to_string(),
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

fn accounts_table(accounts: &[AccountStatus], now: SystemTime) -> String {
    let header = ["ACCOUNT", "KEYS", "WINDOWS", "LOCKED OUT"];
    let rows: Vec<Vec<String>> = accounts
        .iter()
        .map(|a| {
            let keys: Vec<String> = a.keys.iter().map(ToString::to_string).collect();
            let windows: Vec<String> = a.windows.iter().map(|w| window(w, now)).collect();
            let lockouts: Vec<String> = a
                .lockouts
                .iter()
                .map(|l| {
                    let scope = l.model_class.as_deref().unwrap_or("all");
                    format!("{scope} until {} ({})", local(l.until, now), l.reason)
                })
                .collect();
            let owner = match &a.parent {
                Some(parent) => format!("{} (in {parent})", a.owner),
                None => a.owner.to_string(),
            };
            vec![
                owner,
                dash_if_empty(keys.join(", ")),
                dash_if_empty(windows.join(", ")),
                dash_if_empty(lockouts.join("; ")),
            ]
        })
        .collect();
    table(&header, &rows)
}

/// One window as a person reads it: `5h 42% · resets 14:10`, `7d 100% rejected · resets Tue
/// 09:00`.
pub fn window(w: &WindowStatus, now: SystemTime) -> String {
    let mut text = w.name.clone();
    if let Some(u) = w.utilization {
        text.push_str(&format!(" {:.0}%", u * 100.0));
    }
    if let Some(status) = w.status.as_deref().filter(|s| *s != "allowed") {
        text.push(' ');
        text.push_str(status);
    }
    if let Some(reset) = w.reset {
        text.push_str(&format!(" · resets {}", local(reset, now)));
    }
    text
}

fn dash_if_empty(text: String) -> String {
    if text.is_empty() { "-".into() } else { text }
}

/// Columns padded to their widest cell, two spaces apart.
pub fn table(header: &[&str], rows: &[Vec<String>]) -> String {
    let widths: Vec<usize> = (0..header.len())
        .map(|i| {
            rows.iter()
                .map(|r| r[i].chars().count())
                .chain([header[i].len()])
                .max()
                .unwrap_or(0)
        })
        .collect();
    let mut out = String::new();
    let mut line = |cells: Vec<&str>| {
        let text: Vec<String> = cells
            .iter()
            .zip(&widths)
            .map(|(cell, width)| format!("{cell:<width$}"))
            .collect();
        out.push_str(text.join("  ").trim_end());
        out.push('\n');
    };
    line(header.to_vec());
    for r in rows {
        line(r.iter().map(String::as_str).collect());
    }
    out
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use pacer_protocol::message::{Available, BudgetId, Limits, LockoutStatus};
    use pacer_protocol::{BudgetOwner, KeyFingerprint};

    fn snapshot(paused_until: Option<SystemTime>) -> StatusSnapshot {
        StatusSnapshot {
            daemon_version: "0.1.0".into(),
            budgets: vec![BudgetStatus {
                budget: BudgetId {
                    owner: BudgetOwner::Key(KeyFingerprint::of("k")),
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
                pause_reason: paused_until.map(|_| "rate limited".into()),
                overloaded_until: None,
                granted: 10,
                rate_limited: 1,
            }],
            accounts: vec![AccountStatus {
                owner: BudgetOwner::Account("org-0123456789ab".into()),
                parent: None,
                keys: vec![KeyFingerprint::of("a"), KeyFingerprint::of("b")],
                windows: vec![
                    WindowStatus {
                        name: "5h".into(),
                        status: Some("allowed".into()),
                        utilization: Some(0.42),
                        reset: Some(SystemTime::UNIX_EPOCH + Duration::from_secs(4000)),
                    },
                    WindowStatus {
                        name: "7d".into(),
                        status: Some("allowed_warning".into()),
                        utilization: Some(0.3),
                        reset: None,
                    },
                ],
                unified_status: Some("allowed".into()),
                lockouts: vec![LockoutStatus {
                    model_class: Some("opus".into()),
                    until: SystemTime::UNIX_EPOCH + Duration::from_secs(5000),
                    reason: "the 7d_opus subscription window is spent".into(),
                }],
            }],
            routes: vec![RouteStatus {
                id: "rt0123456789ab".into(),
                upstream: "https://proxy.example.com/anthropic".into(),
                clients: vec!["claude-7".into()],
                last_used: SystemTime::UNIX_EPOCH + Duration::from_secs(900),
            }],
            next_page: None,
        }
    }

    #[test]
    fn json_has_the_documented_shape() {
        let at = SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000);
        let value = json::status(&snapshot(Some(at)));
        let budget = &value["budgets"][0];
        assert_eq!(budget["key"], KeyFingerprint::of("k").to_string());
        assert_eq!(budget["account"], serde_json::Value::Null);
        assert_eq!(budget["model_class"], "sonnet");
        assert_eq!(budget["limits"]["rpm"], 50);
        assert_eq!(budget["limits"]["itpm"], serde_json::Value::Null);
        assert_eq!(budget["available"]["requests"], -2);
        assert_eq!(budget["in_flight"], 3);
        assert_eq!(budget["waiting"], 4);
        assert_eq!(budget["paused_until"], "2027-01-15T08:00:00Z");
        assert_eq!(budget["pause_reason"], "rate limited");
        assert_eq!(budget["granted"], 10);
        assert_eq!(budget["rate_limited"], 1);
        let unpaused = json::status(&snapshot(None));
        assert_eq!(
            unpaused["budgets"][0]["paused_until"],
            serde_json::Value::Null
        );
        let account = &value["accounts"][0];
        assert_eq!(account["account"], "org-0123456789ab");
        assert_eq!(account["keys"].as_array().unwrap().len(), 2);
        assert_eq!(account["windows"][0]["name"], "5h");
        assert_eq!(account["windows"][0]["status"], "allowed");
        assert_eq!(account["windows"][0]["utilization"], 0.42);
        assert_eq!(account["windows"][0]["reset"], "1970-01-01T01:06:40Z");
        assert_eq!(account["lockouts"][0]["model_class"], "opus");
    }

    #[test]
    fn the_tables_show_every_column_and_the_windows() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000);
        let text = render(&snapshot(Some(now + Duration::from_secs(28))), now);
        let lines: Vec<&str> = text.lines().collect();
        assert!(lines[0].starts_with("OWNER"));
        assert!(lines[1].contains("sonnet"));
        assert!(lines[1].contains("28s more"));
        assert!(lines[1].contains("-2"));
        let accounts = text.split("\n\n").nth(1).expect("an accounts table");
        assert!(accounts.starts_with("ACCOUNT"), "{accounts}");
        assert!(accounts.contains("org-0123456789ab"));
        assert!(accounts.contains("5h 42% · resets "), "{accounts}");
        assert!(accounts.contains("7d 30% allowed_warning"), "{accounts}");
        assert!(accounts.contains("opus until "), "{accounts}");
        let routes = text.split("\n\n").nth(2).expect("a routes table");
        assert!(routes.starts_with("ROUTE"), "{routes}");
        assert!(
            routes.contains("https://proxy.example.com/anthropic  claude-7  1m 40s ago"),
            "{routes}"
        );
        assert_eq!(
            value_routes(&snapshot(None))[0]["upstream"],
            "https://proxy.example.com/anthropic"
        );
    }

    fn value_routes(snapshot: &StatusSnapshot) -> Vec<serde_json::Value> {
        json::status(snapshot)["routes"].as_array().unwrap().clone()
    }
}
