//! The shared pause and the overload backoff, on the fake clock: 429s, an administrator's
//! pause, 529s.

use super::*;

#[test]
fn a_429_pauses_every_peer_of_the_budget_and_no_other() {
    let mut h = Harness::new(BrokerConfig::default());
    let a = h.acquire(1, |_| {});
    h.report(h.lease(a).unwrap(), rate_limited(3.0, "Rate limited"));
    let same = h.acquire(2, |_| {});
    let other_key = h.acquire(3, |r| r.key = key("other"));
    let other_class = h.acquire(4, |r| r.model = "claude-haiku-4-5".into());
    assert!(h.lease(same).is_none());
    assert!(h.lease(other_key).is_some());
    assert!(h.lease(other_class).is_some());
    h.run_until(secs(10.0));
    assert_eq!(h.granted_at(same), Some(secs(3.0)));
    assert_eq!(h.status().rate_limited, 1);
    assert!(
        h.events
            .iter()
            .any(|e| matches!(e, Event::PauseStarted { .. }))
    );
    assert!(
        h.events
            .iter()
            .any(|e| matches!(e, Event::PauseEnded { .. }))
    );
}

#[test]
fn a_later_429_extends_the_pause_but_never_shortens_it() {
    let mut h = Harness::without_cold_start();
    let a = h.acquire(1, |_| {});
    let b = h.acquire(2, |_| {});
    let c = h.acquire(3, |_| {});
    h.report(h.lease(a).unwrap(), rate_limited(10.0, "x"));
    h.report(h.lease(b).unwrap(), rate_limited(2.0, "x"));
    let waiting = h.acquire(4, |_| {});
    h.run_until(secs(4.0));
    assert!(
        h.lease(waiting).is_none(),
        "the 2 s report did not shorten the 10 s pause"
    );
    h.report(h.lease(c).unwrap(), rate_limited(8.0, "x"));
    h.run_until(secs(20.0));
    assert_eq!(h.granted_at(waiting), Some(secs(12.0)));
}

#[test]
fn retry_after_comes_from_the_headers_when_not_given() {
    let mut h = Harness::new(BrokerConfig::default());
    let a = h.acquire(1, |_| {});
    let headers = RateLimitHeaders::parse([("retry-after-ms", "2500")], SystemTime::now());
    h.report_with(
        h.lease(a).unwrap(),
        Settlement::RateLimited {
            retry_after: None,
            message: None,
            rejection: None,
        },
        headers,
    );
    let b = h.acquire(2, |_| {});
    h.run_until(secs(5.0));
    assert_eq!(h.granted_at(b), Some(secs(2.5)));
}

#[test]
fn the_bucket_a_429_names_is_drained_so_grants_resume_at_the_refill_pace() {
    let mut h = Harness::with_limits(
        "sonnet",
        LimitSet {
            rpm: Some(60),
            itpm: Some(60_000),
            ..Default::default()
        },
    );
    let a = h.acquire(1, |r| r.input_tokens = Some(10));
    h.report(
        h.lease(a).unwrap(),
        rate_limited(
            5.0,
            "This request would exceed the rate limit of 60 requests per minute",
        ),
    );
    // Requests drained; input tokens untouched.
    let s = h.status();
    assert_eq!(s.available.requests, Some(0));
    assert_eq!(s.available.input_tokens, Some(59_990));
    let tickets: Vec<_> = (0..8).map(|i| h.acquire(10 + i, |_| {})).collect();
    // When the pause ends, one call goes first to find out whether the limit is back.
    h.run_until(secs(5.4));
    let granted: Vec<_> = tickets.iter().filter_map(|&t| h.lease(t)).collect();
    assert_eq!(granted.len(), 1, "only the probe goes when the pause ends");
    assert_eq!(h.granted_at(tickets[0]), Some(secs(5.0)));
    // Its answer comes: the others go at the refill pace. After 5.5 s the bucket has refilled
    // 5.5 requests, one taken by the probe: four go at once, the rest one per second.
    h.run_until(secs(5.5));
    h.success(granted[0], 10, 0);
    h.run_until(secs(20.0));
    let times: Vec<_> = tickets.iter().map(|&t| h.granted_at(t).unwrap()).collect();
    assert_eq!(&times[1..5], &[secs(5.5); 4]);
    assert_eq!(&times[5..], &[secs(6.0), secs(7.0), secs(8.0)]);
}

