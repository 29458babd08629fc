//! Costs and settlement, on the fake clock: what is reserved, refunded, charged and owed.

use super::*;

#[test]
fn a_cost_above_capacity_is_granted_when_the_bucket_is_full() {
    let mut h = Harness::with_limits("sonnet", tokens(1000, 1000));
    let half = h.acquire(1, |r| r.input_tokens = Some(500));
    let huge = h.acquire(2, |r| r.input_tokens = Some(5000));
    assert!(h.lease(half).is_some());
    // Waits until the bucket is full again (500 tokens at 1000/min = 30 s), then goes into debt
    // — no deeper than a whole bucket, so that one call cannot hold the budget for longer than
    // a minute of refill.
    h.run_until(secs(100.0));
    assert_eq!(h.granted_at(huge), Some(secs(30.0)));
    assert_eq!(
        h.status().available.input_tokens,
        Some(-1000 + 70 * 1000 / 60)
    );
}

#[test]
fn output_is_reserved_from_the_estimate_or_the_running_average_never_max_tokens() {
    let mut h = Harness::with_limits("sonnet", tokens(1_000_000, 10_000));
    // Nothing known yet and no estimate: nothing reserved for output, although max_tokens is huge.
    let a = h.acquire(1, |r| r.max_tokens = Some(32_000));
    assert_eq!(h.status().available.output_tokens, Some(10_000));
    h.success(h.lease(a).unwrap(), 10, 400);
    // Now the running average (400) is reserved...
    h.acquire(2, |r| r.max_tokens = Some(32_000));
    assert_eq!(h.status().available.output_tokens, Some(10_000 - 400 - 400));
    // ...capped at max_tokens...
    h.acquire(3, |r| r.max_tokens = Some(100));
    assert_eq!(h.status().available.output_tokens, Some(10_000 - 800 - 100));
    // ...and the caller's own estimate wins.
    h.acquire(4, |r| r.output_tokens = Some(50));
    assert_eq!(h.status().available.output_tokens, Some(10_000 - 900 - 50));
}

#[test]
fn settlement_refunds_or_charges_the_difference_and_ignores_cache_reads() {
    let mut h = Harness::with_limits("sonnet", tokens(10_000, 10_000));
    let a = h.acquire(1, |r| r.input_tokens = Some(3000));
    assert_eq!(h.status().available.input_tokens, Some(7000));
    let usage = Usage {
        input_tokens: 500,
        cache_creation_input_tokens: 500,
        cache_read_input_tokens: 90_000,
        output_tokens: 0,
    };
    h.report(h.lease(a).unwrap(), Settlement::Success { usage });
    // Reserved 3000, used 1000 counted: 2000 back. Cache reads cost nothing.
    assert_eq!(h.status().available.input_tokens, Some(9000));

    let b = h.acquire(2, |r| r.input_tokens = Some(100));
    h.success(h.lease(b).unwrap(), 12_000, 0);
    // Charged 11,900 more than reserved: the bucket is in debt.
    assert_eq!(h.status().available.input_tokens, Some(9000 - 12_000));
}

#[test]
fn debt_delays_later_grants() {
    let mut h = Harness::with_limits("sonnet", tokens(6000, 1_000_000));
    let a = h.acquire(1, |r| r.input_tokens = Some(100));
    h.success(h.lease(a).unwrap(), 6100, 0);
    // Level is -100 (6000 - 6100); a request for 100 needs 200 tokens of refill at 100/s: 2 s.
    let b = h.acquire(2, |r| r.input_tokens = Some(100));
    h.run_until(secs(10.0));
    assert_eq!(h.granted_at(b), Some(secs(2.0)));
}

#[test]
fn remaining_headers_lower_a_bucket_but_never_raise_it() {
    let mut h = Harness::with_limits("sonnet", tokens(10_000, 10_000));
    let a = h.acquire(1, |r| r.input_tokens = Some(1000));
    let mut headers = RateLimitHeaders::default();
    headers.input_tokens.remaining = Some(4000);
    headers.output_tokens.remaining = Some(1_000_000);
    h.report_with(
        h.lease(a).unwrap(),
        Settlement::Success {
            usage: Usage {
                input_tokens: 1000,
                ..Default::default()
            },
        },
        headers,
    );
    let available = h.status().available;
    assert_eq!(available.input_tokens, Some(4000));
    assert_eq!(available.output_tokens, Some(10_000));
}

