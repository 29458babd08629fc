//! Accounts, subscription windows and lockouts, on the fake clock.

use super::*;

mod workspaces;

const OPUS: &str = "claude-opus-4-1";

fn wall0() -> SystemTime {
    SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000)
}

/// Headers of an answer naming organization `org`, with a requests limit.
fn org_headers(org: &str, extra: &[(&str, &str)]) -> RateLimitHeaders {
    let mut pairs = vec![("anthropic-organization-id", org)];
    pairs.extend_from_slice(extra);
    RateLimitHeaders::parse(pairs, wall0())
}

fn account(org: &str) -> BudgetOwner {
    BudgetOwner::Account(pacer_protocol::budget::organization_label(org))
}

impl Harness {
    fn budgets_of(&self, owner: &BudgetOwner) -> Vec<BudgetStatus> {
        self.broker
            .status(self.now)
            .into_iter()
            .filter(|s| &s.budget.owner == owner)
            .collect()
    }

    fn observe(&mut self, lease: LeaseId, headers: &RateLimitHeaders) {
        let out = self.broker.observe(self.now, lease, headers);
        self.collect(out);
    }

    fn rejected(&self, ticket: Ticket) -> Option<&Rejected> {
        match self.answer(ticket) {
            Some((_, _, Response::Rejected(r))) => Some(r),
            _ => None,
        }
    }
}

fn success() -> Settlement {
    Settlement::Success {
        usage: Usage::default(),
    }
}

#[test]
fn keys_of_one_organization_share_one_budget_and_one_pause() {
    let mut h = Harness::new(BrokerConfig::default());
    let a = h.acquire(1, |r| r.key = key("a"));
    let limits = [
        ("anthropic-ratelimit-requests-limit", "50"),
        ("anthropic-ratelimit-requests-remaining", "49"),
    ];
    h.report_with(
        h.lease(a).unwrap(),
        success(),
        org_headers("org-1", &limits),
    );
    assert!(
        h.events
            .iter()
            .any(|e| matches!(e, Event::KeyLinked { key: k, .. } if *k == key("a")))
    );
    let b = h.acquire(2, |r| r.key = key("b"));
    h.report_with(
        h.lease(b).unwrap(),
        success(),
        org_headers("org-1", &limits),
    );
    // One budget, the account's, listing both keys.
    let budgets = h.budgets_of(&account("org-1"));
    assert_eq!(budgets.len(), 1, "{budgets:?}");
    assert_eq!(budgets[0].granted, 2);
    assert!(h.budgets_of(&BudgetOwner::Key(key("b"))).is_empty());
    // Each client is shown on the budget by the name the budget table gives it, though its
    // first call went out before its key was known to belong to the organization.
    let clients = h.broker.clients(h.now);
    assert_eq!(clients.len(), 2, "{clients:?}");
    for client in &clients {
        assert_eq!(client.budget, Some(budgets[0].budget.clone()), "{client:?}");
    }
    let accounts = h.broker.accounts(h.now);
    assert_eq!(accounts[0].owner, account("org-1"));
    let mut keys = vec![key("a"), key("b")];
    keys.sort();
    assert_eq!(accounts[0].keys, keys);
    // A 429 on one key pauses the other.
    let c = h.acquire(3, |r| r.key = key("a"));
    h.report(
        h.lease(c).unwrap(),
        rate_limited(30.0, "50 requests per minute"),
    );
    let d = h.acquire(4, |r| r.key = key("b"));
    h.run_until(secs(29.0));
    assert!(h.lease(d).is_none(), "key b waits out key a's 429");
    h.run_until(secs(40.0));
    assert!(h.granted_at(d).unwrap() >= secs(30.0));
}

