//! The real `pacerd` and `pacer` binaries, as a user runs them.

use std::process::{Command, Output};
use std::time::{Duration, Instant, SystemTime};

use pacer_protocol::KeyFingerprint;
use pacer_tests::{Pacerd, binary, budget_json, pacer};

fn stdout(out: &Output) -> String {
    assert!(
        out.status.success(),
        "exit {:?}: {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

#[test]
fn a_429_reported_from_the_shell_pauses_that_budget_only() {
    let daemon = Pacerd::start_in_temp_dir(&[]);
    let key = stdout(&daemon.pacer(&["key-id"], "sk-ant-one"));
    assert_eq!(key.len(), 16);

    let lease = stdout(&daemon.pacer(&["acquire", "--model", "claude-sonnet-4-5"], "sk-ant-one"));
    assert!(lease.parse::<u64>().unwrap() > 0);
    let reported = daemon.pacer(
        &["report", &lease, "--status", "429", "--retry-after", "30"],
        "sk-ant-one",
    );
    let said = String::from_utf8_lossy(&reported.stderr);
    assert!(
        said.contains("429 (a per-minute limit): every peer on the budget pauses until"),
        "{said}"
    );

    let status = daemon.status();
    let sonnet = budget_json(&status, &key, "sonnet");
    let until = humantime::parse_rfc3339(sonnet["paused_until"].as_str().unwrap()).unwrap();
    let left = until.duration_since(SystemTime::now()).unwrap();
    assert!(
        left > Duration::from_secs(25) && left <= Duration::from_secs(31),
        "{left:?}"
    );
    assert_eq!(sonnet["rate_limited"], 1);
    assert_eq!(sonnet["in_flight"], 0);

    // The same key and model waits (and gives up after its timeout)...
    let started = Instant::now();
    let waited = daemon.pacer(
        &["acquire", "--model", "claude-sonnet-4-5", "--timeout", "1"],
        "sk-ant-one",
    );
    assert_eq!(waited.status.code(), Some(2));
    assert!(started.elapsed() >= Duration::from_secs(1));
    let message = String::from_utf8_lossy(&waited.stderr);
    assert!(message.contains("would have been about"), "{message}");

    // ...while another model class, or another key, is granted at once.
    let haiku = stdout(&daemon.pacer(&["acquire", "--model", "claude-haiku-4-5"], "sk-ant-one"));
    let other_key =
        stdout(&daemon.pacer(&["acquire", "--model", "claude-sonnet-4-5"], "sk-ant-two"));
    stdout(&daemon.pacer(&["release", &haiku], "sk-ant-one"));
    stdout(&daemon.pacer(
        &[
            "report",
            &other_key,
            "--status",
            "200",
            "--input-tokens",
            "12",
            "--output-tokens",
            "3",
        ],
        "sk-ant-two",
    ));
    let status = daemon.status();
    assert_eq!(budget_json(&status, &key, "haiku")["in_flight"], 0);
}

#[test]
fn a_bare_429_reported_from_the_shell_pauses_nobody_and_says_so() {
    let daemon = Pacerd::start_in_temp_dir(&[]);
    let dir = tempfile::tempdir().unwrap();
    let headers = dir.path().join("headers");
    std::fs::write(
        &headers,
        "HTTP/2 429 \r\nx-should-retry: true\r\nx-robots-tag: none\r\n\r\n",
    )
    .unwrap();
    let lease = stdout(&daemon.pacer(&["acquire", "--model", "claude-sonnet-4-5"], "sk"));
    let reported = daemon.pacer(
        &[
            "report",
            &lease,
            "--headers-file",
            headers.to_str().unwrap(),
        ],
        "sk",
    );
    assert!(reported.status.success());
    let said = String::from_utf8_lossy(&reported.stderr);
    assert!(said.contains("429 (bare"), "{said}");
    assert!(said.contains("nothing else is paused"), "{said}");
    let key = stdout(&daemon.pacer(&["key-id"], "sk"));
    let status = daemon.status();
    let sonnet = budget_json(&status, &key, "sonnet");
    assert_eq!(sonnet["paused_until"], serde_json::Value::Null);
    assert_eq!(sonnet["throttled"]["bare"], 1);
    // The next call goes at once.
    let next = daemon.pacer(
        &[
            "acquire",
            "--model",
            "claude-sonnet-4-5",
            "--timeout",
            "0.5",
        ],
        "sk",
    );
    assert!(next.status.success());
}

#[test]
fn a_report_reads_curl_headers_and_the_response_body() {
    let daemon = Pacerd::start_in_temp_dir(&[]);
    let dir = tempfile::tempdir().unwrap();
    let headers = dir.path().join("headers");
    let body = dir.path().join("body.json");
    std::fs::write(
        &headers,
        "HTTP/2 200 \r\nanthropic-ratelimit-requests-limit: 50\r\nanthropic-ratelimit-requests-remaining: 49\r\n\
         anthropic-ratelimit-input-tokens-limit: 30000\r\nanthropic-ratelimit-output-tokens-limit: 8000\r\n\r\n",
    )
    .unwrap();
    std::fs::write(
        &body,
        r#"{"usage":{"input_tokens":100,"output_tokens":20}}"#,
    )
    .unwrap();
    let lease = stdout(&daemon.pacer(&["acquire", "--model", "claude-opus-4-1"], "sk"));
    stdout(&daemon.pacer(
        &[
            "report",
            &lease,
            "--headers-file",
            headers.to_str().unwrap(),
            "--body-file",
            body.to_str().unwrap(),
        ],
        "sk",
    ));
    let key = stdout(&daemon.pacer(&["key-id"], "sk"));
    let status = daemon.status();
    let opus = budget_json(&status, &key, "opus");
    assert_eq!(opus["limits"]["rpm"], 50);
    assert_eq!(opus["limits"]["itpm"], 30000);
    assert_eq!(opus["limits"]["otpm"], 8000);
    // A report for a lease already settled is an error naming the lease.
    let again = daemon.pacer(&["report", &lease, "--status", "200"], "sk");
    assert!(!again.status.success());
    assert!(String::from_utf8_lossy(&again.stderr).contains(&lease));
}

#[test]
fn an_administrator_pauses_and_lifts_a_budget() {
    let daemon = Pacerd::start_in_temp_dir(&[]);
    stdout(&daemon.pacer(&["pause", "--model", "opus", "--for", "2m"], "sk"));
    let key = stdout(&daemon.pacer(&["key-id"], "sk"));
    assert!(budget_json(&daemon.status(), &key, "opus")["paused_until"].is_string());
    let table = stdout(&daemon.pacer(&["status"], "sk"));
    assert!(table.contains("opus") && table.contains("more"), "{table}");
    stdout(&daemon.pacer(&["pause", "--model", "opus", "--for", "0"], "sk"));
    assert!(budget_json(&daemon.status(), &key, "opus")["paused_until"].is_null());
}

#[cfg(unix)]
#[test]
fn sigterm_stops_the_daemon_cleanly() {
    let mut daemon = Pacerd::start_in_temp_dir(&[]);
    daemon.signal(libc::SIGTERM);
    let status = daemon.wait();
    assert!(status.success(), "{status:?}");
    assert!(!daemon.socket().exists(), "the socket is removed on exit");
}

#[test]
fn pacer_run_points_the_command_at_the_gateway_and_passes_its_exit_code() {
    let daemon = Pacerd::start_in_temp_dir(&[]);
    let out = daemon.pacer(
        &[
            "run",
            "--priority",
            "batch",
            "--name",
            "nightly job",
            "--",
            "sh",
            "-c",
            "echo \"$ANTHROPIC_BASE_URL\"; exit 7",
        ],
        "sk",
    );
    assert_eq!(out.status.code(), Some(7));
    let url = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    assert!(url.starts_with("http://127.0.0.1:"), "{url}");
    assert!(url.ends_with("/s/nightly_job~batch"), "{url}");

    let env = stdout(&daemon.pacer(&["env", "--priority", "interactive", "--name", "me"], "sk"));
    assert!(
        env.starts_with("export ANTHROPIC_BASE_URL='http://127.0.0.1:"),
        "{env}"
    );
    assert!(env.ends_with("/s/me~interactive'"), "{env}");
}

#[cfg(unix)]
#[test]
fn pacer_run_passes_signals_through() {
    let daemon = Pacerd::start_in_temp_dir(&[]);
    let out = daemon.pacer(&["run", "--", "sh", "-c", "kill -TERM $$"], "sk");
    use std::os::unix::process::ExitStatusExt;
    assert_eq!(out.status.signal(), Some(libc::SIGTERM));
}

#[test]
fn pacer_run_starts_a_daemon_when_none_is_running() {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("pacer.sock");
    let out = Command::new(binary("pacer"))
        .args(["run", "--", "sh", "-c", "echo \"$ANTHROPIC_BASE_URL\""])
        .env("PACER_SOCKET", &socket)
        .env("PACER_GATEWAY", "127.0.0.1:0")
        .env("XDG_STATE_HOME", dir.path())
        .env("XDG_CONFIG_HOME", dir.path())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    let pid: Option<i32> = stderr
        .split("(pid ")
        .nth(1)
        .and_then(|rest| rest.split(')').next())
        .and_then(|pid| pid.parse().ok());
    let stop = |pid: Option<i32>| {
        #[cfg(unix)]
        if let Some(pid) = pid {
            // SAFETY: signalling the daemon this test started.
            unsafe { libc::kill(pid, libc::SIGTERM) };
        }
        #[cfg(not(unix))]
        let _ = pid; // left to exit with the test's temporary directory
    };
    let url = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    let status = pacer(&socket, &["status"], "k");
    stop(pid);
    assert!(out.status.success(), "{stderr}");
    assert!(stderr.contains("started pacerd"), "{stderr}");
    assert!(pid.is_some(), "{stderr}");
    assert!(url.contains("/s/sh-"), "{url}");
    assert!(status.status.success(), "the daemon it started answers");
    assert!(dir.path().join("pacer").join("pacerd.log").exists());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn probe_shows_the_limits_and_teaches_them_to_the_daemon() {
    let mock = pacer_tests::mock::MockUpstream::start(pacer_tests::mock::MockConfig {
        rpm: 50,
        itpm: 30_000,
        otpm: 8_000,
        ..Default::default()
    })
    .await;
    let url = mock.url();
    let (table, status) = tokio::task::spawn_blocking(move || {
        let daemon = Pacerd::start_in_temp_dir(&[]);
        let out = Command::new(binary("pacer"))
            .args(["probe", "--upstream", &url, "--model", "claude-haiku-4-5"])
            .env("PACER_SOCKET", daemon.socket())
            .env("ANTHROPIC_API_KEY", "sk-probe")
            .output()
            .unwrap();
        (stdout(&out), daemon.status())
    })
    .await
    .unwrap();
    let lines: Vec<&str> = table.lines().collect();
    assert!(lines[0].starts_with("200"), "{table}");
    assert!(
        lines
            .iter()
            .any(|l| l.starts_with("requests") && l.contains("50") && l.contains("49")),
        "{table}"
    );
    assert!(
        lines
            .iter()
            .any(|l| l.starts_with("input tokens") && l.contains("30000")),
        "{table}"
    );
    let key = KeyFingerprint::of("sk-probe").to_string();
    let haiku = budget_json(&status, &key, "haiku");
    assert_eq!(haiku["limits"]["rpm"], 50);
    assert_eq!(haiku["limits"]["otpm"], 8000);
    assert_eq!(haiku["granted"], 1);
}

#[test]
fn pacer_run_marks_a_command_from_a_terminal_interactive_and_one_without_normal() {
    let daemon = Pacerd::start_in_temp_dir(&[]);
    let echo = "echo \"$ANTHROPIC_BASE_URL\"";
    // Without a terminal (as cron or a script would run it): normal.
    let out = daemon.pacer(&["run", "--name", "job", "--", "sh", "-c", echo], "sk");
    let url = String::from_utf8_lossy(&out.stdout);
    assert!(url.contains("/s/job~normal"), "{url}");
    // From a terminal (`script` gives it one): interactive.
    if std::path::Path::new("/usr/bin/script").exists() {
        let command = format!(
            "{} run --name job -- sh -c '{echo}'",
            binary("pacer").display()
        );
        let out = Command::new("/usr/bin/script")
            .args(["-qec", &command, "/dev/null"])
            .env("PACER_SOCKET", daemon.socket())
            .stdin(std::process::Stdio::null())
            .output()
            .unwrap();
        let url = String::from_utf8_lossy(&out.stdout);
        assert!(url.contains("/s/job~interactive"), "{url}");
    }
    // Said explicitly, it wins.
    let out = daemon.pacer(
        &[
            "run",
            "--priority",
            "batch",
            "--name",
            "job",
            "--",
            "sh",
            "-c",
            echo,
        ],
        "sk",
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("/s/job~batch"));
}

#[test]
fn a_report_far_too_large_for_a_frame_is_bounded_and_pauses_as_its_429_says() {
    let daemon = Pacerd::start_in_temp_dir(&[]);
    let dir = tempfile::tempdir().unwrap();
    let key = stdout(&daemon.pacer(&["key-id"], "sk-ant-big"));
    let lease = stdout(&daemon.pacer(&["acquire", "--model", "claude-sonnet-4-5"], "sk-ant-big"));
    // curl -D: a 429 with 20 MB of headers besides its retry-after, and a 1.2 MB message.
    let mut headers = String::from("HTTP/1.1 429 Too Many Requests\r\n");
    for i in 0..2_000 {
        headers.push_str(&format!("x-junk-{i}: {}\r\n", "y".repeat(10_000)));
    }
    headers.push_str("retry-after: 20\r\n\r\n");
    let body = serde_json::json!({
        "type": "error",
        "error": {"type": "rate_limit_error", "message": "m".repeat(1_200_000)},
    });
    let (headers_file, body_file) = (dir.path().join("h"), dir.path().join("b"));
    std::fs::write(&headers_file, headers).unwrap();
    std::fs::write(&body_file, body.to_string()).unwrap();
    let started = Instant::now();
    let reported = daemon.pacer(
        &[
            "report",
            &lease,
            "--headers-file",
            headers_file.to_str().unwrap(),
            "--body-file",
            body_file.to_str().unwrap(),
        ],
        "sk-ant-big",
    );
    eprintln!("pacer report took {:?}", started.elapsed());
    stdout(&reported);
    let status = daemon.status();
    let sonnet = budget_json(&status, &key, "sonnet");
    assert_eq!(sonnet["in_flight"], 0, "{sonnet}");
    assert_eq!(sonnet["rate_limited"], 1, "{sonnet}");
    let until = humantime::parse_rfc3339(sonnet["paused_until"].as_str().unwrap()).unwrap();
    assert!(
        until > SystemTime::now() + Duration::from_secs(10),
        "{sonnet}"
    );
}