#[test]
fn an_underestimate_the_answers_remaining_already_counted_is_not_charged_twice() {
    // The gateway reads the answer's headers as they arrive: the server's `remaining` holds the
    // call's real input (counted when the request started), 9000 where 3000 were reserved.
    let mut h = Harness::with_limits("sonnet", tokens(10_000, 1_000_000));
    let a = h.acquire(1, |r| r.input_tokens = Some(3000));
    let lease = h.lease(a).unwrap();
    let mut headers = RateLimitHeaders::default();
    headers.input_tokens.remaining = Some(1000);
    let out = h.broker.observe(h.now, lease, &headers);
    h.collect(out);
    assert_eq!(h.status().available.input_tokens, Some(1000));
    // Settling with the real 9000 charges nothing more: the server's 1000 already holds it.
    h.success(lease, 9000, 0);
    assert_eq!(h.status().available.input_tokens, Some(1000));
    // Without `remaining` at the answer's head, the excess is charged at settlement.
    let b = h.acquire(2, |r| r.input_tokens = Some(500));
    h.success(h.lease(b).unwrap(), 1000, 0);
    assert_eq!(h.status().available.input_tokens, Some(0));
}

#[test]
fn a_new_bucket_calibrates_while_calls_granted_without_it_are_in_flight() {
    // Limits not known yet: ten calls go out at once (the first-contact hold ran out). The
    // first answer says 50 rpm, 49 left — counted when that call arrived, perhaps before the
    // nine others did.
    let mut h = Harness::without_cold_start();
    let tickets: Vec<_> = (0..10).map(|i| h.acquire(i, |_| {})).collect();
    let answer = |h: &mut Harness, i: usize, remaining: u64| {
        let mut headers = RateLimitHeaders::default();
        headers.requests.limit = Some(50);
        headers.requests.remaining = Some(remaining);
        h.report_with(
            h.lease(tickets[i]).unwrap(),
            Settlement::Success {
                usage: Usage::default(),
            },
            headers,
        );
    };
    answer(&mut h, 0, 49);
    // 49 less the 9 still in flight: 40, on the safe side.
    assert_eq!(h.status().available.requests, Some(40));
    // Had the server counted all ten, the next answer says 40 left, with 8 still in flight.
    answer(&mut h, 1, 40);
    assert_eq!(h.status().available.requests, Some(32));
    // A higher `remaining` (an answer to a call processed earlier) does not raise the floor;
    // one call fewer in flight does raise the estimate.
    answer(&mut h, 2, 45);
    assert_eq!(h.status().available.requests, Some(33));
    for i in 3..10 {
        answer(&mut h, i, 40);
    }
    // Everything is back: the server's lowest word stands.
    assert_eq!(h.status().available.requests, Some(40));
    // Calibration is over: from now on the bucket counts every grant itself and answers only
    // ever lower it.
    let t = h.acquire(20, |_| {});
    assert_eq!(h.status().available.requests, Some(39));
    let mut headers = RateLimitHeaders::default();
    headers.requests.remaining = Some(45);
    h.report_with(
        h.lease(t).unwrap(),
        Settlement::Success {
            usage: Usage::default(),
        },
        headers,
    );
    assert_eq!(h.status().available.requests, Some(39));
}

#[test]
fn release_refunds_everything() {
    let mut h = Harness::with_limits(
        "sonnet",
        LimitSet {
            rpm: Some(10),
            itpm: Some(10_000),
            ..Default::default()
        },
    );
    let a = h.acquire(1, |r| r.input_tokens = Some(2000));
    let out = h.broker.release(h.now, h.lease(a).unwrap()).unwrap();
    h.collect(out);
    let s = h.status();
    assert_eq!(s.available.requests, Some(10));
    assert_eq!(s.available.input_tokens, Some(10_000));
    assert_eq!(s.in_flight, 0);
}

#[test]
fn a_lease_settles_once() {
    let mut h = Harness::new(BrokerConfig::default());
    let a = h.acquire(1, |_| {});
    let lease = h.lease(a).unwrap();
    h.success(lease, 1, 1);
    let again = h.broker.report(
        h.now,
        lease,
        Settlement::Failed,
        &RateLimitHeaders::default(),
    );
    assert_eq!(again, Err(BrokerError::UnknownLease(lease)));
    assert_eq!(
        h.broker.release(h.now, lease),
        Err(BrokerError::UnknownLease(lease))
    );
}
