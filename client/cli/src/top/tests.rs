//! `pacer top` drawn on ratatui's test backend from fixed states, compared with the snapshots
//! in `snapshots/` (run with `PACER_UPDATE_SNAPSHOTS=1` to write them after a deliberate
//! change, and read the diff before committing).

use std::path::PathBuf;
use std::time::{Duration, SystemTime};

use pacer_client::StatusSnapshot;
use pacer_protocol::message::{
    AccountStatus, Available, BudgetId, BudgetStatus, ClientStatus, DaemonStatus, Limits,
    PauseCause, WindowStatus,
};
use pacer_protocol::{BudgetOwner, Priority};

use super::frame_text;
use super::model::Model;

fn at(secs: u64) -> SystemTime {
    SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000 + secs)
}

fn budget(owner: &str, class: &str) -> BudgetStatus {
    BudgetStatus {
        budget: BudgetId {
            owner: BudgetOwner::Account(owner.into()),
            model_class: class.into(),
        },
        limits: Limits::default(),
        available: Available::default(),
        in_flight: 0,
        waiting: 0,
        paused_until: None,
        pause_reason: None,
        pause_cause: None,
        overloaded_until: None,
        waiting_by_priority: [0; 3],
        drain_estimate: None,
        granted: 0,
        rate_limited: 0,
        throttled: Default::default(),
        overloaded: 0,
        refused: 0,
        input_tokens: 0,
        output_tokens: 0,
        waits: Default::default(),
    }
}

fn client(id: &str, priority: Priority, granted: u64, tokens: u64, waiting: u32) -> ClientStatus {
    ClientStatus {
        id: id.into(),
        priority,
        budget: None,
        granted,
        input_tokens: tokens,
        output_tokens: tokens / 10,
        waiting,
        longest_wait: (waiting > 0).then(|| Duration::from_secs(9)),
        waited_total: Duration::from_secs(30),
        refused: 0,
        last_seen: at(98),
        max_share: None,
        window_use: None,
        capped: false,
    }
}

/// Eight Claude Code sessions and two batch scripts on one organization, in a 429's pause.
fn during_a_pause() -> Model {
    let mut sonnet = budget("org-5a1f0c3e0000", "sonnet");
    sonnet.limits = Limits {
        rpm: Some(50),
        itpm: Some(30_000),
        otpm: Some(8_000),
        max_in_flight: None,
    };
    sonnet.available = Available {
        requests: Some(0),
        input_tokens: Some(1_200),
        output_tokens: Some(6_100),
    };
    sonnet.in_flight = 2;
    sonnet.waiting = 7;
    sonnet.waiting_by_priority = [2, 3, 2];
    sonnet.drain_estimate = Some(Duration::from_secs(38));
    sonnet.paused_until = Some(at(112));
    sonnet.pause_cause = Some(PauseCause::RateLimited);
    sonnet.pause_reason = Some(
        "This request would exceed your organization's rate limit of 50 requests per minute".into(),
    );
    sonnet.granted = 412;
    sonnet.rate_limited = 1;
    let mut haiku = budget("org-5a1f0c3e0000", "haiku");
    haiku.limits.rpm = Some(50);
    haiku.available.requests = Some(44);
    haiku.granted = 37;
    let snapshot = StatusSnapshot {
        daemon_version: "0.1.0".into(),
        budgets: vec![sonnet, haiku],
        accounts: vec![AccountStatus {
            owner: BudgetOwner::Account("org-5a1f0c3e0000".into()),
            parent: None,
            keys: Vec::new(),
            windows: vec![
                WindowStatus::reported(
                    "5h".into(),
                    Some("allowed".into()),
                    Some(0.42),
                    Some(at(100 + 7_800)),
                ),
                WindowStatus::reported(
                    "7d".into(),
                    Some("allowed_warning".into()),
                    Some(0.81),
                    Some(at(100 + 3 * 86_400)),
                ),
            ],
            unified_status: Some("allowed".into()),
            overage: None,
            overage_in_use: None,
            lockouts: Vec::new(),
        }],
        routes: Vec::new(),
        next_page: None,
        cluster: None,
        sessions: Vec::new(),
        starts: Vec::new(),
        truncated: None,
        clients: vec![
            client(
                "claude-review/3f2a9c1d",
                Priority::Interactive,
                120,
                240_000,
                1,
            ),
            client(
                "claude-docs/77b1e0aa",
                Priority::Interactive,
                96,
                180_500,
                1,
            ),
            client("nightly-eval", Priority::Batch, 150, 90_000, 2),
            client("claude-api/0c4d2f19", Priority::Normal, 40, 52_000, 3),
            client("backfill", Priority::Batch, 3, 900, 0),
        ],
        daemon: DaemonStatus {
            started_at: Some(at(100) - Duration::from_secs(2 * 3600 + 600)),
            connections: 10,
            refused_connections: 0,
            state_saves: 12,
        },
    };
    let mut model = Model::new(Duration::from_secs(1));
    // Ten refreshes of history: grants rising, then the 429.
    let mut first = snapshot.clone();
    for (i, (grants, limited)) in [
        (0, 0),
        (5, 0),
        (9, 0),
        (14, 0),
        (20, 0),
        (26, 0),
        (33, 0),
        (40, 1),
        (40, 1),
        (41, 1),
    ]
    .into_iter()
    .enumerate()
    {
        first.budgets[0].granted = 372 + grants;
        first.budgets[0].rate_limited = limited;
        model.update(first.clone(), at(90 + i as u64));
    }
    model.update(snapshot, at(100));
    for line in [
        "done org-5a1f0c3e0000/sonnet client=claude-review/3f2a9c1d ok in=88012 out=412 waited=0.210s",
        "done org-5a1f0c3e0000/sonnet client=nightly-eval 429 in=0 out=0 waited=1.002s",
        "pause org-5a1f0c3e0000/sonnet until 2027-01-15T08:01:52Z (This request would exceed your organization's rate limit of 50 requests per minute)",
    ] {
        model.events.push_back(format!("08:01:40 {line}"));
    }
    model
}

