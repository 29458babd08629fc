//! Alerts (`[alerts]`) from a real daemon in front of the mock API's subscription: a command
//! gets the facts in `PACER_*` variables, a local webhook receiver gets the JSON, each once per
//! crossing.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use pacer_tests::mock::{MockConfig, MockUpstream, Plan};
use pacer_tests::{TestDaemon, wait_until};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// A webhook receiver on a free port: every POST's JSON body, answered 200.
async fn receiver() -> (String, Arc<Mutex<Vec<Value>>>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/hook", listener.local_addr().unwrap());
    let bodies = Arc::new(Mutex::new(Vec::new()));
    let kept = bodies.clone();
    tokio::spawn(async move {
        loop {
            let (mut stream, _) = listener.accept().await.unwrap();
            let kept = kept.clone();
            tokio::spawn(async move {
                let mut request = Vec::new();
                let mut buffer = [0u8; 4096];
                // Headers, then as much body as content-length says.
                let body = loop {
                    let n = stream.read(&mut buffer).await.unwrap_or(0);
                    if n == 0 {
                        return;
                    }
                    request.extend_from_slice(&buffer[..n]);
                    let text = String::from_utf8_lossy(&request).into_owned();
                    let Some((head, body)) = text.split_once("\r\n\r\n") else {
                        continue;
                    };
                    let length = head
                        .lines()
                        .find_map(|l| {
                            l.to_ascii_lowercase()
                                .strip_prefix("content-length:")
                                .map(|v| v.trim().parse::<usize>().unwrap())
                        })
                        .unwrap_or(0);
                    if body.len() >= length {
                        break body[..length].to_owned();
                    }
                };
                kept.lock()
                    .unwrap()
                    .push(serde_json::from_str(&body).unwrap());
                let _ = stream
                    .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\nconnection: close\r\n\r\n")
                    .await;
            });
        }
    });
    (url, bodies)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_window_crossing_90_percent_is_told_once_to_the_command_and_the_webhook() {
    let mock = MockUpstream::start(MockConfig {
        subscription: Some(Plan {
            five_hour: 100,
            five_hour_used: 86,
            ..Plan::default()
        }),
        ..MockConfig::default()
    })
    .await;
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("alerts.log");
    let (url, bodies) = receiver().await;
    let toml = format!(
        "[alerts]\ncommand = \"env | grep ^PACER_ | sort >> '{}'; echo --- >> '{}'\"\nwebhook = \
         \"{url}\"\n",
        log.display(),
        log.display()
    );
    let daemon = TestDaemon::in_front_of(&mock.url(), &toml, Duration::from_secs(5)).await;
    let base = daemon.gateway_url().await;
    let http = reqwest::Client::new();
    let call = || async {
        let response = http
            .post(format!("{base}/v1/messages"))
            .header("authorization", "Bearer sk-ant-oat01-alerts")
            .json(&json!({"model": "claude-sonnet-4-5", "max_tokens": 16,
                          "messages": [{"role": "user", "content": "hi"}]}))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
    };
    // 87 %: past 75 %, told once the daemon looks.
    call().await;
    // The command's alerts of one kind.
    let alerts = |event: &str| {
        std::fs::read_to_string(&log)
            .unwrap_or_default()
            .split("---\n")
            .filter(|a| a.contains(&format!("PACER_EVENT={event}\n")))
            .map(str::to_owned)
            .collect::<Vec<String>>()
    };
    assert!(
        wait_until(Duration::from_secs(20), || async {
            alerts("window").len() == 1
        })
        .await
    );
    assert!(
        alerts("window")[0].contains("PACER_THRESHOLD=75\n"),
        "{:?}",
        alerts("window")
    );
    // Past batch's 80 % ceiling: batch work is held, told once too.
    assert!(
        wait_until(Duration::from_secs(20), || async {
            alerts("held").len() == 1
        })
        .await
    );
    assert!(alerts("held")[0].contains("PACER_SUBJECT=batch\n"));
    // 88, 89, 90, 91, 92 %: 90 % is crossed once.
    for _ in 0..5 {
        call().await;
    }
    assert!(
        wait_until(Duration::from_secs(20), || async {
            alerts("window").len() >= 2
        })
        .await
    );
    // Give the watcher time to tell anything more it would (it looks every second).
    tokio::time::sleep(Duration::from_secs(3)).await;
    let told = alerts("window");
    assert_eq!(told.len(), 2, "{told:?}");
    assert_eq!(alerts("held").len(), 1);
    let ninety = &told[1];
    for line in [
        "PACER_EVENT=window",
        "PACER_WINDOW=5h",
        "PACER_THRESHOLD=90",
        "PACER_UTILIZATION=9",
        "PACER_ACCOUNT=org-",
        "PACER_RESET=20",
        "PACER_MESSAGE=pacer: the 5-hour window of org-",
    ] {
        assert!(ninety.contains(line), "{line} missing: {ninety}");
    }
    // The webhook got the same two, as JSON.
    let windows = || {
        let bodies = bodies.lock().unwrap();
        bodies
            .iter()
            .filter(|b| b["event"] == "window")
            .cloned()
            .collect::<Vec<Value>>()
    };
    assert!(wait_until(Duration::from_secs(10), || async { windows().len() == 2 }).await);
    let bodies = windows();
    assert_eq!(bodies[1]["event"], "window");
    assert_eq!(bodies[1]["window"], "5h");
    assert_eq!(bodies[1]["threshold"], 0.9);
    assert!(
        bodies[1]["utilization"].as_f64().unwrap() >= 0.9,
        "{bodies:?}"
    );
    assert!(
        bodies[1]["reset"].as_str().unwrap().ends_with('Z'),
        "{bodies:?}"
    );
}
