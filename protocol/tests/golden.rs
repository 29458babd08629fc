//! The bytes of the handshake and of a few frames, pinned by committed fixtures
//! (`tests/golden/v<N>/*.bin`), so that a change to the wire format cannot ship by accident: it
//! fails here until it is made on purpose — with a new protocol version, whose fixtures are
//! added beside the old ones (`PACER_BLESS=1 cargo test -p pacer-protocol --test golden` writes
//! the current version's). The handshake is frozen: every earlier version's `Hello` must still
//! be read, so that a daemon can tell an old client which versions differ.

use std::path::PathBuf;
use std::time::{Duration, SystemTime};

use pacer_protocol::codec;
use pacer_protocol::message::{
    Acquire, Calibrate, ErrorKind, ErrorReply, EstimateInput, Granted, Hello, LeaseId, Outcome,
    Report, Reported, Request, RequestFrame, Response, ResponseFrame, Usage, Welcome,
};
use pacer_protocol::{KeyFingerprint, PROTOCOL_VERSION, Priority, Throttle};

fn golden_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/golden")
}

enum Frame {
    Request(RequestFrame),
    Response(Box<ResponseFrame>),
}

impl Frame {
    fn encode(&self) -> Vec<u8> {
        match self {
            Frame::Request(frame) => codec::encode_to_vec(frame),
            Frame::Response(frame) => codec::encode_to_vec(frame.as_ref()),
        }
        .expect("encodes")
    }

    fn decodes_from(&self, bytes: &[u8]) -> bool {
        match self {
            Frame::Request(frame) => {
                codec::decode::<RequestFrame>(bytes)
                    .ok()
                    .flatten()
                    .map(|f| f.0)
                    .as_ref()
                    == Some(frame)
            }
            Frame::Response(frame) => {
                codec::decode::<ResponseFrame>(bytes)
                    .ok()
                    .flatten()
                    .map(|f| f.0)
                    .as_ref()
                    == Some(frame.as_ref())
            }
        }
    }
}

/// The frames pinned for the current version.
fn frames() -> Vec<(&'static str, Frame)> {
    let request = |id, request| Frame::Request(RequestFrame { id, request });
    let response = |id, response| Frame::Response(Box::new(ResponseFrame { id, response }));
    vec![
        (
            "hello",
            request(
                1,
                Request::Hello(Hello {
                    protocol_version: PROTOCOL_VERSION,
                    client_name: "pacer".into(),
                    pid: 4242,
                }),
            ),
        ),
        (
            "welcome",
            response(
                1,
                Response::Welcome(Welcome {
                    protocol_version: PROTOCOL_VERSION,
                    daemon_version: "0.1.0".into(),
                }),
            ),
        ),
        (
            "version-mismatch",
            response(
                1,
                Response::Error(ErrorReply {
                    kind: ErrorKind::VersionMismatch,
                    message: "pacerd speaks protocol 3, this client 2".into(),
                }),
            ),
        ),
        (
            "acquire",
            request(
                2,
                Request::Acquire(Acquire {
                    key: KeyFingerprint::of("sk-ant-golden"),
                    model: "claude-sonnet-4-5".into(),
                    priority: Priority::Interactive,
                    client_id: "review/3f2a9c1d".into(),
                    input_tokens: Some(1200),
                    output_tokens: None,
                    max_tokens: Some(1024),
                    deadline: Some(Duration::from_millis(240_000)),
                    detached_ttl: None,
                    max_share_bp: Some(1000),
                }),
            ),
        ),
        (
            "granted",
            response(
                2,
                Response::Granted(Granted {
                    lease: LeaseId(7),
                    waited: Duration::from_millis(1500),
                }),
            ),
        ),
        (
            "report",
            request(
                3,
                Request::Report(Report {
                    lease: LeaseId(7),
                    outcome: Outcome::Success {
                        usage: Usage {
                            input_tokens: 25,
                            output_tokens: 40,
                            cache_creation_input_tokens: 5,
                            cache_read_input_tokens: 9000,
                        },
                        headers: vec![(
                            "anthropic-ratelimit-requests-remaining".into(),
                            "49".into(),
                        )],
                    },
                }),
            ),
        ),
        (
            "estimate",
            request(
                4,
                Request::Estimate(EstimateInput {
                    client_id: "py/1234".into(),
                    body_bytes: 2048,
                }),
            ),
        ),
        ("estimate-answer", response(4, Response::Estimate(512))),
        (
            "calibrate",
            request(
                5,
                Request::Calibrate(Calibrate {
                    client_id: "py/1234".into(),
                    body_bytes: 2048,
                    counted_input: 480,
                }),
            ),
        ),
        (
            "report-bare-429",
            request(
                6,
                Request::Report(Report {
                    lease: LeaseId(8),
                    outcome: Outcome::RateLimited {
                        retry_after: None,
                        headers: vec![("x-should-retry".into(), "true".into())],
                        message: Some("Rate limited".into()),
                    },
                }),
            ),
        ),
        (
            "reported-bare",
            response(
                6,
                Response::Reported(Reported {
                    throttle: Some(Throttle::Bare),
                    until: None,
                }),
            ),
        ),
        (
            "report-spend-cap",
            request(
                7,
                Request::Report(Report {
                    lease: LeaseId(9),
                    outcome: Outcome::SpendCapped {
                        headers: Vec::new(),
                        message: Some("You have reached your specified API usage limits.".into()),
                    },
                }),
            ),
        ),
        (
            "reported-per-minute",
            response(
                7,
                Response::Reported(Reported {
                    throttle: Some(Throttle::PerMinute),
                    until: Some(SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_030)),
                }),
            ),
        ),
    ]
}

