//! Restarts, stopping and time, on the fake clock: the snapshot, a stopping broker, the next
//! wakeup, the wall clock in status.

use super::*;

// --- Restarts -------------------------------------------------------------------------------

#[test]
fn a_snapshot_restores_pauses_limits_levels_and_averages() {
    let mut h = Harness::with_limits("sonnet", tokens(60_000, 60_000));
    let a = h.acquire(1, |r| r.input_tokens = Some(30_000));
    let mut headers = RateLimitHeaders::default();
    headers.requests.limit = Some(50);
    h.report_with(
        h.lease(a).unwrap(),
        Settlement::Success {
            usage: Usage {
                input_tokens: 30_000,
                output_tokens: 700,
                ..Default::default()
            },
        },
        headers,
    );
    let b = h.acquire(2, |_| {});
    h.report(
        h.lease(b).unwrap(),
        rate_limited(120.0, "50 requests per minute"),
    );
    let saved = h.broker.snapshot(h.now);
    let saved_at = h.broker.time_base().to_wall(h.now);

    // A new daemon starts 30 s later (on both clocks).
    let t1 = h.now + secs(30.0);
    let wall1 = saved_at + secs(30.0);
    let mut config = BrokerConfig::default();
    config
        .limits
        .per_class
        .insert("sonnet".into(), tokens(60_000, 60_000));
    let mut restored = Broker::new(
        config,
        TimeBase {
            instant: t1,
            wall: wall1,
        },
        1,
    );
    restored.restore(saved, saved_at, t1, wall1);
    let status = restored
        .status(t1)
        .into_iter()
        .find(|s| s.budget.model_class == "sonnet")
        .unwrap();
    assert_eq!(status.limits.rpm, Some(50), "learned limit kept");
    // The pause had 120 s to go when saved: 90 s are left.
    assert_eq!(status.paused_until, Some(wall1 + secs(90.0)));
    // The second call reserved the running average (30,000), leaving 0; 30 s of refill at
    // 1,000/s while the daemon was down brings 30,000 back.
    assert_eq!(status.available.input_tokens, Some(30_000));
    // The requests bucket was drained by the 429: 30 s of refill at 50/min = 25.
    assert_eq!(status.available.requests, Some(25));
    // The output average carried over: the next acquire reserves ~700 (capped by max_tokens).
    let out = restored.acquire(
        t1 + secs(90.0),
        Ticket {
            conn: ConnId(9),
            request: 1,
        },
        &Acquire {
            key: key("k"),
            model: SONNET.into(),
            priority: Priority::Normal,
            client_id: "c".into(),
            input_tokens: Some(0),
            output_tokens: None,
            max_tokens: None,
            deadline: None,
            detached_ttl: None,
            max_share_bp: None,
        },
    );
    assert!(
        matches!(&out[0], Output::Answer { response: Response::Granted(g), .. } if g.lease.0 >= 3)
    );
    let after = restored
        .status(t1 + secs(90.0))
        .into_iter()
        .find(|s| s.budget.model_class == "sonnet")
        .unwrap();
    assert_eq!(after.available.output_tokens, Some(60_000 - 700));
}

#[test]
fn a_stopping_broker_answers_waiters_and_refuses_new_acquires_but_takes_reports() {
    let mut h = Harness::with_limits("sonnet", rpm(1));
    let held = h.acquire(1, |_| {});
    let waiting = h.acquire(2, |_| {});
    let out = h.broker.stop();
    h.collect(out);
    assert!(
        matches!(&h.answer(waiting).unwrap().2, Response::Error(e) if e.kind == ErrorKind::Stopping)
    );
    let late = h.acquire(3, |r| r.key = key("other"));
    assert!(
        matches!(&h.answer(late).unwrap().2, Response::Error(e) if e.kind == ErrorKind::Stopping)
    );
    assert_eq!(h.broker.leases_in_flight(), 1);
    h.success(h.lease(held).unwrap(), 1, 1);
    assert_eq!(h.broker.leases_in_flight(), 0);
}

// --- Time -----------------------------------------------------------------------------------------

#[test]
fn next_wakeup_is_the_earliest_of_refill_deadline_pause_and_expiry() {
    let mut h = Harness::with_limits("sonnet", rpm(1));
    assert_eq!(h.broker.next_wakeup(h.now), None);
    h.acquire(1, |_| {});
    h.acquire(2, |_| {}); // refill: 60 s
    assert_eq!(h.broker.next_wakeup(h.now), Some(h.t0 + secs(60.0)));
    h.acquire(3, |r| r.deadline = Some(secs(20.0)));
    assert_eq!(h.broker.next_wakeup(h.now), Some(h.t0 + secs(20.0)));
    h.acquire(4, |r| {
        r.key = key("other");
        r.detached_ttl = Some(secs(5.0));
    });
    assert_eq!(h.broker.next_wakeup(h.now), Some(h.t0 + secs(5.0)));
}

#[test]
fn status_shows_pause_times_on_the_wall_clock() {
    let mut h = Harness::new(BrokerConfig::default());
    let a = h.acquire(1, |_| {});
    h.report(h.lease(a).unwrap(), rate_limited(30.0, "x"));
    let wall = h.broker.time_base().wall;
    assert_eq!(h.status().paused_until, Some(wall + secs(30.0)));
    h.run_until(secs(31.0));
    assert_eq!(h.status().paused_until, None);
}
