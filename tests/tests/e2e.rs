//! End to end with real clients: the official `anthropic` Python SDK and Claude Code, against
//! the mock API, with and without pacer.
//!
//! They need a Python with `anthropic` installed (`$PACER_E2E_PYTHON`) and the `claude` command
//! (`$PACER_E2E_CLAUDE`) when the tests are built; without them the tests are reported as
//! ignored, with the reason. `.ci/run` installs both (see `.ci/e2e-setup`) and sets
//! `PACER_E2E_REQUIRED=1`, which makes their absence a build failure (see `build.rs`).

use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use pacer_tests::mock::{MockConfig, MockUpstream, Plan, SessionWall};
use pacer_tests::{TestDaemon, binary};
use serde_json::Value;

/// The path in `var` (the test is ignored at build time when it is not set).
fn tool(var: &str) -> PathBuf {
    match std::env::var_os(var).filter(|v| !v.is_empty()) {
        Some(path) => PathBuf::from(path),
        None => panic!("${var} was set when the tests were built, and is not now"),
    }
}

fn script(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("e2e")
        .join(name)
}

async fn python(python: &PathBuf, args: &[&str]) -> Value {
    let output = tokio::time::timeout(
        Duration::from_secs(300),
        tokio::process::Command::new(python)
            .args(args)
            .stderr(Stdio::inherit())
            .output(),
    )
    .await
    .expect("the Python client finishes")
    .expect("python runs");
    assert!(
        output.status.success(),
        "python failed: {:?}",
        output.status
    );
    serde_json::from_slice(&output.stdout)
        .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&output.stdout)))
}

#[cfg_attr(
    not(pacer_e2e_python),
    ignore = "needs $PACER_E2E_PYTHON when built: run .ci/e2e-setup"
)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_python_sdk_fails_under_load_directly_and_succeeds_through_the_gateway() {
    let python_bin = tool("PACER_E2E_PYTHON");
    let load = script("sdk_load.py");
    let load = load.to_str().unwrap();
    let mock_config = MockConfig {
        rpm: 60,
        latency: Duration::from_millis(50),
        ..MockConfig::default()
    };

    // Directly: twelve threads and the SDK's own retries against 60 requests per minute.
    let direct_mock = MockUpstream::start(mock_config.clone()).await;
    let direct = python(&python_bin, &[load, &direct_mock.url(), "12", "20"]).await;
    let direct_stats = direct_mock.stats();

    // Through the gateway: the same load, the same limit.
    let mock = MockUpstream::start(mock_config).await;
    let upstream = mock.url().parse().unwrap();
    let daemon = TestDaemon::start_with("", |config| config.gateway.upstream = upstream).await;
    let gateway = format!("{}/s/sdk-load~batch", daemon.gateway_url().await);
    let paced = python(&python_bin, &[load, &gateway, "12", "20"]).await;
    let paced_stats = mock.stats();

    println!("direct:  {direct} upstream {direct_stats:?}");
    println!("gateway: {paced} upstream {paced_stats:?}");
    assert!(
        direct["failed"].as_u64().unwrap() > 0,
        "without pacer the SDK should give up on some calls: {direct}"
    );
    assert!(
        direct["errors"]["RateLimitError"].as_u64().unwrap_or(0) > 0,
        "{direct}"
    );
    assert_eq!(paced["failed"], 0, "through pacer no call fails: {paced}");
    assert!(paced["ok"].as_u64().unwrap() >= 60, "{paced}");
    assert!(
        paced_stats.rate_limited <= 1,
        "at most one upstream 429 through pacer: {paced_stats:?}"
    );
}

