//! What a hostile or broken peer gets, against real pacerd: peers that never say hello, send
//! headers or bodies a byte at a time, pipeline requests without reading the answers, open
//! more connections than there are file descriptors, send garbage in a loop, or try to climb
//! out of the upstream's path; and a gateway asked to listen beyond loopback.
#![cfg(unix)]

use std::io::{Read, Write};
use std::os::unix::net::UnixStream as StdUnixStream;
use std::os::unix::process::CommandExt;
use std::process::Command;
use std::time::{Duration, Instant};

use pacer_protocol::message::{ErrorKind, Hello, Request, RequestFrame, Response, ResponseFrame};
use pacer_protocol::{PROTOCOL_VERSION, codec};
use pacer_tests::mock::{MockConfig, MockUpstream};
use pacer_tests::{Pacerd, TestDaemon, binary, read_logs};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpStream, UnixStream};

fn hello_frame() -> Vec<u8> {
    codec::encode_to_vec(&RequestFrame {
        id: 1,
        request: Request::Hello(Hello {
            protocol_version: PROTOCOL_VERSION,
            client_name: "hostile-test".into(),
            pid: std::process::id(),
        }),
    })
    .unwrap()
}

/// Reads one response frame.
fn read_frame(stream: &mut StdUnixStream) -> Response {
    let mut bytes = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        if let Some((frame, _)) = codec::decode::<ResponseFrame>(&bytes).unwrap() {
            return frame.response;
        }
        let n = stream.read(&mut chunk).expect("a response");
        assert!(n > 0, "the daemon closed the connection");
        bytes.extend_from_slice(&chunk[..n]);
    }
}

