//! Each rule of what is told, on hand-made views and a hand-moved clock.

use std::time::{Duration, SystemTime};

use pacer_protocol::message::{
    AccountStatus, Available, BudgetId, BudgetStatus, ClientStatus, Limits, LockoutStatus,
    PauseCause, PriorityCeiling, Throttles, WaitHistogram, WindowStatus,
};
use pacer_protocol::{BudgetOwner, Priority};

use super::*;

fn t0() -> SystemTime {
    SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000)
}

fn owner() -> BudgetOwner {
    BudgetOwner::Account("org-9e333b773173".into())
}

fn window(used: f64, reset_in: u64) -> WindowStatus {
    WindowStatus::reported(
        "5h".into(),
        Some("allowed".into()),
        Some(used),
        Some(t0() + Duration::from_secs(reset_in)),
    )
}

fn account(windows: Vec<WindowStatus>) -> AccountStatus {
    AccountStatus {
        owner: owner(),
        parent: None,
        keys: Vec::new(),
        windows,
        unified_status: None,
        lockouts: Vec::new(),
        overage: None,
        overage_in_use: None,
    }
}

fn view(windows: Vec<WindowStatus>) -> View {
    View {
        accounts: vec![account(windows)],
        ..View::default()
    }
}

fn watcher() -> Watcher {
    Watcher::new(AlertsConfig::default(), 0)
}

#[test]
fn a_window_crossing_a_threshold_is_told_once_per_crossing() {
    let mut w = watcher();
    assert!(w.observe(&view(vec![window(0.5, 3600)]), t0()).is_empty());
    let told = w.observe(&view(vec![window(0.91, 3600)]), t0());
    assert_eq!(told.len(), 1, "{told:?}");
    let alert = &told[0];
    assert_eq!((alert.event, alert.threshold), (Kind::Window, Some(0.9)));
    assert_eq!(
        alert.message,
        "pacer: the 5-hour window of org-9e333b773173 is at 91 % (past 90 %), resets 09:00"
    );
    let env = alert.env();
    for (name, value) in [
        ("PACER_EVENT", "window"),
        ("PACER_ACCOUNT", "org-9e333b773173"),
        ("PACER_WINDOW", "5h"),
        ("PACER_UTILIZATION", "91"),
        ("PACER_THRESHOLD", "90"),
        ("PACER_RESET_EPOCH", "1800003600"),
    ] {
        assert!(env.contains(&(name, value.to_owned())), "{name}: {env:?}");
    }
    // Not again while it stays past 90 %, nor hovering just under it.
    for used in [0.93, 0.88, 0.92] {
        assert!(
            w.observe(&view(vec![window(used, 3600)]), t0()).is_empty(),
            "{used}"
        );
    }
    // 100 % is a crossing of its own.
    assert_eq!(w.observe(&view(vec![window(1.0, 3600)]), t0()).len(), 1);
    // A new window (another reset) starts over: its 75 % is told.
    assert!(w.observe(&view(vec![window(0.1, 7200)]), t0()).is_empty());
    let told = w.observe(&view(vec![window(0.8, 7200)]), t0());
    assert_eq!(told[0].threshold, Some(0.75));
    // A window whose reset passed says nothing of the new one.
    let later = t0() + Duration::from_secs(7300);
    assert!(w.observe(&view(vec![window(0.99, 7200)]), later).is_empty());
}

#[test]
fn pauses_lockouts_and_holds_are_told_once_each_until_they_end() {
    let mut w = watcher();
    let budget = |until: Option<u64>| BudgetStatus {
        budget: BudgetId {
            owner: owner(),
            model_class: "sonnet".into(),
        },
        limits: Limits::default(),
        available: Available::default(),
        in_flight: 0,
        waiting: 0,
        paused_until: until.map(|s| t0() + Duration::from_secs(s)),
        pause_reason: Some("429: rate limit exceeded".into()),
        overloaded_until: None,
        pause_cause: Some(PauseCause::RateLimited),
        waiting_by_priority: [0; 3],
        drain_estimate: None,
        granted: 0,
        rate_limited: 1,
        throttled: Throttles::default(),
        overloaded: 0,
        refused: 0,
        input_tokens: 0,
        output_tokens: 0,
        waits: WaitHistogram::default(),
    };
    // A 20-second pause is not worth telling; a 5-minute one is, once.
    let mut v = View {
        budgets: vec![budget(Some(20))],
        ..View::default()
    };
    assert!(w.observe(&v, t0()).is_empty());
    v.budgets = vec![budget(Some(300))];
    let told = w.observe(&v, t0());
    assert_eq!(told.len(), 1);
    assert_eq!(told[0].event, Kind::Pause);
    assert!(
        told[0].message.contains("429: rate limit exceeded"),
        "{}",
        told[0].message
    );
    assert!(w.observe(&v, t0() + Duration::from_secs(10)).is_empty());
    // It ends; the next long one is told again.
    v.budgets = vec![budget(None)];
    assert!(w.observe(&v, t0()).is_empty());
    v.budgets = vec![budget(Some(600))];
    assert_eq!(w.observe(&v, t0()).len(), 1);

    // A lockout, and batch held by the window, once each.
    let mut held = window(0.5, 3600);
    held.ceilings = vec![PriorityCeiling {
        priority: Priority::Batch,
        ceiling: 0.5,
        held: true,
        refused: 0,
    }];
    let mut locked = account(vec![held]);
    locked.lockouts = vec![LockoutStatus {
        model_class: None,
        until: t0() + Duration::from_secs(900),
        reason: "the 5-hour window is spent".into(),
    }];
    let v = View {
        accounts: vec![locked],
        ..View::default()
    };
    let told = w.observe(&v, t0());
    let kinds: Vec<Kind> = told.iter().map(|a| a.event).collect();
    assert_eq!(kinds, [Kind::Held, Kind::Lockout], "{told:?}");
    assert_eq!(told[0].subject.as_deref(), Some("batch"));
    assert!(w.observe(&v, t0()).is_empty());
}

