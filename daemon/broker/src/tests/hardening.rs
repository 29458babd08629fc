//! What a hostile or broken peer, or a damaged state file, can do to the broker.

use super::*;

fn restored(saved: BrokerState, config: BrokerConfig, saved_at: SystemTime) -> (Broker, Instant) {
    let now = Instant::now();
    let wall = saved_at + secs(1.0);
    let mut broker = Broker::new(config, TimeBase { instant: now, wall }, 1);
    broker.restore(saved, saved_at, now, wall);
    (broker, now)
}

#[test]
fn a_flood_of_made_up_keys_and_models_cannot_lock_out_a_real_one() {
    let mut h = Harness::with_limits("sonnet", rpm(100));
    // The table fills with budgets that never saw a success.
    for i in 0..super::super::budget::MAX_BUDGETS as u64 + 50 {
        let t = h.acquire(i, |r| {
            r.key = key(&format!("junk-{i}"));
            r.model = format!("model-{i}");
        });
        if let Some(lease) = h.lease(t) {
            h.report(lease, Settlement::Failed);
        }
    }
    // A real key and model still get a budget: a junk one is forgotten to make room.
    let real = h.acquire(1_000_000, |_| {});
    assert!(h.lease(real).is_some(), "{:?}", h.answer(real));
    let long = h.acquire(1_000_001, |r| r.model = "x".repeat(300));
    assert!(
        matches!(&h.answer(long).unwrap().2, Response::Rejected(r) if r.reason.contains("128")),
        "{:?}",
        h.answer(long)
    );
}

#[test]
fn a_529_cannot_back_off_a_class_for_days_and_an_administrator_lifts_it() {
    let mut h = Harness::with_limits("sonnet", rpm(100));
    let a = h.acquire(1, |_| {});
    h.report(
        h.lease(a).unwrap(),
        Settlement::Overloaded {
            retry_after: Some(secs(999_999.0)),
        },
    );
    let wall = h.broker.time_base().wall;
    assert_eq!(h.status().overloaded_until, Some(wall + secs(32.0)));
    let out = h.broker.pause(h.now, key("k"), SONNET, h.now);
    h.collect(out);
    assert_eq!(
        h.status().overloaded_until,
        None,
        "`pacer pause --for 0` lifts it"
    );
}

#[test]
fn rate_limits_without_a_usable_wait_back_off_exponentially() {
    let mut h = Harness::without_cold_start();
    let mut pauses = Vec::new();
    for i in 0..4 {
        let t = h.acquire(i, |_| {});
        let at = h.elapsed();
        h.report_with(
            h.lease(t).unwrap(),
            Settlement::RateLimited {
                retry_after: None,
                message: None,
                rejection: None,
            },
            RateLimitHeaders::parse([("retry-after", "abc")], SystemTime::now()),
        );
        let until = h.status().paused_until.unwrap();
        pauses.push(until.duration_since(h.broker.time_base().wall).unwrap() - at);
        h.run_until(h.elapsed() + secs(70.0));
    }
    assert_eq!(pauses, [secs(1.0), secs(2.0), secs(4.0), secs(8.0)]);
}

#[test]
fn after_a_pause_a_budget_that_knows_no_limit_lets_one_call_out_first() {
    let mut h = Harness::new(BrokerConfig::default());
    let a = h.acquire(1, |_| {});
    h.report(h.lease(a).unwrap(), rate_limited(10.0, "rate limited"));
    let held: Vec<_> = (0..5).map(|i| h.acquire(10 + i, |_| {})).collect();
    h.run_until(secs(10.5));
    let out: Vec<_> = held.iter().filter(|&&t| h.lease(t).is_some()).collect();
    assert_eq!(out.len(), 1, "one at first, not five in lockstep");
}

