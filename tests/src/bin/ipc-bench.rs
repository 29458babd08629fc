//! IPC micro-benchmark: acquire + report round trips against a real `pacerd` over its socket.
//!
//! `cargo run --release -p pacer-tests --bin ipc-bench -- [--duration 3] [--clients 1,16,64,256]
//! [--json] [--skip-memory] [--redis]`
//!
//! For each number of concurrent clients (each its own connection), clients take a permit on an
//! unlimited budget and report it, as fast as they can; the latency of each acquire + report pair
//! and the permits per second are printed. Then the daemon's resident memory: idle, and with
//! 1,000 connected clients holding 10,000 waiting acquires.
//!
//! `--redis` measures a daemon that shares its budgets through a throwaway `redis-server` on
//! loopback instead (limits configured, far above the load, so every permit is taken from and
//! settled in Redis): the difference to a run without it is the cost of sharing.

use std::time::{Duration, Instant};

use clap::Parser;
use pacer_client::{AcquireRequest, Client, FailMode, KeyFingerprint, Outcome, Usage};
use pacer_tests::Pacerd;
use pacer_tests::bench::{percentile, table, us};
use pacer_tests::redis::RedisServer;
use serde_json::json;

#[derive(Debug, Parser)]
struct Args {
    /// Seconds per client count.
    #[arg(long, default_value_t = 3.0)]
    duration: f64,
    #[arg(long, value_delimiter = ',', default_values_t = [1usize, 16, 64, 256])]
    clients: Vec<usize>,
    /// Print JSON lines instead of tables.
    #[arg(long)]
    json: bool,
    /// Offered loads (permits per second, spread over --paced-clients) for the latency
    /// measurement at a fixed rate; empty to skip it.
    #[arg(long, value_delimiter = ',', default_values_t = [10_000u64, 50_000])]
    rates: Vec<u64>,
    #[arg(long, default_value_t = 64)]
    paced_clients: usize,
    /// Skip the memory measurement (1,000 connections, 10,000 waiters).
    #[arg(long)]
    skip_memory: bool,
    /// Connections and waiters for the memory measurement.
    #[arg(long, default_value_t = 1000)]
    memory_clients: usize,
    #[arg(long, default_value_t = 10)]
    waiters_per_client: usize,
    /// Share the budget through a throwaway `redis-server` (see above).
    #[arg(long)]
    redis: bool,
}

const KEY: &str = "sk-ant-ipc-bench";
const MODEL: &str = "claude-sonnet-4-5";

fn success() -> Outcome {
    Outcome::Success {
        usage: Usage {
            input_tokens: 10,
            output_tokens: 10,
            ..Default::default()
        },
        headers: Vec::new(),
    }
}

