//! Small calls beside large ones, measured: a budget of 100,000 input tokens a minute, ten
//! `claude -p` sessions whose calls count about 29,000 input tokens each (the mock caches no
//! prompt, and each is asked a long question), and two sessions of 22-token calls once a second,
//! all at normal priority.
//!
//! Run straight to the mock (Claude Code, and the small sessions, retrying their own 429s as
//! Claude Code does: the API-alone baseline) and through pacer's gateway; `--pacerd PATH` runs
//! another build's `pacerd` (an earlier commit's, for "before"). Prints, per run: the small
//! calls (answered, failed, the slowest), how many large sessions answered and when the last
//! did, and the upstream 429s.
//!
//! `cargo run --release -p pacer-tests --bin costs-bench -- --claude PATH [--mode api|pacer|both]`

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use clap::Parser;
use pacer_tests::bench::sessions::{Claude, claude_version, session_call, start_pacerd};
use pacer_tests::bench::table;
use pacer_tests::mock::{MockConfig, MockUpstream};
use tokio::sync::Mutex;

#[derive(Parser)]
struct Args {
    /// The `claude` command (default: `$PACER_E2E_CLAUDE`).
    #[arg(long)]
    claude: Option<PathBuf>,
    /// The `pacerd` to run (default: the one built beside this benchmark).
    #[arg(long)]
    pacerd: Option<PathBuf>,
    /// What to run: straight to the API, through pacer, or both.
    #[arg(long, default_value = "both")]
    mode: String,
    /// Sessions of large calls.
    #[arg(long, default_value_t = 10)]
    sessions: usize,
    /// The label of the pacer run in the table (`pacer`, `pacer before`…).
    #[arg(long, default_value = "pacer")]
    label: String,
}

const KEY: &str = "sk-ant-costs-bench";
const MODEL: &str = "claude-sonnet-4-5";

struct Run {
    label: String,
    small_ok: usize,
    small_failed: usize,
    small_slowest: Duration,
    large_ok: usize,
    large_total: usize,
    last_large: Duration,
    upstream_429: u64,
}

/// A question long enough that, with Claude Code's own prompt, its call counts about 29,000
/// input tokens (a token for four bytes, nothing cached).
fn long_question() -> String {
    let filler = "Here is some context to read before answering. ".repeat(600);
    format!("{filler}\nNow just say hi.")
}

async fn run(label: &str, through_pacer: bool, args: &Args, claude_path: &std::path::Path) -> Run {
    let mock = MockUpstream::start(MockConfig {
        rpm: 4000,
        itpm: 100_000,
        otpm: 400_000,
        latency: Duration::from_millis(100),
        prompt_cache: false,
        ..MockConfig::default()
    })
    .await;
    let dir = tempfile::tempdir().expect("a temporary directory");
    let (_pacerd, base) = if through_pacer {
        let pacerd = args
            .pacerd
            .clone()
            .unwrap_or_else(|| pacer_tests::binary("pacerd"));
        let (child, url) = start_pacerd(&pacerd, dir.path(), &mock.url()).await;
        (Some(child), format!("{url}/s/bench~normal"))
    } else {
        (None, mock.url())
    };
    let http = reqwest::Client::new();
    let stop = Arc::new(AtomicBool::new(false));
    let small = Arc::new(Mutex::new(Vec::new()));
    let workers: Vec<_> = ["small-1", "small-2"]
        .into_iter()
        .map(|session| {
            let (http, base, stop, small) =
                (http.clone(), base.clone(), stop.clone(), small.clone());
            tokio::spawn(async move {
                while !stop.load(Ordering::Relaxed) {
                    let result = session_call(&http, &base, KEY, MODEL, session, true).await;
                    small.lock().await.push(result);
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
            })
        })
        .collect();
    let question = long_question();
    let since = Instant::now();
    let sessions: Vec<_> = (0..args.sessions)
        .map(|i| {
            let (claude_path, base, question) =
                (claude_path.to_owned(), base.clone(), question.clone());
            let home = dir.path().join(format!("home-{i}"));
            tokio::spawn(async move {
                let claude = Claude {
                    command: &claude_path,
                    prompt: &question,
                    base: &base,
                    key: KEY,
                    model: MODEL,
                };
                claude.run(&home, since).await
            })
        })
        .collect();
    let mut large_ok = 0;
    let mut last_large = Duration::ZERO;
    for session in sessions {
        let (answered, at) = session.await.expect("a session's task");
        large_ok += usize::from(answered);
        last_large = last_large.max(at);
    }
    stop.store(true, Ordering::Relaxed);
    for worker in workers {
        let _ = worker.await;
    }
    let small = small.lock().await;
    Run {
        label: label.to_owned(),
        small_ok: small.iter().filter(|r| r.0 == 200).count(),
        small_failed: small.iter().filter(|r| r.0 != 200).count(),
        small_slowest: small.iter().map(|r| r.1).max().unwrap_or_default(),
        large_ok,
        large_total: args.sessions,
        last_large,
        upstream_429: mock.stats().rate_limited,
    }
}

#[tokio::main]
async fn main() {
    let args = Args::parse();
    let claude = args
        .claude
        .clone()
        .or_else(|| std::env::var_os("PACER_E2E_CLAUDE").map(PathBuf::from))
        .expect(
            "the claude command: --claude PATH or $PACER_E2E_CLAUDE (.ci/e2e-setup installs it)",
        );
    println!(
        "{}; {} sessions of ~29k-token calls, 2 of 22-token calls once a second; 100k input \
         tokens a minute",
        claude_version(&claude),
        args.sessions
    );
    let mut runs = Vec::new();
    if args.mode == "api" || args.mode == "both" {
        runs.push(run("straight to the API", false, &args, &claude).await);
    }
    if args.mode == "pacer" || args.mode == "both" {
        let label = args.label.clone();
        runs.push(run(&label, true, &args, &claude).await);
    }
    let rows: Vec<Vec<String>> = runs
        .iter()
        .map(|r| {
            vec![
                r.label.clone(),
                format!("{} ok, {} failed", r.small_ok, r.small_failed),
                format!("{:.2} s", r.small_slowest.as_secs_f64()),
                format!("{} of {}", r.large_ok, r.large_total),
                format!("{:.0} s", r.last_large.as_secs_f64()),
                r.upstream_429.to_string(),
            ]
        })
        .collect();
    print!(
        "{}",
        table(
            &[
                "",
                "SMALL CALLS",
                "SLOWEST SMALL CALL",
                "LARGE-CALL SESSIONS",
                "LAST ANSWERED AFTER",
                "UPSTREAM 429S",
            ],
            &rows
        )
    );
}
