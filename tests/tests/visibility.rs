//! Seeing pacer work, against a real daemon: `/metrics` scraped during a herd (parsed by a
//! Prometheus parser, its counters matching what the mock served, no key in it), `/healthz`,
//! `pacer status --clients`, `pacer watch` (each call's outcome, one line per pause, a restart
//! survived), refusals that name their reason, and a daemon that refuses to share its state.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use pacer_tests::mock::{Inject, MockConfig, MockUpstream};
use pacer_tests::{Pacerd, TestDaemon, binary, pacer};
use serde_json::{Value, json};

const KEY: &str = "sk-ant-visibility-secret-key";

fn message() -> Value {
    json!({"model": "claude-sonnet-4-5", "max_tokens": 16,
           "messages": [{"role": "user", "content": "hi"}]})
}

async fn post(http: &reqwest::Client, base: &str, client: &str) -> u16 {
    http.post(format!("{base}/v1/messages"))
        .header("x-api-key", KEY)
        .header("x-pacer-client", client)
        .json(&message())
        .send()
        .await
        .unwrap()
        .status()
        .as_u16()
}

async fn scrape(base: &str) -> prometheus_parse::Scrape {
    let response = reqwest::get(format!("{base}/metrics")).await.unwrap();
    assert_eq!(response.status(), 200);
    let content_type = response.headers()["content-type"]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(content_type.starts_with("text/plain"), "{content_type}");
    let text = response.text().await.unwrap();
    assert!(!text.contains(KEY), "the key is in /metrics");
    prometheus_parse::Scrape::parse(text.lines().map(|l| Ok(l.to_owned())))
        .unwrap_or_else(|e| panic!("not Prometheus text ({e}):\n{text}"))
}

