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

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::{Parser, ValueEnum};
use pacer_client::{AcquireRequest, Client, FailMode, Priority, outcome};
use pacer_tests::TestDaemon;
use pacer_tests::bench::{jain, ms, percentile, table};
use pacer_tests::mock::{MockConfig, MockUpstream};
use serde_json::{Value, json};
use tokio::sync::Mutex;

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
}

const MODEL: &str = "claude-sonnet-4-5";
const KEY: &str = "sk-ant-herd";

/// One call's result, as the client saw it.
struct Call {
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
    timeline: Vec<(Duration, u16)>,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let runs = args.strategies.iter().map(|&strategy| {
        let args = args.clone();
        tokio::spawn(async move { run(strategy, &args).await })
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

async fn run(strategy: Strategy, args: &Args) -> anyhow::Result<Outcome> {
    let mock = MockUpstream::start(MockConfig {
        rpm: args.rpm,
        itpm: args.itpm,
        otpm: args.otpm,
        latency: Duration::from_millis(args.latency_ms),
        ..MockConfig::default()
    })
    .await;
    let configured = if args.configured {
        format!(
            "[limits.sonnet]\nrpm = {}\nitpm = {}\notpm = {}\n",
            args.rpm, args.itpm, args.otpm
        )
    } else {
        String::new()
    };
    let upstream: reqwest::Url = mock.url().parse()?;
    let daemon = match strategy {
        Strategy::PacerIpc | Strategy::PacerGateway => Some(
            TestDaemon::start_with(&configured, |config| {
                config.gateway.upstream = upstream;
                config.gateway.max_hold = Duration::from_secs(600);
            })
            .await,
        ),
        _ => None,
    };
    let gateway = match &daemon {
        Some(daemon) if strategy == Strategy::PacerGateway => Some(daemon.gateway_url().await),
        _ => None,
    };
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(64)
        .build()?;
    // Every client connects first; then they all start together.
    let mut callers = Vec::new();
    for i in 0..args.clients {
        let interactive = args.scenario == Scenario::Mixed && i == 0;
        let client = match &daemon {
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
            http: http.clone(),
            url: match &gateway {
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
        callers.push((i, interactive, caller));
    }
    let start = Instant::now();
    let deadline = start + Duration::from_secs_f64(args.duration);
    let calls = Arc::new(Mutex::new(Vec::<(usize, Call)>::new()));
    let mut tasks = Vec::new();
    for (i, interactive, caller) in callers {
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
    for (i, call) in &calls {
        if call.ok {
            per_client[*i] += 1;
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
        timeline: mock.timeline(),
    })
}

/// Makes one logical call the way a strategy does; true if it succeeded in the end.
struct Caller {
    strategy: Strategy,
    http: reqwest::Client,
    url: String,
    client: Option<Client>,
    priority: Priority,
}

impl Caller {
    async fn send(&self) -> Option<(u16, reqwest::header::HeaderMap, Option<Value>)> {
        let body = json!({"model": MODEL, "max_tokens": 64, "messages": [{"role": "user", "content": "hi"}]});
        let response = self
            .http
            .post(&self.url)
            .header("x-api-key", KEY)
            .header("anthropic-version", "2023-06-01")
            .json(&body)
            .send()
            .await
            .ok()?;
        let status = response.status().as_u16();
        let headers = response.headers().clone();
        let json = response.json::<Value>().await.ok();
        Some((status, headers, json))
    }

    async fn call(&self) -> bool {
        match self.strategy {
            Strategy::SdkRetry => {
                for attempt in 0..=2u32 {
                    let answer = self.send().await;
                    let (status, headers) = match &answer {
                        Some((status, headers, _)) => (*status, Some(headers)),
                        None => (0, None),
                    };
                    if (200..300).contains(&status) {
                        return true;
                    }
                    let retryable =
                        status == 0 || matches!(status, 408 | 409 | 429) || status >= 500;
                    if !retryable || attempt == 2 {
                        return false;
                    }
                    tokio::time::sleep(sdk_backoff(attempt, headers)).await;
                }
                false
            }
            Strategy::RetryAfter => loop {
                match self.send().await {
                    Some((status, _, _)) if (200..300).contains(&status) => return true,
                    Some((429, headers, _)) => {
                        tokio::time::sleep(retry_after(&headers).unwrap_or(Duration::from_secs(1)))
                            .await
                    }
                    _ => return false,
                }
            },
            Strategy::PacerIpc => {
                let client = self.client.as_ref().expect("a pacer client");
                loop {
                    let Ok(permit) = client
                        .acquire(
                            AcquireRequest::new(KEY, MODEL)
                                .input_tokens(10)
                                .max_tokens(64)
                                .priority(self.priority),
                        )
                        .await
                    else {
                        return false;
                    };
                    let Some((status, headers, json)) = self.send().await else {
                        let _ = permit.release().await;
                        return false;
                    };
                    let _ = permit
                        .report(outcome::from_response(status, &headers, json.as_ref()))
                        .await;
                    match status {
                        200..=299 => return true,
                        // pacer has paused everyone; take a new permit and try again.
                        429 | 529 => continue,
                        _ => return false,
                    }
                }
            }
            Strategy::PacerGateway => matches!(self.send().await, Some((200..=299, _, _))),
        }
    }
}

fn retry_after(headers: &reqwest::header::HeaderMap) -> Option<Duration> {
    let text = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    if let Some(ms) = text("retry-after-ms").and_then(|v| v.parse::<f64>().ok()) {
        return Duration::try_from_secs_f64(ms / 1000.0).ok();
    }
    text("retry-after")
        .and_then(|v| v.parse::<f64>().ok())
        .and_then(|s| Duration::try_from_secs_f64(s).ok())
}

/// The official SDKs' wait before retry `attempt` (0-based).
fn sdk_backoff(attempt: u32, headers: Option<&reqwest::header::HeaderMap>) -> Duration {
    if let Some(wait) = headers.and_then(retry_after)
        && wait > Duration::ZERO
        && wait <= Duration::from_secs(60)
    {
        return wait;
    }
    let base = (0.5 * 2f64.powi(attempt as i32)).min(8.0);
    let jitter = 1.0 - 0.25 * fastrand_f64();
    Duration::from_secs_f64(base * jitter)
}

/// A cheap uniform sample in [0, 1) without another dependency.
fn fastrand_f64() -> f64 {
    use std::hash::{BuildHasher, Hasher};
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher.write_u64(Instant::now().elapsed().as_nanos() as u64);
    (hasher.finish() >> 11) as f64 / (1u64 << 53) as f64
}

fn report(args: &Args, outcomes: &[Outcome]) {
    if args.json {
        for o in outcomes {
            let mut line = json!({
                "strategy": o.strategy.name(),
                "ok": o.ok,
                "failed": o.failed,
                "upstream_429": o.upstream_429,
                "goodput": (o.goodput * 1000.0).round() / 1000.0,
                "p50_ms": o.p50.as_millis() as u64,
                "p99_ms": o.p99.as_millis() as u64,
                "jain": (o.jain * 1000.0).round() / 1000.0,
            });
            if let Some((p50, p99, failed)) = o.interactive {
                line["interactive_p50_ms"] = json!(p50.as_millis() as u64);
                line["interactive_p99_ms"] = json!(p99.as_millis() as u64);
                line["interactive_failed"] = json!(failed);
            }
            println!("{line}");
        }
        return;
    }
    println!(
        "herd: {} clients, {} s, {} rpm / {} itpm / {} otpm, {} ms latency, scenario {:?}, limits {}",
        args.clients,
        args.duration,
        args.rpm,
        args.itpm,
        args.otpm,
        args.latency_ms,
        args.scenario,
        if args.configured {
            "configured"
        } else {
            "learned"
        }
    );
    let mixed = args.scenario == Scenario::Mixed;
    let mut header = vec![
        "strategy",
        "ok",
        "failed",
        "upstream 429",
        "goodput",
        "p50 ms",
        "p99 ms",
        "jain",
    ];
    if mixed {
        header.extend([
            "interactive p50 ms",
            "interactive p99 ms",
            "interactive failed",
        ]);
    }
    let rows: Vec<Vec<String>> = outcomes
        .iter()
        .map(|o| {
            let mut row = vec![
                o.strategy.name().to_owned(),
                o.ok.to_string(),
                o.failed.to_string(),
                o.upstream_429.to_string(),
                format!("{:.3}", o.goodput),
                ms(o.p50),
                ms(o.p99),
                format!("{:.3}", o.jain),
            ];
            if let Some((p50, p99, failed)) = o.interactive {
                row.extend([ms(p50), ms(p99), failed.to_string()]);
            }
            row
        })
        .collect();
    print!("{}", table(&header, &rows));
}

/// One panel per strategy: accepted requests/s and 429s/s over time, against the limit.
fn plot(args: &Args, outcomes: &[Outcome]) -> anyhow::Result<PathBuf> {
    use plotters::prelude::*;

    std::fs::create_dir_all(&args.plot_dir)?;
    let scenario = match args.scenario {
        Scenario::Uniform => "uniform",
        Scenario::Mixed => "mixed",
    };
    let path = args.plot_dir.join(format!("herd-{scenario}.svg"));
    let seconds = args.duration.ceil() as usize + 5;
    let per_second = |timeline: &[(Duration, u16)], accepted: bool| -> Vec<(f64, f64)> {
        let mut counts = vec![0u32; seconds + 1];
        for (at, status) in timeline {
            let second = (at.as_secs() as usize).min(seconds);
            if (*status == 200) == accepted && (accepted || *status == 429) {
                counts[second] += 1;
            }
        }
        counts
            .iter()
            .enumerate()
            .map(|(s, &c)| (s as f64 + 0.5, c as f64))
            .collect()
    };
    // Scaled to the 429s and the limit: the start-up burst (a full bucket) runs off the top.
    let peak = outcomes
        .iter()
        .flat_map(|o| per_second(&o.timeline, false).into_iter().map(|(_, y)| y))
        .fold(args.rpm as f64 / 60.0 * 4.0, f64::max);
    let limit = args.rpm as f64 / 60.0;
    let target = path.clone();
    let root = SVGBackend::new(&target, (1200, 800)).into_drawing_area();
    root.fill(&WHITE)?;
    let title = format!(
        "herd ({scenario}): {} clients, {} rpm, {} ms latency — accepted/s (blue), 429/s (red), limit (black); start-up burst clipped",
        args.clients, args.rpm, args.latency_ms
    );
    let root = root.titled(&title, ("sans-serif", 18))?;
    let panels = root.split_evenly((2, 2));
    for (panel, outcome) in panels.iter().zip(outcomes) {
        let mut chart = ChartBuilder::on(panel)
            .caption(outcome.strategy.name(), ("sans-serif", 16))
            .margin(10)
            .x_label_area_size(30)
            .y_label_area_size(40)
            .build_cartesian_2d(0f64..seconds as f64, 0f64..peak * 1.1)?;
        chart
            .configure_mesh()
            .x_desc("seconds")
            .y_desc("requests / s")
            .draw()?;
        chart.draw_series(LineSeries::new(per_second(&outcome.timeline, true), &BLUE))?;
        chart.draw_series(LineSeries::new(per_second(&outcome.timeline, false), &RED))?;
        chart.draw_series(LineSeries::new(
            [(0.0, limit), (seconds as f64, limit)],
            BLACK.stroke_width(1),
        ))?;
    }
    root.present()?;
    Ok(path)
}
