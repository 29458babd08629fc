//! Gateway overhead: the same requests directly to the mock API and through pacerd's gateway.
//!
//! `cargo run --release -p pacer-tests --bin gateway-bench -- [--requests 2000] [--json]`
//!
//! The mock answers at once (no latency, limits far away), so the difference is what the gateway
//! adds: a permit from the broker, the forward, and reading usage off the response. Requests
//! alternate between the two paths so that drift on a shared machine affects both alike.
//! Reported: latency of JSON responses (p50, p99) and time to the first byte of streamed ones.

use std::time::{Duration, Instant};

use clap::Parser;
use pacer_tests::Pacerd;
use pacer_tests::bench::{percentile, table};
use pacer_tests::mock::{MockConfig, MockUpstream};
use serde_json::json;

#[derive(Debug, Parser)]
struct Args {
    /// Requests per path and kind.
    #[arg(long, default_value_t = 2000)]
    requests: usize,
    /// Print JSON instead of a table.
    #[arg(long)]
    json: bool,
}

#[derive(Default)]
struct Samples {
    json: Vec<Duration>,
    first_byte: Vec<Duration>,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let mock = MockUpstream::start(MockConfig {
        rpm: 1_000_000_000,
        itpm: 1_000_000_000_000,
        otpm: 1_000_000_000_000,
        output_tokens: 32,
        ..MockConfig::default()
    })
    .await;
    let config = format!("[gateway]\nupstream = \"{}\"\n", mock.url());
    let daemon = Pacerd::start_configured(&config, &[]);
    let gateway = daemon.gateway_url().expect("the gateway is enabled");
    let http = reqwest::Client::builder().tcp_nodelay(true).build()?;
    let paths = [
        ("direct", mock.url()),
        ("gateway", format!("{gateway}/s/bench~normal")),
    ];
    let body = json!({"model": "claude-sonnet-4-5", "max_tokens": 64,
                      "messages": [{"role": "user", "content": "hi"}]});
    let mut stream_body = body.clone();
    stream_body["stream"] = json!(true);
    let mut samples = [Samples::default(), Samples::default()];
    // Warm up connections on both paths.
    for _ in 0..50 {
        for (_, base) in &paths {
            send(&http, base, &body).await?;
        }
    }
    for _ in 0..args.requests {
        for (i, (_, base)) in paths.iter().enumerate() {
            let started = Instant::now();
            let response = send(&http, base, &body).await?;
            response.bytes().await?;
            samples[i].json.push(started.elapsed());

            let started = Instant::now();
            let mut response = send(&http, base, &stream_body).await?;
            response.chunk().await?;
            samples[i].first_byte.push(started.elapsed());
            while response.chunk().await?.is_some() {}
        }
    }
    let stats: Vec<[Duration; 4]> = samples
        .iter_mut()
        .map(|s| {
            [
                percentile(&mut s.json, 0.5),
                percentile(&mut s.json, 0.99),
                percentile(&mut s.first_byte, 0.5),
                percentile(&mut s.first_byte, 0.99),
            ]
        })
        .collect();
    let added: Vec<f64> = (0..4)
        .map(|k| stats[1][k].as_secs_f64() - stats[0][k].as_secs_f64())
        .collect();
    if args.json {
        for (i, (name, _)) in paths.iter().enumerate() {
            println!(
                "{}",
                json!({"path": name, "p50_us": stats[i][0].as_secs_f64() * 1e6, "p99_us": stats[i][1].as_secs_f64() * 1e6,
                       "first_byte_p50_us": stats[i][2].as_secs_f64() * 1e6, "first_byte_p99_us": stats[i][3].as_secs_f64() * 1e6})
            );
        }
        println!(
            "{}",
            json!({"path": "added", "p50_us": added[0] * 1e6, "p99_us": added[1] * 1e6,
                   "first_byte_p50_us": added[2] * 1e6, "first_byte_p99_us": added[3] * 1e6})
        );
        return Ok(());
    }
    println!(
        "{} JSON and {} streamed requests per path, one at a time, mock with no latency",
        args.requests, args.requests
    );
    let mut rows: Vec<Vec<String>> = paths
        .iter()
        .zip(&stats)
        .map(|((name, _), s)| {
            vec![
                (*name).to_owned(),
                ms3(s[0]),
                ms3(s[1]),
                ms3(s[2]),
                ms3(s[3]),
            ]
        })
        .collect();
    let signed = |secs: f64| format!("{:+.3}", secs * 1e3);
    rows.push(vec![
        "added by the gateway".to_owned(),
        signed(added[0]),
        signed(added[1]),
        signed(added[2]),
        signed(added[3]),
    ]);
    print!(
        "{}",
        table(
            &[
                "path",
                "p50 ms",
                "p99 ms",
                "first byte p50 ms",
                "first byte p99 ms"
            ],
            &rows
        )
    );
    Ok(())
}

fn ms3(d: Duration) -> String {
    format!("{:.3}", d.as_secs_f64() * 1e3)
}

async fn send(
    http: &reqwest::Client,
    base: &str,
    body: &serde_json::Value,
) -> anyhow::Result<reqwest::Response> {
    let response = http
        .post(format!("{base}/v1/messages"))
        .header("x-api-key", "sk-ant-gateway-bench")
        .header("anthropic-version", "2023-06-01")
        .json(body)
        .send()
        .await?;
    anyhow::ensure!(
        response.status().is_success(),
        "{base} answered {}",
        response.status()
    );
    Ok(response)
}
