//! Subscription windows by priority, on the fake clock: ceilings counting the calls in flight,
//! pacing, the overage guard, what a held call is told, and calls in flight elsewhere.

use super::*;

pub(super) fn wall0() -> SystemTime {
    SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000)
}

pub(super) const TOKEN: &str = "sk-ant-oat01-windows";

/// A subscription with one window: `limit` calls, reset `reset_in` from `wall0`, and what it
/// had used before.
pub(super) struct Window {
    pub(super) name: &'static str,
    pub(super) limit: u64,
    pub(super) used: u64,
    pub(super) reset_in: u64,
    /// Extra usage allowed (and then in use once spent).
    pub(super) overage: bool,
}

impl Window {
    /// The headers of an answer after `used` calls in all.
    pub(super) fn headers(&self) -> RateLimitHeaders {
        let utilization = (self.used as f64 / self.limit as f64 * 100.0).round() / 100.0;
        let reset = (1_800_000_000 + self.reset_in).to_string();
        let spent = utilization >= 1.0;
        let mut pairs = vec![
            ("anthropic-organization-id".to_owned(), "org-sub".to_owned()),
            (
                "anthropic-ratelimit-unified-status".to_owned(),
                "allowed".to_owned(),
            ),
            (
                format!("anthropic-ratelimit-unified-{}-utilization", self.name),
                format!("{utilization:.2}"),
            ),
            (
                format!("anthropic-ratelimit-unified-{}-reset", self.name),
                reset,
            ),
        ];
        if self.overage {
            pairs.push((
                "anthropic-ratelimit-unified-overage-status".into(),
                "allowed".into(),
            ));
            pairs.push((
                "anthropic-ratelimit-unified-overage-in-use".into(),
                spent.to_string(),
            ));
        }
        RateLimitHeaders::parse(pairs.iter().map(|(n, v)| (n.as_str(), v.as_str())), wall0())
    }
}

pub(super) fn config(batch: f64, pace: bool) -> BrokerConfig {
    BrokerConfig {
        cold_start_hold: Duration::ZERO,
        windows: WindowsConfig {
            batch,
            pace,
            ..WindowsConfig::default()
        },
        ..BrokerConfig::default()
    }
}

fn ask(h: &mut Harness, conn: u64, priority: Priority) -> Ticket {
    h.acquire(conn, |r| {
        r.key = key(TOKEN);
        r.priority = priority;
    })
}

/// `workers` callers of `priority` that each ask again as soon as their call is answered, the
/// oldest call answered first, until none is granted: returns the calls granted.
fn run_workers(h: &mut Harness, window: &mut Window, workers: u64, priority: Priority) -> u64 {
    let mut in_flight: std::collections::VecDeque<LeaseId> = Default::default();
    let mut waiting: Vec<Ticket> = (0..workers).map(|w| ask(h, 100 + w, priority)).collect();
    let mut granted = 0;
    let mut conn = 1_000;
    loop {
        waiting.retain(|&t| match h.lease(t) {
            Some(lease) => {
                in_flight.push_back(lease);
                granted += 1;
                false
            }
            None => true,
        });
        let Some(lease) = in_flight.pop_front() else {
            return granted;
        };
        window.used += 1;
        h.now += Duration::from_millis(100);
        h.report_with(
            lease,
            Settlement::Success {
                usage: Usage::default(),
            },
            window.headers(),
        );
        conn += 1;
        waiting.push(ask(h, conn, priority));
    }
}

#[test]
fn batch_stops_near_its_ceiling_counting_the_calls_in_flight() {
    let mut h = Harness::new(config(0.7, false));
    let mut window = Window {
        name: "5h",
        limit: 60,
        used: 0,
        reset_in: 3600,
        overage: false,
    };
    // Six batch workers: each call is granted only while the window's estimate, its calls in
    // flight included, stays under 70 %.
    let batch = run_workers(&mut h, &mut window, 6, Priority::Batch);
    assert!(
        (36..=44).contains(&batch),
        "batch brought the window to {batch} of 60"
    );
    // The person at the keyboard keeps the rest.
    let interactive = ask(&mut h, 1, Priority::Interactive);
    assert!(h.lease(interactive).is_some());
    // And pacer says so, with the batch priority held.
    let accounts = h.broker.accounts(h.now);
    let status = &accounts
        .iter()
        .find(|a| !a.windows.is_empty())
        .unwrap()
        .windows[0];
    let batch = status.ceiling(Priority::Batch).unwrap();
    assert!(
        batch.held && (batch.ceiling - 0.7).abs() < 1e-9,
        "{status:?}"
    );
    assert!(!status.ceiling(Priority::Interactive).unwrap().held);
    let share = status.share.unwrap();
    assert!((share - 1.0 / 60.0).abs() < 0.006, "learned {share}");
}

