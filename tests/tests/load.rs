//! Load and chaos against a real pacerd process: a thousand connections holding ten thousand
//! waiters while two hundred slowloris connections sit on the gateway, and clients killed at
//! random points (waiting, holding, mid-stream). `pacer status` must answer throughout, and
//! nothing may leak once the clients are gone.
#![cfg(unix)]

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use pacer_client::{AcquireRequest, Client, FailMode};
use pacer_tests::mock::{MockConfig, MockUpstream};
use pacer_tests::{Pacerd, binary};
use serde_json::Value;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

/// Raises this process's open files limit to its hard limit; returns it.
fn raise_fd_limit() -> u64 {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: plain getrlimit/setrlimit on a valid struct.
    unsafe {
        libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit);
        limit.rlim_cur = limit.rlim_max;
        libc::setrlimit(libc::RLIMIT_NOFILE, &limit);
    }
    limit.rlim_cur
}

/// Sums a field over every budget of `pacer status --json`.
fn total(status: &Value, field: &str) -> u64 {
    status["budgets"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| b[field].as_u64().unwrap_or(0))
        .sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_answers_under_a_thousand_connections_ten_thousand_waiters_and_slowloris() {
    let limit = raise_fd_limit();
    assert!(
        limit >= 4096,
        "this test needs 4096 open files (ulimit -Hn is {limit})"
    );
    let daemon = Pacerd::start_configured("[limits.sonnet]\nrpm = 1\n", &[]);
    let socket = daemon.socket().to_owned();
    let gateway = daemon.gateway_url().unwrap();

    // 200 slowloris connections on the gateway: headers started, never finished.
    let mut slowloris = Vec::new();
    for _ in 0..200 {
        let mut stream = TcpStream::connect(gateway.trim_start_matches("http://"))
            .await
            .unwrap();
        stream
            .write_all(b"POST /v1/messages HTTP/1.1\r\nHost: x\r\n")
            .await
            .unwrap();
        slowloris.push(stream);
    }
    // 1,000 connections, each with 10 acquires waiting: the bucket holds one request a minute.
    let started = Instant::now();
    let mut clients = Vec::new();
    for i in 0..1000 {
        let client = Client::builder()
            .endpoint(&socket)
            .fail_mode(FailMode::Closed)
            .client_id(format!("load-{i}"))
            .connect()
            .await
            .unwrap();
        clients.push(client);
    }
    let mut waiters = Vec::new();
    for client in &clients {
        for _ in 0..10 {
            let client = client.clone();
            waiters.push(tokio::spawn(async move {
                client
                    .acquire(AcquireRequest::new("sk-load", "claude-sonnet-4-5"))
                    .await
            }));
        }
    }
    let socket_for_status = socket.clone();
    let status = tokio::task::spawn_blocking(move || {
        let deadline = Instant::now() + Duration::from_secs(120);
        loop {
            let out = pacer_tests::pacer(&socket_for_status, &["status", "--json"], "k");
            assert!(
                out.status.success(),
                "status failed: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            let status: Value = serde_json::from_slice(&out.stdout).unwrap();
            if total(&status, "waiting") >= 9_999 || Instant::now() > deadline {
                return status;
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    })
    .await
    .unwrap();
    let waiting = total(&status, "waiting");
    eprintln!(
        "load: 1000 connections, {waiting} waiters, 200 slowloris held after {:.1}s; \
         pacerd RSS {} KiB",
        started.elapsed().as_secs_f64(),
        daemon.rss_kib().unwrap_or(0)
    );
    assert!(waiting >= 9_999, "only {waiting} waiting");
    let probe = Instant::now();
    let out = daemon.pacer(&["status"], "k");
    assert!(out.status.success());
    eprintln!(
        "load: `pacer status` answered in {} ms under that load",
        probe.elapsed().as_millis()
    );

    // Everyone leaves: the queue empties, nothing is left behind. (A finished task keeps its
    // output, the one granted permit, until its handle is dropped.)
    for waiter in &waiters {
        waiter.abort();
    }
    drop(waiters);
    drop(clients);
    drop(slowloris);
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let status = daemon.status();
        if total(&status, "waiting") == 0 && total(&status, "in_flight") == 0 {
            break;
        }
        assert!(Instant::now() < deadline, "waiters left behind: {status}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// A small random number generator (xorshift), seeded from the clock and printed, so that a
/// failing run can be replayed with `PACER_CHAOS_SEED`.
struct Rng(u64);

impl Rng {
    fn seeded() -> Rng {
        let seed = std::env::var("PACER_CHAOS_SEED")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| {
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .unwrap()
                    .as_nanos() as u64
                    | 1
            });
        eprintln!("chaos seed: {seed} (PACER_CHAOS_SEED={seed} replays it)");
        Rng(seed)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_killed_at_random_points_leave_nothing_behind() {
    let mut rng = Rng::seeded();
    let mock = MockUpstream::start(MockConfig {
        rpm: 10_000,
        latency: Duration::from_millis(50),
        output_tokens: 40,
        event_gap: Duration::from_millis(20),
        ..MockConfig::default()
    })
    .await;
    let config = format!(
        "[limits.sonnet]\nrpm = 600\nmax_in_flight = 4\n[gateway]\nupstream = \"{}\"\n",
        mock.url()
    );
    let daemon = Pacerd::start_configured(&config, &[]);
    let socket = daemon.socket().to_owned();
    let gateway = daemon.gateway_url().unwrap();

    // Processes that acquire and hold (or wait for) a permit, killed at random moments.
    let mut processes: Vec<(Child, Instant)> = Vec::new();
    for _ in 0..24 {
        let child = Command::new(binary("hold-lease"))
            .arg("claude-sonnet-4-5")
            .env("PACER_SOCKET", &socket)
            .env("ANTHROPIC_API_KEY", "sk-chaos")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let kill_at = Instant::now() + Duration::from_millis(rng.below(3000));
        processes.push((child, kill_at));
    }
    // Streaming gateway requests dropped at random points (before the answer, mid-stream).
    let http = reqwest::Client::new();
    let mut streams = Vec::new();
    for _ in 0..24 {
        let (http, gateway) = (http.clone(), gateway.clone());
        let cut_after = Duration::from_millis(rng.below(2500));
        streams.push(tokio::spawn(async move {
            let body = serde_json::json!({"model": "claude-sonnet-4-5", "max_tokens": 40,
                "stream": true, "messages": [{"role": "user", "content": "hi"}]});
            let read = async {
                let mut response = http
                    .post(format!("{gateway}/v1/messages"))
                    .header("x-api-key", "sk-chaos")
                    .json(&body)
                    .send()
                    .await?;
                while response.chunk().await?.is_some() {}
                Ok::<_, reqwest::Error>(())
            };
            let _ = tokio::time::timeout(cut_after, read).await;
        }));
    }
    while !processes.is_empty() {
        let now = Instant::now();
        processes.retain_mut(|(child, kill_at)| {
            if now < *kill_at {
                return true;
            }
            let _ = child.kill();
            let _ = child.wait();
            false
        });
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    for stream in streams {
        let _ = stream.await;
    }

    // Nothing is left waiting or in flight, upstream calls were cancelled, and a newcomer is
    // served at once.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let status = daemon.status();
        if total(&status, "waiting") == 0
            && total(&status, "in_flight") == 0
            && mock.in_progress() == 0
        {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "left behind: {status}; upstream calls in progress: {}",
            mock.in_progress()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let client = Client::builder()
        .endpoint(&socket)
        .fail_mode(FailMode::Closed)
        .connect()
        .await
        .unwrap();
    let permit = tokio::time::timeout(
        Duration::from_secs(10),
        client.acquire(AcquireRequest::new("sk-chaos", "claude-sonnet-4-5")),
    )
    .await
    .expect("a newcomer is served")
    .unwrap();
    permit.release().await.unwrap();
}
