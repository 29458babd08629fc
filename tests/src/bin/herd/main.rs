//! The herd benchmark: N clients against one rate limit, four ways, side by side.
//!
//! `cargo run --release -p pacer-tests --bin herd -- [--clients 16] [--duration 60] [--rpm 120]
//! [--itpm 100000] [--otpm 100000] [--latency-ms 200] [--scenario uniform|mixed] [--configured]
//! [--strategies sdk-retry,retry-after,pacer-ipc,pacer-gateway] [--json] [--plot-dir bench]`
//!
//! Each strategy gets its own mock API (fresh buckets) and, for pacer, its own daemon; they run
//! at the same time, so one run compares them under the same conditions:
//! 1. `sdk-retry`: direct, retrying as the official SDKs do (2 retries; retry-after honoured up to
//!    60 s, else 0.5·2^n s capped at 8 s, minus up to 25 % jitter) — the baseline;
//! 2. `retry-after`: direct, honouring retry-after without limit (the seed article's fix);
//! 3. `pacer-ipc`: a permit from the client library, then the call;
//! 4. `pacer-gateway`: through pacerd's HTTP gateway.
//!
//! `--scenario mixed`: one interactive client (a call every 2 s) among batch clients that
//! saturate the limit; its latency is reported per strategy.
//!
//! `--keys N` spreads the clients over N keys of one organization, which share its limit;
//! `--group-by key --first-contact-hold 0` runs pacerd as it was before accounts (a budget per
//! key, no first-contact hold), for comparison.
//!
//! `--daemons N` runs N daemons per pacer strategy (as N machines would), the clients spread
//! over them round robin; alone, each paces to the whole limit. `--redis` starts a throwaway
//! `redis-server` (no persistence) and points every daemon at it, so they share one budget; the
//! report adds each daemon's share of the calls that succeeded.

mod caller;
mod report;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::{Parser, ValueEnum};
use pacer_client::{Client, FailMode, Priority};
use pacer_tests::TestDaemon;
use pacer_tests::bench::{jain, percentile};
use pacer_tests::mock::{MockConfig, MockUpstream};
use pacer_tests::redis::RedisServer;
use tokio::sync::Mutex;

use caller::Caller;
use report::{plot, report};

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Strategy {
    SdkRetry,
    RetryAfter,
    PacerIpc,
    PacerGateway,
}

