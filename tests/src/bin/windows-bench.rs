//! Subscription windows by priority, measured: six batch workers and one interactive caller
//! (one call every 6 s) share a subscription's 5-hour-style window of 60 calls (over 300 s, RPM
//! 600) for 120 s, every call through pacer's gateway with no retries of its own (as the SDK
//! with `max_retries=0`), priorities sent as `x-pacer-priority`. Run once with `[windows] batch
//! = 1.0` (pacer without a ceiling: how it was) and once with `batch = 0.7`; prints, for each,
//! the interactive calls served and failed, how far batch brought the window, and the upstream
//! 429s.
//!
//! `cargo run --release -p pacer-tests --bin windows-bench [-- --seconds 120]`

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use clap::Parser;
use pacer_tests::TestDaemon;
use pacer_tests::bench::table;
use pacer_tests::mock::{MockConfig, MockUpstream, Plan};
use serde_json::json;

#[derive(Parser)]
struct Args {
    /// How long each run lasts.
    #[arg(long, default_value_t = 120.0)]
    seconds: f64,
    /// Seconds between two interactive calls.
    #[arg(long, default_value_t = 6.0)]
    every: f64,
}

struct Outcome {
    interactive_ok: u64,
    interactive_failed: u64,
    batch_ok: u64,
    upstream_429: u64,
}

async fn run(batch_ceiling: f64, args: &Args) -> Outcome {
    let mock = MockUpstream::start(MockConfig {
        rpm: 600,
        latency: Duration::from_millis(50),
        subscription: Some(Plan {
            five_hour: 60,
            five_hour_reset: Duration::from_secs(300),
            ..Plan::default()
        }),
        ..MockConfig::default()
    })
    .await;
    let toml = format!("[windows]\nbatch = {batch_ceiling}\n");
    let upstream = mock.url().parse().expect("the mock's URL");
    let daemon = TestDaemon::start_with(&toml, |config| {
        config.gateway.upstream = upstream;
        config.gateway.max_hold = Duration::from_secs(20);
        config.broker.max_hold = Duration::from_secs(20);
    })
    .await;
    let base = daemon.gateway_url().await;
    let http = reqwest::Client::new();
    let call = move |priority: &'static str| {
        let (http, base) = (http.clone(), base.clone());
        async move {
            http.post(format!("{base}/v1/messages"))
                .header("authorization", "Bearer sk-ant-oat01-bench")
                .header("x-pacer-priority", priority)
                .json(&json!({"model": "claude-sonnet-4-5", "max_tokens": 16,
                              "messages": [{"role": "user", "content": "hi"}]}))
                .send()
                .await
                .is_ok_and(|r| r.status() == 200)
        }
    };
    let deadline = Instant::now() + Duration::from_secs_f64(args.seconds);
    let batch_ok = Arc::new(AtomicU64::new(0));
    let workers: Vec<_> = (0..6)
        .map(|_| {
            let (call, batch_ok) = (call.clone(), batch_ok.clone());
            tokio::spawn(async move {
                while Instant::now() < deadline {
                    if call("batch").await {
                        batch_ok.fetch_add(1, Ordering::Relaxed);
                    } else {
                        tokio::time::sleep(Duration::from_millis(500)).await;
                    }
                }
            })
        })
        .collect();
    let (mut interactive_ok, mut interactive_failed) = (0, 0);
    let start = Instant::now();
    let mut n = 0u32;
    loop {
        let at = start + Duration::from_secs_f64(args.every * f64::from(n));
        if at >= deadline {
            break;
        }
        tokio::time::sleep_until(at.into()).await;
        if call("interactive").await {
            interactive_ok += 1;
        } else {
            interactive_failed += 1;
        }
        n += 1;
    }
    for worker in workers {
        let _ = worker.await;
    }
    let stats = mock.stats();
    Outcome {
        interactive_ok,
        interactive_failed,
        batch_ok: batch_ok.load(Ordering::Relaxed),
        upstream_429: stats.rate_limited + stats.window_rejected,
    }
}

#[tokio::main]
async fn main() {
    let args = Args::parse();
    let mut rows = Vec::new();
    for (name, ceiling) in [("before: batch = 1.0", 1.0), ("after: batch = 0.7", 0.7)] {
        let outcome = run(ceiling, &args).await;
        rows.push(vec![
            name.to_owned(),
            format!(
                "{} / {}",
                outcome.interactive_ok,
                outcome.interactive_ok + outcome.interactive_failed
            ),
            outcome.interactive_failed.to_string(),
            format!("{} of 60", outcome.batch_ok),
            outcome.upstream_429.to_string(),
        ]);
    }
    println!(
        "six batch workers and an interactive call every {}s for {}s, a window of 60 calls:\n",
        args.every, args.seconds
    );
    print!(
        "{}",
        table(
            &[
                "run",
                "interactive ok",
                "interactive failed",
                "batch window use",
                "upstream 429s"
            ],
            &rows
        )
    );
}
