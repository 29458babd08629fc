//! Status at scale: a daemon that knows ten thousand Claude Code sessions (a CI farm running
//! `claude -p` in a loop gets there in a day) and nine hundred clients still answers
//! `pacer status`, `--json` and `--clients`, truncating what one frame cannot hold and saying
//! so, and the CLI never retries an answer it cannot read; and an upstream that names 18,000
//! windows leaves the account in sight, pacerd small and `/metrics` short.
#![cfg(unix)]

use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant, SystemTime};

use pacer_client::{AcquireRequest, Client, FailMode, Outcome, Usage};
use pacer_tests::{Pacerd, binary};
use serde_json::Value;

const KEY: &str = "sk-ant-scale";

/// `pacer ARGS`, killed (and the test failed) if it has not exited within 60 s.
fn pacer_within(daemon: &Pacerd, args: &[&str]) -> (Output, Duration) {
    let started = Instant::now();
    let mut child = Command::new(binary("pacer"))
        .args(args)
        .env("PACER_SOCKET", daemon.socket())
        .env("ANTHROPIC_API_KEY", KEY)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let (out, err) = (child.stdout.take().unwrap(), child.stderr.take().unwrap());
    let stdout = std::thread::spawn(move || std::io::read_to_string(out).unwrap());
    let stderr = std::thread::spawn(move || std::io::read_to_string(err).unwrap());
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if started.elapsed() > Duration::from_secs(60) {
            child.kill().unwrap();
            child.wait().unwrap();
            panic!(
                "`pacer {}` did not exit within 60 s: {}",
                args.join(" "),
                stderr.join().unwrap()
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let took = started.elapsed();
    let (stdout, stderr) = (stdout.join().unwrap(), stderr.join().unwrap());
    let output = Output {
        status,
        stdout: stdout.into_bytes(),
        stderr: stderr.into_bytes(),
    };
    (output, took)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_answers_with_ten_thousand_sessions_and_nine_hundred_clients_known() {
    let dir = tempfile::tempdir().unwrap();
    // A daemon's state file, with 10,500 sessions written into it (it keeps the newest 10,000).
    let mut daemon = Pacerd::start(dir.path(), &["--no-gateway"]);
    let client = Client::builder()
        .endpoint(daemon.socket())
        .fail_mode(FailMode::Closed)
        .connect()
        .await
        .unwrap();
    client
        .acquire(AcquireRequest::new(KEY, "claude-sonnet-4-5"))
        .await
        .unwrap()
        .report(Outcome::Success {
            usage: Usage::default(),
            headers: Vec::new(),
        })
        .await
        .unwrap();
    drop(client);
    daemon.signal(libc::SIGTERM);
    assert!(daemon.wait().success());
    let path = dir.path().join("pacer/state");
    let mut state: Value = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
    let key = pacer_protocol::KeyFingerprint::of(KEY).to_string();
    let now = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let sessions: Vec<Value> = (0..10_500u64)
        .map(|i| {
            serde_json::json!({
                "id": format!("{i:08x}-6d1c-4a7e-9a52-{:012x}", i * 7919),
                "key": key,
                "last_seen": {"secs_since_epoch": now - i % 3600, "nanos_since_epoch": 0},
            })
        })
        .collect();
    state["broker"]["sessions"] = Value::Array(sessions);
    std::fs::write(&path, serde_json::to_vec(&state).unwrap()).unwrap();

    let daemon = Pacerd::start(dir.path(), &["--no-gateway"]);
    // Nine hundred clients, each with a permit reported.
    let mut clients = Vec::new();
    for i in 0..900 {
        let client = Client::builder()
            .endpoint(daemon.socket())
            .client_id(format!("farm-worker-{i:04}-{}", "w".repeat(40)))
            .fail_mode(FailMode::Closed)
            .connect()
            .await
            .unwrap();
        client
            .acquire(AcquireRequest::new(KEY, "claude-haiku-4-5"))
            .await
            .unwrap()
            .release()
            .await
            .unwrap();
        clients.push(client);
    }

    let (json, took) = pacer_within(&daemon, &["status", "--json"]);
    eprintln!("pacer status --json: {took:?}, {} bytes", json.stdout.len());
    assert!(json.status.success(), "{json:?}");
    let status: Value = serde_json::from_slice(&json.stdout).unwrap();
    let shown = status["sessions"].as_array().unwrap().len();
    let clients_shown = status["clients"].as_array().unwrap().len();
    eprintln!(
        "{shown} sessions, {clients_shown} clients shown; truncated: {}",
        status["truncated"]
    );
    // Everything is there, or what is not is said.
    assert!(
        (shown == 10_000 && clients_shown == 900) || status["truncated"].is_string(),
        "{shown} sessions, {clients_shown} clients, truncated: {}",
        status["truncated"]
    );
    assert!(shown > 0 && clients_shown > 0);
    assert!(!status["budgets"].as_array().unwrap().is_empty());
    for args in [&["status"][..], &["status", "--clients"]] {
        let (out, took) = pacer_within(&daemon, args);
        eprintln!("pacer {}: {took:?}", args.join(" "));
        assert!(out.status.success(), "{out:?}");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!stderr.contains("unreadable"), "{stderr}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upstream_naming_new_windows_on_every_answer_leaves_the_account_in_sight() {
    use pacer_tests::mock::{Inject, MockConfig, MockUpstream};
    // A broken upstream: 45 windows never named before in every answer, 400 answers (18,000
    // names).
    let mock = MockUpstream::start(MockConfig {
        rpm: 100_000,
        itpm: 100_000_000,
        otpm: 100_000_000,
        ..MockConfig::default()
    })
    .await;
    mock.inject(Inject {
        junk_windows: 45,
        ..Inject::default()
    });
    let url = mock.url();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().to_owned();
    let daemon = tokio::task::spawn_blocking(move || Pacerd::start(&path, &["--upstream", &url]))
        .await
        .unwrap();
    let base = daemon.gateway_url().unwrap();
    let http = reqwest::Client::new();
    for _ in 0..400 {
        let response = http
            .post(format!("{base}/v1/messages"))
            .header("x-api-key", KEY)
            .json(
                &serde_json::json!({"model": "claude-sonnet-4-5", "max_tokens": 16,
                                      "messages": [{"role": "user", "content": "hi"}]}),
            )
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
    }
    let (json, took) = pacer_within(&daemon, &["status", "--json"]);
    assert!(json.status.success(), "{json:?}");
    let status: Value = serde_json::from_slice(&json.stdout).unwrap();
    let accounts = status["accounts"].as_array().unwrap();
    let windows = accounts
        .iter()
        .map(|a| a["windows"].as_array().map_or(0, Vec::len))
        .max()
        .unwrap_or(0);
    let rss_mib = daemon.rss_kib().unwrap() / 1024;
    let metrics = http
        .get(format!("{base}/metrics"))
        .send()
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();
    eprintln!(
        "after 18,000 window names: status --json {took:?}, {} accounts, at most {windows} \
         windows each, pacerd {rss_mib} MiB, /metrics {} bytes",
        accounts.len(),
        metrics.len()
    );
    assert!(!accounts.is_empty(), "the account is still listed");
    assert!(windows <= 16, "{windows} windows kept");
    assert!(rss_mib < 64, "pacerd holds {rss_mib} MiB");
    assert!(
        metrics.len() < 2 << 20,
        "/metrics is {} bytes",
        metrics.len()
    );
}