#[test]
fn absurd_values_in_a_state_file_are_held_to_sense() {
    let json = format!(
        r#"{{"budgets":[{{"key":"0123456789abcdef","model_class":"sonnet","learned":[{max},null,null],
        "levels":[-1e300,null,null],"paused_until":{{"secs_since_epoch":99999999999,"nanos_since_epoch":0}},
        "input_average":{{"value":1e300,"samples":3}},"output_average":{{"value":-5.0,"samples":3}}}}],
        "overloads":[{{"model_class":"sonnet","consecutive":4000000000,"until":{{"secs_since_epoch":99999999999,"nanos_since_epoch":0}}}}],
        "next_lease":{max}}}"#,
        max = u64::MAX
    );
    let saved: BrokerState = serde_json::from_str(&json).unwrap();
    let config = BrokerConfig {
        limits: LimitTable {
            per_class: [("sonnet".to_owned(), rpm(60))].into(),
            ..LimitTable::default()
        },
        ..BrokerConfig::default()
    };
    let at = SystemTime::UNIX_EPOCH + secs(1_800_000_000.0);
    let (mut broker, now) = restored(saved, config, at);
    let status = broker.status(now).remove(0);
    assert_eq!(status.limits.rpm, Some(60), "u64::MAX is no limit to learn");
    assert!(status.available.requests.unwrap() >= -60, "{status:?}");
    let paused = status.paused_until.unwrap().duration_since(at).unwrap();
    assert!(paused <= secs(8.0 * 24.0 * 3600.0 + 2.0), "{paused:?}");
    let overloaded = status.overloaded_until.unwrap().duration_since(at).unwrap();
    assert!(overloaded <= secs(34.0), "{overloaded:?}");
    // The lease counter never wraps to 0 (the command line's "unpaced").
    let out = broker.acquire(
        now + secs(9.0 * 24.0 * 3600.0),
        Ticket {
            conn: ConnId(1),
            request: 1,
        },
        &Acquire {
            key: "0123456789abcdef".parse().unwrap(),
            model: SONNET.into(),
            priority: Priority::Normal,
            client_id: "c".into(),
            input_tokens: None,
            output_tokens: None,
            max_tokens: None,
            deadline: None,
            detached_ttl: None,
            max_share_bp: None,
        },
    );
    let Output::Answer {
        response: Response::Granted(granted),
        ..
    } = &out[0]
    else {
        panic!("{out:?}")
    };
    assert!(granted.lease.0 > 0);
}

#[test]
fn calls_in_flight_keep_their_slots_across_a_crash_until_they_report_or_expire() {
    let config = BrokerConfig {
        limits: LimitTable {
            per_class: [(
                "sonnet".to_owned(),
                LimitSet {
                    max_in_flight: Some(2),
                    ..LimitSet::default()
                },
            )]
            .into(),
            ..LimitTable::default()
        },
        ..BrokerConfig::default()
    };
    let mut h = Harness::new(config.clone());
    let held = h.acquire(1, |_| {});
    let detached = h.acquire(2, |r| r.detached_ttl = Some(secs(60.0)));
    let saved = h.broker.snapshot(h.now);
    let at = h.broker.time_base().wall;
    let (mut broker, now) = restored(saved, config, at);
    let acquire = |broker: &mut Broker, at: Instant, request: u64| {
        broker.acquire(
            at,
            Ticket {
                conn: ConnId(5),
                request,
            },
            &Acquire {
                key: key("k"),
                model: SONNET.into(),
                priority: Priority::Normal,
                client_id: "c".into(),
                input_tokens: None,
                output_tokens: None,
                max_tokens: None,
                deadline: None,
                detached_ttl: None,
                max_share_bp: None,
            },
        )
    };
    assert!(
        acquire(&mut broker, now, 1).is_empty(),
        "both slots are still taken"
    );
    // The detached lease is reported by its id after the restart, freeing a slot.
    let lease = h.lease(detached).unwrap();
    let (out, _) = broker
        .report(
            now,
            lease,
            Settlement::Success {
                usage: Usage::default(),
            },
            &RateLimitHeaders::default(),
        )
        .expect("the detached lease survived the restart");
    assert!(matches!(
        &out[0],
        Output::Answer {
            response: Response::Granted(_),
            ..
        }
    ));
    // The connection's lease (its client died with the daemon) expires after 10 minutes.
    assert!(h.lease(held).is_some());
    let out = broker.tick(now + secs(601.0));
    assert!(out.is_empty());
    assert!(!acquire(&mut broker, now + secs(602.0), 2).is_empty());
}

