//! Sessions starting together against the API's wall, measured: two sessions already at work
//! call once a second, and ten `claude -p` sessions start together against a stand-in that
//! lets only a few sessions start every few tens of seconds and gives the others, and their
//! retries, a bare 429 for about half a minute (the mock's session wall: 3 starts at once, one
//! more every 10 s, a refused session refused for 30 s). pacer is not told these numbers.
//!
//! Run straight to the mock (Claude Code retrying on its own: the API-alone baseline) and
//! through pacer's gateway; `--pacerd PATH` runs another build's `pacerd` (an earlier commit's,
//! for "before"). Prints, per run: the calls of the sessions at work (answered, failed, the
//! slowest), how many new sessions answered and when the last did, and the bare 429s the API
//! gave.
//!
//! `cargo run --release -p pacer-tests --bin starts-bench -- --claude PATH [--mode api|pacer|both]`

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use clap::Parser;
use pacer_tests::bench::sessions::{Claude, claude_version, session_call, start_pacerd};
use pacer_tests::bench::table;
use pacer_tests::mock::{MockConfig, MockUpstream, SessionWall};
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
    /// New sessions started together.
    #[arg(long, default_value_t = 10)]
    sessions: usize,
    /// The label of the pacer run in the table (`pacer`, `pacer before`…).
    #[arg(long, default_value = "pacer")]
    label: String,
}

const KEY: &str = "sk-ant-starts-bench";
const MODEL: &str = "claude-sonnet-4-5";

struct Run {
    label: String,
    at_work_ok: usize,
    at_work_failed: usize,
    at_work_slowest: Duration,
    new_ok: usize,
    new_total: usize,
    last_new: Duration,
    bare: u64,
}

async fn run(label: &str, through_pacer: bool, args: &Args, claude_path: &Path) -> Run {
    let mock = MockUpstream::start(MockConfig {
        rpm: 4000,
        itpm: 4_000_000,
        otpm: 400_000,
        latency: Duration::from_millis(100),
        session_wall: Some(SessionWall {
            burst: 3,
            refill: Duration::from_secs(10),
            block: Duration::from_secs(30),
        }),
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
    // The sessions at work have started before the wall: their first call went through.
    for session in ["work-1", "work-2"] {
        let (status, _) = session_call(&http, &base, KEY, MODEL, session, false).await;
        assert_eq!(status, 200, "{label}: a session at work starts");
    }
    let stop = Arc::new(AtomicBool::new(false));
    let at_work = Arc::new(Mutex::new(Vec::new()));
    let workers: Vec<_> = ["work-1", "work-2"]
        .into_iter()
        .map(|session| {
            let (http, base, stop, at_work) =
                (http.clone(), base.clone(), stop.clone(), at_work.clone());
            tokio::spawn(async move {
                while !stop.load(Ordering::Relaxed) {
                    let result = session_call(&http, &base, KEY, MODEL, session, false).await;
                    at_work.lock().await.push(result);
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
            })
        })
        .collect();
    let since = Instant::now();
    let sessions: Vec<_> = (0..args.sessions)
        .map(|i| {
            let (claude_path, base) = (claude_path.to_owned(), base.clone());
            let home = dir.path().join(format!("home-{i}"));
            tokio::spawn(async move {
                let claude = Claude {
                    command: &claude_path,
                    prompt: "say hi",
                    base: &base,
                    key: KEY,
                    model: MODEL,
                };
                claude.run(&home, since).await
            })
        })
        .collect();
    let mut new_ok = 0;
    let mut last_new = Duration::ZERO;
    for session in sessions {
        let (answered, at) = session.await.expect("a session's task");
        new_ok += usize::from(answered);
        last_new = last_new.max(at);
    }
    stop.store(true, Ordering::Relaxed);
    for worker in workers {
        let _ = worker.await;
    }
    let at_work = at_work.lock().await;
    Run {
        label: label.to_owned(),
        at_work_ok: at_work.iter().filter(|r| r.0 == 200).count(),
        at_work_failed: at_work.iter().filter(|r| r.0 != 200).count(),
        at_work_slowest: at_work.iter().map(|r| r.1).max().unwrap_or_default(),
        new_ok,
        new_total: args.sessions,
        last_new,
        bare: mock.stats().bare,
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
    let version = claude_version(&claude);
    println!(
        "claude {version}; {} new sessions, 2 at work",
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
                format!("{} ok, {} failed", r.at_work_ok, r.at_work_failed),
                format!("{:.2} s", r.at_work_slowest.as_secs_f64()),
                format!("{} of {}", r.new_ok, r.new_total),
                format!("{:.0} s", r.last_new.as_secs_f64()),
                r.bare.to_string(),
            ]
        })
        .collect();
    print!(
        "{}",
        table(
            &[
                "",
                "SESSIONS AT WORK",
                "SLOWEST CALL",
                "NEW SESSIONS ANSWERED",
                "LAST ANSWERED AFTER",
                "BARE 429S",
            ],
            &rows
        )
    );
}
