//! Daemons and Redis going away: slots of a killed daemon freed by expiry, the local share while
//! Redis is down, and fail-closed daemons granting nothing until it is back.

use super::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(
    not(pacer_redis),
    ignore = "needs redis-server (apt-get install redis-server)"
)]
async fn the_slots_of_a_daemon_killed_while_holding_them_free_by_expiry() {
    let _serial = ONE_AT_A_TIME.lock().await;
    let redis = RedisServer::start();
    let mock = MockUpstream::start(MockConfig::default()).await;
    let toml = "[limits.sonnet]\nmax_in_flight = 2\nrpm = 1000\n[cluster]\nlease_ttl = \"3s\"";
    let mut daemons = daemons(2, &redis, &mock, toml);
    let acquire = |daemon: &Pacerd| {
        daemon.pacer(
            &[
                "acquire",
                "--model",
                "claude-sonnet-4-5",
                "--timeout",
                "1",
                "--fail-closed",
            ],
            KEY,
        )
    };
    for _ in 0..2 {
        let out = acquire(&daemons[0]);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    // Both slots are held (through daemon a): b has none to give.
    assert_eq!(acquire(&daemons[1]).status.code(), Some(2));
    daemons[0].kill();
    // No renewal: within the lease's time to live, the slots come back.
    let started = Instant::now();
    loop {
        if acquire(&daemons[1]).status.success() {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(15),
            "the dead daemon's slots never freed"
        );
    }
    eprintln!(
        "slots freed {:.1} s after the daemon was killed",
        started.elapsed().as_secs_f64()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(
    not(pacer_redis),
    ignore = "needs redis-server (apt-get install redis-server)"
)]
async fn daemons_serve_their_local_share_while_redis_is_down_and_rejoin() {
    let _serial = ONE_AT_A_TIME.lock().await;
    let mut redis = RedisServer::start();
    let mock = MockUpstream::start(MockConfig {
        rpm: 120,
        latency: Duration::from_millis(20),
        ..MockConfig::default()
    })
    .await;
    let daemons = daemons(3, &redis, &mock, "");
    // One call teaches the limit (every daemon hears of it through the store); then wait for
    // the heartbeat to count three daemons, and for each to know the limit — what the local
    // share is worked out from once Redis goes.
    let http = reqwest::Client::new();
    let base = daemons[0].gateway_url().unwrap();
    assert_eq!(post(&http, &base, "first").await, 200);
    let ready = pacer_tests::wait_until(Duration::from_secs(20), || async {
        daemons.iter().all(|daemon| {
            let status = status(daemon);
            status["cluster"]["daemons"] == 3
                && sonnet(&status).is_some_and(|s| s["limits"]["rpm"] == 120)
        })
    })
    .await;
    let statuses: Vec<_> = daemons.iter().map(status).collect();
    assert!(ready, "the daemons never counted each other: {statuses:#?}");
    let before = mock.stats().ok;
    redis.kill();
    let (oks, failed) = herd(&daemons, 4, 12.0).await;
    let during = mock.stats().ok - before;
    eprintln!("with Redis down for 12 s: ok {oks:?}, failed {failed}, sent {during}");
    assert!(
        oks.iter().all(|&n| n > 0),
        "a daemon stopped serving: {oks:?}"
    );
    assert_eq!(failed, 0);
    // The limit over 12 s (24) plus what the bucket held, plus one local share (40).
    assert!(
        during <= 120 + 24 + 40,
        "{during} sent while Redis was down"
    );
    for daemon in &daemons {
        let status = status(daemon);
        assert_eq!(status["cluster"]["connected"], false, "{status}");
        assert!(
            status["cluster"]["local_share"]
                .as_f64()
                .is_some_and(|s| (s - 1.0 / 3.0).abs() < 0.01)
        );
    }
    redis.restart();
    let started = Instant::now();
    for daemon in &daemons {
        while status(daemon)["cluster"]["connected"] != true {
            assert!(
                started.elapsed() < Duration::from_secs(20),
                "a daemon never rejoined"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }
    let (oks, failed) = herd(&daemons, 4, 4.0).await;
    assert!(
        oks.iter().sum::<u64>() > 0 && failed == 0,
        "{oks:?} {failed}"
    );
    // Every daemon lived through it.
    let out = std::process::Command::new(binary("pacer"))
        .args(["status"])
        .env("PACER_SOCKET", daemons[2].socket())
        .output()
        .unwrap();
    assert!(out.status.success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(
    not(pacer_redis),
    ignore = "needs redis-server (apt-get install redis-server)"
)]
async fn closed_when_redis_is_away_grants_nothing_until_it_is_back() {
    let _serial = ONE_AT_A_TIME.lock().await;
    let mut redis = RedisServer::start();
    let mock = MockUpstream::start(MockConfig::default()).await;
    let toml = "[limits.sonnet]\nrpm = 1000\n[cluster]\non_unavailable = \"closed\"";
    let daemons = daemons(1, &redis, &mock, toml);
    let acquire = |daemon: &Pacerd| {
        daemon.pacer(
            &[
                "acquire",
                "--model",
                "claude-sonnet-4-5",
                "--timeout",
                "2",
                "--fail-closed",
            ],
            KEY,
        )
    };
    assert!(acquire(&daemons[0]).status.success());
    redis.kill();
    // The first call after the loss finds Redis gone; from then on nothing is granted.
    let _ = acquire(&daemons[0]);
    let refused = acquire(&daemons[0]);
    assert_eq!(
        refused.status.code(),
        Some(2),
        "{}",
        String::from_utf8_lossy(&refused.stderr)
    );
    assert_eq!(status(&daemons[0])["cluster"]["connected"], false);
    assert!(status(&daemons[0])["cluster"]["local_share"].is_null());
    redis.restart();
    let started = Instant::now();
    while !acquire(&daemons[0]).status.success() {
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "never granted again"
        );
    }
}