#[test]
fn after_a_pause_the_waiters_wait_for_the_probes_answer_and_a_429_to_it_holds_them() {
    let mut h = Harness::with_limits("sonnet", rpm(600));
    let a = h.acquire(1, |_| {});
    h.report(h.lease(a).unwrap(), rate_limited(10.0, "Rate limited"));
    let waiting: Vec<_> = (0..20).map(|i| h.acquire(10 + i, |_| {})).collect();
    h.run_until(secs(11.0));
    let probe: Vec<_> = waiting.iter().filter_map(|&t| h.lease(t)).collect();
    assert_eq!(probe.len(), 1, "20 clients are not released together");
    // The limit is not back: the probe's 429 pauses everyone again before anyone else went.
    h.report(probe[0], rate_limited(10.0, "Rate limited"));
    h.run_until(secs(20.9));
    assert_eq!(waiting.iter().filter_map(|&t| h.lease(t)).count(), 1);
    // The next pause ends: again one probe; this time it succeeds and the rest follow.
    h.run_until(secs(21.5));
    let granted: Vec<_> = waiting.iter().filter_map(|&t| h.lease(t)).collect();
    assert_eq!(granted.len(), 2);
    h.success(granted[1], 10, 10);
    h.run_until(secs(60.0));
    assert_eq!(waiting.iter().filter_map(|&t| h.lease(t)).count(), 20);
}

#[test]
fn a_429_naming_no_limit_drains_every_bucket() {
    let mut h = Harness::with_limits("sonnet", tokens(1000, 1000));
    let a = h.acquire(1, |r| r.input_tokens = Some(10));
    h.report(h.lease(a).unwrap(), rate_limited(1.0, "Rate limited"));
    let s = h.status();
    assert_eq!(s.available.input_tokens, Some(0));
    assert_eq!(s.available.output_tokens, Some(0));
}

#[test]
fn an_administrator_can_pause_and_lift() {
    let mut h = Harness::new(BrokerConfig::default());
    let out = h
        .broker
        .pause(h.now, key("k"), "sonnet", h.now + secs(30.0));
    h.collect(out);
    let a = h.acquire(1, |_| {});
    assert!(h.lease(a).is_none());
    h.now += secs(1.0);
    let out = h.broker.pause(h.now, key("k"), "sonnet", h.now);
    h.collect(out);
    assert_eq!(h.granted_at(a), Some(secs(1.0)));
}

// --- Overload backoff ---------------------------------------------------------------------------

#[test]
fn overloaded_answers_back_off_the_whole_class_doubling_up_to_32_s() {
    let mut h = Harness::new(BrokerConfig::default());
    let mut expected = Vec::new();
    for (i, backoff) in [1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 32.0]
        .into_iter()
        .enumerate()
    {
        let t = h.acquire(i as u64, |_| {});
        let lease = h
            .lease(t)
            .expect("granted once the previous backoff passed");
        h.report(lease, Settlement::Overloaded { retry_after: None });
        // Every key's budget of the class is held back.
        let probe = h.acquire(100 + i as u64, |r| r.key = key("another key"));
        assert!(h.lease(probe).is_none());
        let start = h.elapsed();
        h.run_until(start + secs(backoff));
        expected.push((h.granted_at(probe).unwrap() - start).as_secs_f64());
        let out = h.broker.release(h.now, h.lease(probe).unwrap()).unwrap();
        h.collect(out);
    }
    assert_eq!(expected, [1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 32.0]);
}

#[test]
fn a_success_resets_the_overload_backoff() {
    let mut h = Harness::new(BrokerConfig::default());
    for _ in 0..3 {
        let t = h.acquire(1, |_| {});
        h.run_until(h.elapsed() + secs(10.0));
        h.report(
            h.lease(t).unwrap(),
            Settlement::Overloaded { retry_after: None },
        );
    }
    h.run_until(h.elapsed() + secs(10.0));
    let t = h.acquire(1, |_| {});
    h.success(h.lease(t).unwrap(), 1, 1);
    let t = h.acquire(1, |_| {});
    h.report(
        h.lease(t).unwrap(),
        Settlement::Overloaded { retry_after: None },
    );
    let start = h.elapsed();
    let probe = h.acquire(2, |_| {});
    h.run_until(start + secs(5.0));
    assert_eq!(
        h.granted_at(probe),
        Some(start + secs(1.0)),
        "back to the 1 s step"
    );
}