#[test]
fn a_held_call_waits_behind_interactive_ones_and_is_told_why_and_until_when() {
    let mut h = Harness::new(config(0.7, false));
    let mut window = Window {
        name: "5h",
        limit: 100,
        used: 69,
        reset_in: 3600,
        overage: false,
    };
    let first = ask(&mut h, 1, Priority::Interactive);
    window.used += 1;
    h.report_with(
        h.lease(first).unwrap(),
        Settlement::Success {
            usage: Usage::default(),
        },
        window.headers(),
    );
    // At 70 %, a batch call waits; an interactive one goes past it.
    let batch = h.acquire(2, |r| {
        r.key = key(TOKEN);
        r.priority = Priority::Batch;
        r.deadline = Some(secs(20.0));
    });
    assert!(h.lease(batch).is_none());
    let interactive = ask(&mut h, 3, Priority::Interactive);
    assert!(h.lease(interactive).is_some());
    // Its deadline passes: it is told why, and to come back at the reset.
    h.run_until(secs(21.0));
    let Some((_, _, Response::TimedOut(timed_out))) = h.answer(batch) else {
        panic!("{:?}", h.answer(batch))
    };
    assert!(
        timed_out
            .reason
            .starts_with("batch work is held at 70 % of the 5-hour window until"),
        "{}",
        timed_out.reason
    );
    assert!(
        timed_out
            .reason
            .ends_with("interactive sessions keep the rest")
    );
    let reset = secs(3600.0).saturating_sub(h.elapsed());
    assert!(
        timed_out.retry_after.abs_diff(reset) <= secs(1.5),
        "{:?}",
        timed_out.retry_after
    );
    // Counted, for `pacer status` and `/metrics`.
    let accounts = h.broker.accounts(h.now);
    let window = &accounts
        .iter()
        .find(|a| !a.windows.is_empty())
        .unwrap()
        .windows[0];
    assert_eq!(window.ceiling(Priority::Batch).unwrap().refused, 1);
}

#[test]
fn pacing_lets_batch_to_its_ceiling_times_the_weeks_elapsed_share() {
    let mut h = Harness::new(config(0.7, true));
    // A weekly window half gone and 20 % used, of 100 calls.
    let mut window = Window {
        name: "7d",
        limit: 100,
        used: 20,
        reset_in: 7 * 24 * 3600 / 2,
        overage: false,
    };
    let probe = ask(&mut h, 1, Priority::Interactive);
    window.used += 1;
    h.report_with(
        h.lease(probe).unwrap(),
        Settlement::Success {
            usage: Usage::default(),
        },
        window.headers(),
    );
    let batch = run_workers(&mut h, &mut window, 4, Priority::Batch);
    assert!(
        (8..=21).contains(&batch),
        "{batch} more batch calls (to {} %)",
        window.used
    );
    assert!(window.used <= 36, "paced to 35 %: {}", window.used);
    let interactive = ask(&mut h, 2, Priority::Interactive);
    assert!(h.lease(interactive).is_some());
    // The hold ends by itself when the pace lets the next call in: well before the reset.
    let batch = h.acquire(3, |r| {
        r.key = key(TOKEN);
        r.priority = Priority::Batch;
        r.deadline = Some(secs(1.0));
    });
    h.run_until(h.elapsed() + secs(2.0));
    let Some((_, _, Response::TimedOut(timed_out))) = h.answer(batch) else {
        panic!("{:?}", h.answer(batch))
    };
    assert!(timed_out.reason.contains("paced"), "{}", timed_out.reason);
    assert!(
        timed_out.retry_after < secs(3.0 * 24.0 * 3600.0),
        "{:?}",
        timed_out.retry_after
    );
}

#[test]
fn extra_usage_is_spent_only_by_the_priorities_listed() {
    let mut h = Harness::new(config(0.8, false));
    let mut window = Window {
        name: "5h",
        limit: 10,
        used: 10,
        reset_in: 3600,
        overage: true,
    };
    let first = ask(&mut h, 1, Priority::Interactive);
    window.used += 1;
    h.report_with(
        h.lease(first).unwrap(),
        Settlement::Success {
            usage: Usage::default(),
        },
        window.headers(),
    );
    // The window is spent and the account spends extra usage: normal work is held as if the
    // window were spent (only interactive may spend it, by default).
    let normal = h.acquire(2, |r| {
        r.key = key(TOKEN);
        r.deadline = Some(Duration::ZERO);
    });
    let Some((_, _, Response::TimedOut(timed_out))) = h.answer(normal) else {
        panic!("{:?}", h.answer(normal))
    };
    assert!(
        timed_out.reason.contains("extra usage"),
        "{}",
        timed_out.reason
    );
    let interactive = ask(&mut h, 3, Priority::Interactive);
    assert!(h.lease(interactive).is_some());
    let accounts = h.broker.accounts(h.now);
    let account = accounts.iter().find(|a| !a.windows.is_empty()).unwrap();
    assert_eq!(account.overage_in_use, Some(true));
    assert_eq!(account.overage.as_deref(), Some("allowed"));
}

