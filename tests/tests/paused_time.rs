//! Time-driven paths of the daemon's I/O on tokio's paused clock: no real sleeps, and waits of
//! minutes pass in an instant.

use std::time::Duration;

use pacer_client::{AcquireRequest, Outcome, Usage};
use pacer_tests::TestDaemon;
use pacer_tests::mock::{MockConfig, MockUpstream};
use serde_json::json;
use tokio::time::Instant;

#[tokio::test(start_paused = true)]
async fn a_detached_lease_frees_its_slot_when_its_ttl_expires() {
    let wall = std::time::Instant::now();
    let daemon = TestDaemon::start("[limits.sonnet]\nmax_in_flight = 1\n").await;
    let client = daemon.client().await;
    let request = || AcquireRequest::new("sk-ant-paused", "claude-sonnet-4-5");
    let held = client
        .acquire(request().detached(Duration::from_secs(600)))
        .await
        .unwrap();
    held.detach();
    let started = Instant::now();
    let permit = client.acquire(request()).await.unwrap();
    let waited = started.elapsed();
    assert!(waited >= Duration::from_secs(600), "{waited:?}");
    assert!(waited < Duration::from_secs(620), "{waited:?}");
    permit
        .report(Outcome::Success {
            usage: Usage::default(),
            headers: Vec::new(),
        })
        .await
        .unwrap();
    println!("virtual {waited:?}, wall {:?}", wall.elapsed());
}

#[tokio::test(start_paused = true)]
async fn an_upstream_429_is_held_and_retried_when_its_pause_ends() {
    let mock = MockUpstream::start(MockConfig {
        rpm: 1,
        ..Default::default()
    })
    .await;
    let upstream = mock.url().parse().unwrap();
    let daemon = TestDaemon::start_with("", |config| config.gateway.upstream = upstream).await;
    let body = json!({"model": "claude-sonnet-4-5", "max_tokens": 16,
                      "messages": [{"role": "user", "content": "hi"}]});
    let http = reqwest::Client::new();
    let send = |base: String| {
        http.post(format!("{base}/v1/messages"))
            .header("x-api-key", "sk-ant-paused")
            .json(&body)
            .send()
    };
    // Someone else spends the minute's only request behind pacer's back.
    assert_eq!(send(mock.url()).await.unwrap().status(), 200);

    // Through the gateway: a 429 with retry-after 60 s, held, and retried when it has passed.
    let started = Instant::now();
    let response = send(daemon.gateway_url().await).await.unwrap();
    let waited = started.elapsed();
    assert_eq!(response.status(), 200);
    let stats = mock.stats();
    assert_eq!((stats.ok, stats.rate_limited), (2, 1), "{stats:?}");
    assert!(waited >= Duration::from_secs(60), "{waited:?}");
    assert!(waited < Duration::from_secs(65), "{waited:?}");
}
