//! Several daemons sharing their budgets through a real `redis-server`: real `pacerd` processes,
//! clients through their gateways, against the mock API.
#![cfg(unix)]

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use pacer_tests::mock::{Inject, MockConfig, MockUpstream, Plan};
use pacer_tests::redis::RedisServer;
use pacer_tests::{Pacerd, binary};
use serde_json::{Value, json};

const KEY: &str = "sk-ant-cluster-key";

/// One test at a time: each runs several daemons, a Redis and a herd of clients, and the shares
/// they measure mean something only when the daemons are not starved of CPU by another test's.
static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// `n` daemons on one Redis, each with its own socket, state and gateway, forwarding to `mock`.
fn daemons(n: usize, redis: &RedisServer, mock: &MockUpstream, toml: &str) -> Vec<Pacerd> {
    (0..n)
        .map(|_| {
            let toml = format!("{toml}\n[gateway]\nmax_hold = 120\n");
            Pacerd::start_configured(&toml, &["--upstream", &mock.url(), "--redis", &redis.url()])
        })
        .collect()
}

fn message() -> Value {
    json!({"model": "claude-sonnet-4-5", "max_tokens": 16,
           "messages": [{"role": "user", "content": "hi"}]})
}

async fn post(http: &reqwest::Client, base: &str, client: &str) -> u16 {
    match http
        .post(format!("{base}/v1/messages"))
        .header("x-api-key", KEY)
        .header("x-pacer-client", client)
        .json(&message())
        .send()
        .await
    {
        Ok(response) => response.status().as_u16(),
        Err(_) => 0,
    }
}

/// Runs `clients` callers per daemon for `seconds` (calls under way then are let finish), each
/// calling as fast as it is let; returns the 200s per daemon and the calls that failed.
async fn herd(daemons: &[Pacerd], clients: usize, seconds: f64) -> (Vec<u64>, u64) {
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(64)
        .timeout(Duration::from_secs(150))
        .build()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs_f64(seconds);
    let failed = Arc::new(AtomicU64::new(0));
    let mut per_daemon = Vec::new();
    for (d, daemon) in daemons.iter().enumerate() {
        let base = daemon.gateway_url().unwrap();
        let ok = Arc::new(AtomicU64::new(0));
        let workers: Vec<_> = (0..clients)
            .map(|c| {
                let (http, base, ok, failed) =
                    (http.clone(), base.clone(), ok.clone(), failed.clone());
                tokio::spawn(async move {
                    while Instant::now() < deadline {
                        match post(&http, &base, &format!("d{d}-c{c}")).await {
                            200 => ok.fetch_add(1, Ordering::Relaxed),
                            _ => failed.fetch_add(1, Ordering::Relaxed),
                        };
                    }
                })
            })
            .collect();
        per_daemon.push((ok, workers));
    }
    let mut oks = Vec::new();
    for (ok, workers) in per_daemon {
        for worker in workers {
            worker.await.unwrap();
        }
        oks.push(ok.load(Ordering::Relaxed));
    }
    (oks, failed.load(Ordering::Relaxed))
}

fn status(daemon: &Pacerd) -> Value {
    daemon.status()
}

fn sonnet(status: &Value) -> Option<&Value> {
    status["budgets"]
        .as_array()?
        .iter()
        .find(|b| b["model_class"] == "sonnet" && b["account"].is_string())
}

mod outages;
mod sharing;
