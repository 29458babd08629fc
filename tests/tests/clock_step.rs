//! A clock that steps while pacerd runs: with libfaketime on pacerd only (its wall clock set an
//! hour ahead mid-run, as an NTP correction would; the mock API keeps the real time), a spent
//! window's lockout lasts until the API's reset, not an hour more, and pacerd says once that
//! its clock stepped.
#![cfg(target_os = "linux")]

use std::time::{Duration, Instant};

use pacer_tests::mock::{MockConfig, MockUpstream, Plan};
use pacer_tests::{Pacerd, read_logs, wait_until};
use serde_json::json;

const LIBFAKETIME: &str = "/usr/lib/x86_64-linux-gnu/faketime/libfaketimeMT.so.1";

async fn call(http: &reqwest::Client, base: &str) -> reqwest::Response {
    http.post(format!("{base}/v1/messages"))
        .header("authorization", "Bearer sk-ant-oat01-stepped")
        .json(&json!({"model": "claude-sonnet-4-5", "max_tokens": 16,
                      "messages": [{"role": "user", "content": "hi"}]}))
        .send()
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(
    not(pacer_faketime),
    ignore = "needs libfaketime (apt-get install faketime)"
)]
async fn a_wall_clock_step_does_not_stretch_a_lockout_past_the_apis_reset() {
    let reset_in = Duration::from_secs(8);
    // A subscription whose 5-hour window is spent, resetting in 8 s (real time).
    let mock = MockUpstream::start(MockConfig {
        subscription: Some(Plan {
            five_hour: 10,
            five_hour_used: 10,
            five_hour_reset: reset_in,
            ..Plan::default()
        }),
        ..MockConfig::default()
    })
    .await;
    let started = Instant::now();
    let dir = tempfile::tempdir().unwrap();
    let offset = dir.path().join("faketime");
    std::fs::write(&offset, "+0\n").unwrap();
    let mut command = Pacerd::command(dir.path());
    command
        .env("LD_PRELOAD", LIBFAKETIME)
        .env("FAKETIME_TIMESTAMP_FILE", &offset)
        .env("FAKETIME_NO_CACHE", "1")
        // The wall clock steps; the monotonic clocks run on, as under NTP.
        .env("DONT_FAKE_MONOTONIC", "1")
        .args(["--upstream", &mock.url(), "--gateway", "127.0.0.1:0"]);
    let socket = dir.path().join("pacer.sock");
    command.arg("--socket").arg(&socket);
    let daemon = tokio::task::spawn_blocking(move || Pacerd::spawn(command, &socket))
        .await
        .unwrap();
    let base = daemon.gateway_url().unwrap();
    let http = reqwest::Client::new();
    // The window's 429 locks the account out until the reset the API gave.
    assert_eq!(call(&http, &base).await.status(), 429);
    assert_eq!(mock.stats().requests, 1);

    // NTP sets pacerd's clock an hour ahead.
    std::fs::write(&offset, "+1h\n").unwrap();
    let logs = dir.path().join("pacer/logs");
    let noticed = wait_until(Duration::from_secs(10), || async {
        // Any request makes pacerd read its clocks.
        let _ = daemon.pacer(&["status"], "k");
        read_logs(&logs).contains("the wall clock stepped forward by 1h")
    })
    .await;
    assert!(noticed, "{}", read_logs(&logs));

    // Still locked out, and told how long is left of it: not an hour more, nor nothing.
    let refused = call(&http, &base).await;
    assert_eq!(refused.status(), 429);
    assert_eq!(mock.stats().requests, 1, "refused by pacer, not the API");
    let retry_after: u64 = refused
        .headers()
        .get("retry-after")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok())
        .expect("a retry-after");
    let left = reset_in.saturating_sub(started.elapsed()).as_secs();
    assert!(
        retry_after >= 1 && retry_after <= left + 2,
        "retry-after {retry_after} s, the reset is {left} s away"
    );
    // Once the reset has passed, calls go upstream again.
    let before = mock.stats().requests;
    tokio::time::sleep(
        (started + reset_in + Duration::from_secs(1)).saturating_duration_since(Instant::now()),
    )
    .await;
    let _ = call(&http, &base).await;
    assert!(
        mock.stats().requests > before,
        "still locked out after the API's reset: {}",
        read_logs(&logs)
    );
    let text = read_logs(&logs);
    assert_eq!(text.matches("the wall clock stepped").count(), 1, "{text}");
}
