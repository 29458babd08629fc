//! Budgets and limits, on the fake clock: first contact, buckets, limits configured and learned,
//! calls in flight.

use super::*;

#[test]
fn without_known_limits_everything_is_granted_at_once_after_a_first_contact() {
    let mut h = Harness::new(BrokerConfig::default());
    let tickets: Vec<_> = (0..1000).map(|i| h.acquire(i, |_| {})).collect();
    // One call goes out; the others wait for its answer's headers.
    assert_eq!(h.granted_at(tickets[0]), Some(Duration::ZERO));
    assert!(tickets[1..].iter().all(|&t| h.lease(t).is_none()));
    h.now += secs(0.5);
    h.success(h.lease(tickets[0]).unwrap(), 10, 10);
    // The answer told no limit: everyone goes at once.
    assert!(
        tickets[1..]
            .iter()
            .all(|&t| h.granted_at(t) == Some(secs(0.5)))
    );
    assert_eq!(h.status().in_flight, 999);
}

#[test]
fn the_first_contact_hold_is_bounded_and_a_failed_first_call_hands_over() {
    let mut h = Harness::new(BrokerConfig::default());
    let first = h.acquire(1, |_| {});
    let second = h.acquire(2, |_| {});
    let third = h.acquire(3, |_| {});
    assert!(h.lease(second).is_none());
    // The first call failed without a word from the API: the next goes out in its place.
    h.now += secs(1.0);
    h.report(h.lease(first).unwrap(), Settlement::Failed);
    assert_eq!(h.granted_at(second), Some(secs(1.0)));
    assert!(h.lease(third).is_none());
    // Its answer never comes: after the hold (5 s), the rest proceed.
    h.run_until(secs(6.0));
    assert_eq!(h.granted_at(third), Some(secs(6.0)));
}

#[test]
fn configured_limits_need_no_first_contact() {
    let mut h = Harness::with_limits("sonnet", rpm(100));
    let tickets: Vec<_> = (0..5).map(|i| h.acquire(i, |_| {})).collect();
    assert!(
        tickets
            .iter()
            .all(|&t| h.granted_at(t) == Some(Duration::ZERO))
    );
}

#[test]
fn a_budget_is_a_key_and_a_model_class() {
    let mut h = Harness::with_limits("sonnet", rpm(1));
    let first = h.acquire(1, |_| {});
    // Another sonnet model with the same key shares the budget: it waits.
    let same = h.acquire(2, |r| r.model = "claude-sonnet-4-20250514".into());
    // Another key, or another class, has a budget of its own.
    let other_key = h.acquire(3, |r| r.key = key("other"));
    let other_class = h.acquire(4, |r| r.model = "claude-opus-4-1".into());
    assert!(h.lease(first).is_some());
    assert!(h.lease(same).is_none());
    assert!(h.lease(other_key).is_some());
    assert!(h.lease(other_class).is_some());
}

#[test]
fn buckets_start_full_and_refill_continuously() {
    let mut h = Harness::with_limits("sonnet", rpm(10));
    let tickets: Vec<_> = (0..13).map(|i| h.acquire(i, |_| {})).collect();
    h.run_until(secs(60.0));
    let times: Vec<_> = tickets.iter().map(|&t| h.granted_at(t).unwrap()).collect();
    // Ten at once (a full bucket), then one every 6 s.
    assert!(times[..10].iter().all(|t| t.is_zero()));
    assert_eq!(times[10..], [secs(6.0), secs(12.0), secs(18.0)]);
}

#[test]
fn configured_limits_win_over_learned_ones() {
    let mut h = Harness::with_limits("sonnet", rpm(5));
    let t = h.acquire(1, |_| {});
    let mut headers = RateLimitHeaders::default();
    headers.requests.limit = Some(1000);
    headers.input_tokens.limit = Some(40_000);
    h.report_with(
        h.lease(t).unwrap(),
        Settlement::Success {
            usage: Usage::default(),
        },
        headers,
    );
    let limits = h.status().limits;
    assert_eq!(limits.rpm, Some(5), "configured");
    assert_eq!(limits.itpm, Some(40_000), "learned");
}

#[test]
fn limits_are_learned_from_headers_and_then_enforced() {
    let mut h = Harness::new(BrokerConfig::default());
    let t = h.acquire(1, |_| {});
    let headers = RateLimitHeaders::parse(
        [
            ("anthropic-ratelimit-requests-limit", "2"),
            ("anthropic-ratelimit-requests-remaining", "1"),
        ],
        SystemTime::now(),
    );
    h.report_with(
        h.lease(t).unwrap(),
        Settlement::Success {
            usage: Usage::default(),
        },
        headers,
    );
    assert_eq!(h.status().limits.rpm, Some(2));
    assert!(h.events.iter().any(|e| matches!(
        e,
        Event::LimitLearned {
            kind: LimitKind::Requests,
            limit: 2,
            ..
        }
    )));
    // The server said one request is left: one grant now, the next after 30 s (2 per minute).
    let a = h.acquire(2, |_| {});
    let b = h.acquire(3, |_| {});
    h.run_until(secs(60.0));
    assert_eq!(h.granted_at(a), Some(Duration::ZERO));
    assert_eq!(h.granted_at(b), Some(secs(30.0)));
}

#[test]
fn openai_style_headers_teach_limits_too() {
    let mut h = Harness::new(BrokerConfig::default());
    let headers = RateLimitHeaders::parse(
        [
            ("x-ratelimit-limit-requests", "500"),
            ("x-ratelimit-limit-tokens", "30000"),
        ],
        SystemTime::now(),
    );
    let t = h.acquire(1, |_| {});
    h.report_with(h.lease(t).unwrap(), Settlement::Failed, headers);
    let limits = h.status().limits;
    assert_eq!((limits.rpm, limits.itpm), (Some(500), Some(30_000)));
}

#[test]
fn max_in_flight_holds_waiters_until_a_call_settles() {
    let mut h = Harness::with_limits(
        "sonnet",
        LimitSet {
            max_in_flight: Some(2),
            ..Default::default()
        },
    );
    let a = h.acquire(1, |_| {});
    let _b = h.acquire(2, |_| {});
    let c = h.acquire(3, |_| {});
    assert!(h.lease(c).is_none());
    // Time alone does not help.
    assert_eq!(h.broker.next_wakeup(h.now), None);
    h.run_until(secs(5.0));
    h.success(h.lease(a).unwrap(), 10, 10);
    assert_eq!(h.granted_at(c), Some(secs(5.0)));
}

#[test]
fn new_limits_apply_to_existing_budgets_and_waiters() {
    let mut h = Harness::with_limits("sonnet", rpm(1));
    h.acquire(1, |_| {});
    let waiting = h.acquire(2, |_| {});
    assert!(h.lease(waiting).is_none());
    let mut config = BrokerConfig::default();
    config.limits.per_class.insert("sonnet".into(), rpm(600));
    h.now += secs(1.0);
    let out = h.broker.reconfigure(config, h.now);
    h.collect(out);
    // At 600 rpm the bucket (level 1/60 after a second at the old rate, capacity now 600) refills
    // 10 per second: the waiter is served within 0.1 s.
    h.run_until(secs(1.1));
    let at = h.granted_at(waiting).expect("granted under the new limit");
    assert!(at <= secs(1.1), "{at:?}");
    assert_eq!(h.status().limits.rpm, Some(600));
}
