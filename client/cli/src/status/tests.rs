use std::time::Duration;

use std::time::SystemTime;

use super::*;
use pacer_protocol::message::{
    AccountStatus, Available, BudgetId, BudgetStatus, ClientStatus, DaemonStatus, Limits,
    LockoutStatus, PauseCause, RouteStatus, WindowStatus,
};
use pacer_protocol::{BudgetOwner, KeyFingerprint, Priority};

fn sonnet() -> BudgetId {
    BudgetId {
        owner: BudgetOwner::Key(KeyFingerprint::of("k")),
        model_class: "sonnet".into(),
    }
}

fn snapshot(paused_until: Option<SystemTime>) -> StatusSnapshot {
    StatusSnapshot {
        daemon_version: "0.1.0".into(),
        budgets: vec![BudgetStatus {
            budget: sonnet(),
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
            pause_cause: paused_until.map(|_| PauseCause::RateLimited),
            overloaded_until: None,
            waiting_by_priority: [1, 3, 0],
            drain_estimate: Some(Duration::from_secs(40)),
            granted: 10,
            rate_limited: 1,
            throttled: pacer_protocol::message::Throttles {
                per_minute: 1,
                ..Default::default()
            },
            overloaded: 2,
            refused: 5,
            input_tokens: 1200,
            output_tokens: 300,
            waits: Default::default(),
        }],
        accounts: vec![AccountStatus {
            owner: BudgetOwner::Account("org-0123456789ab".into()),
            parent: None,
            keys: vec![KeyFingerprint::of("a"), KeyFingerprint::of("b")],
            windows: vec![
                WindowStatus::reported(
                    "5h".into(),
                    Some("allowed".into()),
                    Some(0.42),
                    Some(SystemTime::UNIX_EPOCH + Duration::from_secs(4000)),
                ),
                WindowStatus::reported(
                    "7d".into(),
                    Some("allowed_warning".into()),
                    Some(0.3),
                    None,
                ),
            ],
            unified_status: Some("allowed".into()),
            overage: None,
            overage_in_use: None,
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
        cluster: None,
        sessions: Vec::new(),
        starts: Vec::new(),
        truncated: None,
        clients: vec![ClientStatus {
            id: "claude-review/3f2a".into(),
            priority: Priority::Interactive,
            budget: Some(sonnet()),
            granted: 7,
            input_tokens: 1000,
            output_tokens: 250,
            waiting: 2,
            longest_wait: Some(Duration::from_secs(12)),
            waited_total: Duration::from_secs(30),
            refused: 1,
            last_seen: SystemTime::UNIX_EPOCH + Duration::from_secs(990),
            max_share: Some(0.1),
            window_use: Some(0.06),
            capped: false,
        }],
        daemon: DaemonStatus {
            started_at: Some(SystemTime::UNIX_EPOCH),
            connections: 4,
            refused_connections: 0,
            state_saves: 3,
        },
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
    assert_eq!(
        lines[0],
        "pacerd 0.1.0 · up 16m · 4 connections · 5 requests refused by pacer"
    );
    assert!(lines[2].starts_with("OWNER"));
    assert!(lines[3].contains("sonnet"));
    assert!(lines[3].contains("429, 28s more"), "{}", lines[3]);
    assert!(lines[3].contains("4 (1/3/0)"), "{}", lines[3]);
    assert!(lines[3].contains("~40s"), "{}", lines[3]);
    assert!(lines[3].contains("-2"));
    let pauses = text.split("\n\n").nth(2).expect("the pauses");
    assert!(
        pauses.contains("/sonnet paused after a 429 until ")
            && pauses.ends_with("(28s more): rate limited"),
        "{pauses}"
    );
    let accounts = text.split("\n\n").nth(3).expect("an accounts table");
    assert!(accounts.starts_with("ACCOUNT"), "{accounts}");
    assert!(accounts.contains("org-0123456789ab"));
    assert!(accounts.contains("5h 42% · resets "), "{accounts}");
    assert!(accounts.contains("7d 30% allowed_warning"), "{accounts}");
    assert!(accounts.contains("opus until "), "{accounts}");
    let windows = text.split("\n\n").nth(4).expect("the windows in detail");
    assert!(
        windows.contains("org-0123456789ab 5h: 42 % used, resets "),
        "{windows}"
    );
    let routes = text.split("\n\n").nth(5).expect("a routes table");
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

#[test]
fn clients_are_listed_busiest_first_with_their_waits() {
    let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000);
    let text = tables::clients_table(&snapshot(None).clients, now);
    let lines: Vec<&str> = text.lines().collect();
    assert!(lines[0].starts_with("CLIENT"), "{text}");
    for cell in [
        "claude-review/3f2a",
        "interactive",
        "/sonnet",
        "1000",
        "250",
        "2 (longest 12s)",
        "10 % (6 % used)",
        "10s ago",
    ] {
        assert!(lines[1].contains(cell), "{cell} missing: {text}");
    }
    let value = json::status(&snapshot(None));
    let client = &value["clients"][0];
    assert_eq!(client["id"], "claude-review/3f2a");
    assert_eq!(client["waiting"], 2);
    assert_eq!(client["longest_wait_seconds"], 12.0);
    assert_eq!(value["budgets"][0]["waiting_by_priority"]["normal"], 3);
    assert_eq!(value["budgets"][0]["refused"], 5);
    assert_eq!(value["daemon"]["connections"], 4);
}

fn value_routes(snapshot: &StatusSnapshot) -> Vec<serde_json::Value> {
    json::status(snapshot)["routes"].as_array().unwrap().clone()
}
