//! Budgets kept in a shared store, on the fake clock: the broker asks for capacity, grants
//! what the store grants, waits as long as the store says, takes in what other daemons
//! published, and serves from its share while the store is away.

use super::*;
use pacer_api::unified::{UnifiedWindow, WindowState};

/// A broker sharing its budgets (sonnet: 60 RPM configured), with claims answered by the test.
fn sharing() -> Harness {
    let mut h = Harness::with_limits("sonnet", rpm(60));
    let out = h.broker.set_sharing(h.now, Sharing::Shared);
    h.collect(out);
    h
}

fn granted(taken_before: f64) -> ClaimAnswer {
    ClaimAnswer::Granted {
        taken_before,
        levels: PerKind::new(Some(10.0), None, None),
        limits: rpm(60),
    }
}

impl Harness {
    fn answer_claim(&mut self, answer: ClaimAnswer) {
        let claim = self.claims.last().expect("a claim is out").id;
        let out = self.broker.claim_answered(self.now, claim, answer);
        self.collect(out);
    }
}

#[test]
fn a_shared_budget_grants_only_what_the_store_grants_one_claim_at_a_time() {
    let mut h = sharing();
    let first = h.acquire(1, |_| {});
    let second = h.acquire(2, |_| {});
    // Even with a full local bucket, nothing is granted without the store; one claim is out.
    assert!(h.lease(first).is_none());
    assert_eq!(h.claims.len(), 1);
    h.answer_claim(granted(0.0));
    assert!(h.lease(first).is_some());
    // The next head's claim goes out once the first is answered.
    assert_eq!(h.claims.len(), 2);
    assert!(h.lease(second).is_none());
}

#[test]
fn a_refused_claim_asks_again_when_the_store_said_and_not_before() {
    let mut h = sharing();
    let ticket = h.acquire(1, |_| {});
    h.answer_claim(ClaimAnswer::Refused {
        wait: secs(2.0),
        limits: rpm(60),
    });
    h.run_until(secs(1.9));
    assert_eq!(h.claims.len(), 1, "asked again before the store's wait");
    h.run_until(secs(2.1));
    assert_eq!(h.claims.len(), 2);
    h.answer_claim(granted(1.0));
    assert!(h.granted_at(ticket).is_some_and(|at| at >= secs(2.0)));
}

#[test]
fn a_report_settles_in_the_store_and_a_429_is_published_to_the_others() {
    let mut h = sharing();
    let ticket = h.acquire(1, |_| {});
    h.answer_claim(granted(3.0));
    let lease = h.lease(ticket).unwrap();
    h.report(
        lease,
        Settlement::RateLimited {
            retry_after: Some(secs(30.0)),
            message: None,
            rejection: None,
        },
    );
    assert!(
        h.shared
            .iter()
            .any(|op| matches!(op, SharedOp::Settle { claim, .. }
        if *claim == h.claims[0].id))
    );
    assert!(
        h.shared.iter().any(|op| matches!(op,
            SharedOp::Publish(ClusterEvent::Pause { for_ms, .. }) if *for_ms == 30_000)),
        "{:?}",
        h.shared
    );
}

#[test]
fn a_pause_another_daemon_published_holds_every_waiter_until_it_ends() {
    let mut h = sharing();
    let first = h.acquire(1, |_| {});
    h.answer_claim(granted(0.0));
    assert!(h.lease(first).is_some());
    let budget = h.status().budget;
    let out = h.broker.apply_shared(
        h.now,
        "elsewhere",
        ClusterEvent::Pause {
            budget,
            for_ms: 10_000,
            reason: "429 elsewhere".into(),
            drain: None,
        },
    );
    h.collect(out);
    // What came from another daemon is not published again.
    assert!(!h.shared.iter().any(|op| matches!(op, SharedOp::Publish(_))));
    let claims = h.claims.len();
    let waiting = h.acquire(2, |_| {});
    h.run_until(secs(9.9));
    assert_eq!(h.claims.len(), claims, "a claim went out during the pause");
    assert!(h.lease(waiting).is_none());
    h.run_until(secs(10.1));
    assert_eq!(h.claims.len(), claims + 1);
    h.answer_claim(granted(1.0));
    assert!(h.granted_at(waiting).is_some_and(|at| at >= secs(10.0)));
}

