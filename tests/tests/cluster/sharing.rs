//! Daemons sharing budgets through Redis: one limit shared fairly, a fresh key's first call, bad
//! values in Redis, pauses and their lifts in order, windows' ceilings and state seen everywhere.

use super::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(
    not(pacer_redis),
    ignore = "needs redis-server (apt-get install redis-server)"
)]
async fn three_daemons_share_one_limit_fairly_without_a_stampede() {
    let _serial = ONE_AT_A_TIME.lock().await;
    let redis = RedisServer::start();
    let mock = MockUpstream::start(MockConfig {
        rpm: 120,
        latency: Duration::from_millis(50),
        ..MockConfig::default()
    })
    .await;
    let daemons = daemons(3, &redis, &mock, "");
    let started = Instant::now();
    let (oks, failed) = herd(&daemons, 16, 30.0).await;
    let seconds = started.elapsed().as_secs_f64();
    let stats = mock.stats();
    let ok: u64 = oks.iter().sum();
    // What the limit allows over the run: a full bucket, then 2 a second.
    let allowed = 120.0 + 2.0 * seconds;
    let goodput = ok as f64 / allowed;
    let mean = ok as f64 / 3.0;
    let spread = oks
        .iter()
        .map(|&n| (n as f64 - mean).abs() / mean)
        .fold(0.0, f64::max);
    eprintln!(
        "three daemons: ok {oks:?} = {ok}, failed {failed}, upstream 429s {}, goodput {goodput:.3}, \
         largest share off the mean {:.1} %",
        stats.rate_limited,
        spread * 100.0
    );
    assert_eq!(failed, 0, "calls failed");
    assert!(
        stats.rate_limited <= 2,
        "{} upstream 429s",
        stats.rate_limited
    );
    assert!(goodput >= 0.95, "goodput {goodput:.3}");
    assert!(spread <= 0.10, "shares {oks:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(
    not(pacer_redis),
    ignore = "needs redis-server (apt-get install redis-server)"
)]
async fn two_daemons_bursting_on_a_fresh_key_send_one_first_call_between_them() {
    let _serial = ONE_AT_A_TIME.lock().await;
    // The first call of a key nobody knew goes against the key's own budget in Redis; its
    // answer ties the key to its account, whose budget must count that call too.
    for round in 0..2 {
        let redis = RedisServer::start();
        let mock = MockUpstream::start(MockConfig {
            rpm: 30,
            ..MockConfig::default()
        })
        .await;
        let daemons = daemons(2, &redis, &mock, "");
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(150))
            .build()
            .unwrap();
        // 32 calls at the same moment, 16 through each daemon, on a key neither knows: the
        // 31st and 32nd wait for the refill.
        let calls: Vec<_> = (0..32)
            .map(|i| {
                let (http, base) = (http.clone(), daemons[i % 2].gateway_url().unwrap());
                tokio::spawn(async move { post(&http, &base, &format!("c{i}")).await })
            })
            .collect();
        let mut statuses = Vec::new();
        for call in calls {
            statuses.push(call.await.unwrap());
        }
        let stats = mock.stats();
        eprintln!("round {round}: {stats:?}");
        assert!(statuses.iter().all(|&s| s == 200), "{statuses:?}");
        assert_eq!(stats.rate_limited, 0, "round {round}: {stats:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(
    not(pacer_redis),
    ignore = "needs redis-server (apt-get install redis-server)"
)]
async fn bad_values_written_into_redis_cannot_jam_a_budget() {
    let _serial = ONE_AT_A_TIME.lock().await;
    let redis = RedisServer::start();
    let mock = MockUpstream::start(MockConfig::default()).await;
    let daemons = daemons(2, &redis, &mock, "");
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap();
    let bases: Vec<String> = daemons.iter().map(|d| d.gateway_url().unwrap()).collect();
    for base in &bases {
        assert_eq!(post(&http, base, "warm").await, 200);
    }
    let budget = redis
        .cli(&["KEYS", "pacer:b:{org-*/sonnet}"])
        .trim()
        .to_owned();
    assert!(budget.starts_with("pacer:b:"), "{budget}");
    for bad in ["-inf", "nan", "1e308", "garbage", "inf"] {
        for field in ["l0", "l1", "l2", "m0", "m1", "t", "p", "tk", "mf"] {
            redis.cli(&["HSET", &budget, field, bad]);
        }
        // Another daemon (or anyone who can write to the channel) publishes absurd events.
        let owner = budget
            .trim_start_matches("pacer:b:{")
            .trim_end_matches("/sonnet}");
        let pause = json!({"from": "elsewhere", "event": {"Pause": {
            "budget": {"owner": {"Account": owner}, "model_class": "sonnet"},
            "for_ms": 366u64 * 24 * 3600 * 1000, "reason": "x".repeat(100_000), "drain": null}}});
        let overload = json!({"from": "elsewhere", "event": {"Overload": {
            "class": "haiku", "for_ms": 366u64 * 24 * 3600 * 1000}}});
        redis.cli(&["PUBLISH", "pacer:events", &overload.to_string()]);
        if bad == "inf" {
            // A year's pause published for the budget is held to the longest wait a 429 may
            // ask for (8 days), its reason to a sentence; then lifted by hand, like any pause.
            redis.cli(&["PUBLISH", "pacer:events", &pause.to_string()]);
            let started = Instant::now();
            let paused = loop {
                if let Some(s) = sonnet(&status(&daemons[1]))
                    && let Some(until) = s["paused_until"].as_str()
                {
                    break (
                        humantime::parse_rfc3339(until).unwrap(),
                        s["pause_reason"].as_str().unwrap_or("").len(),
                    );
                }
                assert!(started.elapsed() < Duration::from_secs(5), "never paused");
                tokio::time::sleep(Duration::from_millis(20)).await;
            };
            let left = paused
                .0
                .duration_since(std::time::SystemTime::now())
                .unwrap();
            assert!(left <= Duration::from_secs(8 * 24 * 3600), "{left:?}");
            assert!(paused.1 <= 1024, "a reason of {} bytes", paused.1);
            let lifted = daemons[1].pacer(&["pause", "--model", "sonnet", "--for", "0"], KEY);
            assert!(lifted.status.success());
            // The lift reaches the other daemon through the channel, a moment later.
            for daemon in &daemons {
                let started = Instant::now();
                while sonnet(&status(daemon)).is_some_and(|s| s["paused_until"].is_string()) {
                    assert!(started.elapsed() < Duration::from_secs(5), "never lifted");
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            }
        }
        for base in &bases {
            let started = Instant::now();
            let status = post(&http, base, bad).await;
            assert_eq!(
                status,
                200,
                "{bad}: answered {status} after {:?}",
                started.elapsed()
            );
        }
    }
    // The overload published for a year holds haiku for the cap (32 s), not for a year.
    let haiku = status(&daemons[0]);
    let until = haiku["budgets"]
        .as_array()
        .unwrap()
        .iter()
        .find_map(|b| b["overloaded_until"].as_str().map(str::to_owned));
    if let Some(until) = until {
        let until = humantime::parse_rfc3339(&until).unwrap();
        let left = until
            .duration_since(std::time::SystemTime::now())
            .unwrap_or_default();
        assert!(left <= Duration::from_secs(33), "{left:?}");
    }
    let logs = daemons[0].logs() + &daemons[1].logs();
    assert!(logs.contains("were not valid"), "{logs}");
    assert!(
        logs.matches("were not valid").count() <= 4,
        "said once, then counted: {logs}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(
    not(pacer_redis),
    ignore = "needs redis-server (apt-get install redis-server)"
)]
async fn a_pause_and_the_lift_after_it_reach_redis_in_that_order() {
    let _serial = ONE_AT_A_TIME.lock().await;
    let redis = RedisServer::start();
    let mock = MockUpstream::start(MockConfig::default()).await;
    let daemons = daemons(2, &redis, &mock, "");
    let http = reqwest::Client::new();
    for daemon in &daemons {
        assert_eq!(
            post(&http, &daemon.gateway_url().unwrap(), "warm").await,
            200
        );
    }
    // One process pauses and lifts at once, many times: each lift must land after its pause.
    let socket = daemons[0].socket().to_owned();
    tokio::task::spawn_blocking(move || {
        let client = pacer_client::blocking::Client::with(
            pacer_client::Client::builder()
                .endpoint(socket)
                .fail_mode(pacer_client::FailMode::Closed),
        )
        .unwrap();
        let key = pacer_client::KeyFingerprint::of(KEY);
        for _ in 0..50 {
            let until = std::time::SystemTime::now() + Duration::from_secs(600);
            client.pause(key, "sonnet", until).unwrap();
            client
                .pause(key, "sonnet", std::time::SystemTime::UNIX_EPOCH)
                .unwrap();
        }
    })
    .await
    .unwrap();
    // The last word was a lift: once it has reached the store and every daemon, nothing is
    // paused (a pause left behind would keep this waiting, and fail it).
    let budget = redis.cli(&["KEYS", "pacer:b:{org-*/sonnet}"]);
    let lifted = pacer_tests::wait_until(Duration::from_secs(10), || async {
        let pause = redis.cli(&["HGET", budget.trim(), "p"]);
        pause.trim().is_empty()
            && daemons
                .iter()
                .all(|daemon| sonnet(&status(daemon)).is_some_and(|s| s["paused_until"].is_null()))
    })
    .await;
    let statuses: Vec<_> = daemons.iter().map(status).collect();
    assert!(lifted, "a pause was left after its lift: {statuses:#?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(
    not(pacer_redis),
    ignore = "needs redis-server (apt-get install redis-server)"
)]
async fn two_daemons_hold_one_windows_ceiling_together() {
    let _serial = ONE_AT_A_TIME.lock().await;
    let redis = RedisServer::start();
    let mock = MockUpstream::start(MockConfig {
        rpm: 6000,
        latency: Duration::from_millis(100),
        subscription: Some(Plan {
            five_hour: 40,
            ..Plan::default()
        }),
        ..MockConfig::default()
    })
    .await;
    let toml = "[windows]\nbatch = 0.5\n";
    let daemons: Vec<Pacerd> = (0..2)
        .map(|_| {
            Pacerd::start_configured(
                &format!("{toml}[gateway]\nmax_hold = 2\n"),
                &["--upstream", &mock.url(), "--redis", &redis.url()],
            )
        })
        .collect();
    let http = reqwest::Client::new();
    let call = move |base: String, priority: &'static str, n: usize| {
        let http = http.clone();
        async move {
            http.post(format!("{base}/v1/messages"))
                .header("authorization", format!("Bearer sk-ant-oat01-{n}"))
                .header("x-pacer-priority", priority)
                .json(&message())
                .send()
                .await
                .map_or(0, |r| r.status().as_u16())
        }
    };
    // The account is known on both daemons first (its windows are shared).
    for (i, daemon) in daemons.iter().enumerate() {
        assert_eq!(
            call(daemon.gateway_url().unwrap(), "interactive", i).await,
            200
        );
    }
    // Three batch workers on each daemon, each calling until pacer holds it.
    let workers: Vec<_> = (0..6)
        .map(|w| {
            let base = daemons[w % 2].gateway_url().unwrap();
            let call = call.clone();
            tokio::spawn(async move {
                let mut ok = 0;
                while call(base.clone(), "batch", 100 + w).await == 200 {
                    ok += 1;
                }
                ok
            })
        })
        .collect();
    let mut batch = 0;
    for worker in workers {
        batch += worker.await.unwrap();
    }
    let stats = mock.stats();
    eprintln!("batch calls served: {batch}; upstream {stats:?}");
    // 50 % of 40 is 20; the two interactive calls came first. Each daemon counts the other's
    // calls in flight, so six workers over two machines stop near the ceiling (within a call
    // or two of the estimate's rounding), not six calls past it.
    assert!(
        (14..=22).contains(&(batch + 2)),
        "the window was brought to {} of 40",
        batch + 2
    );
    assert_eq!(stats.window_rejected, 0);
    // The rest is the person at the keyboard's, on either machine.
    for (i, daemon) in daemons.iter().enumerate() {
        assert_eq!(
            call(daemon.gateway_url().unwrap(), "interactive", i).await,
            200
        );
    }
    let status = status(&daemons[1]);
    let text = status.to_string();
    assert!(text.contains("\"held\":true"), "{status}");
}

