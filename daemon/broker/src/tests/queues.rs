//! The queue, deadlines and leases, on the fake clock: priorities, fair turns, timeouts,
//! connections closing, detached leases, refusals.

use super::*;
use pacer_protocol::message::TimedOut;

// --- The queue ----------------------------------------------------------------------------------

#[test]
fn interactive_waiters_are_served_before_batch_ones() {
    let mut h = Harness::with_limits("sonnet", rpm(1));
    h.acquire(0, |_| {});
    let batch: Vec<_> = (1..=3)
        .map(|i| h.acquire(i, |r| r.priority = Priority::Batch))
        .collect();
    let interactive = h.acquire(9, |r| r.priority = Priority::Interactive);
    h.run_until(secs(60.0 * 4.0));
    assert_eq!(h.granted_at(interactive), Some(secs(60.0)));
    assert_eq!(h.granted_at(batch[0]), Some(secs(120.0)));
}

#[test]
fn clients_of_one_priority_take_turns() {
    let mut h = Harness::with_limits("sonnet", rpm(60));
    // Spend the bucket, then client 1 queues ten requests before client 2 queues one.
    for _ in 0..60 {
        h.acquire(0, |_| {});
    }
    let flood: Vec<_> = (0..10).map(|_| h.acquire(1, |_| {})).collect();
    let polite = h.acquire(2, |_| {});
    h.run_until(secs(30.0));
    assert_eq!(h.granted_at(flood[0]), Some(secs(1.0)));
    assert_eq!(h.granted_at(polite), Some(secs(2.0)), "not behind all ten");
    assert_eq!(h.granted_at(flood[1]), Some(secs(3.0)));
}

#[test]
fn a_small_call_goes_while_a_large_head_refills_and_delays_it_by_its_own_cost() {
    let mut h = Harness::with_limits("sonnet", tokens(6000, 1_000_000));
    h.acquire(0, |r| r.input_tokens = Some(6000));
    let big = h.acquire(1, |r| r.input_tokens = Some(3000));
    let small = h.acquire(2, |r| r.input_tokens = Some(10));
    h.run_until(secs(60.0));
    // 100 tokens a second: the small call fits after 0.1 s and goes out of turn; the large
    // head waits 0.1 s more for its 3000.
    assert_eq!(h.granted_at(small), Some(secs(0.1)));
    assert_eq!(h.granted_at(big), Some(secs(30.1)));
}

#[test]
fn calls_out_of_turn_delay_a_head_by_at_most_a_quarter_of_its_cost() {
    let mut h = Harness::with_limits("sonnet", tokens(6000, 1_000_000));
    h.acquire(0, |r| r.input_tokens = Some(6000));
    let big = h.acquire(1, |r| r.input_tokens = Some(4000));
    // Another client floods small calls: they go out of turn until they have taken a quarter
    // of the head's 4000, then wait behind it.
    let small: Vec<_> = (0..30)
        .map(|_| h.acquire(2, |r| r.input_tokens = Some(100)))
        .collect();
    h.run_until(secs(120.0));
    assert_eq!(
        h.granted_at(big),
        Some(secs(50.0)),
        "40 s of refill, plus 10 s"
    );
    let early = small
        .iter()
        .filter(|&&t| h.granted_at(t).is_some_and(|at| at < secs(50.0)))
        .count();
    assert_eq!(early, 10, "a quarter of 4000 in calls of 100");
}

#[test]
fn ten_thousand_waiters_are_all_served_in_fair_order() {
    let mut h = Harness::with_limits("sonnet", rpm(600));
    for _ in 0..600 {
        h.acquire(0, |_| {});
    }
    let tickets: Vec<_> = (0..10_000)
        .map(|i| h.acquire(1 + i % 100, |_| {}))
        .collect();
    assert_eq!(h.status().waiting, 10_000);
    h.run_until(secs(1001.0));
    let mut times: Vec<_> = tickets.iter().map(|&t| h.granted_at(t).unwrap()).collect();
    // Pushed round by round across 100 clients: served in arrival order, 10 per second.
    assert!(times.windows(2).all(|w| w[0] <= w[1]));
    times.dedup();
    assert_eq!(times.len(), 10_000);
    assert_eq!(h.status().waiting, 0);
}

// --- Deadlines ----------------------------------------------------------------------------------

