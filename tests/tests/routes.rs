//! `pacer run` keeps a command's own endpoint: against a real pacerd and real `pacer`, with two
//! mock upstreams — the daemon's (A) and the command's own (B, behind a path prefix).

use std::process::{Command, Output};

use pacer_tests::mock::{MockConfig, MockUpstream, Plan};
use pacer_tests::{Pacerd, binary};
use serde_json::{Value, json};

const KEY: &str = "sk-ant-routes";

/// Runs `pacer ARGS` against `daemon` with `env` set (and no ANTHROPIC_BASE_URL unless given).
fn pacer(daemon: &Pacerd, args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut command = Command::new(binary("pacer"));
    command
        .args(args)
        .env("PACER_SOCKET", daemon.socket())
        .env("ANTHROPIC_API_KEY", KEY)
        .env_remove("ANTHROPIC_BASE_URL")
        .env_remove("CLAUDE_CODE_USE_BEDROCK")
        .env_remove("CLAUDE_CODE_USE_VERTEX");
    for (name, value) in env {
        command.env(name, value);
    }
    command.output().unwrap()
}

/// The base URL `pacer run` gives a command under `env`, and what pacer said on stderr.
fn wrapped_url(daemon: &Pacerd, env: &[(&str, &str)]) -> (String, String) {
    let out = pacer(
        daemon,
        &[
            "run",
            "--name",
            "job",
            "--",
            "sh",
            "-c",
            "echo \"$ANTHROPIC_BASE_URL\"",
        ],
        env,
    );
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "{stderr}");
    (
        String::from_utf8_lossy(&out.stdout).trim().to_owned(),
        stderr,
    )
}

async fn call(base: &str) -> reqwest::Response {
    reqwest::Client::new()
        .post(format!("{base}/v1/messages?beta=true"))
        .header("x-api-key", KEY)
        .header("anthropic-version", "2023-06-01")
        .json(&json!({"model": "claude-sonnet-4-5", "max_tokens": 16,
                      "messages": [{"role": "user", "content": "hi"}]}))
        .send()
        .await
        .unwrap()
}

async fn mock_with(organization: Option<&str>, base_path: &str) -> MockUpstream {
    MockUpstream::start(MockConfig {
        organizations: organization
            .map(|org| vec![(KEY.to_owned(), org.to_owned())])
            .unwrap_or_default(),
        base_path: base_path.to_owned(),
        ..MockConfig::default()
    })
    .await
}

