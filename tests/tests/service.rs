//! pacerd as a long-running service: restarts, signals, state, logs, socket activation, units.
#![cfg(unix)]

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant, SystemTime};

use pacer_client::{AcquireRequest, Client, FailMode, Outcome, Usage};
use pacer_protocol::KeyFingerprint;
use pacer_tests::{Pacerd, binary, budget_status, read_logs, wait_until};
use tokio::sync::mpsc;

const KEY: &str = "sk-ant-service-test-secret";

async fn client(socket: &Path, id: &str) -> Client {
    Client::builder()
        .endpoint(socket)
        .fail_mode(FailMode::Closed)
        .client_id(id)
        .connect()
        .await
        .unwrap()
}

fn request() -> AcquireRequest {
    AcquireRequest::new(KEY, "claude-sonnet-4-5")
}

fn rate_limited(retry_after: Duration) -> Outcome {
    Outcome::RateLimited {
        retry_after: Some(retry_after),
        headers: vec![("anthropic-ratelimit-requests-limit".into(), "600".into())],
        message: Some("This request would exceed the rate limit of 600 requests per minute".into()),
    }
}

async fn sonnet(client: &Client) -> pacer_protocol::message::BudgetStatus {
    budget_status(client, KEY, "sonnet").await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_daemon_comes_back_with_its_pause_and_serves_the_waiting_clients_after_it() {
    let dir = tempfile::tempdir().unwrap();
    let mut daemon = Pacerd::start(dir.path(), &["--no-gateway"]);
    let first = client(daemon.socket(), "reporter").await;
    let permit = first.acquire(request()).await.unwrap();
    // The daemon starts the pause when it reads the report: no sooner than now (marking it
    // after the report returns would be later than the daemon's mark by the answer's trip).
    let pause_ends = Instant::now() + Duration::from_secs(5);
    permit
        .report(rate_limited(Duration::from_secs(5)))
        .await
        .unwrap();

    let (tx, mut rx) = mpsc::unbounded_channel();
    for i in 0..32 {
        let client = client(daemon.socket(), &format!("waiter-{i}")).await;
        let tx = tx.clone();
        tokio::spawn(async move {
            let permit = client.acquire(request()).await;
            let _ = tx.send((Instant::now(), permit.map(|p| p.is_brokered())));
        });
    }
    assert!(
        wait_until(Duration::from_secs(5), || async {
            sonnet(&first).await.waiting == 32
        })
        .await
    );

    daemon.kill(); // SIGKILL: no chance to save anything now
    let daemon = Pacerd::start(dir.path(), &["--no-gateway"]);
    let observer = client(daemon.socket(), "observer").await;
    let status = sonnet(&observer).await;
    let paused_until = status.paused_until.expect("the pause survived the crash");
    let left = paused_until
        .duration_since(SystemTime::now())
        .unwrap_or_default();
    assert!(
        left > Duration::from_secs(1) && left <= Duration::from_secs(5),
        "{left:?}"
    );
    assert_eq!(
        status.limits.rpm,
        Some(600),
        "the learned limit survived too"
    );

    let mut served = Vec::new();
    while served.len() < 32 {
        let (at, result) = tokio::time::timeout(Duration::from_secs(30), rx.recv())
            .await
            .expect("every waiter is served")
            .unwrap();
        assert!(
            result.expect("granted, not failed"),
            "granted by the new daemon"
        );
        served.push(at);
    }
    // The pause crossed the restart as a wall-clock time (the state file), mapped back to the
    // new daemon's monotonic clock: the two clocks may have drifted apart by a few
    // milliseconds meanwhile (NTP slews the wall clock), which is all the slack allowed here.
    let slack = Duration::from_millis(50);
    for at in served {
        assert!(
            at + slack >= pause_ends,
            "a client got in {:?} early",
            pause_ends - at
        );
    }
    let status = sonnet(&observer).await;
    assert_eq!(status.granted, 32);
}

fn write_config(dir: &Path, text: &str) -> PathBuf {
    let path = dir.join("config.toml");
    std::fs::write(&path, text).unwrap();
    path
}

/// A raw connection that holds one waiting acquire, to prove it is never dropped.
async fn raw_waiting_acquire(socket: &Path) -> tokio::net::UnixStream {
    use pacer_protocol::codec;
    use pacer_protocol::message::{Acquire, Hello, Request, RequestFrame};
    use tokio::io::AsyncWriteExt;
    let mut stream = tokio::net::UnixStream::connect(socket).await.unwrap();
    let mut bytes = Vec::new();
    for frame in [
        RequestFrame {
            id: 1,
            request: Request::Hello(Hello {
                protocol_version: pacer_protocol::PROTOCOL_VERSION,
                client_name: "raw".into(),
                pid: std::process::id(),
            }),
        },
        RequestFrame {
            id: 2,
            request: Request::Acquire(Acquire {
                key: KeyFingerprint::of(KEY),
                model: "claude-sonnet-4-5".into(),
                priority: pacer_protocol::Priority::Normal,
                client_id: "raw".into(),
                input_tokens: None,
                output_tokens: None,
                max_tokens: None,
                deadline: None,
                detached_ttl: None,
                max_share_bp: None,
            }),
        },
    ] {
        codec::encode(&frame, &mut bytes).unwrap();
    }
    stream.write_all(&bytes).await.unwrap();
    stream
}

/// The daemon's answer to the acquire waiting on `stream` (`None` if it closed first, or
/// gave none within 10 s).
async fn answer_to(
    mut stream: tokio::net::UnixStream,
) -> Option<pacer_protocol::message::Response> {
    use pacer_protocol::codec;
    use pacer_protocol::message::ResponseFrame;
    use tokio::io::AsyncReadExt;
    let mut bytes = Vec::new();
    let read = async {
        loop {
            let mut chunk = [0u8; 1024];
            let n = stream.read(&mut chunk).await.ok()?;
            if n == 0 {
                return None;
            }
            bytes.extend_from_slice(&chunk[..n]);
            let mut at = 0;
            while let Some((frame, used)) =
                codec::decode::<ResponseFrame>(&bytes[at..]).ok().flatten()
            {
                at += used;
                if frame.id == 2 {
                    return Some(frame.response);
                }
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(10), read)
        .await
        .ok()
        .flatten()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_applies_new_limits_to_waiting_clients_and_refuses_a_broken_file() {
    use pacer_protocol::codec;
    use pacer_protocol::message::{Response, ResponseFrame};
    use tokio::io::AsyncReadExt;

    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), "[limits.sonnet]\nrpm = 1\n");
    let config_arg = config.to_str().unwrap().to_owned();
    let daemon = Pacerd::start(dir.path(), &["--no-gateway", "--config", &config_arg]);
    let observer = client(daemon.socket(), "observer").await;
    observer
        .acquire(request())
        .await
        .unwrap()
        .release()
        .await
        .ok();
    observer.acquire(request()).await.unwrap().detach();
    // Now the bucket is empty: at 1 rpm the next permit is a minute away.
    let mut raw = raw_waiting_acquire(daemon.socket()).await;
    assert!(
        wait_until(Duration::from_secs(5), || async {
            sonnet(&observer).await.waiting == 1
        })
        .await
    );

    // A broken file is refused; the old limits stay.
    write_config(dir.path(), "[limits.sonnet]\nrpm = \"lots\"\n");
    daemon.signal(libc::SIGHUP);
    let logs = dir.path().join("pacer/logs");
    let refused = wait_until(Duration::from_secs(10), || async {
        read_logs(&logs).contains("configuration not reloaded")
    })
    .await;
    assert!(refused, "the reload was never tried: {}", read_logs(&logs));
    assert_eq!(sonnet(&observer).await.limits.rpm, Some(1));

    write_config(dir.path(), "[limits.sonnet]\nrpm = 600\n");
    daemon.signal(libc::SIGHUP);
    // The waiter is granted on its own connection, which was never closed.
    let mut bytes = Vec::new();
    let granted = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            let mut chunk = [0u8; 1024];
            let n = raw.read(&mut chunk).await.unwrap();
            assert!(n > 0, "the connection was closed");
            bytes.extend_from_slice(&chunk[..n]);
            let mut at = 0;
            while let Some((frame, used)) = codec::decode::<ResponseFrame>(&bytes[at..]).unwrap() {
                at += used;
                if frame.id == 2 {
                    return frame.response;
                }
            }
        }
    })
    .await
    .expect("granted under the new limit");
    assert!(matches!(granted, Response::Granted(_)), "{granted:?}");
    assert_eq!(sonnet(&observer).await.limits.rpm, Some(600));
    let logs = read_logs(&dir.path().join("pacer/logs"));
    assert!(logs.contains("configuration not reloaded"), "{logs}");
    assert!(logs.contains("configuration reloaded"), "{logs}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_lets_calls_in_flight_report_then_exits_0_with_a_loadable_state() {
    let dir = tempfile::tempdir().unwrap();
    let mut daemon = Pacerd::start(dir.path(), &["--no-gateway"]);
    let client = client(daemon.socket(), "c").await;
    let paused = client.acquire(request()).await.unwrap();
    // A pause within max_hold (240 s): a longer one would lock the class out instead.
    paused
        .report(rate_limited(Duration::from_secs(230)))
        .await
        .unwrap();
    let in_flight = client
        .acquire(AcquireRequest::new(KEY, "claude-haiku-4-5"))
        .await
        .unwrap();
    // A call waits behind the pause on a raw connection (to see the answer the client library
    // would retry on).
    let waiting = raw_waiting_acquire(daemon.socket()).await;
    assert!(
        wait_until(Duration::from_secs(5), || async {
            sonnet(&client).await.waiting == 1
        })
        .await
    );
    daemon.signal(libc::SIGTERM);
    // The daemon is stopping: the waiting acquire is told so...
    let answer = answer_to(waiting).await;
    assert!(
        matches!(
            &answer,
            Some(pacer_protocol::message::Response::Error(e))
                if e.kind == pacer_protocol::message::ErrorKind::Stopping
        ),
        "the daemon never began to stop: {answer:?}"
    );
    // ...but it waits for the call in flight: its report still gets through.
    let usage = Usage {
        input_tokens: 10,
        output_tokens: 5,
        ..Default::default()
    };
    in_flight
        .report(Outcome::Success {
            usage,
            headers: Vec::new(),
        })
        .await
        .expect("a report during the grace period is taken");
    let status = tokio::time::timeout(
        Duration::from_secs(30),
        tokio::task::spawn_blocking(move || daemon.wait()),
    )
    .await
    .expect("the daemon exits once its calls have reported")
    .unwrap();
    assert!(status.success(), "{status:?}");
    let state = pacer_daemon::persist::load(&dir.path().join("pacer/state")).expect("a state file");
    let sonnet = state
        .broker
        .budgets
        .iter()
        .find(|b| b.model_class == "sonnet")
        .unwrap();
    assert!(sonnet.paused_until.unwrap() > SystemTime::now() + Duration::from_secs(200));
    assert_eq!(
        sonnet.learned[pacer_protocol::LimitKind::Requests],
        Some(600)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_corrupt_state_file_is_set_aside_and_the_daemon_starts() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("pacer")).unwrap();
    std::fs::write(dir.path().join("pacer/state"), b"\x00\x01 not json").unwrap();
    let daemon = Pacerd::start(dir.path(), &["--no-gateway"]);
    client(daemon.socket(), "c").await.status().await.unwrap();
    let names: Vec<String> = std::fs::read_dir(dir.path().join("pacer"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert!(
        names.iter().any(|n| n.starts_with("state.corrupt-")),
        "{names:?}"
    );
    let logs = read_logs(&dir.path().join("pacer/logs"));
    assert!(logs.contains("state file set aside"), "{logs}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_state_file_that_cannot_be_written_is_said_once_and_leaves_no_temporary_file() {
    let dir = tempfile::tempdir().unwrap();
    let daemon = Pacerd::start(dir.path(), &["--no-gateway"]);
    client(daemon.socket(), "c").await.status().await.unwrap();
    // The state file's place is taken by a directory with something in it: every save fails
    // at its rename, as on a full disk it fails at its write.
    let state = dir.path().join("pacer/state");
    let _ = std::fs::remove_file(&state);
    std::fs::create_dir_all(state.join("in-the-way")).unwrap();
    let logs = dir.path().join("pacer/logs");
    for round in 0..3 {
        // A pause (and its lift) is saved at once.
        let pause = daemon.pacer(&["pause", "--model", "opus", "--for", "2m"], "sk");
        assert!(pause.status.success(), "{pause:?}");
        let lift = daemon.pacer(&["pause", "--model", "opus", "--for", "0"], "sk");
        assert!(lift.status.success(), "{lift:?}");
        let said = wait_until(Duration::from_secs(10), || async {
            read_logs(&logs).contains("cannot save the state")
        })
        .await;
        assert!(said, "round {round}: {}", read_logs(&logs));
    }
    // Several saves failed (each pause and lift is saved at once): said once, no temporary
    // file left behind.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let text = read_logs(&logs);
    assert_eq!(text.matches("cannot save the state").count(), 1, "{text}");
    assert!(!dir.path().join("pacer/state.tmp").exists());
    // Once it can be written again, it says so.
    std::fs::remove_dir_all(&state).unwrap();
    let pause = daemon.pacer(&["pause", "--model", "opus", "--for", "2m"], "sk");
    assert!(pause.status.success(), "{pause:?}");
    assert!(
        wait_until(Duration::from_secs(10), || async {
            read_logs(&logs).contains("the state is saved again")
        })
        .await,
        "{}",
        read_logs(&logs)
    );
    assert!(state.is_file());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logs_rotate_in_their_directory_and_never_hold_an_api_key() {
    let dir = tempfile::tempdir().unwrap();
    let logs = dir.path().join("my-logs");
    std::fs::create_dir_all(&logs).unwrap();
    // Twenty old daily files: only the 13 newest are kept beside today's.
    for day in 1..=20 {
        std::fs::write(logs.join(format!("pacerd.2025-01-{day:02}.log")), "old\n").unwrap();
    }
    let mut daemon = Pacerd::start(
        dir.path(),
        &["--no-gateway", "--log-dir", logs.to_str().unwrap()],
    );
    let client = client(daemon.socket(), "c").await;
    let permit = client.acquire(request()).await.unwrap();
    permit
        .report(rate_limited(Duration::from_secs(1)))
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    daemon.signal(libc::SIGTERM);
    tokio::task::spawn_blocking(move || daemon.wait())
        .await
        .unwrap();

    let files: Vec<String> = std::fs::read_dir(&logs)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(
        files.len(),
        pacer_daemon::service::logging::KEEP_FILES,
        "{files:?}"
    );
    let today = humantime::format_rfc3339(SystemTime::now()).to_string()[..10].to_owned();
    let current = logs.join(format!("pacerd.{today}.log"));
    let text = std::fs::read_to_string(&current).unwrap();
    for line in [
        "pacerd listening",
        "pause started",
        "pause ended",
        "limit learned",
        "stopped",
    ] {
        assert!(text.contains(line), "no `{line}` in {text}");
    }
    assert!(text.contains(&KeyFingerprint::of(KEY).to_string()));
    assert!(!read_logs(&logs).contains(KEY), "an API key was logged");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn socket_activation_serves_on_inherited_sockets() {
    use std::os::fd::AsRawFd;
    use std::os::unix::process::CommandExt;

    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("activated.sock");
    let unix = std::os::unix::net::UnixListener::bind(&socket).unwrap();
    let tcp = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let gateway = tcp.local_addr().unwrap();
    let (unix_fd, tcp_fd) = (unix.as_raw_fd(), tcp.as_raw_fd());
    let mut command = Command::new("/bin/sh");
    // The shell sets LISTEN_PID to its own pid and then becomes pacerd (same pid), as systemd
    // would have it.
    command
        .args([
            "-c",
            "LISTEN_PID=$$ LISTEN_FDS=2 exec \"$0\" --socket /nonexistent/unused.sock",
        ])
        .arg(binary("pacerd"))
        .env("XDG_STATE_HOME", dir.path())
        .env("XDG_CONFIG_HOME", dir.path())
        .stderr(Stdio::null());
    // SAFETY: only async-signal-safe calls (dup2) between fork and exec.
    unsafe {
        command.pre_exec(move || {
            for (from, to) in [(unix_fd, 3), (tcp_fd, 4)] {
                if libc::dup2(from, to) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
            }
            Ok(())
        });
    }
    let child = command.spawn().unwrap();
    let daemon = Pacerd::adopt(child, &socket);
    drop((unix, tcp));
    let client = Client::builder()
        .endpoint(daemon.socket())
        .fail_mode(FailMode::Closed)
        .reconnect_window(Duration::from_secs(10))
        .connect()
        .await;
    let client = match client {
        Ok(client) => client,
        Err(_) => {
            tokio::time::sleep(Duration::from_millis(500)).await;
            Client::builder()
                .endpoint(daemon.socket())
                .fail_mode(FailMode::Closed)
                .connect()
                .await
                .expect("pacerd serves on the inherited Unix socket")
        }
    };
    let info = client.gateway_info().await.unwrap();
    assert_eq!(
        info.listen,
        Some(gateway.to_string()),
        "and the gateway on the inherited TCP socket"
    );
    let response = reqwest::get(format!("http://{gateway}/v1/models"))
        .await
        .unwrap();
    assert_eq!(
        response.status(),
        502,
        "the gateway answers (its upstream is unreachable here)"
    );
    assert!(!Path::new("/nonexistent/unused.sock").exists());
}

#[cfg(unix)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_names_only_what_the_file_itself_changed() {
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), "[limits.sonnet]\nrpm = 5\n");
    let config_arg = config.to_str().unwrap().to_owned();
    let state = dir.path().join("elsewhere").join("state");
    let state_arg = state.to_str().unwrap().to_owned();
    // The gateway's address from the environment, the state file from a flag: not the file's.
    let mut command = Pacerd::command(dir.path());
    command
        .env("PACER_GATEWAY", "127.0.0.1:0")
        .args(["--config", &config_arg, "--state", &state_arg])
        .args(["--socket", dir.path().join("pacer.sock").to_str().unwrap()]);
    let daemon = Pacerd::spawn(command, &dir.path().join("pacer.sock"));
    write_config(dir.path(), "[limits.sonnet]\nrpm = 6\n");
    daemon.signal(libc::SIGHUP);
    let logs = dir.path().join("pacer").join("logs");
    assert!(
        wait_until(Duration::from_secs(5), || async {
            pacer_tests::read_logs(&logs).contains("configuration reloaded")
        })
        .await
    );
    let text = pacer_tests::read_logs(&logs);
    assert!(
        !text.contains("changed in"),
        "nothing the file said changed: {text}"
    );
    // Each line names its daemon.
    let pid = daemon.pid().to_string();
    assert!(
        text.lines()
            .filter(|l| !l.is_empty())
            .all(|l| l.contains(&pid) || l.contains(" main ")),
        "{text}"
    );
    // Now the file changes the gateway's address itself: that is said.
    write_config(
        dir.path(),
        "[limits.sonnet]\nrpm = 6\n[gateway]\nlisten = \"127.0.0.1:9\"\n",
    );
    daemon.signal(libc::SIGHUP);
    assert!(
        wait_until(Duration::from_secs(5), || async {
            pacer_tests::read_logs(&logs).contains("[gateway] listen changed in")
        })
        .await
    );
}