#[cfg_attr(
    not(pacer_e2e_python),
    ignore = "needs $PACER_E2E_PYTHON when built: run .ci/e2e-setup"
)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_python_sdk_streams_through_the_gateway_intact() {
    let python_bin = tool("PACER_E2E_PYTHON");
    let mock = MockUpstream::start(MockConfig {
        output_tokens: 12,
        event_gap: Duration::from_millis(20),
        ..MockConfig::default()
    })
    .await;
    let upstream = mock.url().parse().unwrap();
    let daemon = TestDaemon::start_with("", |config| config.gateway.upstream = upstream).await;
    let gateway = daemon.gateway_url().await;
    let stream = script("sdk_stream.py");
    let result = python(&python_bin, &[stream.to_str().unwrap(), &gateway]).await;
    println!("stream: {result}");
    assert_eq!(
        result["text"],
        "Hello from the mock API. Hello from the mock API. Hello from"
    );
    assert_eq!(result["text"], result["final_text"]);
    assert!(result["events"].as_u64().unwrap() > 5, "{result}");
    assert_eq!(result["output_tokens"], 12);
    assert!(result["input_tokens"].as_u64().unwrap() > 0);
    assert_eq!(mock.stats().ok, 1);
}

#[cfg_attr(
    not(pacer_e2e_claude),
    ignore = "needs $PACER_E2E_CLAUDE when built: run .ci/e2e-setup"
)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn four_claude_code_sessions_share_two_requests_per_minute_without_a_429() {
    let claude = tool("PACER_E2E_CLAUDE");
    let mock = MockUpstream::start(MockConfig {
        rpm: 2,
        ..MockConfig::default()
    })
    .await;
    let upstream = mock.url().parse().unwrap();
    let limits = "[limits.opus]\nrpm = 2\n[limits.sonnet]\nrpm = 2\n[limits.haiku]\nrpm = 2\n";
    let daemon = TestDaemon::start_with(limits, |config| config.gateway.upstream = upstream).await;
    let homes = tempfile::tempdir().unwrap();
    let mut sessions = Vec::new();
    for i in 0..4 {
        let home = homes.path().join(format!("home-{i}"));
        std::fs::create_dir_all(&home).unwrap();
        let mut command = tokio::process::Command::new(binary("pacer"));
        command
            .args(["run", "--priority", "interactive", "--"])
            .arg(&claude)
            .args(["-p", "say hi"])
            .current_dir(&home)
            .env("PACER_SOCKET", daemon.socket())
            .env("HOME", &home)
            .env("ANTHROPIC_API_KEY", "sk-ant-e2e-claude")
            .env("CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC", "1")
            .env_remove("ANTHROPIC_BASE_URL")
            .stdin(Stdio::null())
            .kill_on_drop(true);
        sessions.push(tokio::spawn(async move {
            tokio::time::timeout(Duration::from_secs(400), command.output())
                .await
                .expect("claude finishes")
                .expect("claude runs")
        }));
    }
    for (i, session) in sessions.into_iter().enumerate() {
        let output = session.await.unwrap();
        let stdout = String::from_utf8_lossy(&output.stdout);
        let stderr = String::from_utf8_lossy(&output.stderr);
        println!("session {i}: {:?} stdout={stdout:?}", output.status);
        assert!(output.status.success(), "session {i}: {stdout} {stderr}");
        assert!(
            stdout.contains("mock"),
            "session {i} printed the mock's answer: {stdout}"
        );
    }
    let stats = mock.stats();
    println!("upstream: {stats:?}");
    assert_eq!(stats.rate_limited, 0, "no upstream 429: {stats:?}");
    assert!(stats.ok >= 4, "{stats:?}");
}

/// A mock serving a subscription whose 5-hour window allows `five_hour` requests, and a daemon
/// in front of it.
async fn subscription_behind_pacer(five_hour: u64) -> (MockUpstream, TestDaemon) {
    let mock = MockUpstream::start(MockConfig {
        subscription: Some(Plan {
            five_hour,
            ..Plan::default()
        }),
        ..MockConfig::default()
    })
    .await;
    let upstream = mock.url().parse().unwrap();
    let daemon = TestDaemon::start_with("", |config| config.gateway.upstream = upstream).await;
    (mock, daemon)
}