/// Reads until the peer closes; `None` if it has not within `limit`.
async fn closed_within(
    stream: &mut (impl AsyncReadExt + Unpin),
    limit: Duration,
) -> Option<Vec<u8>> {
    let mut bytes = Vec::new();
    match tokio::time::timeout(limit, stream.read_to_end(&mut bytes)).await {
        Ok(_) => Some(bytes),
        Err(_) => None,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_that_never_says_hello_is_closed() {
    let daemon = TestDaemon::start("").await;
    let mut silent = UnixStream::connect(daemon.socket()).await.unwrap();
    // The limit is 10 s; a generous bound so that a loaded machine does not fail the test.
    let closed = closed_within(&mut silent, Duration::from_secs(60)).await;
    assert!(closed.is_some(), "the silent connection is still open");
    daemon
        .client()
        .await
        .status()
        .await
        .expect("others are served");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_headers_and_stalled_bodies_are_cut_off() {
    let mock = MockUpstream::start(MockConfig::default()).await;
    let upstream = mock.url().parse().unwrap();
    let daemon = TestDaemon::start_with("", |c| c.gateway.upstream = upstream).await;
    let addr = daemon
        .gateway_url()
        .await
        .trim_start_matches("http://")
        .to_owned();

    // Slowloris: headers a byte every second, never finished.
    let slow_headers = {
        let addr = addr.clone();
        tokio::spawn(async move {
            let mut stream = TcpStream::connect(&addr).await.unwrap();
            let started = Instant::now();
            for byte in b"POST /v1/messages HTTP/1.1\r\nHost: x\r\nX-Slow: "
                .iter()
                .cycle()
            {
                if stream.write_all(&[*byte]).await.is_err() {
                    return Some(started.elapsed());
                }
                tokio::time::sleep(Duration::from_secs(1)).await;
                if started.elapsed() > Duration::from_secs(120) {
                    return None;
                }
            }
            None
        })
    };
    // A body announced but never sent in full.
    let mut stalled = TcpStream::connect(&addr).await.unwrap();
    stalled
        .write_all(
            b"POST /v1/messages HTTP/1.1\r\nHost: x\r\nx-api-key: sk\r\n\
              content-type: application/json\r\ncontent-length: 100\r\n\r\n{\"model\":",
        )
        .await
        .unwrap();
    let answer = closed_within(&mut stalled, Duration::from_secs(120))
        .await
        .expect("the stalled request gets an answer");
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 400"), "{answer}");
    assert!(answer.contains("stalled"), "{answer}");

    let cut_after = slow_headers.await.unwrap();
    assert!(cut_after.is_some(), "the slow client was never cut off");
    assert_eq!(mock.stats().requests, 0, "nothing half-sent went upstream");
}

/// `pacerd` allowed only `fds` open files (soft and hard), so that its caps are small.
fn pacerd_with_fds(dir: &std::path::Path, fds: u64) -> Pacerd {
    let socket = dir.join("pacer.sock");
    let mut command = Pacerd::command(dir);
    command
        .args(["--gateway", "127.0.0.1:0", "--socket"])
        .arg(&socket);
    // SAFETY: setrlimit is async-signal-safe; nothing else runs between fork and exec.
    unsafe {
        command.pre_exec(move || {
            let limit = libc::rlimit {
                rlim_cur: fds,
                rlim_max: fds,
            };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &limit) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    Pacerd::spawn(command, &socket)
}

#[test]
fn each_listener_refuses_past_its_cap_and_the_other_still_serves() {
    // 300 descriptors: 256 are kept back, the socket takes 17 connections, the gateway 8.
    let dir = tempfile::tempdir().unwrap();
    let daemon = pacerd_with_fds(dir.path(), 300);
    let gateway = daemon.gateway_url().unwrap();
    let addr = gateway.trim_start_matches("http://").to_owned();

    // Idle connections fill the gateway's share; the next one gets a 503 saying why.
    // The one accept loop takes connections in the order they came: by the time it takes the
    // ninth, the eight before it are open and counted (no pause needed, none would help).
    let idle: Vec<std::net::TcpStream> = (0..8)
        .map(|_| std::net::TcpStream::connect(&addr).unwrap())
        .collect();
    let mut extra = std::net::TcpStream::connect(&addr).unwrap();
    extra
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut answer = String::new();
    let _ = extra.read_to_string(&mut answer);
    assert!(answer.starts_with("HTTP/1.1 503"), "{answer}");
    assert!(answer.contains("connections are open already"), "{answer}");
    // The socket has room of its own.
    assert!(daemon.status()["budgets"].is_array());

    // Greeted connections fill the socket's share; the next client is told the daemon is busy.
    // (A connection of an earlier command may still be closing: one refused here is retried.)
    let mut held: Vec<StdUnixStream> = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(20);
    while held.len() < 17 {
        assert!(
            Instant::now() < deadline,
            "only {} connections taken",
            held.len()
        );
        let mut stream = StdUnixStream::connect(daemon.socket()).unwrap();
        stream.write_all(&hello_frame()).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        match read_frame(&mut stream) {
            Response::Welcome(_) => held.push(stream),
            Response::Error(e) if e.kind == ErrorKind::Busy => {
                std::thread::sleep(Duration::from_millis(50))
            }
            other => panic!("unexpected answer {other:?}"),
        }
    }
    let out = daemon.pacer(&["status"], "k");
    assert!(!out.status.success());
    let message = String::from_utf8_lossy(&out.stderr);
    assert!(message.contains("as many as it takes"), "{message}");
    // One leaves: there is room again.
    drop(held);
    drop(idle);
    let deadline = Instant::now() + Duration::from_secs(10);
    while !daemon.pacer(&["status"], "k").status.success() {
        assert!(
            Instant::now() < deadline,
            "no room after the connections closed"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn a_client_that_pipelines_requests_without_reading_does_not_grow_the_daemon() {
    let dir = tempfile::tempdir().unwrap();
    let daemon = Pacerd::start(dir.path(), &["--no-gateway"]);
    // Some budgets, so that each status answer has some size.
    for i in 0..20 {
        assert!(
            daemon
                .pacer(&["acquire", "--model", &format!("model-{i}")], "k")
                .status
                .success()
        );
    }
    let before = daemon.rss_kib().unwrap();
    let mut stream = StdUnixStream::connect(daemon.socket()).unwrap();
    stream.write_all(&hello_frame()).unwrap();
    stream
        .set_write_timeout(Some(Duration::from_secs(3)))
        .unwrap();
    let status = codec::encode_to_vec(&RequestFrame {
        id: 2,
        request: Request::Status,
    })
    .unwrap();
    let batch: Vec<u8> = status
        .iter()
        .copied()
        .cycle()
        .take(status.len() * 1000)
        .collect();
    let started = Instant::now();
    let mut sent = 0u64;
    // Write until the daemon stops reading (the write times out) or 20 s pass.
    while started.elapsed() < Duration::from_secs(20) {
        if stream.write_all(&batch).is_err() {
            break;
        }
        sent += 1000;
    }
    let after = daemon.rss_kib().unwrap();
    assert!(
        after < before + 64 * 1024,
        "pacerd grew from {before} KiB to {after} KiB after {sent} unread status requests"
    );
    // Everyone else is served meanwhile.
    assert!(daemon.status()["budgets"].is_array());
}

#[test]
fn repeated_warnings_are_logged_once_with_a_count() {
    let dir = tempfile::tempdir().unwrap();
    let daemon = Pacerd::start(dir.path(), &["--no-gateway"]);
    for _ in 0..50 {
        let mut stream = StdUnixStream::connect(daemon.socket()).unwrap();
        let _ = stream.write_all(b"GET / HTTP/1.1\r\n\r\n");
        let _ = stream.read_to_end(&mut Vec::new());
    }
    // Every one was refused (the daemon counts them) and the log has what it wrote of them.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let logs = loop {
        let refused = daemon.status()["daemon"]["refused_connections"].as_u64();
        let logs = read_logs(&dir.path().join("pacer/logs"));
        if refused >= Some(50) && logs.contains("refused a client") {
            break logs;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "refused {refused:?}; log:\n{logs}"
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    let lines = logs.matches("refused a client").count();
    assert!((1..=2).contains(&lines), "{lines} lines:\n{logs}");
    assert!(daemon.status()["budgets"].is_array());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn paths_that_climb_out_of_the_upstream_prefix_are_refused() {
    let mock = MockUpstream::start(MockConfig {
        base_path: "/anthropic".into(),
        ..MockConfig::default()
    })
    .await;
    let upstream = mock.url().parse().unwrap();
    let daemon = TestDaemon::start_with("", |c| c.gateway.upstream = upstream).await;
    let base = daemon.gateway_url().await;
    // reqwest would normalise the dots away: write the request line by hand.
    let addr = base.trim_start_matches("http://").to_owned();
    for path in [
        "/../admin",
        "/v1/%2e%2e/%2e%2e/admin",
        "/s/c~batch/.%2E/v1/models",
        "/v1/..%2fadmin",
    ] {
        let mut stream = TcpStream::connect(&addr).await.unwrap();
        let request = format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
        stream.write_all(request.as_bytes()).await.unwrap();
        let answer = closed_within(&mut stream, Duration::from_secs(10))
            .await
            .unwrap();
        let answer = String::from_utf8_lossy(&answer);
        assert!(answer.starts_with("HTTP/1.1 400"), "{path}: {answer}");
        assert!(answer.contains("is not allowed"), "{path}: {answer}");
    }
    assert_eq!(mock.stats().requests, 0, "nothing reached the upstream");
    // Ordinary paths still pass.
    let ok = reqwest::Client::new()
        .post(format!("{base}/v1/messages"))
        .header("x-api-key", "sk")
        .json(&serde_json::json!({"model": "claude-sonnet-4-5", "max_tokens": 5, "messages": []}))
        .send()
        .await
        .unwrap();
    assert_eq!(ok.status(), 200);
}

#[test]
fn the_gateway_listens_beyond_loopback_only_when_told_to() {
    let dir = tempfile::tempdir().unwrap();
    let out = Pacerd::command(dir.path())
        .args(["--gateway", "0.0.0.0:0", "--socket"])
        .arg(dir.path().join("s.sock"))
        .output()
        .unwrap();
    assert!(!out.status.success(), "pacerd served an open gateway");
    let message = String::from_utf8_lossy(&out.stderr);
    assert!(message.contains("not a loopback address"), "{message}");
    assert!(message.contains("allow_non_loopback"), "{message}");

    let daemon = Pacerd::start_configured(
        "[gateway]\nallow_non_loopback = true\n",
        &["--gateway", "0.0.0.0:0"],
    );
    assert!(daemon.gateway_url().unwrap().contains("0.0.0.0"));
}

#[test]
fn pacerd_started_by_pacer_run_does_not_hold_the_api_key() {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("pacer.sock");
    let secret = "sk-ant-api03-never-in-pacerd-environ";
    let out = Command::new(binary("pacer"))
        .args(["run", "--", "true"])
        .env("PACER_SOCKET", &socket)
        .env("PACER_GATEWAY", "127.0.0.1:0")
        .env("XDG_STATE_HOME", dir.path())
        .env("XDG_CONFIG_HOME", dir.path())
        .env("ANTHROPIC_API_KEY", secret)
        .env("ANTHROPIC_AUTH_TOKEN", secret)
        .env("CLAUDE_CODE_OAUTH_TOKEN", secret)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    let pid: u32 = stderr
        .split("(pid ")
        .nth(1)
        .and_then(|rest| rest.split(')').next())
        .and_then(|pid| pid.parse().ok())
        .unwrap_or_else(|| panic!("no pid in {stderr}"));
    let environ = std::fs::read(format!("/proc/{pid}/environ")).unwrap();
    // SAFETY: signalling the daemon this test started.
    unsafe { libc::kill(pid as i32, libc::SIGTERM) };
    let environ = String::from_utf8_lossy(&environ);
    assert!(
        !environ.contains(secret),
        "the key is in pacerd's environment"
    );
    assert!(environ.contains("PACER_SOCKET="), "{environ}");
}
