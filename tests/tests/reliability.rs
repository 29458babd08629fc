//! The second hardening round, against real pacerd: no spelling of a path goes around a paused
//! budget, no upload holds the daemon's memory, no absurd answer or junk model jams a budget
//! or fills its tables, no string from outside bloats what `pacer status` reads, no secret in
//! an upstream URL reaches a log, and a dead upstream does not flood the log.

use std::time::{Duration, SystemTime};

use pacer_client::{AcquireRequest, KeyFingerprint};
use pacer_tests::mock::{Inject, MockConfig, MockUpstream};
use pacer_tests::{Pacerd, TestDaemon, budget_status};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const KEY: &str = "sk-ant-reliability";
const SONNET: &str = "claude-sonnet-4-5";

fn message(model: &str) -> String {
    json!({"model": model, "max_tokens": 16, "messages": [{"role": "user", "content": "hi"}]})
        .to_string()
}

async fn post(http: &reqwest::Client, url: &str, body: String) -> reqwest::Response {
    http.post(url)
        .header("x-api-key", KEY)
        .header("anthropic-version", "2023-06-01")
        .header("content-type", "application/json")
        .body(body)
        .send()
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_spelling_of_the_messages_path_is_held_while_its_budget_is_paused() {
    let mock = MockUpstream::start(MockConfig::default()).await;
    let daemon = TestDaemon::in_front_of(&mock.url(), "", Duration::from_secs(2)).await;
    let base = daemon.gateway_url().await;
    let http = reqwest::Client::new();
    assert_eq!(
        post(&http, &format!("{base}/v1/messages"), message(SONNET))
            .await
            .status(),
        200
    );
    let client = daemon.client().await;
    client
        .pause(
            KeyFingerprint::of(KEY),
            SONNET,
            SystemTime::now() + Duration::from_secs(60),
        )
        .await
        .unwrap();
    let before = mock.stats().requests;
    for path in [
        "/v1/messages",
        "//v1/messages",
        "/v1//messages",
        "/v1/%6dessages",
        "/v1/%256dessages",
        "/V1/messages",
        "/v1/messages;x",
        "/v1/messages/",
        "/v1%2Fmessages",
        "/v1/messages%3f",
        "/v1/messages%23",
        "/v1/messages%00",
        "/v1/messages%20",
        "/v1/messages%09",
        "/v1/messages.",
        "/v1/messages%2e",
    ] {
        let response = post(&http, &format!("{base}{path}"), message(SONNET)).await;
        assert_eq!(response.status(), 429, "{path}");
        let body: Value = response.json().await.unwrap();
        let text = body["error"]["message"].as_str().unwrap();
        assert!(text.contains("paused by administrator"), "{path}: {text}");
    }
    assert_eq!(
        mock.stats().requests,
        before,
        "nothing reached the upstream"
    );
}

/// Sends a request's headers declaring `declared` bytes of body, then `sent` bytes of it, and
/// leaves the connection open (stalled).
async fn stalled_upload(addr: &str, declared: usize, sent: usize) -> tokio::net::TcpStream {
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let head = format!(
        "POST /v1/messages HTTP/1.1\r\nhost: {addr}\r\nx-api-key: {KEY}\r\n\
         content-type: application/json\r\ncontent-length: {declared}\r\n\r\n"
    );
    stream.write_all(head.as_bytes()).await.unwrap();
    let chunk = vec![b' '; 1 << 20];
    let mut left = sent;
    while left > 0 {
        let n = left.min(chunk.len());
        if stream.write_all(&chunk[..n]).await.is_err() {
            // Refused early (503) and closed: nothing more to send.
            break;
        }
        left -= n;
    }
    stream
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stalled_uploads_are_bounded_together_and_a_small_request_is_still_served() {
    let mock = MockUpstream::start(MockConfig::default()).await;
    let daemon = tokio::task::spawn_blocking({
        let url = mock.url();
        move || Pacerd::start_in_temp_dir(&["--upstream", &url])
    })
    .await
    .unwrap();
    let base = daemon.gateway_url().unwrap();
    let addr = base.trim_start_matches("http://").to_owned();
    // Twenty connections, each sending 30 MiB of a declared 32 MiB body, then stalling.
    let uploads: Vec<_> = (0..20)
        .map(|_| {
            let addr = addr.clone();
            tokio::spawn(async move { stalled_upload(&addr, 32 << 20, 30 << 20).await })
        })
        .collect();
    let mut streams = Vec::new();
    for upload in uploads {
        streams.push(upload.await.unwrap());
    }
    // Those past the bound were answered 503 with a retry-after at once.
    let mut refused = 0;
    for stream in &mut streams {
        let mut answer = [0u8; 512];
        if let Ok(Ok(n)) =
            tokio::time::timeout(Duration::from_millis(200), stream.read(&mut answer)).await
        {
            let text = String::from_utf8_lossy(&answer[..n]);
            if text.starts_with("HTTP/1.1 503") {
                assert!(text.contains("retry-after: 1"), "{text}");
                refused += 1;
            }
        }
    }
    assert!(refused >= 15, "{refused} of 20 refused");
    let rss = daemon.rss_kib().unwrap();
    assert!(rss < 300 << 10, "pacerd holds {} MiB", rss >> 10);
    let response = post(
        &reqwest::Client::new(),
        &format!("{base}/v1/messages"),
        message(SONNET),
    )
    .await;
    assert_eq!(
        response.status(),
        200,
        "a small request is served meanwhile"
    );
    drop(streams);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn absurd_usage_and_an_invalid_request_leave_the_budget_usable() {
    let mock = MockUpstream::start(MockConfig {
        itpm: 100_000,
        ..MockConfig::default()
    })
    .await;
    let daemon = TestDaemon::in_front_of(&mock.url(), "", Duration::from_secs(30)).await;
    let url = format!("{}/v1/messages", daemon.gateway_url().await);
    let http = reqwest::Client::new();
    assert_eq!(post(&http, &url, message(SONNET)).await.status(), 200);
    // An answer claiming 10¹⁸ input tokens.
    mock.inject(Inject {
        absurd_usage: 1,
        absurd_input_tokens: 1_000_000_000_000_000_000,
        ..Inject::default()
    });
    assert_eq!(post(&http, &url, message(SONNET)).await.status(), 200);
    let client = daemon.client().await;
    let budget = budget_status(&client, KEY, "sonnet").await;
    let level = budget.available.input_tokens.unwrap();
    assert!(level > -100_000, "ITPM left at {level}");
    assert!(
        budget.input_tokens < 1_000_000,
        "{} tokens believed",
        budget.input_tokens
    );
    // A 4 MB body the API refuses as invalid (400): its estimate is given back.
    let junk = "x".repeat(4_000_000);
    assert_eq!(post(&http, &url, junk).await.status(), 400);
    let budget = budget_status(&client, KEY, "sonnet").await;
    let level = budget.available.input_tokens.unwrap();
    assert!(level > -100_000, "ITPM left at {level} after a 400");
    // And the next request goes at once.
    let started = std::time::Instant::now();
    assert_eq!(post(&http, &url, message(SONNET)).await.status(), 200);
    assert!(started.elapsed() < Duration::from_secs(5));
    // The calibration learned nothing absurd either: a small body reserves a small estimate.
    let permit = client
        .acquire(AcquireRequest::new(KEY, SONNET).timeout(Duration::from_secs(5)))
        .await
        .unwrap();
    permit.release().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn models_the_api_does_not_have_leave_no_budget_behind() {
    let mock = MockUpstream::start(MockConfig {
        known_models: Some(vec![SONNET.into(), "claude-opus-4-1".into()]),
        ..MockConfig::default()
    })
    .await;
    let daemon = TestDaemon::in_front_of(&mock.url(), "", Duration::from_secs(30)).await;
    let url = format!("{}/v1/messages", daemon.gateway_url().await);
    let http = reqwest::Client::new();
    assert_eq!(post(&http, &url, message(SONNET)).await.status(), 200);
    // One valid key naming 10,500 models the API does not have.
    let total = 10_500u32;
    let workers: Vec<_> = (0..16u32)
        .map(|w| {
            let (http, url) = (http.clone(), url.clone());
            tokio::spawn(async move {
                for i in (w..total).step_by(16) {
                    let response = post(&http, &url, message(&format!("junk-{i}"))).await;
                    assert_eq!(response.status(), 404);
                }
            })
        })
        .collect();
    for worker in workers {
        worker.await.unwrap();
    }
    assert_eq!(mock.stats().not_found, u64::from(total));
    let status = daemon.client().await.status().await.unwrap();
    assert!(
        status.budgets.len() < 10,
        "{} budgets kept",
        status.budgets.len()
    );
    // A model never seen before is served, now and after a restart.
    assert_eq!(
        post(&http, &url, message("claude-opus-4-1")).await.status(),
        200
    );
    let daemon = daemon.restart().await;
    let url = format!("{}/v1/messages", daemon.gateway_url().await);
    assert_eq!(
        post(&http, &url, message("claude-opus-4-1")).await.status(),
        200
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_huge_429_is_neither_kept_whole_nor_allowed_to_break_status() {
    let mock = MockUpstream::start(MockConfig::default()).await;
    // A max_hold shorter than the 429's wait: it locks the class out, and the 429 is replayed.
    let daemon = TestDaemon::in_front_of(&mock.url(), "", Duration::from_millis(500)).await;
    let url = format!("{}/v1/messages", daemon.gateway_url().await);
    let http = reqwest::Client::new();
    assert_eq!(post(&http, &url, message(SONNET)).await.status(), 200);
    mock.inject(Inject {
        huge_429: 1,
        huge_429_bytes: 3 << 20,
        ..Inject::default()
    });
    let first = post(&http, &url, message(SONNET)).await;
    assert_eq!(first.status(), 429);
    let body = first.bytes().await.unwrap();
    assert!(
        body.len() < 128 << 10,
        "a 429 of {} bytes passed on",
        body.len()
    );
    let status = daemon
        .client()
        .await
        .status()
        .await
        .expect("status answers");
    let budget = status
        .budgets
        .iter()
        .find(|b| b.budget.model_class == "sonnet")
        .unwrap();
    let reason = budget.pause_reason.as_deref().unwrap_or_default();
    assert!(reason.len() <= 1100, "a reason of {} bytes", reason.len());
    // The state file keeps no megabytes of it.
    let daemon = daemon.restart().await;
    let state = std::fs::metadata(daemon.dir().join("state")).unwrap().len();
    assert!(state < 256 << 10, "a state file of {state} bytes");
    // A route URL of a megabyte is refused, naming why.
    let long = format!("https://example.com/{}", "x".repeat(1_000_000));
    let refused = daemon
        .client()
        .await
        .register_route(&long, "job")
        .await
        .unwrap_err();
    assert!(refused.to_string().contains("bytes long"), "{refused}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_over_long_client_name_is_the_clients_mistake() {
    let mock = MockUpstream::start(MockConfig::default()).await;
    let daemon = TestDaemon::in_front_of(&mock.url(), "", Duration::from_secs(5)).await;
    let url = format!("{}/v1/messages", daemon.gateway_url().await);
    let response = reqwest::Client::new()
        .post(&url)
        .header("x-api-key", KEY)
        .header("x-pacer-client", "c".repeat(300))
        .body(message(SONNET))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 400);
    let body: Value = response.json().await.unwrap();
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("client name"),
        "{body}"
    );
    assert_eq!(mock.stats().requests, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_password_or_token_of_the_upstream_url_is_shown() {
    let mock = MockUpstream::start(MockConfig::default()).await;
    let upstream = format!(
        "http://user:hunter2@{}/?token=s3cr3t",
        mock.url().trim_start_matches("http://")
    );
    let daemon = tokio::task::spawn_blocking(move || {
        Pacerd::start_in_temp_dir(&["--upstream", &upstream, "--log-stderr"])
    })
    .await
    .unwrap();
    let base = daemon.gateway_url().unwrap();
    let http = reqwest::Client::new();
    let health = http
        .get(format!("{base}/healthz"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let status = serde_json::to_string(&daemon.status()).unwrap();
    let logs = daemon.logs();
    for shown in [&health, &status, &logs] {
        assert!(
            !shown.contains("hunter2") && !shown.contains("s3cr3t"),
            "{shown}"
        );
    }
    assert!(health.contains(&mock.addr().to_string()), "{health}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_upstream_is_said_once_then_counted() {
    // Nothing listens on this port once the listener is dropped.
    let dead = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap()
    };
    let daemon = tokio::task::spawn_blocking(move || {
        Pacerd::start_in_temp_dir(&["--upstream", &format!("http://{dead}")])
    })
    .await
    .unwrap();
    let url = format!("{}/v1/messages", daemon.gateway_url().unwrap());
    let http = reqwest::Client::new();
    let workers: Vec<_> = (0..10)
        .map(|_| {
            let (http, url) = (http.clone(), url.clone());
            tokio::spawn(async move {
                for _ in 0..30 {
                    assert_eq!(post(&http, &url, message(SONNET)).await.status(), 502);
                }
            })
        })
        .collect();
    for worker in workers {
        worker.await.unwrap();
    }
    let logs = daemon.logs();
    let lines = logs.lines().count();
    assert!(lines <= 40, "{lines} log lines for 300 requests:\n{logs}");
    assert!(logs.contains("unreachable"), "{logs}");
}

#[test]
fn a_closed_pipe_ends_pacer_quietly() {
    let daemon = Pacerd::start_in_temp_dir(&[]);
    let mut child = std::process::Command::new(pacer_tests::binary("pacer"))
        .args(["status", "--json"])
        .env("PACER_SOCKET", daemon.socket())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // The reader goes away before pacer writes (as `| head -0` would).
    drop(child.stdout.take());
    let output = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert!(output.status.success(), "{:?}: {stderr}", output.status);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn waiters_and_detached_permits_are_bounded() {
    let daemon = TestDaemon::start("[limits.sonnet]\nrpm = 1\n").await;
    let client = daemon.client().await;
    let first = client
        .acquire(AcquireRequest::new(KEY, SONNET))
        .await
        .unwrap();
    // One connection may have 4,096 acquires waiting; the next is refused, naming why.
    let waiting: Vec<_> = (0..4096)
        .map(|_| {
            let client = client.clone();
            tokio::spawn(async move { client.acquire(AcquireRequest::new(KEY, SONNET)).await })
        })
        .collect();
    assert!(
        pacer_tests::wait_until(Duration::from_secs(30), || async {
            budget_status(&daemon.client().await, KEY, "sonnet")
                .await
                .waiting
                == 4096
        })
        .await
    );
    let refused = client
        .acquire(AcquireRequest::new(KEY, SONNET))
        .await
        .unwrap_err();
    assert!(
        refused.to_string().contains("4096 acquires waiting"),
        "{refused}"
    );
    for w in waiting {
        w.abort();
    }
    drop(first);
    // Detached permits (for scripts) outlive connections: 10,000 at most.
    let scripts = TestDaemon::start("").await;
    let client = scripts.client().await;
    let mut held = 0;
    let refused = loop {
        match client
            .acquire(
                AcquireRequest::new(KEY, "claude-haiku-4-5")
                    .detached(Duration::from_secs(600))
                    .timeout(Duration::from_secs(10)),
            )
            .await
        {
            Ok(permit) => {
                held += 1;
                std::mem::forget(permit);
            }
            Err(e) => break e,
        }
        assert!(held <= 10_000, "more than 10,000 detached permits");
    };
    assert_eq!(held, 10_000);
    assert!(
        refused.to_string().contains("detached permits"),
        "{refused}"
    );
}