async fn connect(daemon: &Pacerd, id: usize) -> anyhow::Result<Client> {
    Ok(Client::builder()
        .endpoint(daemon.socket())
        .fail_mode(FailMode::Closed)
        .client_id(format!("bench-{id}"))
        .connect()
        .await?)
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let (p50, p99) = socket_floor()?;
    if args.json {
        println!(
            "{}",
            json!({"baseline": "blocking unix socket ping-pong", "p50_us": p50.as_secs_f64() * 1e6,
                   "p99_us": p99.as_secs_f64() * 1e6})
        );
    } else {
        println!(
            "machine floor: one blocking Unix-socket round trip between two threads: p50 {} µs, p99 {} µs \
             (a permit is two round trips: acquire, report)",
            us(p50),
            us(p99)
        );
    }
    let redis = args.redis.then(RedisServer::start);
    let daemon = match &redis {
        None => Pacerd::start_configured("", &["--no-gateway"]),
        Some(redis) => Pacerd::start_configured(
            "[limits.sonnet]\nrpm = 1000000000\nitpm = 1000000000\notpm = 1000000000\n",
            &["--no-gateway", "--redis", &redis.url()],
        ),
    };
    if redis.is_some() && !args.json {
        println!("budget shared through redis-server on loopback");
    }
    let mut rows = Vec::new();
    for &clients in &args.clients {
        let mut connections = Vec::new();
        for i in 0..clients {
            connections.push(connect(&daemon, i).await?);
        }
        // Warm up the budget and every connection.
        for client in &connections {
            client
                .acquire(AcquireRequest::new(KEY, MODEL))
                .await?
                .report(success())
                .await?;
        }
        let started = Instant::now();
        let deadline = started + Duration::from_secs_f64(args.duration);
        let tasks: Vec<_> = connections
            .into_iter()
            .map(|client| {
                tokio::spawn(async move {
                    let mut latencies = Vec::with_capacity(1 << 16);
                    while Instant::now() < deadline {
                        let began = Instant::now();
                        let permit = client.acquire(AcquireRequest::new(KEY, MODEL)).await?;
                        permit.report(success()).await?;
                        latencies.push(began.elapsed());
                    }
                    anyhow::Ok(latencies)
                })
            })
            .collect();
        let mut latencies = Vec::new();
        for task in tasks {
            latencies.extend(task.await??);
        }
        let permits = latencies.len();
        let summary = Summary::of(latencies, started.elapsed());
        if args.json {
            let mut line = json!({"clients": clients, "permits": permits});
            summary.add_to(&mut line, "permits_per_s");
            println!("{line}");
        }
        let mut row = vec![clients.to_string(), permits.to_string()];
        row.extend(summary.cells());
        rows.push(row);
    }
    if !args.json {
        println!(
            "acquire + report round trips, unlimited budget, {} s per row",
            args.duration
        );
        print!(
            "{}",
            table(
                &[
                    "clients",
                    "permits",
                    "permits/s",
                    "p50 µs",
                    "p99 µs",
                    "p99.9 µs"
                ],
                &rows
            )
        );
    }
    if !args.rates.is_empty() {
        paced(&args, &daemon).await?;
    }
    if !args.skip_memory {
        memory(&args).await?;
    }
    Ok(())
}

/// Throughput and latency percentiles of a set of acquire + report round trips.
struct Summary {
    per_second: f64,
    p50: Duration,
    p99: Duration,
    p999: Duration,
}

impl Summary {
    fn of(mut latencies: Vec<Duration>, elapsed: Duration) -> Summary {
        Summary {
            per_second: latencies.len() as f64 / elapsed.as_secs_f64(),
            p50: percentile(&mut latencies, 0.5),
            p99: percentile(&mut latencies, 0.99),
            p999: percentile(&mut latencies, 0.999),
        }
    }

    /// Adds the figures to a JSON line, the rate under `rate_key`.
    fn add_to(&self, line: &mut serde_json::Value, rate_key: &str) {
        line[rate_key] = json!(self.per_second.round());
        line["p50_us"] = json!(self.p50.as_secs_f64() * 1e6);
        line["p99_us"] = json!(self.p99.as_secs_f64() * 1e6);
        line["p999_us"] = json!(self.p999.as_secs_f64() * 1e6);
    }

    /// Table cells: rate, p50, p99, p99.9.
    fn cells(&self) -> [String; 4] {
        [
            format!("{:.0}", self.per_second),
            us(self.p50),
            us(self.p99),
            us(self.p999),
        ]
    }
}

/// What one round trip over a Unix socket costs on this machine with no runtime, no protocol and
/// no daemon: two threads ping-ponging 16 bytes with blocking I/O.
#[cfg(unix)]
fn socket_floor() -> anyhow::Result<(Duration, Duration)> {
    use std::io::{Read, Write};
    let (mut a, mut b) = std::os::unix::net::UnixStream::pair()?;
    let echo = std::thread::spawn(move || {
        let mut buf = [0u8; 16];
        while b.read_exact(&mut buf).is_ok() {
            if b.write_all(&buf).is_err() {
                break;
            }
        }
    });
    let mut buf = [0u8; 16];
    let mut samples = Vec::with_capacity(20_000);
    for _ in 0..20_000 {
        let began = Instant::now();
        a.write_all(&buf)?;
        a.read_exact(&mut buf)?;
        samples.push(began.elapsed());
    }
    drop(a);
    let _ = echo.join();
    Ok((
        percentile(&mut samples, 0.5),
        percentile(&mut samples, 0.99),
    ))
}

#[cfg(not(unix))]
fn socket_floor() -> anyhow::Result<(Duration, Duration)> {
    Ok((Duration::ZERO, Duration::ZERO))
}

