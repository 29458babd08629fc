//! What the session benchmarks share: a `pacerd` of any build in front of the mock, `claude -p`
//! sessions, and Messages calls as Claude Code makes them (retrying a 429 as it does).

use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

use serde_json::json;

/// A port free now on loopback, for a `pacerd` of any version (told with `--gateway`).
fn free_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("a free port");
    listener.local_addr().expect("its address").port()
}

/// Starts `pacerd` (any build: only its command line and gateway are used) in front of
/// `upstream`, isolated in `dir`; returns it and its gateway's URL.
pub async fn start_pacerd(
    pacerd: &Path,
    dir: &Path,
    upstream: &str,
) -> (tokio::process::Child, String) {
    let listen = format!("127.0.0.1:{}", free_port());
    let child = tokio::process::Command::new(pacerd)
        .arg("--socket")
        .arg(dir.join("pacer.sock"))
        .args(["--gateway", &listen, "--upstream", upstream])
        .arg("--state")
        .arg(dir.join("state"))
        .arg("--log-dir")
        .arg(dir.join("logs"))
        .env("XDG_CONFIG_HOME", dir)
        .env("XDG_STATE_HOME", dir)
        .env_remove("PACER_CONFIG")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("pacerd starts");
    let url = format!("http://{listen}");
    let http = reqwest::Client::new();
    for _ in 0..200 {
        if http
            .get(format!("{url}/healthz"))
            .send()
            .await
            .is_ok_and(|r| r.status().is_success())
        {
            return (child, url);
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("pacerd's gateway did not answer at {url}");
}

/// A `claude -p` session: the command, what it is asked, and where its calls go.
pub struct Claude<'a> {
    pub command: &'a Path,
    pub prompt: &'a str,
    pub base: &'a str,
    pub key: &'a str,
    pub model: &'a str,
}

impl Claude<'_> {
    /// Runs one session in `home`; whether it answered, and when it ended (since `since`).
    pub async fn run(&self, home: &Path, since: Instant) -> (bool, Duration) {
        std::fs::create_dir_all(home).expect("a home for the session");
        let output = tokio::process::Command::new(self.command)
            .args(["-p", self.prompt])
            .current_dir(home)
            .env("HOME", home)
            .env("ANTHROPIC_BASE_URL", self.base)
            .env("ANTHROPIC_API_KEY", self.key)
            // The model the benchmark's own sessions use: one budget for all.
            .env("ANTHROPIC_MODEL", self.model)
            .env("CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC", "1")
            .env_remove("ANTHROPIC_AUTH_TOKEN")
            .env_remove("CLAUDE_CODE_OAUTH_TOKEN")
            .stdin(Stdio::null())
            .kill_on_drop(true)
            .output();
        let answered = match tokio::time::timeout(Duration::from_secs(900), output).await {
            Ok(Ok(output)) => {
                output.status.success() && String::from_utf8_lossy(&output.stdout).contains("mock")
            }
            _ => false,
        };
        (answered, since.elapsed())
    }
}

/// The version `claude --version` prints.
pub fn claude_version(claude: &Path) -> String {
    std::process::Command::new(claude)
        .arg("--version")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
        .unwrap_or_default()
}

/// One streamed Messages call of Claude Code session `session` (a 22-token body); with
/// `retry`, a 429 is waited out and sent again as Claude Code does (its `retry-after`, up to
/// 60 s, up to 10 times). Its last status (0 when it never answered) and how long it took.
pub async fn session_call(
    http: &reqwest::Client,
    base: &str,
    key: &str,
    model: &str,
    session: &str,
    retry: bool,
) -> (u16, Duration) {
    let started = Instant::now();
    let mut status = 0;
    for _ in 0..=10 {
        let sent = http
            .post(format!("{base}/v1/messages"))
            .header("x-api-key", key)
            .header("x-claude-code-session-id", session)
            .json(&json!({"model": model, "max_tokens": 16, "stream": true,
                          "messages": [{"role": "user", "content": "hi"}]}))
            .send()
            .await;
        let Ok(response) = sent else {
            break;
        };
        status = response.status().as_u16();
        let retry_after = response
            .headers()
            .get("retry-after")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<f64>().ok());
        let _ = response.bytes().await;
        let wait = match (status, retry_after) {
            (429, Some(wait)) if retry && wait <= 60.0 => Duration::from_secs_f64(wait),
            (429, None) if retry => Duration::from_secs(2),
            _ => break,
        };
        tokio::time::sleep(wait).await;
    }
    (status, started.elapsed())
}