#[test]
fn a_deadline_ends_the_wait_with_an_estimate_of_the_rest() {
    let mut h = Harness::with_limits("sonnet", rpm(6)); // one every 10 s
    for _ in 0..6 {
        h.acquire(0, |_| {});
    }
    let first = h.acquire(1, |_| {});
    let second = h.acquire(2, |r| r.deadline = Some(secs(5.0)));
    h.run_until(secs(30.0));
    let (at, _, response) = h.answer(second).unwrap().clone();
    assert_eq!(at, secs(5.0));
    // Behind `first` (granted at 10 s) it would have been served at 20 s: 15 s more.
    assert_eq!(
        response,
        Response::TimedOut(TimedOut {
            retry_after: secs(15.0),
            reason: "the rpm limit (requests per minute) is spent for now".into(),
        })
    );
    assert_eq!(h.granted_at(first), Some(secs(10.0)));
}

#[test]
fn a_zero_deadline_takes_only_a_free_permit() {
    let mut h = Harness::with_limits("sonnet", rpm(1));
    let free = h.acquire(1, |r| r.deadline = Some(Duration::ZERO));
    let busy = h.acquire(2, |r| r.deadline = Some(Duration::ZERO));
    assert!(h.lease(free).is_some());
    assert_eq!(
        h.answer(busy).unwrap().2,
        Response::TimedOut(TimedOut {
            retry_after: secs(60.0),
            reason: "the rpm limit (requests per minute) is spent for now".into(),
        })
    );
    assert_eq!(h.status().waiting, 0);
}

#[test]
fn a_timed_out_head_lets_the_next_waiter_through() {
    let mut h = Harness::with_limits("sonnet", tokens(6000, 1_000_000));
    h.acquire(0, |r| r.input_tokens = Some(6000));
    h.acquire(1, |r| {
        r.input_tokens = Some(6000);
        r.deadline = Some(secs(2.0));
    });
    // Too large to go out of turn (a quarter of the head's 6000 is 1500).
    let next = h.acquire(2, |r| r.input_tokens = Some(3000));
    h.run_until(secs(60.0));
    // The head left at 2 s; the next is served when its 3000 have refilled, not after 6000.
    assert_eq!(h.granted_at(next), Some(secs(30.0)));
}

// --- Leases -------------------------------------------------------------------------------------

#[test]
fn a_closed_connection_settles_its_leases_as_unknown_and_drops_its_waiters() {
    let mut h = Harness::with_limits(
        "sonnet",
        LimitSet {
            max_in_flight: Some(1),
            itpm: Some(1000),
            ..Default::default()
        },
    );
    let held = h.acquire(1, |r| r.input_tokens = Some(300));
    let waiting_same_conn = h.acquire(1, |_| {});
    let waiting_other = h.acquire(2, |r| r.input_tokens = Some(1));
    assert!(h.lease(held).is_some());
    let out = h.broker.disconnect(h.now, ConnId(1));
    h.collect(out);
    // The slot is free and the next connection's waiter is served; the reservation stays spent.
    assert!(h.answer(waiting_same_conn).is_none(), "nobody to answer");
    assert!(h.lease(waiting_other).is_some());
    let s = h.status();
    assert_eq!(s.in_flight, 1);
    assert_eq!(s.available.input_tokens, Some(1000 - 300 - 1));
    assert_eq!(h.broker.counts(), (0, 1));
}

#[test]
fn a_detached_lease_outlives_its_connection_and_expires_after_its_ttl() {
    let mut h = Harness::new(BrokerConfig::default());
    let t = h.acquire(1, |r| r.detached_ttl = Some(secs(60.0)));
    let lease = h.lease(t).unwrap();
    let out = h.broker.disconnect(h.now, ConnId(1));
    h.collect(out);
    assert_eq!(
        h.status().in_flight,
        1,
        "still held after the connection closed"
    );
    h.run_until(secs(59.0));
    assert_eq!(h.status().in_flight, 1);
    h.run_until(secs(60.0));
    assert_eq!(h.status().in_flight, 0);
    assert!(h.broker.release(h.now, lease).is_err());
}

#[test]
fn a_detached_lease_can_be_reported_from_another_connection() {
    let mut h = Harness::new(BrokerConfig::default());
    let t = h.acquire(1, |r| r.detached_ttl = Some(secs(60.0)));
    h.success(h.lease(t).unwrap(), 1, 1);
    assert_eq!(h.status().in_flight, 0);
    assert_eq!(h.broker.next_wakeup(h.now), None, "its expiry is forgotten");
}