/// Latency at a fixed offered load: each client takes a permit on its own schedule, rather
/// than as fast as it can (where latency is just concurrency divided by throughput).
async fn paced(args: &Args, daemon: &Pacerd) -> anyhow::Result<()> {
    let mut rows = Vec::new();
    for &rate in &args.rates {
        let clients = args.paced_clients;
        let interval = Duration::from_secs_f64(clients as f64 / rate as f64);
        let started = Instant::now();
        let deadline = started + Duration::from_secs_f64(args.duration);
        let mut tasks = Vec::new();
        for i in 0..clients {
            let client = connect(daemon, 10_000 + i).await?;
            // Spread the clients' schedules evenly over one interval.
            let offset = interval.mul_f64(i as f64 / clients as f64);
            tasks.push(tokio::spawn(async move {
                let mut latencies = Vec::new();
                let mut next = tokio::time::Instant::now() + offset;
                loop {
                    tokio::time::sleep_until(next).await;
                    if Instant::now() >= deadline {
                        break;
                    }
                    let began = Instant::now();
                    let permit = client.acquire(AcquireRequest::new(KEY, MODEL)).await?;
                    permit.report(success()).await?;
                    latencies.push(began.elapsed());
                    next += interval;
                }
                anyhow::Ok(latencies)
            }));
        }
        let mut latencies = Vec::new();
        for task in tasks {
            latencies.extend(task.await??);
        }
        let summary = Summary::of(latencies, started.elapsed());
        if args.json {
            let mut line = json!({"paced_clients": clients, "offered_per_s": rate});
            summary.add_to(&mut line, "achieved_per_s");
            println!("{line}");
        }
        let mut row = vec![clients.to_string(), rate.to_string()];
        row.extend(summary.cells());
        rows.push(row);
    }
    if !args.json {
        println!("acquire + report latency at a fixed offered load");
        print!(
            "{}",
            table(
                &[
                    "clients",
                    "offered/s",
                    "achieved/s",
                    "p50 µs",
                    "p99 µs",
                    "p99.9 µs"
                ],
                &rows
            )
        );
    }
    Ok(())
}

/// Resident memory of a fresh daemon, idle and then holding many connections and waiters.
async fn memory(args: &Args) -> anyhow::Result<()> {
    let daemon = Pacerd::start_configured("", &["--no-gateway"]);
    let admin = connect(&daemon, 0).await?;
    admin.status().await?;
    tokio::time::sleep(Duration::from_millis(200)).await;
    let idle = daemon.rss_kib().unwrap_or(0);
    // Pause the budget so that every acquire waits.
    admin
        .pause(
            KeyFingerprint::of(KEY),
            MODEL,
            std::time::SystemTime::now() + Duration::from_secs(3600),
        )
        .await?;
    let mut clients = Vec::new();
    let mut waiting = Vec::new();
    for i in 0..args.memory_clients {
        let client = connect(&daemon, i + 1).await?;
        for _ in 0..args.waiters_per_client {
            let client = client.clone();
            waiting.push(tokio::spawn(async move {
                let _ = client.acquire(AcquireRequest::new(KEY, MODEL)).await;
            }));
        }
        clients.push(client);
    }
    let expected = (args.memory_clients * args.waiters_per_client) as u32;
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let status = admin.status().await?;
        let queued: u32 = status.budgets.iter().map(|b| b.waiting).sum();
        if queued >= expected || Instant::now() > deadline {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let loaded = daemon.rss_kib().unwrap_or(0);
    if args.json {
        println!(
            "{}",
            json!({"rss_idle_kib": idle, "rss_loaded_kib": loaded,
                   "connections": args.memory_clients, "waiters": expected})
        );
    } else {
        println!("daemon memory (RSS)");
        print!(
            "{}",
            table(
                &["state", "RSS MiB"],
                &[
                    vec!["idle".into(), format!("{:.1}", idle as f64 / 1024.0)],
                    vec![
                        format!("{} connections, {expected} waiters", args.memory_clients),
                        format!("{:.1}", loaded as f64 / 1024.0),
                    ],
                ]
            )
        );
    }
    for task in waiting {
        task.abort();
    }
    Ok(())
}