#[test]
fn calls_in_flight_on_other_daemons_count_toward_the_ceiling() {
    let mut h = Harness::new(config(0.7, false));
    let mut window = Window {
        name: "5h",
        limit: 100,
        used: 60,
        reset_in: 3600,
        overage: false,
    };
    let first = ask(&mut h, 1, Priority::Interactive);
    window.used += 1;
    h.report_with(
        h.lease(first).unwrap(),
        Settlement::Success {
            usage: Usage::default(),
        },
        window.headers(),
    );
    let owner = h.broker.accounts(h.now)[0].owner.clone();
    // At 61 %, a batch call would go; another daemon has 9 in flight toward the window.
    let out = h.broker.apply_shared(
        h.now,
        "daemon-b",
        ClusterEvent::WindowCalls {
            owner: owner.clone(),
            in_flight: 9,
            answered: 0,
        },
    );
    h.collect(out);
    let batch = ask(&mut h, 2, Priority::Batch);
    assert!(
        h.lease(batch).is_none(),
        "61 % + 9 in flight + 1 is past 70 %"
    );
    // A call that cannot wait is told seconds (the calls in flight are answered soon), not
    // the window's reset an hour off.
    let hurried = h.acquire(3, |r| {
        r.key = key(TOKEN);
        r.priority = Priority::Batch;
        r.deadline = Some(Duration::ZERO);
    });
    match h.answer(hurried) {
        Some((_, _, Response::TimedOut(t))) => {
            assert!(t.retry_after <= Duration::from_secs(10), "{t:?}")
        }
        other => panic!("{other:?}"),
    }
    // Its calls answered, the window says 70 %: still held. Its count expires if not told
    // again; told 0 in flight, and the window at 62 %, the batch call goes.
    let out = h.broker.apply_shared(
        h.now,
        "daemon-b",
        ClusterEvent::WindowCalls {
            owner,
            in_flight: 0,
            answered: 9,
        },
    );
    h.collect(out);
    assert!(h.lease(batch).is_some(), "{:?}", h.answer(batch));
}

#[test]
fn a_window_past_its_reset_is_shown_as_reset_and_a_step_of_the_wall_clock_moves_it() {
    let mut h = Harness::new(config(0.7, false));
    let window = Window {
        name: "5h",
        limit: 100,
        used: 60,
        reset_in: 60,
        overage: false,
    };
    let t = ask(&mut h, 1, Priority::Interactive);
    let lease = h.lease(t).unwrap();
    h.report_with(
        lease,
        Settlement::Success {
            usage: Usage::default(),
        },
        window.headers(),
    );
    let shown = |h: &Harness| {
        let accounts = h.broker.accounts(h.now);
        accounts
            .iter()
            .flat_map(|a| a.windows.clone())
            .find(|w| w.name == "5h")
            .unwrap()
    };
    assert_eq!(shown(&h).utilization, Some(0.6));
    // The wall clock steps back half a minute: the reset is still a minute after the answer.
    h.broker.rebase(crate::Step::Back(Duration::from_secs(30)));
    h.now += Duration::from_secs(50);
    assert_eq!(shown(&h).utilization, Some(0.6), "ten seconds left");
    // Past the reset: not 60 % any more, and nothing known until an answer says.
    h.now += Duration::from_secs(11);
    let past = shown(&h);
    assert_eq!(
        (past.utilization, past.status.clone()),
        (None, None),
        "{past:?}"
    );
    assert!(past.reset.is_some(), "when it reset is still said");
}