#[cfg_attr(
    not(pacer_e2e_python),
    ignore = "needs $PACER_E2E_PYTHON when built: run .ci/e2e-setup"
)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_python_sdk_sees_the_apis_own_429_for_a_spent_window() {
    let python_bin = tool("PACER_E2E_PYTHON");
    let (mock, daemon) = subscription_behind_pacer(2).await;
    let gateway = daemon.gateway_url().await;
    let script = script("sdk_window.py");
    let result = python(
        &python_bin,
        &[
            script.to_str().unwrap(),
            &gateway,
            "sk-ant-oat01-python",
            "5",
        ],
    )
    .await;
    let stats = mock.stats();
    println!("sdk: {result} upstream {stats:?}");
    assert_eq!(result["ok"], 2, "{result}");
    let errors = result["errors"].as_array().unwrap();
    assert_eq!(errors.len(), 3, "{result}");
    for error in errors {
        assert_eq!(error["type"], "RateLimitError", "{result}");
        assert_eq!(error["status"], 429);
        assert_eq!(error["unified_status"], "rejected", "the API's own headers");
        assert_eq!(error["x_should_retry"], serde_json::Value::Null);
        let retry_after: u64 = error["retry_after"].as_str().unwrap().parse().unwrap();
        assert!(retry_after > 7000, "{retry_after}");
    }
    // The first refusal came from the API; pacer answered the others without asking again.
    assert_eq!(stats.window_rejected, 1, "{stats:?}");
    assert_eq!(stats.requests, 3, "{stats:?}");
}

#[cfg_attr(
    not(pacer_e2e_claude),
    ignore = "needs $PACER_E2E_CLAUDE when built: run .ci/e2e-setup"
)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn claude_code_shows_its_usage_limit_message_for_a_spent_window() {
    let claude = tool("PACER_E2E_CLAUDE");
    let (mock, daemon) = subscription_behind_pacer(1).await;
    let home = tempfile::tempdir().unwrap();
    let run = || {
        let mut command = tokio::process::Command::new(binary("pacer"));
        command
            .args(["run", "--"])
            .arg(&claude)
            .args(["-p", "say hi"])
            .current_dir(home.path())
            .env("PACER_SOCKET", daemon.socket())
            .env("HOME", home.path())
            .env("CLAUDE_CODE_OAUTH_TOKEN", "sk-ant-oat01-e2e-claude")
            .env("CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC", "1")
            .env_remove("ANTHROPIC_API_KEY")
            .env_remove("ANTHROPIC_BASE_URL")
            .stdin(Stdio::null())
            .kill_on_drop(true);
        async move {
            tokio::time::timeout(Duration::from_secs(120), command.output())
                .await
                .expect("claude finishes")
                .expect("claude runs")
        }
    };
    let first = run().await;
    let stdout = String::from_utf8_lossy(&first.stdout);
    assert!(first.status.success(), "{stdout}");
    assert!(stdout.contains("mock"), "{stdout}");
    for attempt in [
        "the window's first refusal",
        "a refusal pacer answers alone",
    ] {
        let output = run().await;
        let stdout = String::from_utf8_lossy(&output.stdout);
        println!("{attempt}: {:?} {stdout:?}", output.status);
        assert!(!output.status.success(), "{attempt}: {stdout}");
        assert!(
            stdout.contains("hit your") && stdout.contains("limit"),
            "{attempt}: Claude Code's own usage-limit message, not a generic error: {stdout}"
        );
        assert!(!stdout.contains("temporarily limiting"), "{stdout}");
    }
    let stats = mock.stats();
    println!("upstream: {stats:?}");
    assert_eq!(
        stats.window_rejected, 1,
        "the spent window was asked once: {stats:?}"
    );
}

