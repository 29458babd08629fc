//! The HTTP gateway over real HTTP, in front of the mock Anthropic API.

use std::time::Duration;

use pacer_client::{AcquireRequest, Error};
use pacer_tests::mock::{Inject, MockConfig, MockUpstream};
use pacer_tests::{TestDaemon, budget_status, wait_until};
use serde_json::{Value, json};
use tokio::sync::mpsc;

const KEY: &str = "sk-ant-gateway-test";

/// A daemon whose gateway forwards to `mock`, with extra TOML configuration.
async fn daemon_for(mock: &MockUpstream, toml: &str, max_hold: Duration) -> TestDaemon {
    TestDaemon::in_front_of(&mock.url(), toml, max_hold).await
}

fn http() -> reqwest::Client {
    reqwest::Client::builder().build().unwrap()
}

fn message(model: &str, stream: bool) -> Value {
    json!({"model": model, "max_tokens": 64, "stream": stream,
           "messages": [{"role": "user", "content": "hi"}]})
}

async fn post(base: &str, key: &str, body: &Value) -> reqwest::Response {
    http()
        .post(format!("{base}/v1/messages"))
        .header("x-api-key", key)
        .header("anthropic-version", "2023-06-01")
        .json(body)
        .send()
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn everything_passes_through_with_the_prefix_stripped() {
    let mock = MockUpstream::start(MockConfig::default()).await;
    let daemon = daemon_for(&mock, "", Duration::from_secs(10)).await;
    let gateway = daemon.gateway_url().await;
    let base = format!("{gateway}/s/job-1~batch");

    let models = http()
        .get(format!("{base}/v1/models?limit=5"))
        .header("x-api-key", KEY)
        .header("x-pacer-priority", "interactive")
        .send()
        .await
        .unwrap();
    assert_eq!(models.status(), 200);
    let head = http().head(&base).send().await.unwrap();
    assert_eq!(head.status(), 200);
    let response = http()
        .post(format!("{base}/v1/messages?beta=true"))
        .header("x-api-key", KEY)
        .header("x-pacer-client", "named-client")
        .header("x-claude-code-session-id", "session-9")
        .json(&message("claude-sonnet-4-5", false))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["usage"]["output_tokens"], 16);

    let seen = mock.seen();
    let paths: Vec<(&str, &str, Option<&str>)> = seen
        .iter()
        .map(|s| (s.method.as_str(), s.path.as_str(), s.query.as_deref()))
        .collect();
    assert_eq!(
        paths,
        [
            ("GET", "/v1/models", Some("limit=5")),
            ("HEAD", "/", None),
            ("POST", "/v1/messages", Some("beta=true")),
        ]
    );
    let post = &seen[2];
    let header = |name: &str| {
        post.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    };
    assert_eq!(
        header("host"),
        Some(mock.addr().to_string().as_str()),
        "Host is rewritten"
    );
    assert_eq!(
        header("x-pacer-client"),
        None,
        "pacer's own headers stay behind"
    );
    assert_eq!(header("x-claude-code-session-id"), Some("session-9"));
    assert_eq!(header("x-api-key"), Some(KEY));

    // The call was gated and settled, and the limits were learned from the headers.
    assert!(
        wait_until(Duration::from_secs(5), || async {
            budget_status(&daemon.client().await, KEY, "sonnet")
                .await
                .in_flight
                == 0
        })
        .await
    );
    let sonnet = budget_status(&daemon.client().await, KEY, "sonnet").await;
    assert_eq!(sonnet.granted, 1);
    assert_eq!(sonnet.limits.rpm, Some(120));
    assert_eq!(sonnet.limits.itpm, Some(100_000));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streams_reach_the_client_event_by_event_and_settle_with_their_usage() {
    let mock = MockUpstream::start(MockConfig {
        output_tokens: 6,
        event_gap: Duration::from_millis(300),
        ..MockConfig::default()
    })
    .await;
    let daemon = daemon_for(&mock, "", Duration::from_secs(10)).await;
    let base = daemon.gateway_url().await;
    let mut response = post(&base, KEY, &message("claude-haiku-4-5", true)).await;
    assert_eq!(response.status(), 200);
    assert!(
        response.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/event-stream")
    );
    // The first event arrives while the upstream is still streaming: nothing is buffered.
    let first = response.chunk().await.unwrap().unwrap();
    assert!(String::from_utf8_lossy(&first).contains("message_start"));
    let in_flight = budget_status(&daemon.client().await, KEY, "haiku")
        .await
        .in_flight;
    assert_eq!(in_flight, 1, "the permit is held while the stream runs");
    let mut rest = Vec::new();
    while let Some(chunk) = response.chunk().await.unwrap() {
        rest.extend_from_slice(&chunk);
    }
    let text = String::from_utf8_lossy(&rest);
    assert!(text.contains("message_stop"), "{text}");
    assert!(
        wait_until(Duration::from_secs(5), || async {
            budget_status(&daemon.client().await, KEY, "haiku")
                .await
                .in_flight
                == 0
        })
        .await
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_mid_stream_error_reaches_the_client_untouched() {
    let mock = MockUpstream::start(MockConfig::default()).await;
    mock.inject(Inject {
        midstream_error: 1,
        ..Inject::default()
    });
    let daemon = daemon_for(&mock, "", Duration::from_secs(10)).await;
    let base = daemon.gateway_url().await;
    let response = post(&base, KEY, &message("claude-sonnet-4-5", true)).await;
    assert_eq!(response.status(), 200);
    let text = response.text().await.unwrap();
    assert!(text.contains("event: error"), "{text}");
    assert!(text.contains("overloaded_error"), "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn interactive_requests_wait_less_than_batch_ones_under_saturation() {
    let mock = MockUpstream::start(MockConfig::default()).await;
    let daemon = daemon_for(
        &mock,
        "[limits.sonnet]\nrpm = 60\n",
        Duration::from_secs(60),
    )
    .await;
    let gateway = daemon.gateway_url().await;
    // Spend the bucket.
    let client = daemon.client().await;
    for _ in 0..60 {
        let permit = client
            .acquire(AcquireRequest::new(KEY, "claude-sonnet-4-5"))
            .await
            .unwrap();
        permit.release().await.ok();
        let permit = client
            .acquire(AcquireRequest::new(KEY, "claude-sonnet-4-5").timeout(Duration::ZERO))
            .await;
        if let Ok(permit) = permit {
            std::mem::drop(permit);
        }
    }
    let (tx, mut rx) = mpsc::unbounded_channel();
    for i in 0..4 {
        let base = format!("{gateway}/s/batch-{i}~batch");
        let tx = tx.clone();
        tokio::spawn(async move {
            let response = post(&base, KEY, &message("claude-sonnet-4-5", false)).await;
            let _ = tx.send(("batch", response.status().as_u16()));
        });
    }
    assert!(
        wait_until(Duration::from_secs(5), || async {
            budget_status(&daemon.client().await, KEY, "sonnet")
                .await
                .waiting
                == 4
        })
        .await
    );
    let base = format!("{gateway}/s/human~interactive");
    tokio::spawn(async move {
        let response = post(&base, KEY, &message("claude-sonnet-4-5", false)).await;
        let _ = tx.send(("interactive", response.status().as_u16()));
    });
    let first = tokio::time::timeout(Duration::from_secs(10), rx.recv())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(first, ("interactive", 200));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upstream_429_is_held_and_retried_when_the_pause_ends() {
    // 60 requests per minute upstream; pacer does not know it yet, and lets a burst of 64 go
    // without waiting for a first answer (as it does once the first-contact hold has run
    // out). It overruns the bucket (the answers that would teach pacer the limit take 300 ms
    // to come back): the excess gets 429s, which pause everyone, and are retried after.
    let mock = MockUpstream::start(MockConfig {
        rpm: 60,
        latency: Duration::from_millis(300),
        ..MockConfig::default()
    })
    .await;
    let upstream = mock.url().parse().unwrap();
    let daemon = TestDaemon::start_with("", |config| {
        config.gateway.upstream = upstream;
        config.gateway.max_hold = Duration::from_secs(60);
        config.broker.cold_start_hold = Duration::ZERO;
    })
    .await;
    let base = daemon.gateway_url().await;
    let mut tasks = Vec::new();
    for _ in 0..64 {
        let base = base.clone();
        tasks.push(tokio::spawn(async move {
            post(&base, KEY, &message("claude-sonnet-4-5", false))
                .await
                .status()
                .as_u16()
        }));
    }
    for task in tasks {
        assert_eq!(task.await.unwrap(), 200, "every client succeeds");
    }
    let stats = mock.stats();
    assert!(stats.rate_limited >= 1, "{stats:?}");
    assert_eq!(stats.ok, 64);
    let sonnet = budget_status(&daemon.client().await, KEY, "sonnet").await;
    assert_eq!(sonnet.rate_limited, stats.rate_limited);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn past_max_hold_the_gateway_answers_429_with_the_real_wait() {
    let mock = MockUpstream::start(MockConfig {
        rpm: 1,
        ..MockConfig::default()
    })
    .await;
    let daemon = daemon_for(&mock, "", Duration::from_secs(1)).await;
    let base = daemon.gateway_url().await;
    assert_eq!(
        post(&base, KEY, &message("claude-sonnet-4-5", false))
            .await
            .status(),
        200
    );
    // pacer has learned 1 rpm with nothing left: the next would wait about a minute.
    let response = post(&base, KEY, &message("claude-sonnet-4-5", false)).await;
    assert_eq!(response.status(), 429);
    let retry_after: u64 = response.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((50..=60).contains(&retry_after), "{retry_after}");
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["type"], "error");
    assert_eq!(body["error"]["type"], "rate_limit_error");
    assert_eq!(
        mock.stats().rate_limited,
        0,
        "the upstream never saw the excess request"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_spend_cap_fails_every_peer_of_the_key_fast() {
    let mock = MockUpstream::start(MockConfig::default()).await;
    mock.inject(Inject {
        spend_cap: 1,
        ..Inject::default()
    });
    let daemon = daemon_for(&mock, "", Duration::from_secs(60)).await;
    let base = daemon.gateway_url().await;
    let first = post(&base, KEY, &message("claude-sonnet-4-5", false)).await;
    assert_eq!(first.status(), 429);
    assert!(first.headers().get("retry-after").is_none());
    let first_body = first.text().await.unwrap();
    assert!(first_body.contains("enforced_spend_limit_reached"));
    let seen_before = mock.stats().requests;
    // The same key fails fast with the same error, whatever the model, without reaching the API.
    let again = post(&base, KEY, &message("claude-opus-4-1", false)).await;
    assert_eq!(again.status(), 429);
    assert_eq!(again.text().await.unwrap(), first_body);
    assert_eq!(mock.stats().requests, seen_before);
    // Socket clients of that key are refused too; other keys are served.
    let refused = daemon
        .client()
        .await
        .acquire(AcquireRequest::new(KEY, "claude-haiku-4-5"))
        .await
        .unwrap_err();
    assert!(matches!(refused, Error::Rejected { .. }), "{refused}");
    assert_eq!(
        post(&base, "sk-other", &message("claude-sonnet-4-5", false))
            .await
            .status(),
        200
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn overloaded_answers_are_retried_with_the_shared_backoff_then_passed_on() {
    let mock = MockUpstream::start(MockConfig::default()).await;
    let daemon = daemon_for(&mock, "", Duration::from_secs(60)).await;
    let base = daemon.gateway_url().await;
    mock.inject(Inject {
        overloaded: 2,
        ..Inject::default()
    });
    assert_eq!(
        post(&base, KEY, &message("claude-sonnet-4-5", false))
            .await
            .status(),
        200
    );
    assert_eq!(mock.stats().overloaded, 2);
    mock.inject(Inject {
        overloaded: 10,
        ..Inject::default()
    });
    let response = post(&base, KEY, &message("claude-sonnet-4-5", false)).await;
    assert_eq!(response.status(), 529);
    // One try and three retries.
    assert_eq!(mock.stats().overloaded, 2 + 4);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_overloads_retry_after_ms_sets_the_classs_backoff_as_for_any_client() {
    let mock = MockUpstream::start(MockConfig::default()).await;
    let daemon = daemon_for(&mock, "", Duration::from_secs(60)).await;
    let base = daemon.gateway_url().await;
    // `retry-after-ms` wins over the coarser `retry-after`, in the gateway as in the client
    // library (one reading of what a 529 says).
    mock.inject(Inject {
        overloaded: 1,
        overloaded_retry_after: Some("0".into()),
        overloaded_retry_after_ms: Some("4000".into()),
        ..Inject::default()
    });
    let request = tokio::spawn(async move {
        post(&base, KEY, &message("claude-sonnet-4-5", false))
            .await
            .status()
    });
    let client = daemon.client().await;
    let mut backoff = None;
    for _ in 0..200 {
        let status = client.status().await.unwrap();
        let sonnet = status
            .budgets
            .iter()
            .find(|b| &*b.budget.model_class == "sonnet");
        if let Some(until) = sonnet.and_then(|b| b.overloaded_until) {
            backoff = Some(until);
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let until = backoff.expect("the 529 starts a backoff");
    let left = until
        .duration_since(std::time::SystemTime::now())
        .unwrap_or_default();
    assert!(left > Duration::from_millis(2500), "backoff of {left:?}");
    assert_eq!(request.await.unwrap(), 200);
    assert_eq!(mock.stats().overloaded, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_upstream_gives_a_502_naming_it() {
    let dead = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let upstream = format!("http://{}", dead.local_addr().unwrap());
    drop(dead);
    let daemon = TestDaemon::start_with("", |config| {
        config.gateway.upstream = upstream.parse().unwrap();
    })
    .await;
    let base = daemon.gateway_url().await;
    let response = post(&base, KEY, &message("claude-sonnet-4-5", false)).await;
    assert_eq!(response.status(), 502);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["type"], "error");
    let message = body["error"]["message"].as_str().unwrap();
    assert!(message.contains(&upstream), "{message}");
    // Nothing was spent: the permit was given back.
    let sonnet = budget_status(&daemon.client().await, KEY, "sonnet").await;
    assert_eq!(sonnet.in_flight, 0);
    let models = http()
        .get(format!("{base}/v1/models"))
        .send()
        .await
        .unwrap();
    assert_eq!(models.status(), 502);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bodies_over_32_mib_are_refused() {
    let mock = MockUpstream::start(MockConfig::default()).await;
    let daemon = daemon_for(&mock, "", Duration::from_secs(10)).await;
    let base = daemon.gateway_url().await;
    let huge = vec![b'x'; (32 << 20) + 1];
    let response = http()
        .post(format!("{base}/v1/messages"))
        .header("x-api-key", KEY)
        .body(huge)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 413);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["error"]["type"], "request_too_large");
    assert_eq!(mock.stats().requests, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_disconnects_mid_stream_cancels_the_upstream_call_and_settles() {
    let mock = MockUpstream::start(MockConfig {
        output_tokens: 40,
        event_gap: Duration::from_millis(500),
        ..MockConfig::default()
    })
    .await;
    let daemon = daemon_for(&mock, "", Duration::from_secs(10)).await;
    let base = daemon.gateway_url().await;
    let mut response = post(&base, KEY, &message("claude-sonnet-4-5", true)).await;
    let first = response.chunk().await.unwrap().unwrap();
    assert!(String::from_utf8_lossy(&first).contains("message_start"));
    assert_eq!(mock.in_progress(), 1);
    drop(response);
    // The stream had ~20 s to go; the upstream request ends as soon as the gateway drops it.
    assert!(wait_until(Duration::from_secs(5), || async { mock.in_progress() == 0 }).await);
    assert!(
        wait_until(Duration::from_secs(5), || async {
            budget_status(&daemon.client().await, KEY, "sonnet")
                .await
                .in_flight
                == 0
        })
        .await
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cache_heavy_streamed_bodies_stop_reserving_their_size_in_tokens() {
    cache_heavy_bodies_stop_reserving_their_size(true).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cache_heavy_json_bodies_stop_reserving_their_size_in_tokens() {
    cache_heavy_bodies_stop_reserving_their_size(false).await;
}

async fn cache_heavy_bodies_stop_reserving_their_size(stream: bool) {
    // ITPM 60,000. A 90 KB body reserves ~22,500 tokens before calibration; it really counts a
    // few dozen (the big prompt is cached). Ten in a row only go through quickly if the
    // estimate learns that — which it does from each response's usage, streamed or not.
    let mock = MockUpstream::start(MockConfig::default()).await;
    let daemon = daemon_for(
        &mock,
        "[limits.sonnet]\nitpm = 60000\n",
        Duration::from_secs(600),
    )
    .await;
    let base = format!("{}/s/claude-code~interactive", daemon.gateway_url().await);
    let system = json!([{"type": "text", "text": "x".repeat(90_000), "cache_control": {"type": "ephemeral"}}]);
    let mut body = message("claude-sonnet-4-5", stream);
    body["system"] = system;
    for _ in 0..10 {
        let response = tokio::time::timeout(Duration::from_secs(60), post(&base, KEY, &body))
            .await
            .expect("requests keep flowing");
        assert_eq!(response.status(), 200);
        response.text().await.unwrap();
        if !stream {
            // A body of known length settles as its last byte goes out, not later.
            assert_eq!(
                budget_status(&daemon.client().await, KEY, "sonnet")
                    .await
                    .in_flight,
                0
            );
        }
    }
    let sonnet = budget_status(&daemon.client().await, KEY, "sonnet").await;
    let available = sonnet.available.input_tokens.unwrap();
    // Uncalibrated, ten reservations of ~22,500 would have left the bucket empty (each waiting
    // for the refill); calibrated, only the first call's cache write (~22,500) is spent.
    assert!(available > 30_000, "{available} input tokens left");
}
