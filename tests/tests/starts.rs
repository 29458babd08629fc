//! The bare 429 through the gateway, on tokio's paused clock: it holds its own request and
//! nobody else; Claude Code sessions starting together against the API's wall are started one
//! at a time once the wall is seen, while the sessions at work carry on.

use std::sync::Arc;
use std::time::Duration;

use pacer_tests::TestDaemon;
use pacer_tests::mock::{Inject, MockConfig, MockUpstream, SessionWall};
use serde_json::json;
use tokio::sync::Mutex;
use tokio::time::Instant;

const KEY: &str = "sk-ant-starts";

async fn daemon_for(mock: &MockUpstream) -> TestDaemon {
    let upstream = mock.url().parse().unwrap();
    TestDaemon::start_with("", |config| config.gateway.upstream = upstream).await
}

/// One Messages call through the gateway as Claude Code session `session` makes it; its status
/// and how long it took.
async fn call(http: &reqwest::Client, gateway: &str, session: Option<&str>) -> (u16, Duration) {
    let body = json!({"model": "claude-sonnet-4-5", "max_tokens": 16, "stream": true,
                      "messages": [{"role": "user", "content": "hi"}]});
    let mut request = http
        .post(format!("{gateway}/v1/messages"))
        .header("x-api-key", KEY)
        .json(&body);
    if let Some(session) = session {
        request = request.header("x-claude-code-session-id", session);
    }
    let started = Instant::now();
    let response = request.send().await.expect("the gateway answers");
    let status = response.status().as_u16();
    let _ = response.bytes().await;
    (status, started.elapsed())
}

#[tokio::test(start_paused = true)]
async fn a_bare_429_holds_its_own_request_and_nobody_else_pauses() {
    let mock = MockUpstream::start(MockConfig::default()).await;
    let daemon = daemon_for(&mock).await;
    let gateway = daemon.gateway_url().await;
    let http = reqwest::Client::new();
    // The budget is known (its limits learned) before the bare 429.
    assert_eq!(call(&http, &gateway, None).await.0, 200);
    mock.inject(Inject {
        bare_429: 1,
        ..Inject::default()
    });
    let held = tokio::spawn({
        let (http, gateway) = (http.clone(), gateway.clone());
        async move { call(&http, &gateway, None).await }
    });
    // Wait until the bare 429 has been answered, then other calls go at once.
    assert!(
        pacer_tests::wait_until(Duration::from_secs(5), || async { mock.stats().bare == 1 }).await
    );
    for session in [None, Some("new session")] {
        let (status, took) = call(&http, &gateway, session).await;
        assert_eq!(status, 200);
        assert!(took < Duration::from_secs(1), "nobody else waits: {took:?}");
    }
    let (status, took) = held.await.unwrap();
    assert_eq!(status, 200, "held, then sent again");
    assert!(
        took >= Duration::from_secs(16) && took < Duration::from_secs(30),
        "on its own spacing, past the first ~15 s: {took:?}"
    );
    let stats = mock.stats();
    assert_eq!((stats.bare, stats.ok), (1, 4), "{stats:?}");
    let status = daemon.client().await.status().await.unwrap();
    let budget = &status.budgets[0];
    assert_eq!(budget.throttled.bare, 1);
    assert_eq!(budget.paused_until, None);
}