#[test]
fn without_the_store_a_daemon_serves_its_share_and_charges_it_on_return() {
    let mut h = sharing();
    let first = h.acquire(1, |_| {});
    h.answer_claim(granted(0.0));
    h.success(h.lease(first).unwrap(), 10, 10);
    // The store is away; three daemons were seen: a third of 60 RPM, from a third of the
    // 10 requests the store last said were left.
    let out = h
        .broker
        .set_sharing(h.now, Sharing::Fallback { share: 1.0 / 3.0 });
    h.collect(out);
    let tickets: Vec<_> = (0..10).map(|i| h.acquire(10 + i, |_| {})).collect();
    let at_once = tickets.iter().filter(|&&t| h.lease(t).is_some()).count();
    assert_eq!(at_once, 3, "a third of the 10 left, whole requests only");
    // Then 20 a minute: one every 3 s.
    h.run_until(secs(3.1));
    assert_eq!(tickets.iter().filter(|&&t| h.lease(t).is_some()).count(), 4);
    for &t in &tickets {
        if let Some(lease) = h.lease(t) {
            h.success(lease, 10, 10);
        }
    }
    let claims = h.claims.len();
    // Back: what was spent meanwhile is charged, and the queue goes to the store again.
    let out = h.broker.set_sharing(h.now, Sharing::Shared);
    h.collect(out);
    let charged = h.shared.iter().find_map(|op| match op {
        SharedOp::Charge { spent, .. } => Some(*spent),
        _ => None,
    });
    assert_eq!(charged.map(|c| c[LimitKind::Requests]), Some(4));
    assert_eq!(h.claims.len(), claims + 1);
}

#[test]
fn subscription_windows_are_told_to_the_others_when_they_move_and_taken_in_from_them() {
    let mut h = sharing();
    let mut published = Vec::new();
    for (conn, utilization) in [(1, "0.500"), (2, "0.503"), (3, "0.52")] {
        let ticket = h.acquire(conn, |_| {});
        h.answer_claim(granted(0.0));
        let headers = RateLimitHeaders::parse(
            [
                ("anthropic-ratelimit-unified-status", "allowed"),
                ("anthropic-ratelimit-unified-5h-status", "allowed"),
                ("anthropic-ratelimit-unified-5h-utilization", utilization),
                ("anthropic-ratelimit-unified-5h-reset", "1800003600"),
            ],
            SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000),
        );
        h.shared.clear();
        h.report_with(
            h.lease(ticket).unwrap(),
            Settlement::Success {
                usage: Usage::default(),
            },
            headers,
        );
        published.push(
            h.shared
                .iter()
                .filter(|op| matches!(op, SharedOp::Publish(ClusterEvent::Windows { .. })))
                .count(),
        );
    }
    // New, then less than a point of utilization (not worth a message), then two points.
    assert_eq!(published, [1, 0, 1]);

    // Another daemon's report of another account's windows shows here.
    let other = BudgetOwner::Account("org-elsewhere".into());
    let out = h.broker.apply_shared(
        h.now,
        "elsewhere",
        ClusterEvent::Windows {
            owner: other.clone(),
            windows: WindowsReport {
                status: Some(WindowState::AllowedWarning),
                overage: None,
                overage_in_use: None,
                windows: vec![UnifiedWindow {
                    name: "7d".into(),
                    status: Some(WindowState::AllowedWarning),
                    utilization: Some(0.91),
                    reset: Some(SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_500_000)),
                }],
            },
        },
    );
    h.collect(out);
    let accounts = h.broker.accounts(h.now);
    let elsewhere = accounts
        .iter()
        .find(|a| a.owner == other)
        .expect("the other daemon's account is shown");
    assert_eq!(elsewhere.windows[0].utilization, Some(0.91));
    // Not published again.
    assert!(!h.shared.iter().any(|op| matches!(op,
        SharedOp::Publish(ClusterEvent::Windows { owner, .. }) if *owner == other)));
}
