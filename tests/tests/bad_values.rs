//! Bad values from the network, from clients and from the state file, against real pacerd:
//! nothing odd may wave a request through unpaced, pin a whole model class for days, fill the
//! daemon's tables for good, or break what `pacer status` shows.

use std::time::{Duration, SystemTime};

use pacer_protocol::KeyFingerprint;
use pacer_tests::mock::{Inject, MockConfig, MockUpstream};
use pacer_tests::{Pacerd, TestDaemon, budget_json, budget_status};
use serde_json::{Value, json};

const KEY: &str = "sk-ant-real-key";

async fn daemon_for(mock: &MockUpstream, max_hold: Duration) -> TestDaemon {
    TestDaemon::in_front_of(&mock.url(), "", max_hold).await
}

async fn post_raw(
    http: &reqwest::Client,
    base: &str,
    key: &str,
    body: String,
) -> reqwest::Response {
    http.post(format!("{base}/v1/messages"))
        .header("x-api-key", key)
        .header("anthropic-version", "2023-06-01")
        .header("content-type", "application/json")
        .body(body)
        .send()
        .await
        .unwrap()
}

fn message(model: &str) -> String {
    json!({"model": model, "max_tokens": 16, "messages": [{"role": "user", "content": "hi"}]})
        .to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn junk_keys_and_models_cannot_fill_the_budget_table() {
    let mock = MockUpstream::start(MockConfig {
        known_keys: Some(vec![KEY.into()]),
        ..MockConfig::default()
    })
    .await;
    let daemon = daemon_for(&mock, Duration::from_secs(30)).await;
    let base = daemon.gateway_url().await;
    let http = reqwest::Client::new();
    // 10,050 requests with made-up keys and model names: every one a budget of its own, and
    // every one refused by the API.
    let total = 10_050u32;
    let workers: Vec<_> = (0..16u32)
        .map(|w| {
            let (http, base) = (http.clone(), base.clone());
            tokio::spawn(async move {
                for i in (w..total).step_by(16) {
                    let key = format!("sk-junk-{i}");
                    let response =
                        post_raw(&http, &base, &key, message(&format!("claude-junk-{i}"))).await;
                    assert_eq!(response.status(), 401);
                }
            })
        })
        .collect();
    for worker in workers {
        worker.await.unwrap();
    }
    assert_eq!(mock.stats().unauthorized, u64::from(total));

    let check = |daemon: TestDaemon| async move {
        // A real key with a model never seen before still gets its budget, and a permit.
        let response = post_raw(
            &http,
            &base_of(&daemon).await,
            KEY,
            message("claude-opus-4-1"),
        )
        .await;
        assert_eq!(response.status(), 200);
        // And the whole table still fits in what `pacer status` reads (in pages).
        let status = daemon
            .client()
            .await
            .status()
            .await
            .expect("status answers");
        assert!(
            status.budgets.len() > 5_000,
            "{} budgets",
            status.budgets.len()
        );
        assert!(
            status.budgets.len() <= 10_000,
            "{} budgets",
            status.budgets.len()
        );
        let real = budget_status(&daemon.client().await, KEY, "opus").await;
        assert_eq!(real.granted, 1);
        daemon
    };
    let daemon = check(daemon).await;
    // The same after a restart, from the state file.
    let http = reqwest::Client::new();
    let daemon = daemon.restart().await;
    let response = post_raw(
        &http,
        &daemon.gateway_url().await,
        KEY,
        message("claude-haiku-4-5"),
    )
    .await;
    assert_eq!(response.status(), 200);
    assert!(daemon.client().await.status().await.is_ok());
}

async fn base_of(daemon: &TestDaemon) -> String {
    daemon.gateway_url().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_model_name_no_model_has_is_a_400_not_a_wait() {
    let mock = MockUpstream::start(MockConfig::default()).await;
    let daemon = daemon_for(&mock, Duration::from_secs(30)).await;
    let base = daemon.gateway_url().await;
    let long = "m".repeat(300);
    let response = post_raw(&reqwest::Client::new(), &base, KEY, message(&long)).await;
    assert_eq!(response.status(), 400);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["error"]["type"], "invalid_request_error");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("300 bytes long"),
        "{body}"
    );
    assert_eq!(mock.stats().requests, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn odd_bodies_are_paced_with_defaults_never_waved_through() {
    let mock = MockUpstream::start(MockConfig::default()).await;
    let daemon = daemon_for(&mock, Duration::from_secs(30)).await;
    let base = daemon.gateway_url().await;
    let http = reqwest::Client::new();
    let odd = [
        r#"{"model":"claude-sonnet-4-5","max_tokens":5.0,"messages":[]}"#,
        r#"{"model":"claude-sonnet-4-5","max_tokens":"5","messages":[]}"#,
        r#"{"model":"claude-sonnet-4-5","max_tokens":1e3,"messages":[]}"#,
        r#"{"model":"claude-sonnet-4-5","max_tokens":-5,"messages":[]}"#,
        r#"{"model":"claude-junk","model":"claude-sonnet-4-5","max_tokens":5,"messages":[]}"#,
    ];
    for body in odd {
        post_raw(&http, &base, KEY, body.to_owned()).await;
    }
    // No model at all, and not even JSON: still a request against the key's limits.
    post_raw(
        &http,
        &base,
        KEY,
        r#"{"max_tokens":5,"messages":[]}"#.into(),
    )
    .await;
    post_raw(&http, &base, KEY, "not json".into()).await;
    let client = daemon.client().await;
    assert_eq!(budget_status(&client, KEY, "sonnet").await.granted, 5);
    assert_eq!(
        budget_status(&client, KEY, "unknown-model").await.granted,
        2
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_absurd_529_backoff_is_capped_and_pause_for_0_lifts_it() {
    let mock = MockUpstream::start(MockConfig::default()).await;
    let daemon = daemon_for(&mock, Duration::from_secs(120)).await;
    let base = daemon.gateway_url().await;
    mock.inject(Inject {
        overloaded: 1,
        overloaded_retry_after: Some("999999".into()),
        ..Inject::default()
    });
    let request = {
        let base = base.clone();
        tokio::spawn(async move {
            post_raw(
                &reqwest::Client::new(),
                &base,
                KEY,
                message("claude-sonnet-4-5"),
            )
            .await
            .status()
        })
    };
    let client = daemon.client().await;
    let mut until = None;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while until.is_none() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the 529 started no backoff"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
        let status = client.status().await.unwrap();
        until = status
            .budgets
            .iter()
            .filter(|b| b.budget.model_class == "sonnet")
            .find_map(|b| b.overloaded_until);
    }
    let left = until
        .unwrap()
        .duration_since(SystemTime::now())
        .unwrap_or_default();
    assert!(left <= Duration::from_secs(33), "a backoff of {left:?}");
    // An administrator lifts it at once.
    let out = pacer_tests::pacer(
        daemon.socket(),
        &["pause", "--model", "claude-sonnet-4-5", "--for", "0"],
        KEY,
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let status = tokio::time::timeout(Duration::from_secs(20), request)
        .await
        .expect("the held request went on once the backoff was lifted")
        .unwrap();
    assert_eq!(status, 200);
    let sonnet = budget_status(&client, KEY, "sonnet").await;
    assert_eq!(sonnet.overloaded_until, None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn blind_429s_back_off_and_release_one_request_at_a_time() {
    let mock = MockUpstream::start(MockConfig::default()).await;
    let daemon = daemon_for(&mock, Duration::from_secs(120)).await;
    let base = daemon.gateway_url().await;
    // Three 429s that give no usable wait.
    mock.inject(Inject {
        blind_429: 3,
        blind_retry_after: Some("abc".into()),
        ..Inject::default()
    });
    let requests: Vec<_> = (0..5)
        .map(|_| {
            let base = base.clone();
            tokio::spawn(async move {
                post_raw(
                    &reqwest::Client::new(),
                    &base,
                    KEY,
                    message("claude-sonnet-4-5"),
                )
                .await
                .status()
            })
        })
        .collect();
    for request in requests {
        assert_eq!(request.await.unwrap(), 200);
    }
    let stats = mock.stats();
    // Each blind 429 paused the budget, and one request went to find out whether it was
    // over: no lockstep retries from the held ones.
    assert_eq!(stats.rate_limited, 3, "{stats:?}");
    assert_eq!(stats.ok, 5, "{stats:?}");
}

#[test]
fn absurd_values_in_the_state_file_are_held_to_sense() {
    let dir = tempfile::tempdir().unwrap();
    let key = KeyFingerprint::of(KEY).to_string();
    let state = json!({
        "version": 1,
        "saved_at": {"secs_since_epoch": 1_800_000_000u64, "nanos_since_epoch": 0},
        "broker": {
            "budgets": [{
                "key": key,
                "model_class": "sonnet",
                "learned": [u64::MAX, 50, 50],
                "levels": [-1e300, 1e300, null],
                "paused_until": null,
                "pause_reason": "",
                "input_average": {"value": -1e300, "samples": 3},
                "output_average": {"value": 1e300, "samples": 3}
            }],
            "overloads": [],
            "next_lease": u64::MAX,
            "links": [], "workspaces": [], "lockouts": [], "subscriptions": [], "leases": []
        },
        "calibration": {"clients": {}, "overall": {"tokens_per_byte": 0.0, "samples": 0}},
        "routes": []
    });
    std::fs::create_dir_all(dir.path().join("pacer")).unwrap();
    std::fs::write(dir.path().join("pacer/state"), state.to_string()).unwrap();
    let daemon = Pacerd::start(dir.path(), &["--no-gateway"]);
    let out = daemon.pacer(
        &["acquire", "--model", "claude-sonnet-4-5", "--fail-closed"],
        KEY,
    );
    let stdout = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let lease: u64 = stdout.parse().unwrap();
    assert_ne!(lease, 0, "lease 0 means unpaced");
    let status = daemon.status();
    let sonnet = budget_json(&status, &key, "sonnet");
    // The absurd learned limit is dropped; the level sits within [-limit, limit].
    assert!(sonnet["limits"]["rpm"].is_null(), "{sonnet}");
    let input = sonnet["available"]["input_tokens"].as_i64().unwrap();
    assert!((-50..=50).contains(&input), "{sonnet}");
}

#[test]
fn calls_in_flight_keep_their_slots_across_a_crash() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("config.toml");
    std::fs::write(&config, "[limits.sonnet]\nmax_in_flight = 2\n").unwrap();
    let config = config.to_str().unwrap().to_owned();
    let args = ["--no-gateway", "--config", config.as_str()];
    let mut daemon = Pacerd::start(dir.path(), &args);
    let acquire = |daemon: &Pacerd| {
        daemon.pacer(
            &[
                "acquire",
                "--model",
                "claude-sonnet-4-5",
                "--timeout",
                "1",
                "--fail-closed",
            ],
            KEY,
        )
    };
    let leases: Vec<String> = (0..2)
        .map(|_| {
            let out = acquire(&daemon);
            assert!(
                out.status.success(),
                "{}",
                String::from_utf8_lossy(&out.stderr)
            );
            String::from_utf8_lossy(&out.stdout).trim().to_owned()
        })
        .collect();
    // Wait until the state file holds both, then crash.
    let state = dir.path().join("pacer/state");
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        let saved: Value = std::fs::read(&state)
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .unwrap_or_default();
        if saved["broker"]["leases"]
            .as_array()
            .is_some_and(|l| l.len() == 2)
        {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the leases were never saved"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    daemon.kill();

    let daemon = Pacerd::start(dir.path(), &args);
    let out = acquire(&daemon);
    assert_eq!(
        out.status.code(),
        Some(2),
        "a third call got a slot: max_in_flight broken"
    );
    // One of the old calls reports: its slot is free again.
    let out = daemon.pacer(&["release", &leases[0]], KEY);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = acquire(&daemon);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