#[test]
fn windows_from_a_damaged_state_file_or_another_daemon_are_held_to_sense() {
    let saved_at = SystemTime::UNIX_EPOCH + secs(1_800_000_000.0);
    let window = |name: &str, utilization: f64| snapshot::SavedWindow {
        name: name.into(),
        status: Some("allowed".into()),
        utilization: Some(utilization),
        reset: None,
        share: None,
    };
    let state = BrokerState {
        subscriptions: vec![snapshot::AccountWindowsState {
            owner: snapshot::OwnerState {
                key: None,
                account: Some("org-0123456789ab".into()),
            },
            status: Some("x".repeat(10_000)),
            windows: vec![
                window("5h", 1e308),
                window("7d", -5.0),
                window(&"w".repeat(5000), 0.5),
                window("7d_opus", f64::NAN),
            ],
            overage: None,
            overage_in_use: None,
        }],
        ..BrokerState::default()
    };
    let (broker, now) = restored(state, BrokerConfig::default(), saved_at);
    let accounts = broker.accounts(now);
    let windows = &accounts[0].windows;
    let names: Vec<&str> = windows.iter().map(|w| w.name.as_str()).collect();
    assert_eq!(
        names,
        ["5h", "7d", "7d_opus"],
        "the 5,000-character name is dropped"
    );
    assert_eq!(windows[0].utilization, Some(10.0));
    assert_eq!(windows[1].utilization, None);
    assert_eq!(windows[2].utilization, None);
    assert!(accounts[0].unified_status.as_ref().unwrap().len() <= 64);

    // The same from another daemon's report.
    let mut h = Harness::with_limits("sonnet", rpm(100));
    // As it comes off the channel: JSON.
    let long_status = "s".repeat(5000);
    let json = format!(
        r#"{{"status": "allowed", "windows": [
            {{"name": "5h", "status": "{long_status}", "utilization": -1.0, "reset": {max}}},
            {{"name": "{long_name}", "status": null, "utilization": 0.3, "reset": null}}
        ]}}"#,
        max = u64::MAX,
        long_name = "n".repeat(5000),
    );
    let report: WindowsReport = serde_json::from_str(&json).unwrap();
    assert!(report.windows[0].reset.is_some());
    assert!(report.windows[0].status.as_ref().unwrap().as_str().len() <= 32);
    let out = h.broker.apply_shared(
        h.now,
        "elsewhere",
        ClusterEvent::Windows {
            owner: BudgetOwner::Account("org-0123456789ab".into()),
            windows: report,
        },
    );
    h.collect(out);
    let accounts = h.broker.accounts(h.now);
    let windows = &accounts[0].windows;
    assert_eq!(windows.len(), 1);
    assert_eq!(windows[0].utilization, None);
}

#[test]
fn a_full_table_forgets_the_least_recently_used_idle_budget() {
    let mut h = Harness::with_limits("sonnet", rpm(100_000));
    // Every budget saw a success: none is disposable, yet a new one still finds room.
    for i in 0..super::super::budget::MAX_BUDGETS as u64 {
        let t = h.acquire(i, |r| r.model = format!("model-{i}"));
        h.success(h.lease(t).unwrap(), 1, 1);
        h.now += Duration::from_millis(1);
    }
    let busy = h.acquire(1_000_000, |r| r.model = "model-0".into());
    assert!(
        h.lease(busy).is_some(),
        "model-0 is used again (and now busy)"
    );
    let fresh = h.acquire(1_000_001, |r| r.model = "claude-opus-4-1".into());
    assert!(h.lease(fresh).is_some(), "{:?}", h.answer(fresh));
    let classes: Vec<String> = h
        .broker
        .status(h.now)
        .into_iter()
        .map(|s| s.budget.model_class)
        .collect();
    assert!(classes.iter().any(|c| c == "model-0"), "in flight: kept");
    assert!(
        !classes.iter().any(|c| c == "model-1"),
        "the least recently used idle one went"
    );
}