#[test]
fn a_merge_keeps_waiters_in_place_and_leases_settle_on_the_account() {
    let mut h = Harness::with_limits("sonnet", rpm(2));
    // Key a: two calls out, one interactive waiter.
    let a1 = h.acquire(1, |r| r.key = key("a"));
    let a2 = h.acquire(1, |r| r.key = key("a"));
    let a3 = h.acquire(2, |r| {
        r.key = key("a");
        r.priority = Priority::Interactive;
    });
    // Key b: two calls out, a batch waiter and a normal one; and an administrator's pause.
    let b0 = h.acquire(3, |r| r.key = key("b"));
    let b1 = h.acquire(3, |r| r.key = key("b"));
    let b2 = h.acquire(4, |r| {
        r.key = key("b");
        r.priority = Priority::Batch;
    });
    let b3 = h.acquire(5, |r| r.key = key("b"));
    let out = h.broker.pause(h.now, key("b"), SONNET, h.now + secs(45.0));
    h.collect(out);
    // Key a's answer names the organization (its budget becomes the account's); then key b's
    // (its budget merges in).
    h.observe(h.lease(a1).unwrap(), &org_headers("org-1", &[]));
    h.report_with(h.lease(b1).unwrap(), success(), org_headers("org-1", &[]));
    let merged = &h.budgets_of(&account("org-1"))[0];
    assert_eq!(
        merged.in_flight, 3,
        "key a's two calls and key b's other, now the account's"
    );
    assert_eq!(merged.waiting, 3);
    assert!(merged.paused_until.is_some(), "key b's pause holds");
    // Leases granted before the merge settle against the account.
    h.success(h.lease(a1).unwrap(), 10, 10);
    h.success(h.lease(a2).unwrap(), 10, 10);
    h.success(h.lease(b0).unwrap(), 10, 10);
    assert_eq!(h.budgets_of(&account("org-1"))[0].in_flight, 0);
    // Priorities hold across the merge, and nobody goes before the pause ends.
    h.run_until(secs(200.0));
    let (t3, t5, t2) = (
        h.granted_at(a3).unwrap(),
        h.granted_at(b3).unwrap(),
        h.granted_at(b2).unwrap(),
    );
    assert!(t3 >= secs(45.0), "{t3:?}");
    assert!(
        t3 < t5 && t5 < t2,
        "interactive, normal, batch: {t3:?} {t5:?} {t2:?}"
    );
}

#[test]
fn levels_combine_conservatively_and_learned_limits_are_kept() {
    let mut h = Harness::without_cold_start();
    let a = h.acquire(1, |r| r.key = key("a"));
    let b = h.acquire(2, |r| r.key = key("b"));
    // Key a learned 100 rpm with 90 left, key b 100 rpm with 40 left and 9,000 itpm.
    h.report_with(
        h.lease(a).unwrap(),
        success(),
        RateLimitHeaders::parse(
            [
                ("anthropic-ratelimit-requests-limit", "100"),
                ("anthropic-ratelimit-requests-remaining", "90"),
            ],
            wall0(),
        ),
    );
    h.report_with(
        h.lease(b).unwrap(),
        success(),
        RateLimitHeaders::parse(
            [
                ("anthropic-ratelimit-requests-limit", "100"),
                ("anthropic-ratelimit-requests-remaining", "40"),
                ("anthropic-ratelimit-input-tokens-limit", "9000"),
            ],
            wall0(),
        ),
    );
    let a = h.acquire(3, |r| r.key = key("a"));
    h.report_with(h.lease(a).unwrap(), success(), org_headers("org-1", &[]));
    let b = h.acquire(4, |r| r.key = key("b"));
    h.report_with(h.lease(b).unwrap(), success(), org_headers("org-1", &[]));
    let merged = &h.budgets_of(&account("org-1"))[0];
    assert_eq!(merged.limits.rpm, Some(100));
    assert_eq!(merged.limits.itpm, Some(9000), "learned by b only, kept");
    // Never more than the lower of the two (b's 40, less its next call).
    assert!(merged.available.requests.unwrap() <= 39, "{merged:?}");
}

#[test]
fn a_new_token_joins_its_accounts_pause_after_one_request() {
    let mut h = Harness::new(BrokerConfig::default());
    // An old token of the account, paused for a minute by a 429.
    let old = h.acquire(1, |r| r.key = key("token-1"));
    h.report_with(
        h.lease(old).unwrap(),
        rate_limited(60.0, "rate limited"),
        org_headers("org-sub", &[]),
    );
    // The refreshed token is new to pacer: one request goes out, the others wait for it.
    let first = h.acquire(2, |r| r.key = key("token-2"));
    let second = h.acquire(3, |r| r.key = key("token-2"));
    let third = h.acquire(4, |r| r.key = key("token-2"));
    assert!(h.lease(first).is_some());
    assert!(h.lease(second).is_none() && h.lease(third).is_none());
    // Its answer names the account: the others now wait out the account's pause, well past
    // the first-contact hold.
    h.now += secs(1.0);
    h.observe(h.lease(first).unwrap(), &org_headers("org-sub", &[]));
    h.run_until(secs(59.0));
    assert!(h.lease(second).is_none() && h.lease(third).is_none());
    // When it ends, the account (which knows no limit) lets one call out first again.
    h.run_until(secs(61.0));
    assert!(h.lease(second).is_some() && h.lease(third).is_none());
    h.success(h.lease(second).unwrap(), 1, 1);
    assert!(h.lease(third).is_some());
}