/// `pacer status --json` of a daemon.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(
    not(pacer_redis),
    ignore = "needs redis-server (apt-get install redis-server)"
)]
async fn a_429_on_one_daemon_pauses_the_others_and_they_resume_together() {
    let _serial = ONE_AT_A_TIME.lock().await;
    let redis = RedisServer::start();
    let mock = MockUpstream::start(MockConfig::default()).await;
    let daemons = daemons(2, &redis, &mock, "");
    let http = reqwest::Client::new();
    let (a, b) = (
        daemons[0].gateway_url().unwrap(),
        daemons[1].gateway_url().unwrap(),
    );
    // Both know the account.
    assert_eq!(post(&http, &a, "warm-a").await, 200);
    assert_eq!(post(&http, &b, "warm-b").await, 200);
    mock.inject(Inject {
        blind_429: 1,
        blind_retry_after: Some("3".into()),
        ..Inject::default()
    });
    let held = {
        let (http, a) = (http.clone(), a.clone());
        tokio::spawn(async move { post(&http, &a, "hit").await })
    };
    // The other daemon pauses without having seen a 429 itself.
    let started = Instant::now();
    let paused_at = loop {
        if sonnet(&status(&daemons[1])).is_some_and(|s| s["paused_until"].is_string()) {
            break started.elapsed();
        }
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "daemon b never paused"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    };
    eprintln!(
        "the other daemon paused {} ms after the request that met the 429 was sent",
        paused_at.as_millis()
    );
    let before = mock.stats().requests;
    // During the pause, b sends nothing upstream; once it ends, both go on.
    let during = {
        let (http, b) = (http.clone(), b.clone());
        tokio::spawn(async move { post(&http, &b, "during").await })
    };
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(
        mock.stats().requests,
        before,
        "a request went upstream during the pause"
    );
    assert_eq!(held.await.unwrap(), 200);
    assert_eq!(during.await.unwrap(), 200);
    assert_eq!(mock.stats().rate_limited, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(
    not(pacer_redis),
    ignore = "needs redis-server (apt-get install redis-server)"
)]
async fn a_subscriptions_windows_seen_through_one_daemon_show_on_the_others() {
    let _serial = ONE_AT_A_TIME.lock().await;
    let redis = RedisServer::start();
    let mock = MockUpstream::start(MockConfig {
        subscription: Some(Plan {
            five_hour: 40,
            ..Plan::default()
        }),
        ..MockConfig::default()
    })
    .await;
    let daemons = daemons(2, &redis, &mock, "");
    let http = reqwest::Client::new();
    let a = daemons[0].gateway_url().unwrap();
    for _ in 0..4 {
        let status = http
            .post(format!("{a}/v1/messages"))
            .header("authorization", "Bearer sk-ant-oat01-cluster-subscription")
            .json(&message())
            .send()
            .await
            .unwrap()
            .status();
        assert_eq!(status, 200);
    }
    // Four of forty: 10 % of the 5-hour window, which only daemon a has seen in a response.
    let started = Instant::now();
    loop {
        let status = status(&daemons[1]);
        let five_hour = status["accounts"].as_array().and_then(|accounts| {
            accounts.iter().find_map(|account| {
                account["windows"]
                    .as_array()?
                    .iter()
                    .find(|w| w["name"] == "5h")
                    .and_then(|w| w["utilization"].as_f64())
            })
        });
        if five_hour.is_some_and(|u| (u - 0.1).abs() < 0.001) {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "daemon b never showed the window: {status}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