#[test]
fn the_current_version_encodes_to_its_committed_bytes() {
    let dir = golden_dir().join(format!("v{PROTOCOL_VERSION}"));
    let bless = std::env::var_os("PACER_BLESS").is_some();
    if bless {
        std::fs::create_dir_all(&dir).unwrap();
    }
    for (name, frame) in frames() {
        let path = dir.join(format!("{name}.bin"));
        let bytes = frame.encode();
        if bless {
            std::fs::write(&path, &bytes).unwrap();
        }
        let committed = std::fs::read(&path).unwrap_or_else(|e| {
            panic!(
                "{}: {e} — a new protocol version needs its fixtures: \
                 PACER_BLESS=1 cargo test -p pacer-protocol --test golden",
                path.display()
            )
        });
        assert_eq!(
            bytes, committed,
            "{name}: the wire format changed. If on purpose, bump PROTOCOL_VERSION and bless \
             the new version's fixtures"
        );
        assert!(frame.decodes_from(&committed), "{name} decodes to itself");
    }
}

#[test]
fn every_earlier_versions_hello_is_still_read() {
    let mut versions = Vec::new();
    for entry in std::fs::read_dir(golden_dir()).unwrap() {
        let name = entry.unwrap().file_name().to_string_lossy().into_owned();
        let Some(version) = name.strip_prefix('v').and_then(|v| v.parse::<u32>().ok()) else {
            continue;
        };
        versions.push(version);
        let bytes = std::fs::read(golden_dir().join(&name).join("hello.bin")).unwrap();
        let (frame, _) = codec::decode::<RequestFrame>(&bytes)
            .expect("a Hello of any version decodes")
            .expect("whole");
        match frame.request {
            Request::Hello(hello) => assert_eq!(hello.protocol_version, version),
            other => panic!("v{version}/hello.bin holds {other:?}"),
        }
        // The answers an old client must be able to read are frozen too.
        let mismatch =
            std::fs::read(golden_dir().join(&name).join("version-mismatch.bin")).unwrap();
        let (frame, _) = codec::decode::<ResponseFrame>(&mismatch).unwrap().unwrap();
        assert!(matches!(
            frame.response,
            Response::Error(ErrorReply {
                kind: ErrorKind::VersionMismatch,
                ..
            })
        ));
    }
    assert!(versions.contains(&PROTOCOL_VERSION), "{versions:?}");
}
