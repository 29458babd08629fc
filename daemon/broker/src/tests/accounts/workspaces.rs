//! Workspaces, on the fake clock: a workspace's own lower limit, pauses naming the organization
//! or one workspace, and what an organization learns from its workspaces.

use super::*;

fn workspace_headers(workspace: &str, rpm: &str, remaining: &str) -> RateLimitHeaders {
    RateLimitHeaders::parse(
        [
            ("anthropic-organization-id", "org-ws"),
            ("anthropic-workspace-id", workspace),
            ("anthropic-ratelimit-requests-limit", rpm),
            ("anthropic-ratelimit-requests-remaining", remaining),
        ],
        wall0(),
    )
}

#[test]
fn a_workspaces_lower_limit_holds_for_its_keys_and_the_organizations_for_all() {
    let mut h = Harness::new(BrokerConfig::default());
    // A key of the organization itself: 10 requests a minute, 9 left.
    let plain = h.acquire(1, |r| r.key = key("plain"));
    let org = [
        ("anthropic-ratelimit-requests-limit", "10"),
        ("anthropic-ratelimit-requests-remaining", "9"),
    ];
    h.report_with(
        h.lease(plain).unwrap(),
        success(),
        org_headers("org-ws", &org),
    );
    // A key of a workspace limited to 4 a minute.
    let first = h.acquire(2, |r| r.key = key("ws"));
    h.report_with(
        h.lease(first).unwrap(),
        success(),
        workspace_headers("wrkspc_1", "4", "3"),
    );
    let workspace = pacer_protocol::budget::workspace_label("wrkspc_1");
    let accounts = h.broker.accounts(h.now);
    let ws = accounts
        .iter()
        .find(|a| a.owner == BudgetOwner::Account(workspace.clone()))
        .expect("the workspace's account");
    assert_eq!(ws.parent, Some(account("org-ws")));
    // The workspace gets its 3 left at once, no more.
    let ws_tickets: Vec<_> = (0..6)
        .map(|i| h.acquire(10 + i, |r| r.key = key("ws")))
        .collect();
    let granted = ws_tickets.iter().filter(|&&t| h.lease(t).is_some()).count();
    assert_eq!(granted, 3);
    // The organization's key gets what is left of the organization's minute: 9 less the
    // workspace's 4 (its first call counted too, once it was known to be the workspace's).
    let plain_tickets: Vec<_> = (0..8)
        .map(|i| h.acquire(20 + i, |r| r.key = key("plain")))
        .collect();
    let granted = plain_tickets
        .iter()
        .filter(|&&t| h.lease(t).is_some())
        .count();
    assert_eq!(
        granted, 5,
        "the organization's limit holds for all its keys"
    );
}

#[test]
fn a_429_naming_the_organization_pauses_every_workspace_and_one_naming_a_workspace_only_it() {
    let mut h = Harness::new(BrokerConfig::default());
    let plain = h.acquire(1, |r| r.key = key("plain"));
    h.report_with(
        h.lease(plain).unwrap(),
        success(),
        org_headers("org-ws", &[]),
    );
    let ws = h.acquire(2, |r| r.key = key("ws"));
    h.report_with(
        h.lease(ws).unwrap(),
        success(),
        workspace_headers("wrkspc_1", "100", "99"),
    );
    // The workspace's own limit: only its keys wait.
    let ws = h.acquire(3, |r| r.key = key("ws"));
    h.report(
        h.lease(ws).unwrap(),
        rate_limited(
            30.0,
            "This request would exceed your workspace's rate limit",
        ),
    );
    let (ws_waits, plain_goes) = (
        h.acquire(4, |r| r.key = key("ws")),
        h.acquire(5, |r| r.key = key("plain")),
    );
    assert!(h.lease(ws_waits).is_none());
    assert!(h.lease(plain_goes).is_some());
    // The organization's limit: everyone waits.
    h.report(
        h.lease(plain_goes).unwrap(),
        rate_limited(
            60.0,
            "This request would exceed your organization's rate limit",
        ),
    );
    let plain_waits = h.acquire(6, |r| r.key = key("plain"));
    assert!(h.lease(plain_waits).is_none());
    h.run_until(secs(45.0));
    assert!(
        h.lease(ws_waits).is_none(),
        "the workspace's pause is over, its organization's is not"
    );
    h.run_until(secs(61.0));
    assert!(h.lease(ws_waits).is_some() && h.lease(plain_waits).is_some());
}

#[test]
fn an_organization_learns_from_its_workspaces_that_its_limit_is_at_least_theirs() {
    let mut h = Harness::new(BrokerConfig::default());
    let a = h.acquire(1, |r| r.key = key("ws-a"));
    h.report_with(
        h.lease(a).unwrap(),
        success(),
        workspace_headers("wrkspc_a", "40", "39"),
    );
    let org = |h: &Harness| {
        h.budgets_of(&account("org-ws"))
            .first()
            .and_then(|b| b.limits.rpm)
    };
    assert_eq!(org(&h), Some(40));
    let b = h.acquire(2, |r| r.key = key("ws-b"));
    h.report_with(
        h.lease(b).unwrap(),
        success(),
        workspace_headers("wrkspc_b", "60", "59"),
    );
    assert_eq!(org(&h), Some(60));
    let c = h.acquire(3, |r| r.key = key("ws-a"));
    h.report_with(
        h.lease(c).unwrap(),
        success(),
        workspace_headers("wrkspc_a", "40", "38"),
    );
    assert_eq!(org(&h), Some(60), "never lowered by a workspace");
}

#[test]
fn a_limit_inferred_from_a_workspace_gives_way_to_the_organizations_own() {
    let mut h = Harness::new(BrokerConfig::default());
    // A workspace first: its organization infers at least 6 a minute.
    let ws = h.acquire(1, |r| r.key = key("ws"));
    h.report_with(
        h.lease(ws).unwrap(),
        success(),
        workspace_headers("wrkspc_1", "6", "5"),
    );
    // Then the organization's own key: 60 a minute, 58 left. The bucket starts over from
    // that, rather than crawling up from the inferred 6.
    let plain = h.acquire(2, |r| r.key = key("plain"));
    let org = [
        ("anthropic-ratelimit-requests-limit", "60"),
        ("anthropic-ratelimit-requests-remaining", "58"),
    ];
    h.report_with(
        h.lease(plain).unwrap(),
        success(),
        org_headers("org-ws", &org),
    );
    let budget = &h.budgets_of(&account("org-ws"))[0];
    assert_eq!(budget.limits.rpm, Some(60));
    assert!(budget.available.requests.unwrap() >= 57, "{budget:?}");
}