#[cfg_attr(
    not(pacer_e2e_python),
    ignore = "needs $PACER_E2E_PYTHON when built: run .ci/e2e-setup"
)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_person_at_the_keyboard_keeps_the_window_batch_workers_are_held_at_their_ceiling() {
    let python_bin = tool("PACER_E2E_PYTHON");
    // A 5-hour-style window of 60 calls over 300 s, RPM 600; batch may bring it to 70 %.
    let mock = MockUpstream::start(MockConfig {
        rpm: 600,
        latency: Duration::from_millis(50),
        subscription: Some(Plan {
            five_hour: 60,
            five_hour_reset: Duration::from_secs(300),
            ..Plan::default()
        }),
        ..MockConfig::default()
    })
    .await;
    let upstream = mock.url().parse().unwrap();
    let toml = "[windows]\nbatch = 0.7\n";
    let daemon = TestDaemon::start_with(toml, |config| {
        config.gateway.upstream = upstream;
        config.gateway.max_hold = Duration::from_secs(20);
        config.broker.max_hold = Duration::from_secs(20);
    })
    .await;
    let gateway = daemon.gateway_url().await;
    // Six batch workers and an interactive call every second, for 20 seconds.
    let script = script("sdk_windows.py");
    let result = python(
        &python_bin,
        &[script.to_str().unwrap(), &gateway, "6", "1", "20"],
    )
    .await;
    let stats = mock.stats();
    println!("windows: {result} upstream {stats:?}");
    let interactive = result["interactive"]["ok"].as_u64().unwrap();
    let batch = result["batch"]["ok"].as_u64().unwrap();
    assert!(
        interactive >= 16,
        "interactive got {interactive} of 20: {result}"
    );
    assert!(
        (36..=44).contains(&batch),
        "batch brought the window to {batch}: {result}"
    );
    assert!(
        stats.rate_limited + stats.window_rejected <= 1,
        "at most one upstream 429: {stats:?}"
    );
    let held = result["held_message"].as_str().unwrap_or_default();
    assert!(
        held.contains("batch work is held at 70 % of the 5-hour window until")
            && held.contains("interactive sessions keep the rest"),
        "{held}"
    );
    // `pacer status` says batch is held on that window.
    let out = tokio::process::Command::new(binary("pacer"))
        .arg("status")
        .env("PACER_SOCKET", daemon.socket())
        .output()
        .await
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.lines()
            .any(|line| line.contains("batch") && line.contains("held")),
        "{text}"
    );
}

#[cfg_attr(
    not(pacer_e2e_claude),
    ignore = "needs $PACER_E2E_CLAUDE when built: run .ci/e2e-setup"
)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn claude_code_sessions_started_together_against_the_apis_wall_all_answer() {
    let claude = tool("PACER_E2E_CLAUDE");
    // Two sessions may start at once, one more every 10 s; a session refused is refused, with
    // its retries, for 20 s — a bare 429 each time.
    let mock = MockUpstream::start(MockConfig {
        session_wall: Some(SessionWall {
            burst: 2,
            refill: Duration::from_secs(10),
            block: Duration::from_secs(20),
        }),
        ..MockConfig::default()
    })
    .await;
    let upstream = mock.url().parse().unwrap();
    let daemon = TestDaemon::start_with("", |config| config.gateway.upstream = upstream).await;
    let home = tempfile::tempdir().unwrap();
    let sessions: Vec<_> = (0..4)
        .map(|i| {
            let dir = home.path().join(format!("home-{i}"));
            std::fs::create_dir_all(&dir).unwrap();
            let mut command = tokio::process::Command::new(binary("pacer"));
            command
                .args(["run", "--name", "together", "--"])
                .arg(&claude)
                .args(["-p", "say hi"])
                .current_dir(&dir)
                .env("PACER_SOCKET", daemon.socket())
                .env("HOME", &dir)
                .env("ANTHROPIC_API_KEY", "sk-ant-e2e-together")
                .env("CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC", "1")
                .env_remove("ANTHROPIC_BASE_URL")
                .stdin(Stdio::null())
                .kill_on_drop(true);
            tokio::spawn(async move {
                tokio::time::timeout(Duration::from_secs(280), command.output())
                    .await
                    .expect("claude finishes")
                    .expect("claude runs")
            })
        })
        .collect();
    // While some wait their turn, `pacer status` shows the pace and who waits.
    let client = daemon.client().await;
    let mut paced = None;
    while !sessions.iter().all(|s| s.is_finished()) {
        let status = client.status().await.unwrap();
        if let Some(start) = status.starts.iter().find(|s| s.waiting > 0) {
            paced.get_or_insert(start.clone());
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    for session in sessions {
        let output = session.await.unwrap();
        let stdout = String::from_utf8_lossy(&output.stdout);
        assert!(
            output.status.success(),
            "{stdout} {}",
            String::from_utf8_lossy(&output.stderr)
        );
        assert!(stdout.contains("mock"), "{stdout}");
    }
    let stats = mock.stats();
    println!("upstream: {stats:?}; pace seen: {paced:?}");
    assert!(paced.is_some(), "sessions were seen waiting to start");
    assert!(stats.bare >= 1 && stats.bare <= 5, "{stats:?}");
}
