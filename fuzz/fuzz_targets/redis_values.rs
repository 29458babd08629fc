//! What comes from Redis, whatever it holds, cannot jam a budget: the take script's answer as
//! any strings (parsed into what the broker believes), and events on the channel as any JSON,
//! applied to a broker that must then still grant within the caps: no pause, lockout or backoff
//! longer than a daemon's own, no level outside the limit's reach.
#![no_main]

use std::time::{Duration, Instant, SystemTime};

use libfuzzer_sys::fuzz_target;
use pacer_broker::{
    Broker, BrokerConfig, ClaimAnswer, ConnId, MAX_RATE_LIMIT_WAIT, Ticket, TimeBase,
};
use pacer_daemon::cluster::store::{Message, parse_take};
use pacer_protocol::message::Acquire;
use pacer_protocol::{KeyFingerprint, Priority};

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    // As the take script's reply: one string per line.
    let reply: Vec<String> = text.lines().map(str::to_owned).collect();
    if let Ok(taken) = parse_take(&reply) {
        match taken.answer {
            ClaimAnswer::Granted {
                levels,
                limits,
                taken_before,
            } => {
                assert!(taken_before.is_finite() && taken_before >= 0.0);
                for level in levels.iter().filter_map(|(_, l)| *l) {
                    assert!(level.is_finite());
                }
                for limit in [limits.rpm, limits.itpm, limits.otpm].into_iter().flatten() {
                    assert!((1..=10_000_000_000).contains(&limit));
                }
            }
            ClaimAnswer::Refused { wait, .. } => assert!(wait <= MAX_RATE_LIMIT_WAIT),
            ClaimAnswer::LockedOut { for_, reason } => {
                assert!(for_ <= MAX_RATE_LIMIT_WAIT && reason.len() <= 1024)
            }
            ClaimAnswer::Unavailable => {}
        }
    }
    // As messages on the channel: one JSON message per line.
    let now = Instant::now();
    let wall = SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000);
    let mut broker = Broker::new(BrokerConfig::default(), TimeBase { instant: now, wall }, 1);
    for line in text.lines() {
        if let Ok(message) = serde_json::from_str::<Message>(line) {
            let _ = broker.apply_shared(now, &message.from, message.event);
        }
    }
    let latest = wall + MAX_RATE_LIMIT_WAIT + Duration::from_secs(1);
    for budget in broker.status(now) {
        assert!(budget.paused_until.is_none_or(|until| until <= latest));
        assert!(
            budget
                .overloaded_until
                .is_none_or(|until| until <= wall + Duration::from_secs(33))
        );
        assert!(budget.pause_reason.as_ref().is_none_or(|r| r.len() <= 1024));
    }
    for account in broker.accounts(now) {
        for lockout in &account.lockouts {
            assert!(lockout.until <= latest && lockout.reason.len() <= 1024);
        }
        for window in &account.windows {
            assert!(window.name.len() <= 32);
            assert!(
                window
                    .utilization
                    .is_none_or(|u| u.is_finite() && (0.0..=10.0).contains(&u))
            );
        }
    }
    // And a budget that was not locked out still grants once the caps have passed.
    let acquire = Acquire {
        key: KeyFingerprint::of("fuzz"),
        model: "claude-sonnet-4-5".into(),
        priority: Priority::Normal,
        client_id: "fuzz".into(),
        input_tokens: Some(10),
        output_tokens: Some(10),
        max_tokens: Some(100),
        deadline: None,
        detached_ttl: None,
        max_share_bp: None,
    };
    let _ = broker.tick(now + MAX_RATE_LIMIT_WAIT + Duration::from_secs(2));
    let later = now + MAX_RATE_LIMIT_WAIT + Duration::from_secs(2);
    let _ = broker.acquire(
        later,
        Ticket {
            conn: ConnId(1),
            request: 1,
        },
        &acquire,
    );
    let _ = broker.next_wakeup(later);
});