#[test]
fn invalid_acquires_are_rejected_with_a_reason() {
    let mut h = Harness::new(BrokerConfig::default());
    let t = h.acquire(1, |r| r.model = " ".into());
    assert!(matches!(
        &h.answer(t).unwrap().2,
        Response::Rejected(r) if r.reason.contains("model")
    ));
    let t = h.acquire(1, |r| r.detached_ttl = Some(Duration::ZERO));
    assert!(matches!(
        &h.answer(t).unwrap().2,
        Response::Rejected(r) if r.reason.contains("TTL")
    ));
}

#[test]
fn a_spend_capped_key_fails_fast_until_the_block_ends() {
    let mut h = Harness::with_limits("sonnet", rpm(1));
    let first = h.acquire(1, |_| {});
    let waiting = h.acquire(2, |_| {});
    let other_key = h.acquire(3, |r| r.key = key("other"));
    h.report(
        h.lease(first).unwrap(),
        Settlement::SpendCapped {
            message: None,
            rejection: None,
        },
    );
    assert!(matches!(
        &h.answer(waiting).unwrap().2,
        Response::Rejected(r) if r.reason.contains("spend cap is reached")
    ));
    assert!(h.lease(other_key).is_some());
    let again = h.acquire(4, |r| r.model = "claude-opus-4-1".into());
    assert!(matches!(&h.answer(again).unwrap().2, Response::Rejected(_)));
    h.run_until(secs(60.0));
    let after = h.acquire(5, |r| r.model = "claude-opus-4-1".into());
    assert!(h.lease(after).is_some());
}

#[test]
fn absurd_durations_are_clamped_not_fatal() {
    let mut h = Harness::with_limits("sonnet", rpm(1));
    h.acquire(1, |_| {});
    let waiting = h.acquire(2, |r| r.deadline = Some(Duration::MAX));
    let detached = h.acquire(3, |r| {
        r.key = key("other");
        r.detached_ttl = Some(Duration::MAX);
    });
    assert!(h.lease(waiting).is_none());
    let lease = h.lease(detached).unwrap();
    h.report(lease, rate_limited(f64::MAX / 1e300, "x"));
    let t = h.acquire(4, |r| r.model = "claude-opus-4-1".into());
    h.report(
        h.lease(t).unwrap(),
        Settlement::Overloaded {
            retry_after: Some(Duration::MAX),
        },
    );
    let far = h
        .broker
        .time_base()
        .to_instant(SystemTime::UNIX_EPOCH + Duration::from_secs(1 << 40));
    let out = h.broker.pause(h.now, key("k"), "opus", far);
    h.collect(out);
    assert!(h.broker.next_wakeup(h.now).is_some());
    h.run_until(secs(120.0));
    assert!(
        h.lease(waiting).is_some(),
        "still served at the refill pace"
    );
}

#[test]
fn a_limit_learned_mid_flight_accounts_for_the_calls_in_flight() {
    let mut h = Harness::new(BrokerConfig::default());
    let t = h.acquire(1, |r| r.input_tokens = Some(10_000));
    let other = h.acquire(2, |r| r.input_tokens = Some(10_000));
    // A response teaches itpm = 30,000 with 29,000 left when call 1 arrived. Call 2 was
    // granted after it: its 10,000 come off too.
    let mut headers = RateLimitHeaders::default();
    headers.input_tokens.limit = Some(30_000);
    headers.input_tokens.remaining = Some(29_000);
    h.report_with(
        h.lease(t).unwrap(),
        Settlement::Success {
            usage: Usage {
                input_tokens: 1000,
                ..Default::default()
            },
        },
        headers,
    );
    assert_eq!(h.status().available.input_tokens, Some(19_000));
    // Call 2 is given back unused: its reservation returns, and no more.
    let out = h.broker.release(h.now, h.lease(other).unwrap()).unwrap();
    h.collect(out);
    assert_eq!(h.status().available.input_tokens, Some(29_000));
}

#[test]
fn a_429_refunds_the_output_reservation() {
    let mut h = Harness::with_limits("sonnet", tokens(100_000, 10_000));
    let t = h.acquire(1, |r| r.output_tokens = Some(500));
    h.report(
        h.lease(t).unwrap(),
        rate_limited(1.0, "50 requests per minute"),
    );
    assert_eq!(h.status().available.output_tokens, Some(10_000));
}
