//! Accounts as the API counts them, against real pacerd over real HTTP and the socket: keys of
//! one organization, rotating subscription tokens, spent windows.

use std::time::{Duration, SystemTime};

use pacer_client::{AcquireRequest, Error, KeyFingerprint};
use pacer_tests::mock::{MockConfig, MockUpstream, Plan};
use pacer_tests::{TestDaemon, budget_status};
use serde_json::{Value, json};
use tokio::time::Instant;

const ORG: &str = "5a1f0c3e-0000-4000-8000-00000000a11e";

fn message() -> Value {
    json!({"model": "claude-sonnet-4-5", "max_tokens": 16,
           "messages": [{"role": "user", "content": "hi"}]})
}

/// A POST to `/v1/messages` with an API key, or an OAuth token (`sk-ant-oat…`) as a bearer.
async fn post(http: &reqwest::Client, base: &str, key: &str) -> reqwest::Response {
    let request = http
        .post(format!("{base}/v1/messages"))
        .header("anthropic-version", "2023-06-01")
        .json(&message());
    let request = if key.starts_with("sk-ant-oat") {
        request.bearer_auth(key)
    } else {
        request.header("x-api-key", key)
    };
    request.send().await.unwrap()
}

async fn daemon_for(mock: &MockUpstream, max_hold: Duration) -> TestDaemon {
    TestDaemon::in_front_of(&mock.url(), "", max_hold).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_keys_of_one_organization_share_its_limit_without_a_stampede() {
    let mock = MockUpstream::start(MockConfig {
        rpm: 60,
        latency: Duration::from_millis(50),
        organizations: vec![
            ("sk-ant-claude".into(), ORG.into()),
            ("sk-ant-scripts".into(), ORG.into()),
        ],
        ..MockConfig::default()
    })
    .await;
    let daemon = daemon_for(&mock, Duration::from_secs(60)).await;
    let base = daemon.gateway_url().await;
    let http = reqwest::Client::new();
    let deadline = Instant::now() + Duration::from_secs(15);
    let mut workers = Vec::new();
    for key in ["sk-ant-claude", "sk-ant-scripts"] {
        for _ in 0..8 {
            let (http, base) = (http.clone(), base.clone());
            workers.push(tokio::spawn(async move {
                let (mut ok, mut failed) = (0u32, 0u32);
                while Instant::now() < deadline {
                    match post(&http, &base, key).await.status().as_u16() {
                        200 => ok += 1,
                        _ => failed += 1,
                    }
                }
                (ok, failed)
            }));
        }
    }
    let (mut ok, mut failed) = (0, 0);
    for worker in workers {
        let (o, f) = worker.await.unwrap();
        ok += o;
        failed += f;
    }
    let stats = mock.stats();
    println!("ok {ok}, failed {failed}, upstream {stats:?}");
    assert_eq!(failed, 0, "no call fails");
    assert!(
        stats.rate_limited <= 2,
        "at most the first contacts are refused upstream: {stats:?}"
    );
    assert!(ok >= 60, "the organization's minute is used: {ok}");
    // One budget, the organization's, with both keys.
    let client = daemon.client().await;
    let claude = budget_status(&client, "sk-ant-claude", "sonnet").await;
    let scripts = budget_status(&client, "sk-ant-scripts", "sonnet").await;
    assert_eq!(claude.budget, scripts.budget);
    let status = client.status().await.unwrap();
    let account = status
        .accounts
        .iter()
        .find(|a| a.owner == claude.budget.owner)
        .expect("the account");
    assert_eq!(account.keys.len(), 2);
    assert!(account.owner.to_string().starts_with("org-"));
}

fn subscription(five_hour: u64) -> MockConfig {
    MockConfig {
        subscription: Some(Plan {
            five_hour,
            ..Plan::default()
        }),
        ..MockConfig::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rotated_token_joins_its_accounts_pause_after_one_request() {
    let mock = MockUpstream::start(subscription(1000)).await;
    let daemon = daemon_for(&mock, Duration::from_secs(3)).await;
    let base = daemon.gateway_url().await;
    let http = reqwest::Client::new();
    assert_eq!(post(&http, &base, "sk-ant-oat01-first").await.status(), 200);
    // The account is paused for a minute (as a 429 would).
    let until = SystemTime::now() + Duration::from_secs(60);
    daemon
        .client()
        .await
        .pause(
            KeyFingerprint::of("sk-ant-oat01-first"),
            "claude-sonnet-4-5",
            until,
        )
        .await
        .unwrap();
    let before = mock.stats().ok;
    // The token is refreshed: three requests at once with the new one.
    let mut requests = Vec::new();
    for _ in 0..3 {
        let (http, base) = (http.clone(), base.clone());
        requests.push(tokio::spawn(async move {
            post(&http, &base, "sk-ant-oat01-second")
                .await
                .status()
                .as_u16()
        }));
    }
    let mut statuses = Vec::new();
    for request in requests {
        statuses.push(request.await.unwrap());
    }
    statuses.sort();
    assert_eq!(
        statuses,
        [200, 429, 429],
        "one request, then the account's pause"
    );
    assert_eq!(mock.stats().ok, before + 1, "one request reached the API");
    let client = daemon.client().await;
    let first = budget_status(&client, "sk-ant-oat01-first", "sonnet").await;
    let second = budget_status(&client, "sk-ant-oat01-second", "sonnet").await;
    assert_eq!(
        first.budget, second.budget,
        "both tokens draw on the account"
    );
}

/// Spends the subscription's 5-hour window (two requests), then returns the rejection.
async fn spend_window(http: &reqwest::Client, base: &str, token: &str) -> reqwest::Response {
    for _ in 0..2 {
        assert_eq!(post(http, base, token).await.status(), 200);
    }
    post(http, base, token).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_spent_window_answers_with_the_apis_own_429_and_sends_nothing_upstream() {
    let mock = MockUpstream::start(subscription(2)).await;
    let daemon = daemon_for(&mock, Duration::from_secs(60)).await;
    let base = daemon.gateway_url().await;
    let http = reqwest::Client::new();
    let token = "sk-ant-oat01-window";
    let rejected = spend_window(&http, &base, token).await;
    assert_eq!(rejected.status(), 429);
    let first_headers = rejected.headers().clone();
    let first_body = rejected.text().await.unwrap();
    assert!(first_body.contains("account's rate limit"), "{first_body}");
    assert_eq!(mock.stats().window_rejected, 1);
    let seen = mock.stats().requests;

    for token in [token, "sk-ant-oat01-refreshed"] {
        let started = Instant::now();
        let again = post(&http, &base, token).await;
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "answered at once"
        );
        assert_eq!(again.status(), 429);
        let headers = again.headers().clone();
        for name in [
            "anthropic-ratelimit-unified-status",
            "anthropic-ratelimit-unified-reset",
            "anthropic-ratelimit-unified-representative-claim",
            "anthropic-ratelimit-unified-5h-status",
            "anthropic-organization-id",
        ] {
            assert_eq!(headers.get(name), first_headers.get(name), "{name}");
        }
        assert!(headers.get("x-should-retry").is_none(), "{headers:?}");
        let retry_after: u64 = headers["retry-after"].to_str().unwrap().parse().unwrap();
        assert!(retry_after > 7000 && retry_after <= 7200, "{retry_after}");
        assert_eq!(again.text().await.unwrap(), first_body);
    }
    // The refreshed token's one request went upstream (to learn its account); nothing more.
    assert!(mock.stats().requests <= seen + 1, "{:?}", mock.stats());
    let seen = mock.stats().requests;
    assert_eq!(post(&http, &base, token).await.status(), 429);
    assert_eq!(
        mock.stats().requests,
        seen,
        "nothing upstream until the reset"
    );

    // Socket clients are refused with the reset time.
    let client = daemon.client().await;
    let refused = client
        .acquire(AcquireRequest::new(token, "claude-opus-4-1"))
        .await
        .unwrap_err();
    let Error::Rejected { reason, until } = &refused else {
        panic!("{refused}")
    };
    assert!(reason.contains("5h"), "{reason}");
    let left = until.unwrap().duration_since(SystemTime::now()).unwrap();
    assert!(left > Duration::from_secs(7000), "{left:?}");
    let status = client.status().await.unwrap();
    let account = status
        .accounts
        .iter()
        .find(|a| !a.windows.is_empty())
        .expect("the subscription's account");
    let five_hour = account.windows.iter().find(|w| w.name == "5h").unwrap();
    assert_eq!(five_hour.status.as_deref(), Some("rejected"));
    assert_eq!(five_hour.utilization, Some(1.0));
    assert_eq!(account.lockouts.len(), 1);

    // An administrator lifts it: the next request goes upstream again.
    client
        .pause(
            KeyFingerprint::of(token),
            "claude-sonnet-4-5",
            SystemTime::now(),
        )
        .await
        .unwrap();
    post(&http, &base, token).await;
    assert_eq!(mock.stats().requests, seen + 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_keeps_the_links_and_the_window_lockout() {
    let mock = MockUpstream::start(subscription(2)).await;
    let daemon = daemon_for(&mock, Duration::from_secs(60)).await;
    let http = reqwest::Client::new();
    let token = "sk-ant-oat01-restart";
    let base = daemon.gateway_url().await;
    let rejected = spend_window(&http, &base, token).await;
    assert_eq!(rejected.status(), 429);
    let body = rejected.text().await.unwrap();

    let daemon = daemon.restart().await;
    let seen = mock.stats().requests;
    let again = post(&http, &daemon.gateway_url().await, token).await;
    assert_eq!(again.status(), 429);
    assert_eq!(
        again.text().await.unwrap(),
        body,
        "the API's own 429, still"
    );
    assert_eq!(
        mock.stats().requests,
        seen,
        "the lockout survived the restart"
    );
    let client = daemon.client().await;
    let status = client.status().await.unwrap();
    assert!(
        status
            .accounts
            .iter()
            .any(|a| a.keys.contains(&KeyFingerprint::of(token))),
        "the link survived: {:?}",
        status.accounts
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_workspaces_lower_limit_holds_beside_its_organizations() {
    let mock = MockUpstream::start(MockConfig {
        rpm: 60,
        organizations: vec![
            ("sk-ant-org".into(), ORG.into()),
            ("sk-ant-ws-1".into(), ORG.into()),
            ("sk-ant-ws-2".into(), ORG.into()),
        ],
        workspaces: vec![pacer_tests::mock::Workspace {
            id: "wrkspc_mock".into(),
            keys: vec!["sk-ant-ws-1".into(), "sk-ant-ws-2".into()],
            rpm: 6,
        }],
        ..MockConfig::default()
    })
    .await;
    let daemon = daemon_for(&mock, Duration::from_secs(30)).await;
    let base = daemon.gateway_url().await;
    let http = reqwest::Client::new();
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut workers = Vec::new();
    for key in ["sk-ant-org", "sk-ant-ws-1", "sk-ant-ws-2"] {
        for _ in 0..3 {
            let (http, base) = (http.clone(), base.clone());
            workers.push(tokio::spawn(async move {
                let mut ok = 0u32;
                while Instant::now() < deadline {
                    let status = post(&http, &base, key).await.status();
                    assert!(status == 200 || status == 429, "{status}");
                    ok += u32::from(status == 200);
                }
                (key, ok)
            }));
        }
    }
    let (mut workspace, mut organization) = (0, 0);
    for worker in workers {
        let (key, ok) = worker.await.unwrap();
        if key.contains("ws") {
            workspace += ok;
        } else {
            organization += ok;
        }
    }
    let stats = mock.stats();
    println!("workspace {workspace}, organization {organization}, upstream {stats:?}");
    assert!(stats.rate_limited <= 2, "{stats:?}");
    // 6 a minute for ten seconds, after a full bucket: 6 + 1, and one first contact per key.
    assert!(workspace <= 9, "the workspace's limit held: {workspace}");
    assert!(
        organization >= 40,
        "the organization's key used the rest: {organization}"
    );
    let status = daemon.client().await.status().await.unwrap();
    let ws = status
        .accounts
        .iter()
        .find(|a| a.parent.is_some())
        .expect("the workspace's account");
    assert_eq!(ws.keys.len(), 2);
}