impl Strategy {
    fn name(self) -> &'static str {
        match self {
            Strategy::SdkRetry => "sdk-retry",
            Strategy::RetryAfter => "retry-after",
            Strategy::PacerIpc => "pacer-ipc",
            Strategy::PacerGateway => "pacer-gateway",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Scenario {
    /// Every client saturates the limit.
    Uniform,
    /// One interactive client among batch clients that saturate the limit.
    Mixed,
}

#[derive(Debug, Clone, Parser)]
struct Args {
    #[arg(long, default_value_t = 16)]
    clients: usize,
    /// Seconds each strategy runs.
    #[arg(long, default_value_t = 60.0)]
    duration: f64,
    #[arg(long, default_value_t = 120)]
    rpm: u64,
    #[arg(long, default_value_t = 100_000)]
    itpm: u64,
    #[arg(long, default_value_t = 100_000)]
    otpm: u64,
    /// The mock API's latency before each answer.
    #[arg(long, default_value_t = 200)]
    latency_ms: u64,
    #[arg(long, value_enum, default_value = "uniform")]
    scenario: Scenario,
    /// Give pacer the limits in its configuration (otherwise it learns them from headers).
    #[arg(long)]
    configured: bool,
    #[arg(long, value_enum, value_delimiter = ',', default_values = ["sdk-retry", "retry-after", "pacer-ipc", "pacer-gateway"])]
    strategies: Vec<Strategy>,
    /// Print one JSON object per strategy instead of the table.
    #[arg(long)]
    json: bool,
    /// Where to write the SVG plot.
    #[arg(long, default_value = "bench")]
    plot_dir: PathBuf,
    /// Spread the clients over this many API keys of one organization (they share its limit).
    #[arg(long, default_value_t = 1)]
    keys: usize,
    /// How pacerd groups keys into budgets: `organization` (one budget for the organization's
    /// keys) or `key` (a budget per key, as before accounts).
    #[arg(long, default_value = "organization")]
    group_by: String,
    /// Seconds a budget's other calls wait for its first call's answer (0: none, as before).
    #[arg(long, default_value_t = 5.0)]
    first_contact_hold: f64,
    /// Daemons per pacer strategy (as on that many machines); clients go to them round robin.
    #[arg(long, default_value_t = 1)]
    daemons: usize,
    /// Start a throwaway `redis-server` and have the daemons share their budgets through it.
    #[arg(long)]
    redis: bool,
}

const MODEL: &str = "claude-sonnet-4-5";
const ORGANIZATION: &str = "4e7d0a1c-0000-4000-8000-00000000ba5e";

/// The API key of client `i`: `--keys` keys, round robin.
fn key_of(i: usize, keys: usize) -> String {
    format!("sk-ant-herd-{}", i % keys.max(1))
}

/// One call's result, as the client saw it.
struct Call {
    /// The daemon it went through (0 without pacer).
    daemon: usize,
    latency: Duration,
    ok: bool,
    interactive: bool,
}

struct Outcome {
    strategy: Strategy,
    ok: u64,
    failed: u64,
    upstream_429: u64,
    goodput: f64,
    p50: Duration,
    p99: Duration,
    jain: f64,
    /// The interactive client's latency (p50, p99) and failed calls, in the mixed scenario.
    interactive: Option<(Duration, Duration, u64)>,
    /// Calls that succeeded through each daemon, with several daemons.
    per_daemon: Vec<u64>,
    timeline: Vec<(Duration, u16)>,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    anyhow::ensure!(args.daemons >= 1, "--daemons must be at least 1");
    let redis = args.redis.then(RedisServer::start);
    let url = redis.as_ref().map(RedisServer::url);
    let runs = args.strategies.iter().map(|&strategy| {
        let (args, url) = (args.clone(), url.clone());
        tokio::spawn(async move { run(strategy, &args, url.as_deref()).await })
    });
    let mut outcomes = Vec::new();
    for run in runs.collect::<Vec<_>>() {
        outcomes.push(run.await??);
    }
    report(&args, &outcomes);
    let plot = plot(&args, &outcomes)?;
    if !args.json {
        println!("plot: {}", plot.display());
    }
    Ok(())
}

async fn run(strategy: Strategy, args: &Args, redis: Option<&str>) -> anyhow::Result<Outcome> {
    let mock = MockUpstream::start(MockConfig {
        rpm: args.rpm,
        itpm: args.itpm,
        otpm: args.otpm,
        latency: Duration::from_millis(args.latency_ms),
        organizations: (0..args.keys.max(1))
            .map(|k| (key_of(k, args.keys), ORGANIZATION.to_owned()))
            .collect(),
        ..MockConfig::default()
    })
    .await;
    let mut configured = format!("[accounts]\ngroup_by = \"{}\"\n", args.group_by);
    if args.configured {
        configured.push_str(&format!(
            "[limits.sonnet]\nrpm = {}\nitpm = {}\notpm = {}\n",
            args.rpm, args.itpm, args.otpm
        ));
    }
    if let Some(url) = redis {
        // A namespace per strategy: they run at the same time against mocks of their own.
        configured.push_str(&format!(
            "[cluster]\nredis = \"{url}\"\nprefix = \"herd-{}\"\n",
            strategy.name()
        ));
    }
    let upstream: reqwest::Url = mock.url().parse()?;
    let mut daemons = Vec::new();
    if matches!(strategy, Strategy::PacerIpc | Strategy::PacerGateway) {
        for _ in 0..args.daemons {
            let upstream = upstream.clone();
            daemons.push(
                TestDaemon::start_with(&configured, |config| {
                    config.gateway.upstream = upstream;
                    config.gateway.max_hold = Duration::from_secs(600);
                    config.broker.max_hold = Duration::from_secs(600);
                    config.broker.cold_start_hold =
                        Duration::from_secs_f64(args.first_contact_hold);
                })
                .await,
            );
        }
    }
    let mut gateways = Vec::new();
    if strategy == Strategy::PacerGateway {
        for daemon in &daemons {
            gateways.push(daemon.gateway_url().await);
        }
    }
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(64)
        .build()?;
    // Every client connects first; then they all start together.
    let mut callers = Vec::new();
    for i in 0..args.clients {
        let interactive = args.scenario == Scenario::Mixed && i == 0;
        let through = i % daemons.len().max(1);
        let client = match daemons.get(through) {
            Some(daemon) => Some(
                Client::builder()
                    .endpoint(daemon.socket())
                    .fail_mode(FailMode::Closed)
                    .client_id(format!("client-{i}"))
                    .connect()
                    .await?,
            ),
            None => None,
        };
        let caller = Caller {
            strategy,
            key: key_of(i, args.keys),
            http: http.clone(),
            url: match gateways.get(through) {
                Some(gateway) => {
                    let priority = if interactive { "interactive" } else { "batch" };
                    format!("{gateway}/s/client-{i}~{priority}/v1/messages")
                }
                None => format!("{}/v1/messages", mock.url()),
            },
            client,
            priority: if interactive {
                Priority::Interactive
            } else {
                Priority::Batch
            },
        };
        callers.push((i, through, interactive, caller));
    }
    let start = Instant::now();
    let deadline = start + Duration::from_secs_f64(args.duration);
    let calls = Arc::new(Mutex::new(Vec::<(usize, Call)>::new()));
    let mut tasks = Vec::new();
    for (i, through, interactive, caller) in callers {
        let calls = calls.clone();
        tasks.push(tokio::spawn(async move {
            loop {
                let began = Instant::now();
                if began >= deadline {
                    break;
                }
                let ok = caller.call().await;
                calls.lock().await.push((
                    i,
                    Call {
                        daemon: through,
                        latency: began.elapsed(),
                        ok,
                        interactive,
                    },
                ));
                if interactive {
                    // The interactive client calls every 2 s, whatever the others do.
                    let next = began + Duration::from_secs(2);
                    tokio::time::sleep_until(next.into()).await;
                }
            }
        }));
    }
    for task in tasks {
        task.await?;
    }
    let elapsed = start.elapsed().max(Duration::from_secs_f64(args.duration));
    let calls = std::mem::take(&mut *calls.lock().await);
    let stats = mock.stats();
    let ok = calls.iter().filter(|(_, c)| c.ok).count() as u64;
    let failed = calls.len() as u64 - ok;
    let allowed = args.rpm as f64 + args.rpm as f64 / 60.0 * elapsed.as_secs_f64();
    let mut latencies: Vec<Duration> = calls
        .iter()
        .filter(|(_, c)| c.ok && !c.interactive)
        .map(|(_, c)| c.latency)
        .collect();
    let mut per_client = vec![0u64; args.clients];
    let mut per_daemon = vec![0u64; if daemons.len() > 1 { daemons.len() } else { 0 }];
    for (i, call) in &calls {
        if call.ok {
            per_client[*i] += 1;
            if let Some(n) = per_daemon.get_mut(call.daemon) {
                *n += 1;
            }
        }
    }
    let interactive = (args.scenario == Scenario::Mixed).then(|| {
        let mut waits: Vec<Duration> = calls
            .iter()
            .filter(|(_, c)| c.interactive && c.ok)
            .map(|(_, c)| c.latency)
            .collect();
        let failed = calls.iter().filter(|(_, c)| c.interactive && !c.ok).count() as u64;
        (
            percentile(&mut waits, 0.5),
            percentile(&mut waits, 0.99),
            failed,
        )
    });
    let fairness = match args.scenario {
        Scenario::Uniform => jain(&per_client),
        Scenario::Mixed => jain(&per_client[1..]),
    };
    Ok(Outcome {
        strategy,
        ok,
        failed,
        upstream_429: stats.rate_limited,
        goodput: ok as f64 / allowed,
        p50: percentile(&mut latencies, 0.5),
        p99: percentile(&mut latencies, 0.99),
        jain: fairness,
        interactive,
        per_daemon,
        timeline: mock.timeline(),
    })
}
