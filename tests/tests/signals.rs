//! Quota signals where people and agents are, against the mock API's subscription: Claude
//! Code's hooks (`pacer hook`, fed the JSON Claude Code sends) and the MCP server (`pacer mcp`,
//! driven by the official `mcp` SDK, and registered with Claude Code itself).

use std::io::Write;
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use pacer_tests::mock::{MockConfig, MockUpstream, Plan};
use pacer_tests::{TestDaemon, binary};
use serde_json::{Value, json};

const TOKEN: &str = "sk-ant-oat01-signals";
const SESSION: &str = "5b1f0a3c-7e2d-4c1e-9d7a-0a1b2c3d4e5f";

/// A subscription whose 5-hour window is at `percent` % after one call of [`SESSION`] through
/// the gateway.
async fn account_at(percent: u64) -> (MockUpstream, TestDaemon) {
    let mock = MockUpstream::start(MockConfig {
        subscription: Some(Plan {
            five_hour: 100,
            five_hour_used: percent - 1,
            ..Plan::default()
        }),
        ..MockConfig::default()
    })
    .await;
    let daemon = TestDaemon::in_front_of(&mock.url(), "", Duration::from_secs(5)).await;
    let base = daemon.gateway_url().await;
    let response = reqwest::Client::new()
        .post(format!("{base}/v1/messages"))
        .header("authorization", format!("Bearer {TOKEN}"))
        .header("x-claude-code-session-id", SESSION)
        .json(&json!({"model": "claude-sonnet-4-5", "max_tokens": 16,
                      "messages": [{"role": "user", "content": "hi"}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    (mock, daemon)
}

/// Runs `pacer hook ARGS` with `input` on stdin, as Claude Code runs a hook.
fn hook(socket: &Path, state: &Path, args: &[&str], input: &Value) -> Output {
    let mut child = Command::new(binary("pacer"))
        .arg("hook")
        .args(args)
        .env("PACER_SOCKET", socket)
        .env("XDG_STATE_HOME", state)
        .env_remove("ANTHROPIC_API_KEY")
        .env_remove("ANTHROPIC_AUTH_TOKEN")
        .env_remove("CLAUDE_CODE_OAUTH_TOKEN")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    stdin.write_all(input.to_string().as_bytes()).unwrap();
    drop(stdin);
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "{out:?}");
    out
}

fn prompt() -> Value {
    json!({"session_id": SESSION, "transcript_path": "/tmp/t.jsonl", "cwd": "/tmp",
           "permission_mode": "default", "hook_event_name": "UserPromptSubmit",
           "prompt": "go on"})
}

fn subagent(tool: &str) -> Value {
    json!({"session_id": SESSION, "transcript_path": "/tmp/t.jsonl", "cwd": "/tmp",
           "permission_mode": "default", "hook_event_name": "PreToolUse", "tool_name": tool,
           "tool_input": {"description": "survey", "prompt": "look around"},
           "tool_use_id": "toolu_01"})
}

fn answer(out: &Output) -> Value {
    serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&out.stdout)))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn at_92_percent_a_turn_is_told_once_and_a_subagent_is_asked_about() {
    let (_mock, daemon) = account_at(92).await;
    let state = tempfile::tempdir().unwrap();
    let socket = daemon.socket();
    let out = hook(socket, state.path(), &[], &prompt());
    let told = answer(&out);
    assert_eq!(
        told["hookSpecificOutput"]["hookEventName"],
        "UserPromptSubmit"
    );
    let context = told["hookSpecificOutput"]["additionalContext"]
        .as_str()
        .unwrap();
    assert!(
        context.starts_with("pacer: the 5-hour window is at 92 %, resets "),
        "{context}"
    );
    // Once per crossing: the next turn is told nothing.
    let again = hook(socket, state.path(), &[], &prompt());
    assert!(again.stdout.is_empty(), "{again:?}");
    // A subagent is asked about, under either of its names; another tool is not.
    for tool in ["Task", "Agent"] {
        let asked = answer(&hook(socket, state.path(), &[], &subagent(tool)));
        let output = &asked["hookSpecificOutput"];
        assert_eq!(output["hookEventName"], "PreToolUse");
        assert_eq!(output["permissionDecision"], "ask");
        let reason = output["permissionDecisionReason"].as_str().unwrap();
        assert!(reason.contains("the 5-hour window is at 92 %"), "{reason}");
    }
    assert!(
        hook(socket, state.path(), &[], &subagent("Bash"))
            .stdout
            .is_empty()
    );
    // Configured to deny, it denies.
    let denied = answer(&hook(
        socket,
        state.path(),
        &["--decision", "deny"],
        &subagent("Task"),
    ));
    assert_eq!(denied["hookSpecificOutput"]["permissionDecision"], "deny");
    // A higher threshold not yet crossed says nothing; a threshold above 100 % is a mistake.
    let fresh = tempfile::tempdir().unwrap();
    let quiet = hook(socket, fresh.path(), &["--thresholds", "95"], &prompt());
    assert!(quiet.stdout.is_empty(), "{quiet:?}");
    // A hook command line pacer cannot read says why and exits 1, never 2 (which would block
    // every prompt).
    for (args, said) in [
        (&["--thresholds", "150"][..], "`150`"),
        (
            &["--thresholds", "0.9"][..],
            "give percentages (90, not 0.9)",
        ),
        (&["--no-such-flag"][..], "--no-such-flag"),
    ] {
        let bad = Command::new(binary("pacer"))
            .arg("hook")
            .args(args)
            .stdin(Stdio::null())
            .output()
            .unwrap();
        assert_eq!(bad.status.code(), Some(1), "{bad:?}");
        assert!(
            String::from_utf8_lossy(&bad.stderr).contains(said),
            "{bad:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn at_10_percent_and_with_pacerd_away_the_hooks_say_nothing() {
    let (_mock, daemon) = account_at(10).await;
    let state = tempfile::tempdir().unwrap();
    for input in [prompt(), subagent("Task")] {
        let out = hook(daemon.socket(), state.path(), &[], &input);
        assert!(out.stdout.is_empty(), "{out:?}");
    }
    // pacerd away, or stdin not JSON: exit 0, nothing printed.
    let away = state.path().join("nobody.sock");
    for input in [prompt(), subagent("Task"), json!("not a hook")] {
        let out = hook(&away, state.path(), &[], &input);
        assert!(out.stdout.is_empty(), "{out:?}");
    }
}

#[test]
fn hook_install_adds_both_hooks_once_and_keeps_the_rest() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("settings.json");
    let before = r#"{"model": "opus", "hooks": {"PreToolUse": [{"matcher": "Bash", "hooks": [{"type": "command", "command": "audit"}]}]}, "big": 12345678901234567890123}"#;
    std::fs::write(&path, before).unwrap();
    let install = || {
        Command::new(binary("pacer"))
            .args(["hook", "--install", "--settings"])
            .arg(&path)
            .output()
            .unwrap()
    };
    assert!(install().status.success());
    let text = std::fs::read_to_string(&path).unwrap();
    let settings: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(settings["model"], "opus");
    assert!(text.contains("12345678901234567890123"), "{text}");
    let pre = settings["hooks"]["PreToolUse"].as_array().unwrap();
    assert_eq!(pre.len(), 2, "{pre:?}");
    assert_eq!(pre[0]["hooks"][0]["command"], "audit");
    assert_eq!(pre[1]["matcher"], "Task|Agent");
    assert!(
        pre[1]["hooks"][0]["command"]
            .as_str()
            .unwrap()
            .ends_with(" hook")
    );
    let submit = settings["hooks"]["UserPromptSubmit"].as_array().unwrap();
    assert_eq!(submit.len(), 1);
    // Idempotent: a second install changes nothing, and writes no second backup.
    let backups = || {
        std::fs::read_dir(dir.path())
            .unwrap()
            .filter(|e| {
                e.as_ref()
                    .unwrap()
                    .file_name()
                    .to_string_lossy()
                    .contains(".bak-")
            })
            .count()
    };
    assert_eq!(backups(), 1);
    let second = install();
    assert!(String::from_utf8_lossy(&second.stderr).contains("nothing changed"));
    assert_eq!(std::fs::read_to_string(&path).unwrap(), text);
    assert_eq!(backups(), 1);
}

#[cfg_attr(
    not(pacer_e2e_python),
    ignore = "needs $PACER_E2E_PYTHON when built: run .ci/e2e-setup"
)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_mcp_client_finds_the_window_tool_and_reads_the_sessions_account() {
    let (_mock, daemon) = account_at(92).await;
    let run = mcp_client;
    let socket = format!("PACER_SOCKET={}", daemon.socket().display());
    let got = run(vec![
        socket.clone(),
        format!("CLAUDE_CODE_SESSION_ID={SESSION}"),
    ]);
    assert_eq!(got["server"], "pacer");
    let times: Vec<String> = got["calls"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| format!("{} {} ms", c["tool"].as_str().unwrap(), c["ms"]))
        .collect();
    println!("MCP tool calls answered in: {}", times.join(", "));
    let tools = got["tools"].as_object().unwrap();
    assert!(tools.contains_key("pacer_windows"), "{tools:?}");
    assert_eq!(tools["pacer_fanout_fits"]["required"], json!(["count"]));
    let calls = got["calls"].as_array().unwrap();
    let text = |i: usize| calls[i]["text"].as_str().unwrap().to_owned();
    // The window tool: the account the session's calls went to, at the utilization pacer saw.
    assert!(
        text(0).contains("found by this session's calls"),
        "{}",
        text(0)
    );
    assert!(
        text(0).contains("the 5-hour window: 92 % used; resets "),
        "{}",
        text(0)
    );
    // Three subagents of batch work do not fit past batch's 80 % ceiling; one call does.
    assert!(text(1).starts_with("No: 3 subagents"), "{}", text(1));
    assert!(
        text(1).contains("batch work may take it to 80 %"),
        "{}",
        text(1)
    );
    assert!(
        text(2).starts_with("Yes: 1 call at normal priority fits"),
        "{}",
        text(2)
    );
    // A bad argument is a tool error the model can read.
    assert_eq!(calls[3]["error"], true);
    assert!(text(3).contains("`count`"), "{}", text(3));
    assert!(
        text(4).contains("batch work is held by the 5-hour window"),
        "{}",
        text(4)
    );
    // Without the session id, the key in the environment finds the account.
    let by_key = run(vec![socket, format!("ANTHROPIC_AUTH_TOKEN={TOKEN}")]);
    let text = by_key["calls"][0]["text"].as_str().unwrap();
    assert!(
        text.contains("found by the API key in this environment"),
        "{text}"
    );
    // pacerd away: every tool says so plainly.
    let away = run(vec!["PACER_SOCKET=/nonexistent/pacer.sock".into()]);
    for call in away["calls"].as_array().unwrap() {
        assert_eq!(call["error"], true);
        let text = call["text"].as_str().unwrap();
        // (The bad argument is said first, pacerd or not.)
        assert!(
            text.starts_with("pacerd is not running") || text.contains("`count`"),
            "{text}"
        );
    }
}

#[cfg_attr(
    not(all(pacer_e2e_claude, pacer_e2e_python)),
    ignore = "needs $PACER_E2E_CLAUDE and $PACER_E2E_PYTHON when built: run .ci/e2e-setup"
)]
#[cfg(unix)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn claude_code_connects_to_pacer_mcp_and_gives_it_the_session_it_paces() {
    let claude = std::env::var("PACER_E2E_CLAUDE").expect("set when built");
    let (_mock, daemon) = account_at(92).await;
    let home = tempfile::tempdir().unwrap();
    let pacer = binary("pacer");
    // `pacer` on the PATH, as installed.
    let path = std::env::join_paths(std::iter::once(pacer.parent().unwrap().to_owned()).chain(
        std::env::split_paths(&std::env::var_os("PATH").unwrap_or_default()),
    ))
    .unwrap();
    let in_home = |home: &Path, args: &[&str]| {
        let mut command = Command::new(&claude);
        command
            .args(args)
            .current_dir(home)
            .env("HOME", home)
            .env("PATH", &path)
            .env("PACER_SOCKET", daemon.socket())
            .env("CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC", "1")
            .stdin(Stdio::null());
        command
    };
    let connected = |home: &Path, name: &str| {
        let list = in_home(home, &["mcp", "list"]).output().unwrap();
        let listed = String::from_utf8_lossy(&list.stdout).into_owned();
        println!("claude mcp list: {listed}");
        let line = listed.lines().find(|l| l.starts_with(&format!("{name}:")));
        assert!(line.is_some_and(|l| l.contains("Connected")), "{listed}");
    };
    // As the README says: `claude mcp add pacer -- pacer mcp`, then `claude mcp list`.
    let first = tempfile::tempdir().unwrap();
    let add = in_home(first.path(), &["mcp", "add", "pacer", "--", "pacer", "mcp"])
        .output()
        .unwrap();
    assert!(add.status.success(), "{add:?}");
    connected(first.path(), "pacer");
    let claude_in_home = |args: &[&str]| in_home(home.path(), args);
    // `pacer mcp --install` registers it for the user, as `claude mcp add --scope user` would.
    let install = Command::new(&pacer)
        .args(["mcp", "--install", "--config"])
        .arg(home.path().join(".claude.json"))
        .output()
        .unwrap();
    assert!(install.status.success(), "{install:?}");
    // A spy beside it: the environment Claude Code gives a stdio server, then pacer mcp.
    let spy = home.path().join("spy.sh");
    let seen = home.path().join("mcp-env.txt");
    std::fs::write(
        &spy,
        format!(
            "#!/bin/sh\nenv > '{}'\nexec '{}' mcp\n",
            seen.display(),
            pacer.display()
        ),
    )
    .unwrap();
    std::fs::set_permissions(&spy, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let add = claude_in_home(&["mcp", "add", "spy", "--"])
        .arg(&spy)
        .output()
        .unwrap();
    assert!(add.status.success(), "{add:?}");
    connected(home.path(), "pacer");
    connected(home.path(), "spy");
    // A session through pacer: Claude Code starts the servers with its session id.
    let _ = std::fs::remove_file(&seen);
    let session = Command::new(&pacer)
        .args(["run", "--"])
        .arg(&claude)
        .args(["-p", "say hi"])
        .current_dir(home.path())
        .env("PACER_SOCKET", daemon.socket())
        .env("HOME", home.path())
        .env("CLAUDE_CODE_OAUTH_TOKEN", TOKEN)
        .env("CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC", "1")
        .env_remove("ANTHROPIC_API_KEY")
        .env_remove("ANTHROPIC_BASE_URL")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(session.status.success(), "{session:?}");
    let env = std::fs::read_to_string(&seen).expect("Claude Code started the spy");
    let id = env
        .lines()
        .find_map(|l| l.strip_prefix("CLAUDE_CODE_SESSION_ID="))
        .unwrap_or_else(|| panic!("no session id given to the MCP server: {env}"));
    println!("CLAUDE_CODE_SESSION_ID={id}");
    let status = daemon.client().await.status().await.unwrap();
    assert!(
        status.sessions.iter().any(|s| s.id == id),
        "the gateway saw that session: {:?}",
        status.sessions
    );
    // The window tool, asked with what Claude Code gave, finds that session's account.
    let got = mcp_client(vec![
        format!("PACER_SOCKET={}", daemon.socket().display()),
        format!("CLAUDE_CODE_SESSION_ID={id}"),
    ]);
    let text = got["calls"][0]["text"].as_str().unwrap();
    assert!(text.contains("found by this session's calls"), "{text}");
    assert!(text.contains("the 5-hour window: 93 % used"), "{text}");
}

/// Runs `e2e/mcp_client.py` against `pacer mcp`, with `env` for the server.
fn mcp_client(env: Vec<String>) -> Value {
    let python = std::env::var("PACER_E2E_PYTHON").expect("set when built");
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("e2e/mcp_client.py");
    let out = Command::new(python)
        .arg(script)
        .arg(binary("pacer"))
        .args(env)
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    serde_json::from_slice(&out.stdout).unwrap()
}
