//! The real `pacerd` and `pacer` binaries, as a user runs them.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant, SystemTime};

use pacer_tests::binary;
use serde_json::Value;

struct Daemon {
    child: Child,
    socket: PathBuf,
    _dir: tempfile::TempDir,
}

impl Daemon {
    fn start() -> Daemon {
        let dir = tempfile::tempdir().unwrap();
        let socket = dir.path().join("pacer.sock");
        let child = Command::new(binary("pacerd"))
            .arg("--socket")
            .arg(&socket)
            .args(["--gateway", "127.0.0.1:0"])
            .env_remove("PACER_CONFIG")
            .env("XDG_CONFIG_HOME", dir.path())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let daemon = Daemon {
            child,
            socket,
            _dir: dir,
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        while !daemon.pacer(&["status"], "k").status.success() {
            assert!(Instant::now() < deadline, "pacerd did not come up");
            std::thread::sleep(Duration::from_millis(50));
        }
        daemon
    }

    fn pacer(&self, args: &[&str], api_key: &str) -> Output {
        pacer_at(&self.socket, args, api_key)
    }

    fn status(&self) -> Value {
        let out = self.pacer(&["status", "--json"], "k");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice(&out.stdout).unwrap()
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn pacer_at(socket: &Path, args: &[&str], api_key: &str) -> Output {
    Command::new(binary("pacer"))
        .args(args)
        .env("PACER_SOCKET", socket)
        .env("ANTHROPIC_API_KEY", api_key)
        .output()
        .unwrap()
}

fn stdout(out: &Output) -> String {
    assert!(
        out.status.success(),
        "exit {:?}: {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

fn budget<'a>(status: &'a Value, key: &str, class: &str) -> &'a Value {
    status["budgets"]
        .as_array()
        .unwrap()
        .iter()
        .find(|b| b["key"] == key && b["model_class"] == class)
        .unwrap_or_else(|| panic!("no budget {key}/{class} in {status}"))
}

#[test]
fn a_429_reported_from_the_shell_pauses_that_budget_only() {
    let daemon = Daemon::start();
    let key = stdout(&daemon.pacer(&["key-id"], "sk-ant-one"));
    assert_eq!(key.len(), 16);

    let lease = stdout(&daemon.pacer(&["acquire", "--model", "claude-sonnet-4-5"], "sk-ant-one"));
    assert!(lease.parse::<u64>().unwrap() > 0);
    stdout(&daemon.pacer(
        &["report", &lease, "--status", "429", "--retry-after", "30"],
        "sk-ant-one",
    ));

    let status = daemon.status();
    let sonnet = budget(&status, &key, "sonnet");
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
    assert_eq!(budget(&status, &key, "haiku")["in_flight"], 0);
}

#[test]
fn a_report_reads_curl_headers_and_the_response_body() {
    let daemon = Daemon::start();
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
    let opus = budget(&status, &key, "opus");
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
    let daemon = Daemon::start();
    stdout(&daemon.pacer(&["pause", "--model", "opus", "--for", "2m"], "sk"));
    let key = stdout(&daemon.pacer(&["key-id"], "sk"));
    assert!(budget(&daemon.status(), &key, "opus")["paused_until"].is_string());
    let table = stdout(&daemon.pacer(&["status"], "sk"));
    assert!(table.contains("opus") && table.contains("more"), "{table}");
    stdout(&daemon.pacer(&["pause", "--model", "opus", "--for", "0"], "sk"));
    assert!(budget(&daemon.status(), &key, "opus")["paused_until"].is_null());
}

#[test]
fn sigterm_stops_the_daemon_cleanly() {
    let mut daemon = Daemon::start();
    #[cfg(unix)]
    {
        let pid = daemon.child.id() as i32;
        // SAFETY: sending a signal to our own child process.
        assert_eq!(unsafe { libc::kill(pid, libc::SIGTERM) }, 0);
        let status = daemon.child.wait().unwrap();
        assert!(status.success(), "{status:?}");
        assert!(!daemon.socket.exists(), "the socket is removed on exit");
    }
}