fn snapshot_path(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("src/top/snapshots")
        .join(format!("{name}.txt"))
}

/// Compares a frame with its snapshot file (or writes it, with `PACER_UPDATE_SNAPSHOTS=1`).
fn check(name: &str, model: &Model, cols: u16, rows: u16) -> String {
    let text = frame_text(model, cols, rows);
    let path = snapshot_path(name);
    if std::env::var_os("PACER_UPDATE_SNAPSHOTS").is_some() {
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, &text).unwrap();
    }
    let expected = std::fs::read_to_string(&path).unwrap_or_else(|_| {
        panic!(
            "no snapshot {}: run with PACER_UPDATE_SNAPSHOTS=1",
            path.display()
        )
    });
    assert_eq!(
        text,
        expected,
        "the {name} frame differs from {}:\n{text}",
        path.display()
    );
    text
}

#[test]
fn an_80x24_terminal_shows_budgets_the_pause_windows_and_clients() {
    let text = check("80x24-pause", &during_a_pause(), 80, 24);
    assert_eq!(text.lines().count(), 24);
    assert!(text.lines().all(|l| l.chars().count() <= 80));
    for part in [
        "org-5a1f0c3e0000/sonnet",
        "waiting 7 (i2 n3 b2) drains ~38s",
        "PAUSED 429 12s more",
        "rpm 0/50",
        "itpm 1.2k/30.0k",
        "This request would exceed",
        "5h 42%",
        "7d 81%",
        "claude-review/3f2a9c1d",
        "q quits",
    ] {
        assert!(text.contains(part), "`{part}` missing:\n{text}");
    }
}

#[test]
fn a_larger_terminal_adds_the_events() {
    let text = check("120x40-pause", &during_a_pause(), 120, 40);
    assert!(text.contains(" events "), "{text}");
    assert!(text.contains("client=nightly-eval 429"), "{text}");
    assert!(text.contains("backfill"), "{text}");
}

#[test]
fn a_small_terminal_keeps_the_budgets_and_says_what_is_left_out() {
    let text = check("60x12-pause", &during_a_pause(), 60, 12);
    assert!(text.contains("org-5a1f0c3e0000/sonnet"), "{text}");
    assert!(
        text.contains("more budgets") || text.contains("more clients"),
        "{text}"
    );
    let tiny = frame_text(&during_a_pause(), 30, 6).replace('\n', " ");
    assert!(
        tiny.starts_with("pacer top needs 40×8; this terminal is 30×6"),
        "{tiny}"
    );
}

#[test]
fn before_the_first_status_it_says_so() {
    let model = Model::new(Duration::from_secs(1));
    assert!(frame_text(&model, 80, 24).starts_with("connecting to pacerd…"));
}
