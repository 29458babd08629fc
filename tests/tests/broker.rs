//! A real daemon on a real socket, driven through the client library.

use std::time::Duration;

use pacer_client::{AcquireRequest, Client, Error, Event, FailMode, Outcome, Priority, Usage};
use pacer_tests::{TestDaemon, budget_status, wait_until};
use tokio::sync::mpsc;
use tokio::time::Instant;

const SONNET: &str = "claude-sonnet-4-5";

fn request() -> AcquireRequest {
    AcquireRequest::new("sk-ant-test", SONNET)
}

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

fn rate_limited(retry_after: Duration) -> Outcome {
    Outcome::RateLimited {
        retry_after: Some(retry_after),
        headers: Vec::new(),
        message: Some("This request would exceed the rate limit of 10 requests per minute".into()),
    }
}

async fn sonnet_status(client: &Client) -> pacer_protocol::message::BudgetStatus {
    budget_status(client, "sk-ant-test", "sonnet").await
}

/// On tokio's paused clock: the refills of three 6-second intervals pass in an instant.
#[tokio::test(start_paused = true)]
async fn thirty_two_clients_against_10_rpm_are_paced_and_none_is_early() {
    let daemon = TestDaemon::start("[limits.sonnet]\nrpm = 10\n").await;
    let start = Instant::now();
    let (tx, mut rx) = mpsc::unbounded_channel();
    for i in 0..32 {
        let client = daemon.client_named(&format!("client-{i}")).await;
        let tx = tx.clone();
        tokio::spawn(async move {
            let permit = client.acquire(request()).await.expect("granted");
            let _ = tx.send(start.elapsed());
            permit.report(success()).await.expect("reported");
        });
    }
    // A full bucket of 10 at once, then one every 6 s. Watch the first three refills.
    let mut times = Vec::new();
    while times.len() < 13 {
        let at = tokio::time::timeout(Duration::from_secs(60), rx.recv())
            .await
            .expect("grants keep coming")
            .unwrap();
        times.push(at);
    }
    let observer = daemon.client().await;
    let status = sonnet_status(&observer).await;
    times.sort();
    for (k, at) in times.iter().enumerate().skip(10) {
        let earliest = Duration::from_secs(6 * (k as u64 - 9));
        assert!(
            *at >= earliest,
            "grant {k} came at {at:?}, before {earliest:?}"
        );
    }
    for pair in times[10..].windows(2) {
        let gap = pair[1] - pair[0];
        assert!(
            gap >= Duration::from_millis(5900),
            "grants only {gap:?} apart"
        );
    }
    // Nobody else got in early: everyone not yet granted is still waiting.
    assert_eq!(status.granted + u64::from(status.waiting), 32, "{status:?}");
    assert!(status.granted < 16, "{status:?}");
    println!("grant times: {times:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_429_pauses_every_peer_of_the_budget_and_no_other_budget() {
    let daemon = TestDaemon::start("").await;
    let client = daemon.client().await;
    let permit = client.acquire(request()).await.unwrap();
    let reported_at = Instant::now();
    permit
        .report(rate_limited(Duration::from_secs(3)))
        .await
        .unwrap();

    let (tx, mut rx) = mpsc::unbounded_channel();
    for i in 0..8 {
        let client = daemon.client_named(&format!("peer-{i}")).await;
        let tx = tx.clone();
        tokio::spawn(async move {
            let permit = client.acquire(request()).await.unwrap();
            let _ = tx.send(Instant::now());
            permit.report(success()).await.unwrap();
        });
    }
    // Another key and another model class are not paused.
    let other_key = client
        .acquire(AcquireRequest::new("sk-ant-other", SONNET))
        .await
        .unwrap();
    let other_class = client
        .acquire(AcquireRequest::new("sk-ant-test", "claude-haiku-4-5"))
        .await
        .unwrap();
    let others_granted_at = Instant::now();
    other_key.report(success()).await.unwrap();
    other_class.report(success()).await.unwrap();

    let mut peers = Vec::new();
    for _ in 0..8 {
        peers.push(
            tokio::time::timeout(Duration::from_secs(30), rx.recv())
                .await
                .unwrap()
                .unwrap(),
        );
    }
    for at in &peers {
        let waited = *at - reported_at;
        assert!(
            waited >= Duration::from_secs(3),
            "a peer got in after {waited:?}"
        );
        assert!(*at > others_granted_at);
    }
    let status = sonnet_status(&client).await;
    assert_eq!(status.rate_limited, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_client_process_frees_its_in_flight_slot() {
    let daemon = TestDaemon::start("[limits.sonnet]\nmax_in_flight = 1\n").await;
    let mut holder = tokio::process::Command::new(env!("CARGO_BIN_EXE_hold-lease"))
        .env("PACER_SOCKET", daemon.socket())
        .env("ANTHROPIC_API_KEY", "sk-ant-test")
        .stdout(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let stdout = holder.stdout.take().unwrap();
    let mut lines = tokio::io::AsyncBufReadExt::lines(tokio::io::BufReader::new(stdout));
    let lease = lines
        .next_line()
        .await
        .unwrap()
        .expect("the holder prints its lease");
    assert!(lease.parse::<u64>().is_ok(), "{lease}");

    let client = daemon.client().await;
    assert_eq!(sonnet_status(&client).await.in_flight, 1);
    let waiter = {
        let client = client.clone();
        tokio::spawn(async move { client.acquire(request()).await })
    };
    assert!(
        wait_until(Duration::from_secs(5), || async {
            sonnet_status(&client).await.waiting == 1
        })
        .await
    );

    let killed_at = Instant::now();
    holder.kill().await.unwrap();
    let permit = tokio::time::timeout(Duration::from_secs(5), waiter)
        .await
        .expect("the waiter is served once the dead client's slot is freed")
        .unwrap()
        .unwrap();
    println!("slot freed {:?} after the kill", killed_at.elapsed());
    let status = sonnet_status(&client).await;
    assert_eq!(status.in_flight, 1, "only the new permit is in flight");
    permit.report(success()).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acquires_wait_while_reports_flow_on_the_same_connection() {
    let daemon = TestDaemon::start("[limits.sonnet]\nmax_in_flight = 1\n").await;
    let client = daemon.client().await;
    let first = client.acquire(request()).await.unwrap();
    let second = tokio::spawn({
        let client = client.clone();
        async move { client.acquire(request()).await }
    });
    assert!(
        wait_until(Duration::from_secs(5), || async {
            sonnet_status(&client).await.waiting == 1
        })
        .await
    );
    first.report(success()).await.unwrap();
    let second = second.await.unwrap().unwrap();
    assert!(second.is_brokered());
    second.release().await.unwrap();
    assert_eq!(sonnet_status(&client).await.in_flight, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dropped_permit_settles_as_unknown() {
    let daemon = TestDaemon::start("[limits.sonnet]\nitpm = 10000\n").await;
    let client = daemon.client().await;
    let permit = client.acquire(request().input_tokens(400)).await.unwrap();
    drop(permit);
    assert!(
        wait_until(Duration::from_secs(5), || async {
            sonnet_status(&client).await.in_flight == 0
        })
        .await
    );
    // The reservation stays spent (only refill has given some back).
    let available = sonnet_status(&client).await.available.input_tokens.unwrap();
    assert!(available < 10_000 - 300, "{available}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_detached_permit_outlives_its_client_until_its_ttl() {
    let daemon = TestDaemon::start("").await;
    {
        let client = daemon.client_named("script").await;
        let permit = client
            .acquire(request().detached(Duration::from_secs(1)))
            .await
            .unwrap();
        assert!(permit.detach().is_some());
    }
    let observer = daemon.client().await;
    assert_eq!(sonnet_status(&observer).await.in_flight, 1);
    assert!(
        wait_until(Duration::from_secs(10), || async {
            sonnet_status(&observer).await.in_flight == 0
        })
        .await,
        "the detached lease expired"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deadline_gives_a_timeout_with_the_remaining_wait() {
    let daemon = TestDaemon::start("[limits.sonnet]\nrpm = 1\n").await;
    let client = daemon.client().await;
    let permit = client.acquire(request()).await.unwrap();
    permit.report(success()).await.unwrap();
    let err = client
        .acquire(request().timeout(Duration::from_millis(200)))
        .await
        .unwrap_err();
    let Error::TimedOut { retry_after, .. } = err else {
        panic!("{err}")
    };
    // One request per minute: the next is about a minute away.
    assert!(retry_after > Duration::from_secs(50), "{retry_after:?}");
    assert!(retry_after <= Duration::from_secs(60), "{retry_after:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn interactive_acquires_overtake_batch_ones() {
    let daemon = TestDaemon::start("[limits.sonnet]\nrpm = 60\n").await;
    let client = daemon.client().await;
    // Spend the whole bucket, then queue batch work ahead of one interactive request.
    for _ in 0..60 {
        client
            .acquire(request())
            .await
            .unwrap()
            .report(success())
            .await
            .unwrap();
    }
    let (tx, mut rx) = mpsc::unbounded_channel();
    for i in 0..3 {
        let client = daemon.client_named(&format!("batch-{i}")).await;
        let tx = tx.clone();
        tokio::spawn(async move {
            let permit = client
                .acquire(request().priority(Priority::Batch))
                .await
                .unwrap();
            let _ = tx.send("batch");
            permit.report(success()).await.unwrap();
        });
    }
    assert!(
        wait_until(Duration::from_secs(5), || async {
            sonnet_status(&client).await.waiting == 3
        })
        .await
    );
    let interactive = daemon.client_named("human").await;
    tokio::spawn(async move {
        let permit = interactive
            .acquire(request().priority(Priority::Interactive))
            .await
            .unwrap();
        let _ = tx.send("interactive");
        permit.report(success()).await.unwrap();
    });
    let first = tokio::time::timeout(Duration::from_secs(10), rx.recv())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(first, "interactive");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subscribers_see_grants_and_pauses() {
    let daemon = TestDaemon::start("").await;
    let client = daemon.client().await;
    let mut events = daemon
        .client_named("watcher")
        .await
        .subscribe()
        .await
        .unwrap();
    // The subscription is registered once the daemon has read it; a status round trip on the
    // same client is not enough (another connection), so retry the grant until it is seen.
    let mut saw_grant = false;
    for _ in 0..50 {
        client
            .acquire(request())
            .await
            .unwrap()
            .report(success())
            .await
            .unwrap();
        if let Ok(Some(Event::Granted { .. })) =
            tokio::time::timeout(Duration::from_millis(100), events.next()).await
        {
            saw_grant = true;
            break;
        }
    }
    assert!(saw_grant);
    let permit = client.acquire(request()).await.unwrap();
    permit
        .report(rate_limited(Duration::from_secs(1)))
        .await
        .unwrap();
    let pause = tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            match events.next().await {
                Some(Event::PauseStarted { budget, .. }) => return budget,
                Some(_) => continue,
                None => panic!("subscription ended"),
            }
        }
    })
    .await
    .unwrap();
    assert_eq!(pause.model_class, "sonnet");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn waiters_hear_when_the_daemon_stops() {
    let daemon = TestDaemon::start("").await;
    // Clients wait a while for a daemon that went away to come back; not here.
    let window = Duration::from_millis(300);
    let closed = Client::builder()
        .endpoint(daemon.socket())
        .fail_mode(FailMode::Closed)
        .reconnect_window(window)
        .connect()
        .await
        .unwrap();
    let open = Client::builder()
        .endpoint(daemon.socket())
        .fail_mode(FailMode::Open)
        .reconnect_window(window)
        .connect()
        .await
        .unwrap();
    closed
        .pause(
            pacer_protocol::KeyFingerprint::of("sk-ant-test"),
            SONNET,
            std::time::SystemTime::now() + Duration::from_secs(3600),
        )
        .await
        .unwrap();
    let waiting_closed = tokio::spawn({
        let closed = closed.clone();
        async move { closed.acquire(request()).await }
    });
    let waiting_open = tokio::spawn(async move { open.acquire(request()).await });
    assert!(
        wait_until(Duration::from_secs(5), || async {
            sonnet_status(&closed).await.waiting == 2
        })
        .await
    );
    daemon.stop().await;
    let err = waiting_closed.await.unwrap().unwrap_err();
    assert!(err.is_unreachable(), "{err}");
    let permit = waiting_open.await.unwrap().expect("fails open");
    assert!(!permit.is_brokered());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fail_open_client_proceeds_without_a_daemon_and_reconnects_when_one_appears() {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("pacer.sock");
    let client = Client::builder()
        .endpoint(&socket)
        .connect()
        .await
        .expect("fail-open clients connect even without a daemon");
    let permit = client.acquire(request()).await.unwrap();
    assert!(!permit.is_brokered());
    permit.report(success()).await.unwrap();

    let closed = Client::builder()
        .endpoint(&socket)
        .fail_mode(FailMode::Closed)
        .connect()
        .await;
    assert!(matches!(closed, Err(Error::Unreachable { .. })));

    // Start a daemon on that socket (without a gateway: no test binds a fixed port): the
    // client finds it by itself.
    let mut config = pacer_daemon::Config::default();
    config.gateway.listen = None;
    let (controller, control) = pacer_daemon::service::control();
    let setup = pacer_daemon::Setup::new(config, Some(socket.clone()));
    let daemon = tokio::spawn(pacer_daemon::run(setup, control));
    assert!(
        wait_until(Duration::from_secs(10), || async {
            let permit = client.acquire(request()).await.unwrap();
            let brokered = permit.is_brokered();
            permit.report(success()).await.unwrap();
            brokered
        })
        .await
    );
    controller.stop().await;
    daemon.await.unwrap().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_blocking_client_works_from_plain_threads() {
    let daemon = TestDaemon::start("").await;
    let socket = daemon.socket().to_owned();
    let lease = tokio::task::spawn_blocking(move || {
        let client = pacer_client::blocking::Client::connect_to(socket).unwrap();
        let permit = client.acquire(request()).unwrap();
        let lease = permit.lease().unwrap();
        permit.report(success()).unwrap();
        let status = client.status().unwrap();
        assert_eq!(status.budgets[0].in_flight, 0);
        assert_eq!(status.budgets[0].granted, 1);
        lease
    })
    .await
    .unwrap();
    assert!(lease.0 > 0);
}
