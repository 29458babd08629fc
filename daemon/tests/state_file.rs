//! The state file's format, pinned: the file written for a known state is committed
//! (`tests/fixtures/state/current.json`, at the workspace's root), and every earlier file kept
//! beside it must still load and restore. A change to the format fails here until it is made on
//! purpose: `PACER_BLESS=1 cargo test -p pacer-daemon --test state_file` writes the current one;
//! before that, keep the previous `current.json` under a name of its own (`v1-<what>.json`), so
//! that the test goes on checking that it loads.

use std::path::PathBuf;
use std::time::{Duration, Instant, SystemTime};

use pacer_api::ratelimit::RateLimitHeaders;
use pacer_broker::{Broker, BrokerConfig, Calibration, ConnId, Settlement, Ticket, TimeBase};
use pacer_daemon::persist::{self, STATE_VERSION, StateFile};
use pacer_protocol::message::{Acquire, Response, RouteStatus, Usage};
use pacer_protocol::{BudgetOwner, KeyFingerprint, Priority};

fn fixtures() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/state")
}

/// When the fixture's state was saved.
fn saved_at() -> SystemTime {
    SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000)
}

fn acquire(broker: &mut Broker, now: Instant, request: u64, key: &str, model: &str) -> u64 {
    let acquire = Acquire {
        key: KeyFingerprint::of(key),
        model: model.into(),
        priority: Priority::Normal,
        client_id: format!("client-{request}"),
        input_tokens: Some(1000),
        output_tokens: Some(100),
        max_tokens: Some(1024),
        deadline: None,
        detached_ttl: (request == 4).then_some(Duration::from_secs(600)),
        max_share_bp: None,
    };
    let ticket = Ticket {
        conn: ConnId(1),
        request,
    };
    broker
        .acquire(now, ticket, &acquire)
        .into_iter()
        .find_map(|output| match output {
            pacer_broker::Output::Answer {
                response: Response::Granted(granted),
                ..
            } => Some(granted.lease.0),
            _ => None,
        })
        .expect("granted at once")
}

fn headers(pairs: &[(&str, &str)]) -> RateLimitHeaders {
    RateLimitHeaders::parse(pairs.iter().copied(), saved_at())
}

/// A broker that went through a little of everything the file keeps: a key linked to its
/// organization, learned limits and levels, a subscription's windows, a 429's pause, a 529's
/// backoff, a spend cap's lockout with the 429 it replays, a detached lease in flight.
fn the_state() -> StateFile {
    let t0 = Instant::now();
    let time_base = TimeBase {
        instant: t0,
        wall: saved_at(),
    };
    let config = BrokerConfig {
        cold_start_hold: Duration::ZERO,
        ..BrokerConfig::default()
    };
    let mut broker = Broker::new(config, time_base, 1);
    let org = [
        (
            "anthropic-organization-id",
            "0b9e6f0e-5b0a-4c1e-9d7a-5e5b5b5b5b5b",
        ),
        ("anthropic-ratelimit-requests-limit", "50"),
        ("anthropic-ratelimit-requests-remaining", "40"),
        ("anthropic-ratelimit-input-tokens-limit", "30000"),
        ("anthropic-ratelimit-input-tokens-remaining", "20000"),
        ("anthropic-ratelimit-unified-status", "allowed"),
        ("anthropic-ratelimit-unified-5h-status", "allowed"),
        ("anthropic-ratelimit-unified-5h-utilization", "0.42"),
        ("anthropic-ratelimit-unified-5h-reset", "1800003600"),
        ("anthropic-ratelimit-unified-7d-utilization", "0.13"),
    ];
    let lease = acquire(&mut broker, t0, 1, "sk-ant-one", "claude-sonnet-4-5");
    let usage = Usage {
        input_tokens: 900,
        output_tokens: 80,
        ..Usage::default()
    };
    let _ = broker.report(
        t0,
        pacer_protocol::message::LeaseId(lease),
        Settlement::Success { usage },
        &headers(&org),
    );
    let lease = acquire(&mut broker, t0, 2, "sk-ant-one", "claude-opus-4-1");
    let _ = broker.report(
        t0,
        pacer_protocol::message::LeaseId(lease),
        Settlement::RateLimited {
            retry_after: Some(Duration::from_secs(30)),
            message: Some(
                "This request would exceed the rate limit of 50 requests per minute".into(),
            ),
            rejection: None,
        },
        &RateLimitHeaders::default(),
    );
    let lease = acquire(&mut broker, t0, 3, "sk-ant-two", "claude-haiku-4-5");
    let _ = broker.report(
        t0,
        pacer_protocol::message::LeaseId(lease),
        Settlement::Overloaded {
            retry_after: Some(Duration::from_secs(5)),
        },
        &RateLimitHeaders::default(),
    );
    acquire(&mut broker, t0, 4, "sk-ant-one", "claude-sonnet-4-5");
    let rejection = pacer_api::Answer::bounded(
        429,
        vec![("content-type".into(), "application/json".into())],
        br#"{"type":"error","error":{"type":"rate_limit_error","message":"spend cap","details":{"error_code":"enforced_spend_limit_reached"}}}"#.to_vec(),
    );
    let lease = acquire(&mut broker, t0, 5, "sk-ant-three", "claude-sonnet-4-5");
    let _ = broker.report(
        t0,
        pacer_protocol::message::LeaseId(lease),
        Settlement::SpendCapped {
            message: None,
            rejection: Some(rejection),
        },
        &RateLimitHeaders::default(),
    );
    let mut calibration = Calibration::default();
    calibration.record("claude", 90_000, 400);
    calibration.record("script", 1_000, 250);
    StateFile {
        version: STATE_VERSION,
        saved_at: saved_at(),
        broker: broker.snapshot(t0),
        calibration,
        routes: vec![RouteStatus {
            id: "rt0123456789ab".into(),
            upstream: "https://gateway.example.com/anthropic".into(),
            clients: vec!["job".into()],
            last_used: saved_at(),
        }],
    }
}

