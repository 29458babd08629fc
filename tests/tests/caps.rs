//! A cap per client through the gateway (`pacer run --max-share 10%`), against the mock API's
//! subscription: the capped client stops at about its share of a 60-call window, told why,
//! while another client goes on; `pacer status --clients` shows the cap.

use std::time::Duration;

use pacer_tests::TestDaemon;
use pacer_tests::mock::{MockConfig, MockUpstream, Plan};
use serde_json::{Value, json};

async fn call(http: &reqwest::Client, base: &str) -> (u16, String) {
    let response = http
        .post(format!("{base}/v1/messages"))
        .header("authorization", "Bearer sk-ant-oat01-caps")
        .json(&json!({"model": "claude-sonnet-4-5", "max_tokens": 16,
                      "messages": [{"role": "user", "content": "hi"}]}))
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    let body: Value = response.json().await.unwrap_or_default();
    let message = body["error"]["message"].as_str().unwrap_or_default();
    (status, message.to_owned())
}

/// The base URL `pacer run` gives a command, with these arguments before `--`.
fn wrapped_base_url(daemon: &TestDaemon, args: &[&str]) -> String {
    let mut all = vec!["run"];
    all.extend_from_slice(args);
    all.extend_from_slice(&["--", "sh", "-c", "printf %s \"$ANTHROPIC_BASE_URL\""]);
    let out = pacer_tests::pacer(daemon.socket(), &all, "sk-ant-oat01-caps");
    assert!(out.status.success(), "{out:?}");
    String::from_utf8(out.stdout).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_run_with_max_share_stops_at_its_share_while_another_goes_on() {
    // A 5-hour window of 60 calls.
    let mock = MockUpstream::start(MockConfig {
        subscription: Some(Plan {
            five_hour: 60,
            ..Plan::default()
        }),
        ..MockConfig::default()
    })
    .await;
    let daemon = TestDaemon::in_front_of(&mock.url(), "", Duration::from_secs(1)).await;
    let capped = wrapped_base_url(&daemon, &["--max-share", "10%", "--name", "loop"]);
    assert!(capped.ends_with("/s/loop~normal~cap1000"), "{capped}");
    let other = wrapped_base_url(&daemon, &["--name", "keyboard", "--priority", "normal"]);
    let http = reqwest::Client::new();
    // Both call in turn: the capped one until pacer holds it.
    let (mut ok, mut others) = (0, 0);
    let told = loop {
        let (status, message) = call(&http, &capped).await;
        if status != 200 {
            assert_eq!(status, 429, "{message}");
            break message;
        }
        ok += 1;
        assert!(ok < 30, "the cap never held");
        assert_eq!(call(&http, &other).await.0, 200);
        others += 1;
    };
    eprintln!("the capped client made {ok} calls of a 60-call window (10 % is 6)");
    // 10 % of 60 calls: 6, within two.
    assert!((4..=8).contains(&ok), "the capped client made {ok} calls");
    assert!(
        told.starts_with("pacer: this client used its cap of 10 % of the 5-hour window"),
        "{told}"
    );
    // The other client goes on.
    for _ in 0..10 {
        assert_eq!(call(&http, &other).await.0, 200);
        others += 1;
    }
    assert!(others >= 14);
    // `pacer status --clients` shows the cap and that it holds.
    let out = pacer_tests::pacer(daemon.socket(), &["status", "--clients"], "");
    let text = String::from_utf8_lossy(&out.stdout);
    let row = text
        .lines()
        .find(|l| l.starts_with("loop"))
        .unwrap_or_else(|| panic!("{text}"));
    assert!(row.contains("10 % (held)"), "{text}");
    // A header that is not a share is refused as the client's mistake, naming it.
    let response = http
        .post(format!("{other}/v1/messages"))
        .header("authorization", "Bearer sk-ant-oat01-caps")
        .header("x-pacer-max-share", "150%")
        .json(&json!({"model": "claude-sonnet-4-5", "max_tokens": 16,
                      "messages": [{"role": "user", "content": "hi"}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 400);
    let body: Value = response.json().await.unwrap();
    let message = body["error"]["message"].as_str().unwrap();
    assert!(
        message.contains("x-pacer-max-share") && message.contains("150%"),
        "{message}"
    );
    // A shell script under the same name and cap is told so, and why.
    let args = [
        "acquire",
        "--model",
        "claude-sonnet-4-5",
        "--client-id",
        "loop",
        "--max-share",
        "10%",
        "--timeout",
        "0",
    ];
    let out = pacer_tests::pacer(daemon.socket(), &args, "sk-ant-oat01-caps");
    let said = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{said}");
    assert!(said.contains("this client used its cap of 10 %"), "{said}");
    // A share that is not one is refused by the command line, naming it.
    let out = pacer_tests::pacer(
        daemon.socket(),
        &["run", "--max-share", "150%", "--", "true"],
        "",
    );
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("`150%`"),
        "{out:?}"
    );
}
