//! `pacer statusline`, as Claude Code runs it: a JSON object on stdin, one short line out,
//! exit 0 whatever happens.

use std::io::Write;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use pacer_tests::mock::{MockConfig, MockUpstream, Plan};
use pacer_tests::{TestDaemon, binary};
use serde_json::json;

/// Runs `pacer statusline` with `stdin`, against the daemon at `socket`.
fn statusline(socket: &std::path::Path, stdin: &str) -> (String, bool, Duration) {
    let started = Instant::now();
    let mut child = Command::new(binary("pacer"))
        .arg("statusline")
        .env("PACER_SOCKET", socket)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(stdin.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    (text, out.status.success(), started.elapsed())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sessions_line_shows_its_accounts_windows_as_the_api_reported_them() {
    let mock = MockUpstream::start(MockConfig {
        subscription: Some(Plan {
            five_hour: 10,
            seven_day: 100,
            ..Plan::default()
        }),
        ..MockConfig::default()
    })
    .await;
    let daemon = TestDaemon::in_front_of(&mock.url(), "", Duration::from_secs(5)).await;
    let session = "5f0c3a2e-1111-4222-8333-444455556666";
    let response = reqwest::Client::new()
        .post(format!("{}/v1/messages", daemon.gateway_url().await))
        .header("authorization", "Bearer sk-ant-oat01-statusline")
        .header("x-claude-code-session-id", session)
        .json(&json!({"model": "claude-sonnet-4-5", "max_tokens": 16,
                      "messages": [{"role": "user", "content": "hi"}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let input = json!({
        "session_id": session,
        "model": {"id": "claude-sonnet-4-5", "display_name": "Sonnet 4.5"},
        "workspace": {"current_dir": "/tmp"},
        "rate_limits": {"five_hour": {"used_percentage": 99, "resets_at": 1_800_000_000}},
    })
    .to_string();
    let socket = daemon.socket().to_owned();
    let (line, ok, took) = tokio::task::spawn_blocking(move || statusline(&socket, &input))
        .await
        .unwrap();
    println!("{line:?} in {took:?}");
    assert!(ok);
    assert_eq!(line.lines().count(), 1, "{line}");
    assert!(line.starts_with("pacer org-"), "{line}");
    assert!(line.contains("5h 10 %"), "the API's own figure: {line}");
    assert!(line.contains("7d 1 %"), "{line}");
    assert!(
        !line.contains("99"),
        "pacer's figure wins over Claude Code's: {line}"
    );
    assert!(took < Duration::from_secs(3), "{took:?}");
}

#[test]
fn with_pacerd_away_or_no_json_it_still_prints_a_line_and_exits_0() {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("nobody.sock");
    let input = json!({"session_id": "s", "rate_limits": {"five_hour": {"used_percentage": 42}}})
        .to_string();
    let (line, ok, _) = statusline(&socket, &input);
    assert!(ok);
    assert_eq!(line.trim(), "pacer off · 5h 42 %");
    let (line, ok, _) = statusline(&socket, "not json at all");
    assert!(ok);
    assert_eq!(line.trim(), "pacer off");
    // It never starts a daemon.
    assert!(!socket.exists());
}

#[test]
fn install_writes_the_setting_and_keeps_what_was_there() {
    let dir = tempfile::tempdir().unwrap();
    let settings = dir.path().join("settings.json");
    std::fs::write(
        &settings,
        r#"{"model": "opus", "permissions": {"allow": ["Bash"]}}"#,
    )
    .unwrap();
    let out = Command::new(binary("pacer"))
        .args(["statusline", "--install", "--settings"])
        .arg(&settings)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let written: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&settings).unwrap()).unwrap();
    assert_eq!(written["model"], "opus");
    assert_eq!(written["permissions"]["allow"][0], "Bash");
    assert_eq!(written["statusLine"]["type"], "command");
    assert!(
        written["statusLine"]["command"]
            .as_str()
            .unwrap()
            .ends_with("statusline")
    );
    let backups = std::fs::read_dir(dir.path())
        .unwrap()
        .filter(|e| {
            e.as_ref()
                .unwrap()
                .file_name()
                .to_string_lossy()
                .contains(".bak-")
        })
        .count();
    assert_eq!(backups, 1);
    // Installed again at once: the same setting, so nothing is written or backed up.
    let before = std::fs::read_to_string(&settings).unwrap();
    let again = Command::new(binary("pacer"))
        .args(["statusline", "--install", "--settings"])
        .arg(&settings)
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&again.stderr);
    assert!(again.status.success(), "{said}");
    assert!(said.contains("nothing changed"), "{said}");
    assert!(!said.contains("replaced"), "{said}");
    assert_eq!(std::fs::read_to_string(&settings).unwrap(), before);
    let backups_now = std::fs::read_dir(dir.path())
        .unwrap()
        .filter(|e| {
            let name = e.as_ref().unwrap().file_name();
            name.to_string_lossy().contains(".bak-")
        })
        .count();
    assert_eq!(backups_now, 1);
    // A file that is not JSON is left alone.
    std::fs::write(&settings, "{ broken").unwrap();
    let out = Command::new(binary("pacer"))
        .args(["statusline", "--install", "--settings"])
        .arg(&settings)
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert_eq!(std::fs::read_to_string(&settings).unwrap(), "{ broken");
}