#[tokio::test(start_paused = true)]
async fn past_max_hold_the_bare_429_goes_back_unchanged() {
    let mock = MockUpstream::start(MockConfig::default()).await;
    mock.inject(Inject {
        bare_429: 100,
        ..Inject::default()
    });
    let upstream = mock.url().parse().unwrap();
    let daemon = TestDaemon::start_with("", |config| {
        config.gateway.upstream = upstream;
        config.gateway.max_hold = Duration::from_secs(60);
    })
    .await;
    let gateway = daemon.gateway_url().await;
    let response = reqwest::Client::new()
        .post(format!("{gateway}/v1/messages"))
        .header("x-api-key", KEY)
        .json(&json!({"model": "claude-sonnet-4-5", "max_tokens": 8, "messages": []}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 429);
    let headers = response.headers().clone();
    assert_eq!(headers["x-should-retry"], "true");
    assert!(
        headers.get("retry-after").is_none(),
        "nothing added: {headers:?}"
    );
    let tries = mock.stats().bare;
    assert!(
        (2..=3).contains(&tries),
        "sent again within the hold: {tries}"
    );
}

/// Sessions at work (their first call answered before the wall) calling once a second, and
/// ten new sessions starting together; `wall`: the API's wall for new sessions, if any.
struct Run {
    at_work_statuses: Vec<u16>,
    at_work_slowest: Duration,
    new_statuses: Vec<u16>,
    bare: u64,
    paced_seen: bool,
}

async fn sessions_starting_together(wall: Option<SessionWall>) -> Run {
    let mock = MockUpstream::start(MockConfig {
        rpm: 6000,
        itpm: 10_000_000,
        otpm: 10_000_000,
        session_wall: wall,
        ..MockConfig::default()
    })
    .await;
    let daemon = daemon_for(&mock).await;
    let gateway = daemon.gateway_url().await;
    let http = reqwest::Client::new();
    for id in ["work-1", "work-2"] {
        assert_eq!(call(&http, &gateway, Some(id)).await.0, 200);
    }
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let at_work = Arc::new(Mutex::new(Vec::new()));
    let workers: Vec<_> = ["work-1", "work-2"]
        .into_iter()
        .map(|id| {
            let (http, gateway, stop, at_work) =
                (http.clone(), gateway.clone(), stop.clone(), at_work.clone());
            tokio::spawn(async move {
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    let result = call(&http, &gateway, Some(id)).await;
                    at_work.lock().await.push(result);
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
            })
        })
        .collect();
    let new: Vec<_> = (0..10)
        .map(|i| {
            let (http, gateway) = (http.clone(), gateway.clone());
            tokio::spawn(async move { call(&http, &gateway, Some(&format!("new-{i}"))).await })
        })
        .collect();
    let client = daemon.client().await;
    let mut paced_seen = false;
    while !new.iter().all(|t| t.is_finished()) {
        tokio::time::sleep(Duration::from_secs(5)).await;
        let status = client.status().await.unwrap();
        paced_seen |= status.starts.iter().any(|s| s.waiting > 0);
    }
    let mut new_statuses = Vec::new();
    for task in new {
        new_statuses.push(task.await.unwrap().0);
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    for worker in workers {
        worker.await.unwrap();
    }
    let at_work = at_work.lock().await;
    println!(
        "new sessions: {new_statuses:?}, upstream: {:?}",
        mock.stats()
    );
    Run {
        at_work_statuses: at_work.iter().map(|r| r.0).collect(),
        at_work_slowest: at_work.iter().map(|r| r.1).max().unwrap_or_default(),
        new_statuses,
        bare: mock.stats().bare,
        paced_seen,
    }
}

#[tokio::test(start_paused = true)]
async fn sessions_starting_together_against_a_wall_all_start_while_the_ones_at_work_go_on() {
    let run = sessions_starting_together(Some(SessionWall {
        burst: 3,
        refill: Duration::from_secs(10),
        block: Duration::from_secs(30),
    }))
    .await;
    assert!(
        run.new_statuses.iter().all(|s| *s == 200),
        "{:?}",
        run.new_statuses
    );
    assert!(run.at_work_statuses.iter().all(|s| *s == 200));
    assert!(run.at_work_statuses.len() > 20, "they kept calling");
    assert!(
        run.at_work_slowest < Duration::from_secs(3),
        "{:?}",
        run.at_work_slowest
    );
    assert!(run.bare <= 12, "{} bare 429s", run.bare);
    assert!(
        run.paced_seen,
        "pacer status showed sessions waiting to start"
    );
}

#[tokio::test(start_paused = true)]
async fn with_no_wall_sessions_starting_together_all_start_at_once() {
    let run = sessions_starting_together(None).await;
    assert!(run.new_statuses.iter().all(|s| *s == 200));
    assert_eq!(run.bare, 0);
    assert!(!run.paced_seen);
}