/// The sum of a metric over its samples, optionally only those with a label value.
fn sum(scrape: &prometheus_parse::Scrape, name: &str, label: Option<(&str, &str)>) -> f64 {
    scrape
        .samples
        .iter()
        .filter(|s| s.metric == name)
        .filter(|s| label.is_none_or(|(k, v)| s.labels.get(k) == Some(v)))
        .map(|s| match s.value {
            prometheus_parse::Value::Counter(v)
            | prometheus_parse::Value::Gauge(v)
            | prometheus_parse::Value::Untyped(v) => v,
            _ => 0.0,
        })
        .sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_during_a_herd_parse_and_count_what_the_mock_served() {
    let mock = MockUpstream::start(MockConfig {
        rpm: 120,
        latency: Duration::from_millis(20),
        ..MockConfig::default()
    })
    .await;
    let daemon = TestDaemon::in_front_of(&mock.url(), "", Duration::from_secs(60)).await;
    let base = daemon.gateway_url().await;
    // Two 429s with no usable wait, so that the 429 counters have something to count.
    mock.inject(Inject {
        blind_429: 2,
        ..Inject::default()
    });
    let http = reqwest::Client::new();
    let deadline = Instant::now() + Duration::from_secs(6);
    let herd: Vec<_> = (0..8)
        .map(|i| {
            let (http, base) = (http.clone(), base.clone());
            tokio::spawn(async move {
                let mut ok = 0;
                while Instant::now() < deadline {
                    if post(&http, &base, &format!("herd-{i}")).await == 200 {
                        ok += 1;
                    }
                }
                ok
            })
        })
        .collect();
    // Mid-herd: the scrape parses and shows requests in flight or waiting.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let during = scrape(&base).await;
    assert!(sum(&during, "pacer_budget_grants_total", None) > 0.0);
    let mut ok = 0;
    for worker in herd {
        ok += worker.await.unwrap();
    }
    let after = scrape(&base).await;
    let stats = mock.stats();
    let sonnet = Some(("model_class", "sonnet"));
    // Every call that went upstream had a grant; every 429 the mock gave was counted.
    assert_eq!(
        sum(&after, "pacer_budget_grants_total", sonnet),
        (stats.ok + stats.rate_limited) as f64,
        "{stats:?}"
    );
    assert_eq!(
        sum(&after, "pacer_budget_upstream_429_total", sonnet),
        stats.rate_limited as f64
    );
    assert_eq!(stats.rate_limited, 2);
    assert_eq!(stats.ok, ok);
    let waits = sum(&after, "pacer_budget_queue_wait_seconds_count", sonnet);
    assert_eq!(waits, (stats.ok + stats.rate_limited) as f64);
    // Clients by name, tokens settled, the process.
    assert!(
        sum(
            &after,
            "pacer_client_grants_total",
            Some(("client", "herd-0"))
        ) > 0.0
    );
    assert!(
        sum(
            &after,
            "pacer_budget_tokens_total",
            Some(("kind", "output"))
        ) > 0.0
    );
    assert_eq!(sum(&after, "pacer_info", None), 1.0);
    assert!(sum(&after, "pacer_uptime_seconds", None) > 0.0);
    let limit = sum(
        &after,
        "pacer_budget_limit_per_minute",
        Some(("kind", "requests")),
    );
    assert_eq!(limit, 120.0, "the limit learned from the mock's headers");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn healthz_is_answered_by_pacerd_and_metrics_can_be_turned_off() {
    let mock = MockUpstream::start(MockConfig::default()).await;
    let daemon = TestDaemon::in_front_of(
        &mock.url(),
        "[metrics]\nenabled = false\n",
        Duration::from_secs(5),
    )
    .await;
    let base = daemon.gateway_url().await;
    let health: Value = reqwest::get(format!("{base}/healthz"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(health["status"], "ok");
    assert_eq!(health["version"], env!("CARGO_PKG_VERSION"));
    let metrics = reqwest::get(format!("{base}/metrics")).await.unwrap();
    assert_eq!(metrics.status(), 404);
    assert!(
        metrics
            .text()
            .await
            .unwrap()
            .contains("[metrics] enabled = false")
    );
    assert_eq!(mock.stats().requests, 0, "neither went upstream");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_clients_lists_who_uses_the_budget() {
    let mock = MockUpstream::start(MockConfig::default()).await;
    let daemon = TestDaemon::in_front_of(&mock.url(), "", Duration::from_secs(5)).await;
    let base = daemon.gateway_url().await;
    let http = reqwest::Client::new();
    for _ in 0..3 {
        assert_eq!(post(&http, &base, "reviewer").await, 200);
    }
    assert_eq!(post(&http, &base, "nightly").await, 200);
    let socket = daemon.socket().to_owned();
    let (table, json) = tokio::task::spawn_blocking(move || {
        let table = pacer(&socket, &["status", "--clients"], KEY);
        let json = pacer(&socket, &["status", "--json"], KEY);
        (table, json)
    })
    .await
    .unwrap();
    let text = String::from_utf8_lossy(&table.stdout);
    assert!(
        table.status.success(),
        "{}",
        String::from_utf8_lossy(&table.stderr)
    );
    let clients = text.split("\n\n").last().unwrap();
    assert!(clients.starts_with("CLIENT"), "{text}");
    let reviewer = clients
        .lines()
        .find(|l| l.starts_with("reviewer"))
        .expect("reviewer listed");
    assert!(reviewer.contains("/sonnet"), "{reviewer}");
    assert!(
        reviewer.split_whitespace().any(|cell| cell == "3"),
        "{reviewer}"
    );
    let json: Value = serde_json::from_slice(&json.stdout).unwrap();
    let nightly = json["clients"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["id"] == "nightly")
        .expect("nightly in the JSON");
    assert_eq!(nightly["granted"], 1);
    assert_eq!(nightly["input_tokens"].as_u64().map(|n| n > 0), Some(true));
}

/// Reads `pacer watch` lines as they come.
struct Watch {
    child: std::process::Child,
    lines: std::sync::mpsc::Receiver<String>,
}

impl Watch {
    fn start(socket: &std::path::Path) -> Watch {
        let mut child = Command::new(binary("pacer"))
            .args(["watch"])
            .env("PACER_SOCKET", socket)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let (tx, lines) = std::sync::mpsc::channel();
        for stream in [
            Box::new(child.stdout.take().unwrap()) as Box<dyn std::io::Read + Send>,
            Box::new(child.stderr.take().unwrap()),
        ] {
            let tx = tx.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(stream).lines().map_while(Result::ok) {
                    let _ = tx.send(line);
                }
            });
        }
        Watch { child, lines }
    }

    /// Waits until the watch is subscribed: a refusal it provokes (an acquire whose client id is
    /// too long, refused before it touches any budget) shows up in it. Returns what came
    /// before, that line last.
    fn until_subscribed(&self, socket: &std::path::Path) -> Vec<String> {
        let deadline = Instant::now() + Duration::from_secs(30);
        let probe = "watch-probe-".repeat(30);
        let mut seen = Vec::new();
        while Instant::now() < deadline {
            let refused = Command::new(binary("pacer"))
                .args([
                    "acquire",
                    "--model",
                    "claude-sonnet-4-5",
                    "--client-id",
                    &probe,
                ])
                .args(["--fail-closed", "--timeout", "5"])
                .env("PACER_SOCKET", socket)
                .env("ANTHROPIC_API_KEY", "sk-ant-watch-probe")
                .output()
                .unwrap();
            assert!(!refused.status.success(), "the probe must be refused");
            let until = Instant::now() + Duration::from_millis(500);
            while let Ok(line) = self
                .lines
                .recv_timeout(until.saturating_duration_since(Instant::now()))
            {
                let found = line.contains("refused") && line.contains("watch-probe-");
                seen.push(line);
                if found {
                    return seen;
                }
            }
        }
        panic!("the watch never showed a refusal:\n{}", seen.join("\n"));
    }

    /// Lines until one contains `needle` (all of them, that one last).
    fn until(&self, needle: &str) -> Vec<String> {
        let deadline = Instant::now() + Duration::from_secs(30);
        let mut seen = Vec::new();
        while Instant::now() < deadline {
            if let Ok(line) = self.lines.recv_timeout(Duration::from_millis(200)) {
                let found = line.contains(needle);
                seen.push(line);
                if found {
                    return seen;
                }
            }
        }
        panic!("no line with `{needle}` in:\n{}", seen.join("\n"));
    }
}

impl Drop for Watch {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_shows_outcomes_one_line_per_pause_and_survives_a_restart() {
    // Answers take 300 ms: five requests sent together are all in flight when the 429s come.
    let mock = MockUpstream::start(MockConfig {
        latency: Duration::from_millis(300),
        ..MockConfig::default()
    })
    .await;
    let dir = tempfile::tempdir().unwrap();
    let url = mock.url();
    let mut daemon = Pacerd::start(dir.path(), &["--upstream", &url]);
    let base = daemon.gateway_url().unwrap();
    let watch = Watch::start(daemon.socket());
    watch.until_subscribed(daemon.socket());
    let http = reqwest::Client::new();
    assert_eq!(post(&http, &base, "first").await, 200);
    let first = watch.until("client=first ok");
    let done = first.last().unwrap();
    assert!(
        done.contains(" in=") && done.contains(" out=16") && done.contains("waited="),
        "{done}"
    );

    // Five requests in flight together all get 429s of one pause: one pause line, not five.
    mock.inject(Inject {
        blind_429: 5,
        blind_retry_after: Some("3".into()),
        ..Inject::default()
    });
    let held: Vec<_> = (0..5)
        .map(|i| {
            let (http, base) = (http.clone(), base.clone());
            tokio::spawn(async move { post(&http, &base, &format!("held-{i}")).await })
        })
        .collect();
    for request in held {
        assert_eq!(request.await.unwrap(), 200);
    }
    assert_eq!(mock.stats().rate_limited, 5, "five 429s of one pause");
    let lines = watch.until("resume ");
    let pauses = lines.iter().filter(|l| l.contains(" pause ")).count();
    assert_eq!(pauses, 1, "{lines:#?}");
    let limited = lines.iter().filter(|l| l.contains(" 429 in=")).count();
    assert_eq!(
        limited, 5,
        "each 429 is its own outcome line: {first:#?} {lines:#?}"
    );

    // A restart: watch says so, and goes on.
    daemon.stop();
    let daemon = Pacerd::start(dir.path(), &["--upstream", &url]);
    watch.until("pacerd is back");
    watch.until_subscribed(daemon.socket());
    let base = daemon.gateway_url().unwrap();
    assert_eq!(post(&http, &base, "after").await, 200);
    watch.until("client=after ok");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refusal_during_a_manual_pause_names_it_in_the_answer_watch_and_log() {
    let mock = MockUpstream::start(MockConfig::default()).await;
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("config.toml");
    std::fs::write(&config, "[gateway]\nmax_hold = 2\n").unwrap();
    let daemon = Pacerd::start(
        dir.path(),
        &[
            "--upstream",
            &mock.url(),
            "--config",
            config.to_str().unwrap(),
        ],
    );
    let base = daemon.gateway_url().unwrap();
    let watch = Watch::start(daemon.socket());
    watch.until_subscribed(daemon.socket());
    let out = daemon.pacer(
        &["pause", "--model", "claude-sonnet-4-5", "--for", "5m"],
        KEY,
    );
    assert!(out.status.success());
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(
        said.contains("paused") && said.contains("every peer on it waits"),
        "{said}"
    );
    let response = reqwest::Client::new()
        .post(format!("{base}/v1/messages"))
        .header("x-api-key", KEY)
        .json(&message())
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 429);
    let body: Value = response.json().await.unwrap();
    let message = body["error"]["message"].as_str().unwrap();
    assert!(message.contains("paused by administrator"), "{message}");
    assert!(!message.contains("spent"), "{message}");
    let lines = watch.until("refused ");
    assert!(
        lines.last().unwrap().contains("paused by administrator"),
        "{lines:?}"
    );
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let logs = pacer_tests::read_logs(&dir.path().join("pacer/logs"));
        if logs.contains("refused by pacer") && logs.contains("paused by administrator") {
            break;
        }
        assert!(Instant::now() < deadline, "no refusal in the log:\n{logs}");
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(mock.stats().requests, 0);
}

#[test]
fn a_second_daemon_on_the_same_state_file_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let first = Pacerd::start(dir.path(), &["--no-gateway"]);
    let out = Pacerd::command(dir.path())
        .args(["--no-gateway", "--socket"])
        .arg(dir.path().join("second.sock"))
        .output()
        .unwrap();
    assert!(!out.status.success());
    let message = String::from_utf8_lossy(&out.stderr);
    assert!(
        message.contains(&format!(
            "another pacerd (pid {}) uses the state file",
            first.pid()
        )),
        "{message}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn probe_goes_through_the_daemons_gateway_to_its_upstream() {
    let mock = MockUpstream::start(MockConfig {
        rpm: 50,
        ..MockConfig::default()
    })
    .await;
    let url = mock.url();
    let (out, status) = tokio::task::spawn_blocking(move || {
        let daemon = Pacerd::start_in_temp_dir(&["--upstream", &url]);
        let out = Command::new(binary("pacer"))
            .args(["probe", "--model", "claude-haiku-4-5"])
            .env("PACER_SOCKET", daemon.socket())
            .env("ANTHROPIC_API_KEY", KEY)
            .env_remove("PACER_UPSTREAM")
            .output()
            .unwrap();
        (out, daemon.status())
    })
    .await
    .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains("through pacerd's gateway"));
    assert_eq!(
        mock.stats().requests,
        1,
        "the probe reached the configured upstream"
    );
    let key = pacer_protocol::KeyFingerprint::of(KEY).to_string();
    let haiku = pacer_tests::budget_json(&status, &key, "haiku");
    assert_eq!(haiku["limits"]["rpm"], 50);
    assert_eq!(
        haiku["granted"], 1,
        "one grant: the gateway's, none besides"
    );
}