async fn blocking<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    tokio::task::spawn_blocking(f).await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_command_with_its_own_endpoint_reaches_it_paced_and_a_plain_one_the_daemons() {
    let a = mock_with(None, "").await;
    let b = mock_with(None, "/anthropic").await;
    let (a_url, b_url) = (a.url(), b.url());
    let (daemon, own, plain) = blocking(move || {
        let daemon = Pacerd::start_in_temp_dir(&["--upstream", &a_url]);
        let own = wrapped_url(&daemon, &[("ANTHROPIC_BASE_URL", &b_url)]);
        let plain = wrapped_url(&daemon, &[]);
        (daemon, own, plain)
    })
    .await;
    let ((own_url, own_said), (plain_url, plain_said)) = (own, plain);
    assert!(own_url.contains("/s/job~normal~rt"), "{own_url}");
    assert!(
        own_said.contains(&b.url()),
        "pacer says where it goes: {own_said}"
    );
    assert!(plain_said.contains(&a.url()), "{plain_said}");

    assert_eq!(call(&own_url).await.status(), 200);
    assert_eq!((a.stats().requests, b.stats().ok), (0, 1), "B only");
    let seen = b.seen();
    let last = seen.last().unwrap();
    assert_eq!(
        last.path, "/anthropic/v1/messages",
        "the path prefix is kept"
    );
    assert_eq!(last.query.as_deref(), Some("beta=true"), "and the query");

    assert_eq!(call(&plain_url).await.status(), 200);
    assert_eq!(
        (a.stats().ok, b.stats().requests),
        (1, 1),
        "the daemon's upstream"
    );

    let status = blocking(move || (daemon.status(), daemon)).await;
    let (status, _daemon) = status;
    let routes = status["routes"].as_array().unwrap();
    assert_eq!(routes.len(), 1, "{status}");
    assert_eq!(routes[0]["upstream"], b.url());
    assert_eq!(routes[0]["clients"], json!(["job"]));
    let granted: u64 = status["budgets"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b: &Value| b["granted"].as_u64().unwrap())
        .sum();
    assert_eq!(granted, 2, "both calls were paced: {status}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_routes_naming_one_organization_keep_budgets_of_their_own() {
    // Any local client can register a route to a server of its own, and that server can name
    // any organization: its answers count only for the route's keys.
    let org = "0b0b0b0b-0000-4000-8000-000000000001";
    let b = mock_with(Some(org), "").await;
    let c = mock_with(Some(org), "/v2").await;
    let (b_url, c_url) = (b.url(), c.url());
    let (daemon, via_b, via_c) = blocking(move || {
        let daemon = Pacerd::start_in_temp_dir(&[]);
        let via_b = wrapped_url(&daemon, &[("ANTHROPIC_BASE_URL", &b_url)]).0;
        let via_c = wrapped_url(&daemon, &[("ANTHROPIC_BASE_URL", &c_url)]).0;
        (daemon, via_b, via_c)
    })
    .await;
    assert_ne!(via_b, via_c);
    assert_eq!(call(&via_b).await.status(), 200);
    assert_eq!(call(&via_c).await.status(), 200);
    let (status, _daemon) = blocking(move || (daemon.status(), daemon)).await;
    let budgets = status["budgets"].as_array().unwrap();
    assert_eq!(budgets.len(), 2, "one account per route: {status}");
    let accounts: Vec<&str> = budgets
        .iter()
        .map(|b| b["account"].as_str().unwrap())
        .collect();
    assert!(accounts.iter().all(|a| a.starts_with("org-")), "{status}");
    assert_ne!(accounts[0], accounts[1], "{status}");
    assert!(budgets.iter().all(|b| b["granted"] == 1), "{status}");
    assert_eq!(status["routes"].as_array().unwrap().len(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_route_naming_another_organization_cannot_lock_it_out() {
    let org = "0c0c0c0c-0000-4000-8000-000000000002";
    // The daemon's upstream: the real key of the organization.
    let a = mock_with(Some(org), "").await;
    // A route to a server that claims to be that organization's subscription, spent.
    let evil = MockUpstream::start(MockConfig {
        subscription: Some(Plan {
            organization: org.to_owned(),
            five_hour: 1,
            ..Plan::default()
        }),
        ..MockConfig::default()
    })
    .await;
    let (a_url, evil_url) = (a.url(), evil.url());
    let (daemon, direct, via_evil) = blocking(move || {
        let daemon = Pacerd::start_in_temp_dir(&["--upstream", &a_url]);
        let direct = wrapped_url(&daemon, &[]).0;
        let via_evil = wrapped_url(&daemon, &[("ANTHROPIC_BASE_URL", &evil_url)]).0;
        (daemon, direct, via_evil)
    })
    .await;
    assert_eq!(call(&direct).await.status(), 200);
    let via_route = || async {
        reqwest::Client::new()
            .post(format!("{via_evil}/v1/messages"))
            .header("authorization", "Bearer sk-ant-oat01-evil")
            .header("anthropic-version", "2023-06-01")
            .json(&json!({"model": "claude-sonnet-4-5", "max_tokens": 16,
                          "messages": [{"role": "user", "content": "hi"}]}))
            .send()
            .await
            .unwrap()
    };
    assert_eq!(via_route().await.status(), 200);
    let refused = via_route().await;
    assert_eq!(refused.status(), 429, "the route's own window is spent");
    assert_eq!(evil.stats().window_rejected, 1);
    // The organization's real key is not locked out, nor paused.
    for _ in 0..3 {
        assert_eq!(call(&direct).await.status(), 200);
    }
    assert_eq!(a.stats().ok, 4);
    let (status, _daemon) = blocking(move || (daemon.status(), daemon)).await;
    let locked: Vec<&Value> = status["accounts"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|a| !a["lockouts"].as_array().unwrap().is_empty())
        .collect();
    assert_eq!(locked.len(), 1, "only the route's account: {status}");
    let direct_budget = status["budgets"]
        .as_array()
        .unwrap()
        .iter()
        .find(|b| b["granted"] == 4)
        .expect("the direct key's budget");
    assert_ne!(locked[0]["account"], direct_budget["account"], "{status}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_nested_pacer_run_keeps_one_hop_and_a_forged_route_is_refused() {
    let a = mock_with(None, "").await;
    let a_url = a.url();
    let (daemon, outer, inner, said) = blocking(move || {
        let daemon = Pacerd::start_in_temp_dir(&["--upstream", &a_url]);
        let outer = wrapped_url(&daemon, &[]).0;
        let (inner, said) = wrapped_url(&daemon, &[("ANTHROPIC_BASE_URL", &outer)]);
        (daemon, outer, inner, said)
    })
    .await;
    assert_eq!(inner, outer, "left as it is");
    assert!(said.contains("left as it is"), "{said}");

    let gateway = outer.split("/s/").next().unwrap().to_owned();
    let forged = call(&format!("{gateway}/s/x~normal~rt0123456789ab")).await;
    assert_eq!(forged.status(), 403);
    let body = forged.text().await.unwrap();
    assert!(
        body.contains("rt0123456789ab") && body.contains("pacer run"),
        "{body}"
    );
    assert_eq!(a.stats().requests, 0, "nothing went upstream");
    // Registering needs the socket: a garbage upstream is refused with a clear error.
    let out = blocking(move || {
        let out = pacer(
            &daemon,
            &["env"],
            &[("ANTHROPIC_BASE_URL", "ftp://example.com")],
        );
        (out, daemon)
    })
    .await
    .0;
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("ftp://example.com"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bedrock_and_vertex_are_warned_about_and_refused_when_strict() {
    let out = blocking(|| {
        let daemon = Pacerd::start_in_temp_dir(&[]);
        let warned = pacer(
            &daemon,
            &["run", "--", "true"],
            &[("CLAUDE_CODE_USE_BEDROCK", "1")],
        );
        let strict = pacer(
            &daemon,
            &["run", "--strict", "--", "true"],
            &[("CLAUDE_CODE_USE_VERTEX", "1")],
        );
        let off = pacer(
            &daemon,
            &["run", "--strict", "--", "true"],
            &[("CLAUDE_CODE_USE_BEDROCK", "0")],
        );
        (warned, strict, off)
    })
    .await;
    let (warned, strict, off) = out;
    let stderr = String::from_utf8_lossy(&warned.stderr);
    assert!(warned.status.success(), "{stderr}");
    assert!(
        stderr.contains("CLAUDE_CODE_USE_BEDROCK") && stderr.contains("bypassing pacer"),
        "{stderr}"
    );
    let stderr = String::from_utf8_lossy(&strict.stderr);
    assert!(!strict.status.success());
    assert!(
        stderr.contains("CLAUDE_CODE_USE_VERTEX") && stderr.contains("Vertex"),
        "{stderr}"
    );
    assert!(
        off.status.success(),
        "{}",
        String::from_utf8_lossy(&off.stderr)
    );
}