#[test]
fn an_upstream_naming_new_windows_on_every_answer_cannot_grow_the_table() {
    let mut h = Harness::new(config(0.7, false));
    for answer in 0..400u64 {
        let t = ask(&mut h, 1 + answer, Priority::Interactive);
        let lease = h.lease(t).unwrap();
        let mut pairs = vec![
            ("anthropic-organization-id".to_owned(), "org-sub".to_owned()),
            (
                "anthropic-ratelimit-unified-5h-utilization".to_owned(),
                "0.20".to_owned(),
            ),
        ];
        for n in 0..45 {
            pairs.push((
                format!("anthropic-ratelimit-unified-w{answer}x{n}-utilization"),
                "0.5".to_owned(),
            ));
        }
        let headers =
            RateLimitHeaders::parse(pairs.iter().map(|(n, v)| (n.as_str(), v.as_str())), wall0());
        h.now += Duration::from_millis(10);
        h.report_with(
            lease,
            Settlement::Success {
                usage: Usage::default(),
            },
            headers,
        );
    }
    let accounts = h.broker.accounts(h.now);
    let windows: Vec<_> = accounts.iter().flat_map(|a| &a.windows).collect();
    assert!(windows.len() <= 16, "{} windows", windows.len());
    assert!(
        windows.iter().any(|w| w.name == "5h"),
        "the window every answer names is kept"
    );
}

#[test]
fn calls_held_behind_a_new_tokens_probe_hear_at_once_what_its_account_windows_say() {
    // Batch may bring the window to 70 %; the account is at 90 %. The token is new: its first
    // call goes out alone (the probe that finds its account), the others wait behind it.
    let mut h = Harness::new(BrokerConfig {
        windows: WindowsConfig {
            batch: 0.7,
            pace: false,
            ..WindowsConfig::default()
        },
        ..BrokerConfig::default()
    });
    let batch = |h: &mut Harness, conn| {
        h.acquire(conn, |r| {
            r.key = key(TOKEN);
            r.priority = Priority::Batch;
            r.deadline = Some(Duration::from_secs(240));
        })
    };
    let probe = batch(&mut h, 1);
    let behind: Vec<Ticket> = (2..6).map(|conn| batch(&mut h, conn)).collect();
    let lease = h.lease(probe).expect("the probe goes out");
    assert!(
        behind.iter().all(|&t| h.answer(t).is_none()),
        "the rest wait"
    );
    let window = Window {
        name: "5h",
        limit: 100,
        used: 90,
        reset_in: 3600,
        overage: false,
    };
    h.now += Duration::from_secs(1);
    h.report_with(
        lease,
        Settlement::Success {
            usage: Usage::default(),
        },
        window.headers(),
    );
    // Now the account is known to be past batch's ceiling for an hour: each waiting call is
    // told so now, as a known token's call would be when it asked, not after 240 s.
    for t in behind {
        match h.answer(t) {
            Some((at, _, Response::TimedOut(timed_out))) => {
                assert_eq!(*at, Duration::from_secs(1), "told at once");
                assert!(
                    timed_out.retry_after > Duration::from_secs(240),
                    "{timed_out:?}"
                );
            }
            other => panic!("{other:?}"),
        }
    }
}

#[test]
fn a_budget_whose_calls_a_window_holds_drains_when_the_window_lets_them_go() {
    let mut h = Harness::new(config(0.7, false));
    let window = Window {
        name: "5h",
        limit: 100,
        used: 90,
        reset_in: 3600,
        overage: false,
    };
    let first = ask(&mut h, 1, Priority::Interactive);
    let lease = h.lease(first).unwrap();
    h.report_with(
        lease,
        Settlement::Success {
            usage: Usage::default(),
        },
        window.headers(),
    );
    let held = ask(&mut h, 2, Priority::Batch);
    assert!(h.answer(held).is_none(), "batch waits for the window");
    let status = h.broker.status(h.now);
    let drains = status[0].drain_estimate.expect("an estimate");
    // The buckets are full; the window holds batch until its reset, an hour off.
    assert!(drains > Duration::from_secs(3500), "{drains:?}");
}

#[test]
fn lifting_by_hand_forgets_what_the_windows_said() {
    let mut h = Harness::new(config(0.7, false));
    let window = Window {
        name: "5h",
        limit: 100,
        used: 90,
        reset_in: 3600,
        overage: false,
    };
    let first = ask(&mut h, 1, Priority::Interactive);
    let lease = h.lease(first).unwrap();
    h.report_with(
        lease,
        Settlement::Success {
            usage: Usage::default(),
        },
        window.headers(),
    );
    let held = ask(&mut h, 2, Priority::Batch);
    assert!(h.lease(held).is_none(), "held");
    // `pacer pause --for 0`: a window believed wrongly is cleared by hand.
    let out = h
        .broker
        .pause(h.now, key(TOKEN), "claude-sonnet-4-5", h.now);
    h.collect(out);
    let windows: Vec<_> = h
        .broker
        .accounts(h.now)
        .into_iter()
        .flat_map(|a| a.windows)
        .collect();
    assert!(windows.is_empty(), "{windows:?}");
    assert!(
        h.lease(held).is_some(),
        "no longer held: {:?}",
        h.answer(held)
    );
}