#[test]
fn the_state_file_format_is_the_committed_one() {
    let written = serde_json::to_string_pretty(&the_state()).unwrap() + "\n";
    let path = fixtures().join("current.json");
    if std::env::var_os("PACER_BLESS").is_some() {
        std::fs::create_dir_all(fixtures()).unwrap();
        std::fs::write(&path, &written).unwrap();
    }
    let committed = std::fs::read_to_string(&path).unwrap();
    assert_eq!(
        written, committed,
        "the state file's format changed: if on purpose, keep the old fixture under a name of \
         its own and bless the new one (see this file's comment)"
    );
}

#[test]
fn every_committed_state_file_loads_and_restores() {
    let mut loaded = 0;
    for entry in std::fs::read_dir(fixtures()).unwrap() {
        let path = entry.unwrap().path();
        let bytes = std::fs::read(&path).unwrap();
        let state = persist::parse(&bytes)
            .unwrap_or_else(|e| panic!("{} no longer loads: {e}", path.display()));
        // Restored a second after it was saved: everything in force is still in force.
        let now = Instant::now();
        let wall = state.saved_at + Duration::from_secs(1);
        let mut broker = Broker::new(BrokerConfig::default(), TimeBase { instant: now, wall }, 1);
        broker.restore(state.broker, state.saved_at, now, wall);
        let budgets = broker.status(now);
        let sonnet = budgets
            .iter()
            .find(|b| {
                b.budget.model_class == "sonnet"
                    && matches!(&b.budget.owner, BudgetOwner::Account(a) if a.starts_with("org-"))
            })
            .unwrap_or_else(|| panic!("{}: the organization's sonnet budget", path.display()));
        assert_eq!(sonnet.limits.rpm, Some(50), "{}", path.display());
        assert!(sonnet.in_flight >= 1, "the detached lease holds its slot");
        let opus = budgets
            .iter()
            .find(|b| b.budget.model_class == "opus")
            .unwrap();
        assert!(opus.paused_until.is_some(), "the 429's pause holds");
        let accounts = broker.accounts(now);
        let windows = accounts
            .iter()
            .flat_map(|a| a.windows.iter())
            .find(|w| w.name == "5h")
            .expect("the 5-hour window");
        assert_eq!(windows.utilization, Some(0.42));
        assert!(
            accounts.iter().any(|a| !a.lockouts.is_empty()),
            "the spend cap's lockout"
        );
        assert!(state.calibration.estimate("claude", 90_000) <= 500);
        assert_eq!(state.routes.len(), 1);
        loaded += 1;
    }
    assert!(loaded >= 1);
}
