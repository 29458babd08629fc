//! Each decision of the gated call, on the machine alone.

use std::time::{Duration, Instant, SystemTime};

use pacer_protocol::message::{Outcome, Usage};

use super::*;
use crate::answer::MAX_KEPT_BODY;

const WALL: SystemTime = SystemTime::UNIX_EPOCH;

fn call(now: Instant) -> GatedCall {
    GatedCall::new(
        CallRequest {
            model: "claude-sonnet-4-5".into(),
            body_bytes: Some(1000),
            teaches: true,
            max_hold: Duration::from_secs(240),
        },
        now,
    )
}

fn headers(pairs: &[(&str, &str)]) -> Headers {
    pairs
        .iter()
        .map(|(n, v)| (n.to_string(), v.to_string()))
        .collect()
}

fn error_body(kind: &str, message: &str) -> Vec<u8> {
    format!(r#"{{"type":"error","error":{{"type":"{kind}","message":"{message}"}}}}"#).into_bytes()
}

/// Polls until the machine waits for the driver, collecting what it asked for.
fn drain(call: &mut GatedCall, now: Instant) -> Vec<Action> {
    let mut actions = Vec::new();
    loop {
        let action = call.poll(now);
        let waits = matches!(
            action,
            Action::Acquire { .. }
                | Action::Send
                | Action::ReadBody { .. }
                | Action::Stream
                | Action::Done
        );
        actions.push(action);
        if waits {
            return actions;
        }
    }
}

/// Acquire, granted, send: the machine is waiting for the answer's head.
fn sent(call: &mut GatedCall, now: Instant) {
    assert!(matches!(call.poll(now), Action::Acquire { .. }));
    call.granted();
    assert_eq!(call.poll(now), Action::Send);
}

/// The answer among `actions`, which it must end with (then `Done`).
fn answer_of(actions: &[Action]) -> &Answer {
    match actions {
        [.., Action::Answer(answer), Action::Done] => answer,
        other => panic!("no answer: {other:?}"),
    }
}

#[test]
fn a_body_with_content_by_reference_reports_but_does_not_calibrate() {
    let now = Instant::now();
    let mut c = GatedCall::new(
        CallRequest {
            model: "claude-sonnet-4-5".into(),
            body_bytes: Some(186),
            teaches: false,
            max_hold: Duration::from_secs(240),
        },
        now,
    );
    c.poll(now);
    c.granted();
    c.poll(now);
    c.answered(200, headers(&[("content-type", "application/json")]), WALL);
    c.poll(now);
    let usage = Usage {
        input_tokens: 744,
        ..Usage::default()
    };
    c.ended(
        Outcome::Success {
            usage,
            headers: Vec::new(),
        },
        true,
    );
    let actions = drain(&mut c, now);
    assert!(
        !actions
            .iter()
            .any(|a| matches!(a, Action::Calibrate { .. })),
        "{actions:?}"
    );
    assert!(matches!(
        actions[0],
        Action::Report(Outcome::Success { .. })
    ));
}

#[test]
fn a_success_streams_then_reports_its_usage_bounded_and_calibrates() {
    let now = Instant::now();
    let mut c = call(now);
    assert_eq!(
        c.poll(now),
        Action::Acquire {
            deadline: Duration::from_secs(240)
        }
    );
    c.granted();
    assert_eq!(c.poll(now), Action::Send);
    c.answered(200, headers(&[("content-type", "text/event-stream")]), WALL);
    assert_eq!(c.poll(now), Action::Stream);
    let usage = Usage {
        input_tokens: 50_000, // more than 1000 bytes can hold: held to 4096
        output_tokens: 12,
        ..Usage::default()
    };
    c.ended(
        Outcome::Success {
            usage,
            headers: Vec::new(),
        },
        true,
    );
    let bounded = Usage {
        input_tokens: 4096,
        ..usage
    };
    assert_eq!(
        drain(&mut c, now),
        [
            Action::Calibrate {
                body_bytes: 1000,
                counted_input: 4096
            },
            Action::Report(Outcome::Success {
                usage: bounded,
                headers: Vec::new()
            }),
            Action::Done,
        ]
    );
}

#[test]
fn an_answer_cut_short_reports_what_was_read_but_teaches_nothing() {
    let now = Instant::now();
    let mut c = call(now);
    sent(&mut c, now);
    c.answered(200, Vec::new(), WALL);
    assert_eq!(c.poll(now), Action::Stream);
    c.ended(Outcome::Unknown, false);
    assert_eq!(
        drain(&mut c, now),
        [Action::Report(Outcome::Unknown), Action::Done]
    );
}

#[test]
fn a_rate_limit_is_reported_and_the_request_goes_round_within_the_hold() {
    let start = Instant::now();
    let mut c = call(start);
    sent(&mut c, start);
    let h = headers(&[("retry-after", "20")]);
    c.answered(429, h.clone(), WALL);
    assert_eq!(
        c.poll(start),
        Action::ReadBody {
            limit: MAX_KEPT_BODY
        }
    );
    let body = error_body("rate_limit_error", "50 requests per minute");
    c.read(body.clone(), false, start, WALL, 0.5);
    let later = start + Duration::from_secs(40);
    assert_eq!(
        drain(&mut c, later),
        [
            Action::Report(Outcome::RateLimited {
                retry_after: None,
                headers: h.clone(),
                message: Some("50 requests per minute".into()),
            }),
            Action::Acquire {
                deadline: Duration::from_secs(200)
            },
        ]
    );
    assert_eq!(c.held().map(|a| &a.body), Some(&body));
    // The hold runs out: the API's own 429 goes back, telling the real wait.
    c.refused(
        Refusal::TimedOut {
            retry_after: Duration::from_millis(12_300),
            reason: Some("the budget is paused".into()),
        },
        start + Duration::from_secs(240),
    );
    let actions = drain(&mut c, start + Duration::from_secs(240));
    let answer = answer_of(&actions);
    assert_eq!(answer.status, 429);
    assert_eq!(answer.body, body);
    assert_eq!(answer.header("retry-after"), Some("13"));
    assert_eq!(answer.header("retry-after-ms"), Some("12300"));
    assert_eq!(c.poll(start), Action::Done);
}

#[test]
fn with_nothing_held_a_timeout_is_pacers_own_429_saying_why() {
    let now = Instant::now();
    let mut c = call(now);
    assert!(matches!(c.poll(now), Action::Acquire { .. }));
    c.refused(
        Refusal::TimedOut {
            retry_after: Duration::from_secs(30),
            reason: Some("the rpm limit (requests per minute) is spent for now".into()),
        },
        now + Duration::from_secs(240),
    );
    let actions = drain(&mut c, now);
    let answer = answer_of(&actions);
    assert_eq!(answer.status, 429);
    assert_eq!(answer.header("retry-after"), Some("30"));
    let text = String::from_utf8(answer.body.clone()).unwrap();
    assert!(
        text.contains("the rpm limit") && text.contains("waited 240s") && text.contains("30s more"),
        "{text}"
    );

    let mut c = call(now);
    c.poll(now);
    c.refused(
        Refusal::WouldWait {
            wait: Duration::from_secs(300),
            holdup: "the budget is paused: paused by administrator".into(),
        },
        now,
    );
    let actions = drain(&mut c, now);
    let text = String::from_utf8(answer_of(&actions).body.clone()).unwrap();
    assert!(
        text.contains("paused by administrator") && text.contains("would exceed max_hold (240s)"),
        "{text}"
    );
}

#[test]
fn a_refusal_replays_the_apis_answer_when_there_is_one_else_says_why() {
    let now = Instant::now();
    let api = Answer {
        status: 429,
        headers: headers(&[("retry-after", "7999"), ("date", "then")]),
        body: b"spent".to_vec(),
    };
    let mut c = call(now);
    c.poll(now);
    c.refused(
        Refusal::Rejected {
            reason: "the 5h window is spent".into(),
            left: Some(Duration::from_secs(100)),
            replay: Some(api),
        },
        now,
    );
    let actions = drain(&mut c, now);
    let replay = answer_of(&actions);
    assert_eq!(replay.body, b"spent");
    assert_eq!(replay.header("retry-after"), Some("100"));
    assert_eq!(replay.header("x-should-retry"), None);

    let mut c = call(now);
    c.poll(now);
    c.refused(
        Refusal::Rejected {
            reason: "the 5h window is spent".into(),
            left: Some(Duration::from_millis(100)),
            replay: None,
        },
        now,
    );
    let actions = drain(&mut c, now);
    let own = answer_of(&actions);
    assert_eq!(own.status, 429);
    assert_eq!(own.header("retry-after"), Some("1"));
    assert!(String::from_utf8_lossy(&own.body).contains("pacer: the 5h window is spent"));

    let mut c = call(now);
    c.poll(now);
    c.refused(Refusal::Unavailable("pacerd is stopping".into()), now);
    assert_eq!(answer_of(&drain(&mut c, now)).status, 503);
}

#[test]
fn the_spend_cap_is_reported_as_such_and_passed_on_at_once() {
    let now = Instant::now();
    let mut c = call(now);
    sent(&mut c, now);
    c.answered(429, headers(&[("content-type", "application/json")]), WALL);
    c.poll(now);
    let body = br#"{"type":"error","error":{"type":"rate_limit_error","message":"You have reached your specified API usage limits.","details":{"error_code":"enforced_spend_limit_reached"}}}"#;
    c.read(body.to_vec(), false, now, WALL, 0.5);
    let actions = drain(&mut c, now);
    assert_eq!(
        actions[0],
        Action::Report(Outcome::SpendCapped {
            headers: headers(&[("content-type", "application/json")]),
            message: Some("You have reached your specified API usage limits.".into()),
        })
    );
    let answer = answer_of(&actions);
    assert_eq!(answer.body, body, "passed on unchanged");
    assert_eq!(answer.header("retry-after"), None);
}

#[test]
fn a_gzipped_spend_cap_is_recognised_too() {
    let now = Instant::now();
    let mut c = call(now);
    sent(&mut c, now);
    c.answered(429, headers(&[("content-encoding", "gzip")]), WALL);
    c.poll(now);
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    std::io::Write::write_all(&mut gz, b"\"error_code\":\"enforced_spend_limit_reached\"").unwrap();
    c.read(gz.finish().unwrap(), false, now, WALL, 0.5);
    assert!(matches!(
        c.poll(now),
        Action::Report(Outcome::SpendCapped { .. })
    ));
}

#[test]
fn overloads_go_round_three_times_then_the_529_is_passed_on_as_it_came() {
    let now = Instant::now();
    let mut c = call(now);
    for round in 1..=MAX_OVERLOAD_RETRIES + 1 {
        sent(&mut c, now);
        c.answered(529, headers(&[("retry-after", "2")]), WALL);
        assert!(matches!(c.poll(now), Action::ReadBody { .. }));
        c.read(
            error_body("overloaded_error", "Overloaded"),
            false,
            now,
            WALL,
            0.5,
        );
        assert_eq!(
            c.poll(now),
            Action::Report(Outcome::Overloaded {
                retry_after: Some(Duration::from_secs(2))
            }),
            "round {round}"
        );
        if round <= MAX_OVERLOAD_RETRIES {
            // Goes round: the next acquire waits out the class's backoff.
            continue;
        }
        match c.poll(now) {
            Action::Answer(answer) => {
                assert_eq!(answer.status, 529);
                assert_eq!(answer.header("retry-after"), Some("2"), "unchanged");
            }
            other => panic!("{other:?}"),
        }
    }
    assert_eq!(c.poll(now), Action::Done);
}

#[test]
fn other_answers_are_reported_by_their_status_and_passed_on_as_they_are() {
    let now = Instant::now();
    for (status, outcome) in [
        (400, Outcome::ClientError { status: 400 }),
        (404, Outcome::ClientError { status: 404 }),
        (500, Outcome::Failed),
        (503, Outcome::Failed),
    ] {
        let mut c = call(now);
        sent(&mut c, now);
        c.answered(status, Vec::new(), WALL);
        assert_eq!(
            drain(&mut c, now),
            [Action::Report(outcome), Action::PassOn, Action::Done],
            "{status}"
        );
    }
}

#[test]
fn a_send_that_never_connected_releases_one_that_broke_reports_unknown() {
    let now = Instant::now();
    let mut c = call(now);
    sent(&mut c, now);
    c.send_failed(false);
    assert_eq!(
        drain(&mut c, now),
        [Action::Release, Action::Fail, Action::Done]
    );
    let mut c = call(now);
    sent(&mut c, now);
    c.send_failed(true);
    assert_eq!(
        drain(&mut c, now),
        [Action::Report(Outcome::Unknown), Action::Fail, Action::Done]
    );
}

#[test]
fn a_429_too_large_to_keep_is_held_as_the_apis_shape_saying_so() {
    let now = Instant::now();
    let mut c = call(now);
    sent(&mut c, now);
    c.answered(
        429,
        headers(&[("retry-after", "1"), ("content-encoding", "gzip")]),
        WALL,
    );
    c.poll(now);
    c.read(vec![b'x'; MAX_KEPT_BODY], true, now, WALL, 0.5);
    let actions = drain(&mut c, now);
    assert!(matches!(
        actions[0],
        Action::Report(Outcome::RateLimited { .. })
    ));
    let held = c.held().expect("held");
    assert!(String::from_utf8_lossy(&held.body).contains("too large for pacer to keep"));
    assert_eq!(held.header("content-encoding"), None);
}

#[test]
fn count_tokens_calls_are_neither_bounded_nor_calibrated() {
    let now = Instant::now();
    let mut c = GatedCall::new(
        CallRequest {
            model: "count_tokens".into(),
            body_bytes: None,
            teaches: false,
            max_hold: Duration::from_secs(1),
        },
        now,
    );
    sent(&mut c, now);
    c.answered(200, Vec::new(), WALL);
    c.poll(now);
    let usage = Usage {
        input_tokens: 1_000_000,
        ..Usage::default()
    };
    c.ended(
        Outcome::Success {
            usage,
            headers: Vec::new(),
        },
        true,
    );
    assert_eq!(
        drain(&mut c, now),
        [
            Action::Report(Outcome::Success {
                usage,
                headers: Vec::new()
            }),
            Action::Done
        ]
    );
}

fn bare_headers() -> Headers {
    headers(&[
        ("x-should-retry", "true"),
        ("content-type", "application/json"),
    ])
}

/// Sends once more and gets a bare 429 back at `now`; what the machine asks next.
fn meet_bare(c: &mut GatedCall, now: Instant, random: f64) -> Vec<Action> {
    sent(c, now);
    c.answered(429, bare_headers(), WALL);
    assert!(matches!(c.poll(now), Action::ReadBody { .. }));
    c.read(
        error_body("rate_limit_error", "Rate limited"),
        false,
        now,
        WALL,
        random,
    );
    drain(c, now)
}

#[test]
fn a_bare_429_holds_this_request_alone_and_sends_it_again_on_a_growing_spread_spacing() {
    let start = Instant::now();
    let mut c = call(start);
    let actions = meet_bare(&mut c, start, 0.5);
    assert_eq!(
        actions,
        [
            Action::Report(Outcome::RateLimited {
                retry_after: None,
                headers: bare_headers(),
                message: Some("Rate limited".into()),
            }),
            Action::Wait(Duration::from_secs(20)),
            Action::Acquire {
                deadline: Duration::from_secs(240)
            },
        ]
    );
    // The next waits are longer, and spread: random 0 and 1 are ±20 %.
    let at = start + Duration::from_secs(20);
    c.granted();
    assert_eq!(c.poll(at), Action::Send);
    c.answered(429, bare_headers(), WALL);
    c.poll(at);
    c.read(b"{}".to_vec(), false, at, WALL, 1.0);
    assert_eq!(
        c.poll(at),
        Action::Report(Outcome::RateLimited {
            retry_after: None,
            headers: bare_headers(),
            message: None,
        })
    );
    assert_eq!(c.poll(at), Action::Wait(Duration::from_secs(36)));
    assert_eq!(bare_spacing(0, 0.0), Duration::from_secs(16));
    assert_eq!(bare_spacing(2, 0.5), Duration::from_millis(45_000));
    assert_eq!(bare_spacing(9, 0.5), BARE_MAX_WAIT);
    assert!(
        bare_spacing(0, 0.0) > Duration::from_secs(15),
        "not within ~15 s"
    );
}

#[test]
fn past_the_hold_the_bare_429_goes_back_unchanged() {
    let start = Instant::now();
    let mut c = call(start);
    // With 10 s of the hold left, a wait of 20 s does not fit.
    let late = start + Duration::from_secs(230);
    let actions = meet_bare(&mut c, late, 0.5);
    let answer = answer_of(&actions);
    assert_eq!(answer.status, 429);
    assert_eq!(answer.headers, bare_headers(), "nothing added");

    // Held, then no permit in time: still the API's own answer, unchanged.
    let mut c = call(start);
    meet_bare(&mut c, start, 0.5);
    c.refused(
        Refusal::TimedOut {
            retry_after: Duration::from_secs(50),
            reason: None,
        },
        start + Duration::from_secs(240),
    );
    let actions = drain(&mut c, start);
    assert_eq!(answer_of(&actions).headers, bare_headers());
}

#[test]
fn should_retry_false_is_passed_on_and_never_sent_again() {
    let now = Instant::now();
    for (status, pairs) in [
        (429, vec![("x-should-retry", "false")]),
        (429, vec![("x-should-retry", "false"), ("retry-after", "5")]),
        (529, vec![("x-should-retry", "false")]),
    ] {
        let mut c = call(now);
        sent(&mut c, now);
        c.answered(status, headers(&pairs), WALL);
        c.poll(now);
        c.read(b"{}".to_vec(), false, now, WALL, 0.5);
        let actions = drain(&mut c, now);
        assert!(matches!(actions[0], Action::Report(_)), "{actions:?}");
        assert_eq!(answer_of(&actions).status, status, "{pairs:?}");
    }
}
