//! Every 429 by its kind: what each holds, and what it leaves alone.

use super::*;
use pacer_protocol::Throttle;
use pacer_protocol::message::SettledAs;

fn headers(pairs: &[(&str, &str)]) -> RateLimitHeaders {
    RateLimitHeaders::parse(pairs.iter().copied(), SystemTime::UNIX_EPOCH)
}

fn bare() -> Settlement {
    Settlement::RateLimited {
        retry_after: None,
        message: Some("Rate limited".into()),
        rejection: None,
    }
}

/// A harness with 60 rpm learned for the key's budget, and its first call settled.
fn learned() -> Harness {
    let mut h = Harness::with_limits("sonnet", rpm(60));
    let first = h.acquire(1, |_| {});
    h.success(h.lease(first).unwrap(), 10, 10);
    h
}

#[test]
fn a_bare_429_holds_nobody_else_and_gives_its_tokens_back() {
    let mut h = learned();
    let call = h.acquire(1, |a| a.input_tokens = Some(5000));
    let before = h.status().available;
    let reported = h.report_with(
        h.lease(call).unwrap(),
        bare(),
        headers(&[("x-should-retry", "true")]),
    );
    assert_eq!(
        reported,
        Reported {
            throttle: Some(Throttle::Bare),
            until: None
        }
    );
    let status = h.status();
    assert_eq!(status.paused_until, None, "no pause");
    assert_eq!(status.throttled.bare, 1);
    assert_eq!(status.rate_limited, 1);
    // Nothing drained; the request counted, its tokens did not.
    assert_eq!(status.available.requests, before.requests);
    // Another client is served at once.
    let other = h.acquire(2, |_| {});
    assert!(h.lease(other).is_some());
    // `pacer watch` says which kind.
    assert!(h.events.iter().any(|e| matches!(
        e,
        Event::Settled {
            outcome: SettledAs::Throttled(Throttle::Bare),
            ..
        }
    )));
}

#[test]
fn a_429_that_speaks_of_limits_pauses_every_peer_until_its_wait_has_passed() {
    let mut h = learned();
    let call = h.acquire(1, |_| {});
    let reported = h.report_with(
        h.lease(call).unwrap(),
        bare(),
        headers(&[("retry-after", "20")]),
    );
    assert_eq!(reported.throttle, Some(Throttle::PerMinute));
    let until = reported.until.expect("paused until");
    assert_eq!(Some(until), h.status().paused_until);
    assert_eq!(h.status().throttled.per_minute, 1);
    let other = h.acquire(2, |_| {});
    assert!(h.lease(other).is_none(), "waits out the pause");
    // A garbled retry-after still speaks of a limit: the blind backoff, one second first.
    let mut h = learned();
    let call = h.acquire(1, |_| {});
    let reported = h.report_with(
        h.lease(call).unwrap(),
        bare(),
        headers(&[("retry-after", "soon")]),
    );
    assert_eq!(reported.throttle, Some(Throttle::PerMinute));
    assert_eq!(
        reported.until,
        Some(h.broker.time_base().to_wall(h.now + secs(1.0)))
    );
    // A wait given with the report (`pacer report --retry-after`) is a per-minute limit too.
    let call = h.acquire(1, |_| {});
    h.run_until(secs(2.0));
    let reported = h.report(h.lease(call).unwrap(), rate_limited(5.0, "x"));
    assert_eq!(reported.throttle, Some(Throttle::PerMinute));
}

#[test]
fn a_spent_window_locks_the_account_out_until_its_reset() {
    let mut h = learned();
    let call = h.acquire(1, |_| {});
    let reset = (1_800_000_000 + 3600).to_string();
    let reported = h.report_with(
        h.lease(call).unwrap(),
        bare(),
        headers(&[
            ("anthropic-ratelimit-unified-status", "rejected"),
            ("anthropic-ratelimit-unified-5h-status", "rejected"),
            ("anthropic-ratelimit-unified-5h-reset", &reset),
            ("retry-after", "3600"),
        ]),
    );
    assert_eq!(reported.throttle, Some(Throttle::Window));
    assert_eq!(
        reported.until,
        Some(SystemTime::UNIX_EPOCH + secs(1_800_003_600.0))
    );
    assert_eq!(h.status().throttled.window, 1);
    let refused = h.acquire(2, |_| {});
    assert!(matches!(
        h.answer(refused),
        Some((_, _, Response::Rejected(_)))
    ));
}

#[test]
fn the_spend_cap_fails_the_accounts_calls_fast_for_a_minute() {
    let mut h = learned();
    let call = h.acquire(1, |_| {});
    let reported = h.report(
        h.lease(call).unwrap(),
        Settlement::SpendCapped {
            message: Some("You have reached your specified API usage limits.".into()),
            rejection: None,
        },
    );
    assert_eq!(reported.throttle, Some(Throttle::SpendCap));
    assert_eq!(
        reported.until,
        Some(h.broker.time_base().to_wall(h.now + secs(60.0)))
    );
    assert_eq!(h.status().throttled.spend_cap, 1);
    let refused = h.acquire(2, |a| a.model = "claude-opus-4-1".into());
    match h.answer(refused) {
        Some((_, _, Response::Rejected(rejected))) => {
            assert!(rejected.reason.contains("spend cap"), "{rejected:?}")
        }
        other => panic!("{other:?}"),
    }
    h.run_until(secs(61.0));
    let later = h.acquire(3, |_| {});
    assert!(h.lease(later).is_some(), "served again after a minute");
}

#[test]
fn other_outcomes_are_no_429() {
    let mut h = learned();
    let call = h.acquire(1, |_| {});
    let reported = h.report(h.lease(call).unwrap(), Settlement::Failed);
    assert_eq!(
        reported,
        Reported {
            throttle: None,
            until: None
        }
    );
}
