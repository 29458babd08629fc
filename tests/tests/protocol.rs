//! The daemon's defences at the wire level: a raw socket speaking (or not speaking) the protocol.
#![cfg(unix)]

use std::time::Duration;

use pacer_client::AcquireRequest;
use pacer_protocol::message::{ErrorKind, Hello, Request, RequestFrame, Response, ResponseFrame};
use pacer_protocol::{MAX_FRAME_LEN, PROTOCOL_VERSION, codec};
use pacer_tests::TestDaemon;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::UnixStream;

/// Reads everything the daemon sends until it closes the connection.
async fn read_to_close(stream: &mut UnixStream) -> Vec<ResponseFrame> {
    let mut bytes = Vec::new();
    tokio::time::timeout(Duration::from_secs(5), stream.read_to_end(&mut bytes))
        .await
        .expect("the daemon closes the connection")
        .expect("read");
    let mut frames = Vec::new();
    let mut at = 0;
    while let Some((frame, used)) = codec::decode::<ResponseFrame>(&bytes[at..]).unwrap() {
        frames.push(frame);
        at += used;
    }
    frames
}

fn hello(version: u32) -> Vec<u8> {
    codec::encode_to_vec(&RequestFrame {
        id: 1,
        request: Request::Hello(Hello {
            protocol_version: version,
            client_name: "raw-test".into(),
            pid: std::process::id(),
        }),
    })
    .unwrap()
}

fn error_kind(frames: &[ResponseFrame]) -> (ErrorKind, String) {
    match frames.last().map(|f| &f.response) {
        Some(Response::Error(e)) => (e.kind, e.message.clone()),
        other => panic!("expected an error, got {other:?}"),
    }
}

