//! Subscription windows by priority through the gateway, against the mock API's subscription:
//! pacing batch work to a weekly window's elapsed time, and what `pacer status`, `--json` and
//! `/metrics` show of the windows.

use std::time::Duration;

use pacer_tests::TestDaemon;
use pacer_tests::mock::{MockConfig, MockUpstream, Plan};
use serde_json::{Value, json};

async fn call(http: &reqwest::Client, base: &str, priority: &str) -> reqwest::Response {
    http.post(format!("{base}/v1/messages"))
        .header("authorization", "Bearer sk-ant-oat01-windows")
        .header("x-pacer-priority", priority)
        .json(&json!({"model": "claude-sonnet-4-5", "max_tokens": 16,
                      "messages": [{"role": "user", "content": "hi"}]}))
        .send()
        .await
        .unwrap()
}

/// Four batch workers, each calling until pacer holds it; returns the calls served.
async fn batch_until_held(http: &reqwest::Client, base: &str) -> u64 {
    let workers: Vec<_> = (0..4)
        .map(|_| {
            let (http, base) = (http.clone(), base.to_owned());
            tokio::spawn(async move {
                let mut ok = 0;
                loop {
                    let response = call(&http, &base, "batch").await;
                    if response.status() != 200 {
                        let body: Value = response.json().await.unwrap();
                        let message = body["error"]["message"].as_str().unwrap_or_default();
                        assert!(message.starts_with("pacer: batch work is"), "{message}");
                        return ok;
                    }
                    ok += 1;
                }
            })
        })
        .collect();
    let mut served = 0;
    for worker in workers {
        served += worker.await.unwrap();
    }
    served
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batch_is_paced_to_a_weekly_windows_elapsed_time_and_the_keyboard_still_goes() {
    // A weekly window of 100 calls, half gone and 20 % used.
    let mock = MockUpstream::start(MockConfig {
        subscription: Some(Plan {
            seven_day: 100,
            seven_day_used: 20,
            seven_day_reset: Duration::from_secs(7 * 24 * 3600 / 2),
            ..Plan::default()
        }),
        ..MockConfig::default()
    })
    .await;
    let toml = "[windows]\nbatch = 0.7\npace = true\n";
    let daemon = TestDaemon::start_with(toml, |config| {
        config.gateway.upstream = mock.url().parse().unwrap();
        config.gateway.max_hold = Duration::from_secs(2);
        config.broker.max_hold = Duration::from_secs(2);
    })
    .await;
    let base = daemon.gateway_url().await;
    let http = reqwest::Client::new();
    assert_eq!(call(&http, &base, "interactive").await.status(), 200);
    let batch = batch_until_held(&http, &base).await;
    // Paced: 70 % × half the week gone = 35 %, not 70 %: 8 to 21 more calls.
    assert!((8..=21).contains(&batch), "{batch} batch calls");
    assert_eq!(call(&http, &base, "interactive").await.status(), 200);
    // The status shows the pace and that batch is held; the metrics too.
    let status = daemon.client().await.status().await.unwrap();
    let weekly = status
        .accounts
        .iter()
        .flat_map(|a| a.windows.iter())
        .find(|w| w.name == "7d")
        .unwrap();
    let batch = weekly.ceiling(pacer_protocol::Priority::Batch).unwrap();
    assert!(batch.held, "{weekly:?}");
    assert!((batch.ceiling - 0.35).abs() < 0.01, "{weekly:?}");
    assert!(weekly.share.is_some(), "{weekly:?}");
    let metrics = http
        .get(format!("{base}/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.lines().any(|l| l.starts_with("pacer_window_held{")
            && l.contains("batch")
            && l.ends_with(" 1.0")),
        "{metrics}"
    );
    assert!(
        metrics.contains("pacer_window_estimated_utilization{"),
        "{metrics}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_is_kept_with_its_account_and_its_share_of_the_calls() {
    let mock = MockUpstream::start(MockConfig {
        subscription: Some(Plan::default()),
        ..MockConfig::default()
    })
    .await;
    let daemon = TestDaemon::in_front_of(&mock.url(), "", Duration::from_secs(5)).await;
    let base = daemon.gateway_url().await;
    let http = reqwest::Client::new();
    let session = "3f2a9c1d-0b6e-4c1e-9d7a-5e5b5b5b5b5b";
    for (id, calls) in [(session, 3), ("aaaaaaaa-0000-4000-8000-000000000000", 1)] {
        for _ in 0..calls {
            let response = http
                .post(format!("{base}/v1/messages"))
                .header("authorization", "Bearer sk-ant-oat01-session")
                .header("x-claude-code-session-id", id)
                .json(&json!({"model": "claude-sonnet-4-5", "max_tokens": 16,
                              "messages": [{"role": "user", "content": "hi"}]}))
                .send()
                .await
                .unwrap();
            assert_eq!(response.status(), 200);
        }
    }
    let status = daemon.client().await.status().await.unwrap();
    let ours = status
        .sessions
        .iter()
        .find(|s| s.id == session)
        .expect("the whole session id is kept");
    assert_eq!(ours.calls_last_hour, 3);
    assert!((ours.share_last_hour.unwrap() - 0.75).abs() < 1e-9);
    assert!(
        matches!(&ours.owner, Some(pacer_protocol::BudgetOwner::Account(a)) if a.starts_with("org-"))
    );
}