fn spent_window(reset_in: u64, window: &str) -> RateLimitHeaders {
    let reset = (1_800_000_000 + reset_in).to_string();
    let status = format!("anthropic-ratelimit-unified-{window}-status");
    let utilization = format!("anthropic-ratelimit-unified-{window}-utilization");
    let reset_name = format!("anthropic-ratelimit-unified-{window}-reset");
    RateLimitHeaders::parse(
        [
            ("anthropic-organization-id", "org-sub"),
            ("retry-after", reset_in.to_string().as_str()),
            ("anthropic-ratelimit-unified-status", "rejected"),
            ("anthropic-ratelimit-unified-reset", reset.as_str()),
            (status.as_str(), "rejected"),
            (utilization.as_str(), "1.0"),
            (reset_name.as_str(), reset.as_str()),
        ],
        wall0(),
    )
}

fn window_429() -> Settlement {
    Settlement::RateLimited {
        retry_after: None,
        message: Some("This request would exceed your account's rate limit.".into()),
        rejection: Some(pacer_api::Answer {
            status: 429,
            headers: vec![("retry-after".into(), "7200".into())],
            body: b"{\"type\":\"error\"}".to_vec(),
        }),
    }
}

#[test]
fn a_spent_window_locks_the_account_out_until_its_reset() {
    let mut h = Harness::new(BrokerConfig::default());
    let first = h.acquire(1, |r| r.key = key("token"));
    let waiting = h.acquire(2, |r| r.key = key("token"));
    h.report_with(
        h.lease(first).unwrap(),
        window_429(),
        spent_window(7200, "5h"),
    );
    // The waiter is refused at once, with the reset; so is every later request, any class.
    let refused = h.rejected(waiting).expect("refused");
    assert_eq!(refused.until, Some(wall0() + secs(7200.0)));
    assert!(refused.reason.contains("5h"), "{}", refused.reason);
    let later = h.acquire(3, |r| {
        r.key = key("token");
        r.model = OPUS.into();
    });
    let refused = h.rejected(later).expect("refused").clone();
    let budget = refused.budget.expect("the budget that refused");
    assert_eq!(budget.owner, account("org-sub"));
    let replay = h
        .broker
        .rejection(&budget, h.now)
        .expect("the API's own 429");
    assert_eq!(replay.body, b"{\"type\":\"error\"}");
    assert!(
        h.events
            .iter()
            .any(|e| matches!(e, Event::LockedOut { .. }))
    );
    // Two hours later it opens again.
    h.run_until(secs(7201.0));
    assert!(
        h.events
            .iter()
            .any(|e| matches!(e, Event::LockoutEnded { .. }))
    );
    let after = h.acquire(4, |r| r.key = key("token"));
    assert!(h.lease(after).is_some());
}

#[test]
fn a_model_window_locks_out_its_class_only_and_an_administrator_lifts_it() {
    let mut h = Harness::new(BrokerConfig::default());
    let first = h.acquire(1, |r| {
        r.key = key("token");
        r.model = OPUS.into();
    });
    h.report_with(
        h.lease(first).unwrap(),
        window_429(),
        spent_window(86_400, "7d_opus"),
    );
    let opus = h.acquire(2, |r| {
        r.key = key("token");
        r.model = OPUS.into();
    });
    assert!(h.rejected(opus).is_some());
    let sonnet = h.acquire(3, |r| r.key = key("token"));
    assert!(
        h.lease(sonnet).is_some(),
        "sonnet is not in the opus window"
    );
    let out = h.broker.pause(h.now, key("token"), OPUS, h.now);
    h.collect(out);
    let again = h.acquire(4, |r| {
        r.key = key("token");
        r.model = OPUS.into();
    });
    assert!(h.lease(again).is_some(), "`pacer pause --for 0` lifted it");
}

#[test]
fn a_429_asking_for_longer_than_max_hold_locks_its_class_out() {
    let mut h = Harness::with_limits("sonnet", rpm(100));
    let a = h.acquire(1, |_| {});
    h.report(h.lease(a).unwrap(), rate_limited(3600.0, "rate limited"));
    let b = h.acquire(2, |_| {});
    let refused = h
        .rejected(b)
        .expect("refused at once, not held for an hour");
    assert_eq!(refused.until, Some(wall0() + secs(3600.0)));
    let opus = h.acquire(3, |r| r.model = OPUS.into());
    assert!(h.lease(opus).is_some(), "another class is not locked out");
    // An absurd wait is believed for 8 days at most.
    h.report(h.lease(opus).unwrap(), rate_limited(1e9, "rate limited"));
    let d = h.acquire(5, |r| r.model = OPUS.into());
    let until = h.rejected(d).unwrap().until.unwrap();
    assert_eq!(until, wall0() + secs(8.0 * 24.0 * 3600.0));
}