#[test]
fn a_client_burning_a_window_faster_than_the_set_rate_is_told() {
    let config = AlertsConfig {
        runaway_per_hour: Some(0.5),
        ..AlertsConfig::default()
    };
    let mut w = Watcher::new(config, 0);
    let mut five = window(0.3, 4 * 3600);
    five.share = Some(0.01);
    let client = |id: &str, granted: u64| ClientStatus {
        id: id.into(),
        priority: Priority::Batch,
        budget: Some(BudgetId {
            owner: owner(),
            model_class: "sonnet".into(),
        }),
        granted,
        input_tokens: 0,
        output_tokens: 0,
        waiting: 0,
        longest_wait: None,
        waited_total: Duration::ZERO,
        refused: 0,
        last_seen: t0(),
        max_share: None,
        window_use: None,
        capped: false,
    };
    // The loop makes 10 calls a minute (600 an hour at 1 % each: 600 % an hour); the person
    // one in three minutes (20 % an hour), under the 50 % an hour alerts are set for.
    let mut told = Vec::new();
    for minute in 0..=3u64 {
        let v = View {
            accounts: vec![account(vec![five.clone()])],
            clients: vec![client("loop", minute * 10), client("keyboard", minute / 3)],
            ..View::default()
        };
        told.extend(w.observe(&v, t0() + Duration::from_secs(minute * 60)));
    }
    assert_eq!(told.len(), 1, "{told:?}");
    assert_eq!(told[0].event, Kind::Runaway);
    assert_eq!(told[0].subject.as_deref(), Some("loop"));
    assert!(
        told[0].message.contains("at 600 % an hour"),
        "{}",
        told[0].message
    );
}

#[test]
fn a_reset_that_moves_by_seconds_is_the_same_window_and_a_reload_keeps_going() {
    let mut w = watcher();
    assert_eq!(w.observe(&view(vec![window(0.91, 3600)]), t0()).len(), 1);
    // Each answer's reset a second or two off (a clock read against the API's Date).
    for (i, jitter) in [3601, 3599, 3602, 3600].into_iter().enumerate() {
        let told = w.observe(&view(vec![window(0.92, jitter)]), t0());
        assert!(told.is_empty(), "answer {i}: {told:?}");
    }
    // A reload with other thresholds starts over under the new list (without a panic): the
    // window past 50 % is told once.
    w.configure(AlertsConfig {
        thresholds: vec![0.5],
        ..AlertsConfig::default()
    });
    let told = w.observe(&view(vec![window(0.92, 3600)]), t0());
    assert_eq!(told.len(), 1);
    assert_eq!(told[0].threshold, Some(0.5));
    assert!(w.observe(&view(vec![window(0.95, 3600)]), t0()).is_empty());
}

#[test]
fn a_lockout_is_told_once_not_also_as_each_budgets_pause() {
    let mut w = watcher();
    let mut locked = account(Vec::new());
    let until = t0() + Duration::from_secs(3600);
    locked.lockouts = vec![LockoutStatus {
        model_class: None,
        until,
        reason: "spend cap".into(),
    }];
    let budgets = ["opus", "sonnet", "haiku"].map(|class| BudgetStatus {
        budget: BudgetId {
            owner: owner(),
            model_class: class.into(),
        },
        limits: Limits::default(),
        available: Available::default(),
        in_flight: 0,
        waiting: 0,
        paused_until: Some(until),
        pause_reason: Some("spend cap".into()),
        overloaded_until: None,
        pause_cause: Some(PauseCause::Lockout),
        waiting_by_priority: [0; 3],
        drain_estimate: None,
        granted: 0,
        rate_limited: 0,
        throttled: Throttles::default(),
        overloaded: 0,
        refused: 0,
        input_tokens: 0,
        output_tokens: 0,
        waits: WaitHistogram::default(),
    });
    let v = View {
        budgets: budgets.to_vec(),
        accounts: vec![locked],
        ..View::default()
    };
    let told = w.observe(&v, t0());
    assert_eq!(told.len(), 1, "{told:?}");
    assert_eq!(told[0].event, Kind::Lockout);
}