/// Checks that a well-behaved client is still served.
async fn still_serves(daemon: &TestDaemon, client: &pacer_client::Client) {
    let permit = client
        .acquire(AcquireRequest::new("sk", "claude-opus-4-1"))
        .await
        .expect("the daemon still serves other clients");
    permit.release().await.unwrap();
    let newcomer = daemon.client_named("newcomer").await;
    newcomer.status().await.expect("and new ones");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_gets_an_error_and_a_closed_connection() {
    let daemon = TestDaemon::start("").await;
    let bystander = daemon.client().await;
    let mut raw = UnixStream::connect(daemon.socket()).await.unwrap();
    raw.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let frames = read_to_close(&mut raw).await;
    let (kind, message) = error_kind(&frames);
    assert_eq!(kind, ErrorKind::MalformedFrame);
    assert!(message.contains("exceeds"), "{message}");
    still_serves(&daemon, &bystander).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_oversized_frame_is_refused_from_its_header() {
    let daemon = TestDaemon::start("").await;
    let bystander = daemon.client().await;
    let mut raw = UnixStream::connect(daemon.socket()).await.unwrap();
    raw.write_all(&hello(PROTOCOL_VERSION)).await.unwrap();
    // Announce 2 MiB; send only the header. The daemon must not wait for (or buffer) the rest.
    raw.write_all(&((2 * MAX_FRAME_LEN) as u32).to_be_bytes())
        .await
        .unwrap();
    let frames = read_to_close(&mut raw).await;
    assert!(matches!(frames[0].response, Response::Welcome(_)));
    let (kind, message) = error_kind(&frames);
    assert_eq!(kind, ErrorKind::MalformedFrame);
    assert!(
        message.contains(&(2 * MAX_FRAME_LEN).to_string()),
        "{message}"
    );
    still_serves(&daemon, &bystander).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_well_framed_but_meaningless_payload_is_refused() {
    let daemon = TestDaemon::start("").await;
    let bystander = daemon.client().await;
    let mut raw = UnixStream::connect(daemon.socket()).await.unwrap();
    raw.write_all(&hello(PROTOCOL_VERSION)).await.unwrap();
    let mut frame = 6u32.to_be_bytes().to_vec();
    frame.extend_from_slice(&[0x02, 0x7f, 0xff, 0xff, 0xff, 0xff]);
    raw.write_all(&frame).await.unwrap();
    let frames = read_to_close(&mut raw).await;
    let (kind, _) = error_kind(&frames);
    assert_eq!(kind, ErrorKind::MalformedFrame);
    still_serves(&daemon, &bystander).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_version_mismatch_names_both_versions() {
    let daemon = TestDaemon::start("").await;
    let mut raw = UnixStream::connect(daemon.socket()).await.unwrap();
    raw.write_all(&hello(99)).await.unwrap();
    let frames = read_to_close(&mut raw).await;
    let (kind, message) = error_kind(&frames);
    assert_eq!(kind, ErrorKind::VersionMismatch);
    assert!(message.contains("version 99"), "{message}");
    assert!(
        message.contains(&format!("version {PROTOCOL_VERSION}")),
        "{message}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_before_hello_are_refused() {
    let daemon = TestDaemon::start("").await;
    let mut raw = UnixStream::connect(daemon.socket()).await.unwrap();
    let status = codec::encode_to_vec(&RequestFrame {
        id: 5,
        request: Request::Status,
    })
    .unwrap();
    raw.write_all(&status).await.unwrap();
    let frames = read_to_close(&mut raw).await;
    assert_eq!(frames[0].id, 5);
    assert_eq!(error_kind(&frames).0, ErrorKind::HelloRequired);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_committed_hello_of_every_version_is_answered_welcome_or_named_mismatch() {
    let daemon = TestDaemon::start("").await;
    let golden = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../protocol/tests/golden");
    let mut seen = 0;
    for entry in std::fs::read_dir(&golden).unwrap() {
        let dir = entry.unwrap().path();
        let Some(version) = dir
            .file_name()
            .and_then(|n| n.to_str())
            .and_then(|n| n.strip_prefix('v'))
            .and_then(|v| v.parse::<u32>().ok())
        else {
            continue;
        };
        let bytes = std::fs::read(dir.join("hello.bin")).unwrap();
        let mut stream = UnixStream::connect(daemon.socket()).await.unwrap();
        stream.write_all(&bytes).await.unwrap();
        let mut buf = vec![0u8; 4096];
        let n = tokio::time::timeout(Duration::from_secs(5), stream.read(&mut buf))
            .await
            .unwrap()
            .unwrap();
        let (frame, _) = codec::decode::<ResponseFrame>(&buf[..n]).unwrap().unwrap();
        match frame.response {
            Response::Welcome(welcome) => {
                assert_eq!(version, PROTOCOL_VERSION);
                assert_eq!(welcome.protocol_version, PROTOCOL_VERSION);
            }
            Response::Error(e) => {
                assert_ne!(version, PROTOCOL_VERSION);
                assert_eq!(e.kind, ErrorKind::VersionMismatch);
                assert!(
                    e.message.contains(&version.to_string())
                        && e.message.contains(&PROTOCOL_VERSION.to_string()),
                    "{}",
                    e.message
                );
            }
            other => panic!("v{version}: {other:?}"),
        }
        seen += 1;
    }
    assert!(seen >= 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_that_make_their_own_calls_estimate_and_calibrate_as_the_gateway_does() {
    let daemon = TestDaemon::start("").await;
    let client = daemon.client_named("script").await;
    // Nothing learned yet: a token for every four bytes.
    assert_eq!(client.estimate_input(4000).await.unwrap(), 1000);
    // A connection teaches only for a client id it has acquired with.
    let refused = client.calibrate(4000, 2000).await.unwrap_err();
    assert!(
        matches!(
            &refused,
            pacer_client::Error::Daemon { kind, .. } if *kind == ErrorKind::PermissionDenied
        ),
        "{refused}"
    );
    let permit = client
        .acquire(AcquireRequest::new("k", "claude-sonnet-4-5"))
        .await
        .unwrap();
    permit.release().await.unwrap();
    // Another connection naming itself the same cannot teach for it.
    let impostor = daemon.client_named("script").await;
    assert!(impostor.calibrate(4000, 16_000).await.is_err());
    // Each call's counted input teaches the client's ratio: 2000 tokens in 4000 bytes.
    for _ in 0..20 {
        client.calibrate(4000, 2000).await.unwrap();
    }
    assert_eq!(client.estimate_input(4000).await.unwrap(), 2000);
    // A count no body of that size could have is held to the bound (4 tokens a byte).
    for _ in 0..40 {
        client.calibrate(4000, u64::MAX).await.unwrap();
    }
    assert_eq!(client.estimate_input(1000).await.unwrap(), 4000);
    // Another client with no history of its own uses the ratio of all clients.
    let other = daemon.client_named("other").await;
    assert!(other.estimate_input(1000).await.unwrap() > 250);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_estimate_without_a_daemon_fails_open_to_a_token_for_four_bytes() {
    let dir = tempfile::tempdir().unwrap();
    let client = pacer_client::Client::builder()
        .endpoint(dir.path().join("nobody.sock"))
        .reconnect_window(Duration::from_millis(50))
        .connect()
        .await
        .unwrap();
    assert_eq!(client.estimate_input(4001).await.unwrap(), 1001);
    client.calibrate(4001, 10).await.unwrap();
}