#[test]
fn grouping_by_key_keeps_keys_apart_and_ties_by_hand_join_them() {
    let mut config = BrokerConfig::default();
    config.accounts.by_organization = false;
    config.accounts.tied.insert(key("c"), "team".into());
    config.accounts.tied.insert(key("d"), "team".into());
    let mut h = Harness::new(config);
    for (conn, name) in [(1, "a"), (2, "b")] {
        let t = h.acquire(conn, |r| r.key = key(name));
        h.report_with(h.lease(t).unwrap(), success(), org_headers("org-1", &[]));
    }
    assert_eq!(h.budgets_of(&BudgetOwner::Key(key("a"))).len(), 1);
    assert_eq!(h.budgets_of(&BudgetOwner::Key(key("b"))).len(), 1);
    let c = h.acquire(3, |r| r.key = key("c"));
    let d = h.acquire(4, |r| r.key = key("d"));
    assert!(h.lease(c).is_some());
    assert!(
        h.lease(d).is_none(),
        "one budget: d waits for c's first contact"
    );
    let team = h.budgets_of(&BudgetOwner::Account("team".into()));
    assert_eq!(team.len(), 1);
}

#[test]
fn windows_report_their_crossings() {
    let mut h = Harness::new(BrokerConfig::default());
    let mut crossings = Vec::new();
    for (conn, utilization) in [(1, "0.5"), (2, "0.8"), (3, "0.85"), (4, "0.95"), (5, "1.0")] {
        let t = h.acquire(conn, |r| r.key = key("token"));
        let headers = RateLimitHeaders::parse(
            [
                ("anthropic-ratelimit-unified-status", "allowed"),
                ("anthropic-ratelimit-unified-5h-status", "allowed"),
                ("anthropic-ratelimit-unified-5h-utilization", utilization),
            ],
            wall0(),
        );
        h.events.clear();
        h.report_with(h.lease(t).unwrap(), success(), headers);
        crossings.push(
            h.events
                .iter()
                .filter(|e| matches!(e, Event::Window { .. }))
                .count(),
        );
    }
    // 50 % is news (a new window), 80 % crosses 75 %, 85 % does not cross anything, 95 %
    // crosses 90 %, 100 % crosses 100 %.
    assert_eq!(crossings, [1, 1, 0, 1, 1]);
    let accounts = h.broker.accounts(h.now);
    assert_eq!(accounts[0].windows[0].utilization, Some(1.0));
}

#[test]
fn links_lockouts_and_windows_survive_a_snapshot() {
    let mut h = Harness::new(BrokerConfig::default());
    let first = h.acquire(1, |r| r.key = key("token"));
    h.report_with(
        h.lease(first).unwrap(),
        window_429(),
        spent_window(7200, "5h"),
    );
    let saved = h.broker.snapshot(h.now);
    let json = serde_json::to_string(&saved).unwrap();
    let saved: BrokerState = serde_json::from_str(&json).unwrap();
    let t1 = h.now + secs(60.0);
    let wall1 = wall0() + secs(60.0);
    let mut restored = Broker::new(
        BrokerConfig::default(),
        TimeBase {
            instant: t1,
            wall: wall1,
        },
        1,
    );
    restored.restore(saved, wall0(), t1, wall1);
    let out = restored.acquire(
        t1,
        Ticket {
            conn: ConnId(9),
            request: 1,
        },
        &Acquire {
            key: key("token"),
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
    let Some(Output::Answer {
        response: Response::Rejected(refused),
        ..
    }) = out.iter().find(|o| matches!(o, Output::Answer { .. }))
    else {
        panic!("{out:?}")
    };
    assert_eq!(refused.until, Some(wall0() + secs(7200.0)));
    let budget = refused.budget.clone().unwrap();
    assert_eq!(budget.owner, account("org-sub"), "the link survived");
    assert!(
        restored.rejection(&budget, t1).is_some(),
        "and the 429 to replay"
    );
    let accounts = restored.accounts(t1);
    assert_eq!(accounts[0].windows[0].name, "5h");
}

#[test]
fn a_state_file_from_before_accounts_still_loads() {
    let old = r#"{"budgets":[{"key":"0123456789abcdef","model_class":"sonnet","learned":[50,null,null],
        "levels":[10.0,null,null],"paused_until":null,"input_average":{"value":0.0,"samples":0},
        "output_average":{"value":0.0,"samples":0}}],"overloads":[],"blocked":[],"next_lease":7}"#;
    let saved: BrokerState = serde_json::from_str(old).unwrap();
    let mut broker = Broker::new(
        BrokerConfig::default(),
        TimeBase {
            instant: Instant::now(),
            wall: wall0(),
        },
        1,
    );
    let now = broker.time_base().instant;
    broker.restore(saved, wall0(), now, wall0());
    let status = broker.status(now);
    assert_eq!(status[0].limits.rpm, Some(50));
    assert_eq!(
        status[0].budget.owner,
        BudgetOwner::Key("0123456789abcdef".parse().unwrap())
    );
}
