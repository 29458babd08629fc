//! Sessions starting together: the pace learned from bare 429s, in the broker's acquire path.

use super::*;
use pacer_protocol::message::Event;

fn bare() -> Settlement {
    Settlement::RateLimited {
        retry_after: None,
        message: Some("Rate limited".into()),
        rejection: None,
    }
}

fn harness() -> Harness {
    let mut h = Harness::with_limits("sonnet", rpm(600));
    // A session already at work.
    let at_work = h.acquire_from(100, Some("at-work"), |_| {});
    h.success(h.lease(at_work).unwrap(), 10, 10);
    h
}

/// Ten new sessions' first calls, at once: the first `through` get through, the rest meet the
/// wall. Returns the tickets of those that met it.
fn burst(h: &mut Harness, through: usize) -> Vec<Ticket> {
    let tickets: Vec<Ticket> = (0..10)
        .map(|i| h.acquire_from(i, Some(&format!("new-{i}")), |_| {}))
        .collect();
    for t in &tickets {
        assert!(h.lease(*t).is_some(), "unhindered before any wall");
    }
    for (i, t) in tickets.iter().enumerate() {
        if i < through {
            h.success(h.lease(*t).unwrap(), 10, 10);
        } else {
            h.report(h.lease(*t).unwrap(), bare());
        }
    }
    tickets[through..].to_vec()
}

#[test]
fn with_no_wall_sessions_started_together_all_start_at_once() {
    let mut h = harness();
    burst(&mut h, 10);
    assert!(h.broker.starts().is_empty(), "no pace");
}

#[test]
fn after_a_wall_new_sessions_start_one_at_a_time_and_the_pace_is_learned_and_unlearned() {
    let mut h = harness();
    let walled = burst(&mut h, 4);
    // Half of the five that got through in the last minute (the four, and the session at
    // work): two and a half a minute, for the machine and the account.
    let paces = h.broker.starts();
    assert_eq!(paces.len(), 2);
    assert_eq!(paces[0].account, None);
    assert_eq!(paces[0].per_minute, 2.5);
    assert!(h.events.iter().any(|e| matches!(
        e,
        Event::StartPace {
            account: None,
            per_minute: Some(_)
        }
    )));
    // The six walled sessions come back (the gateway held them); they wait their turn.
    let again: Vec<Ticket> = (4..10)
        .map(|i| h.acquire_from(i, Some(&format!("new-{i}")), |_| {}))
        .collect();
    assert_eq!(walled.len(), again.len());
    assert!(again.iter().all(|t| h.lease(*t).is_none()));
    assert_eq!(h.broker.starts()[0].waiting, 6);
    // Calls of the session at work, and calls without a session, are never held.
    let at_work = h.acquire_from(100, Some("at-work"), |_| {});
    let anonymous = h.acquire(200, |_| {});
    assert!(h.lease(at_work).is_some() && h.lease(anonymous).is_some());
    // One starts every 24 s, then faster as each gets through; never two at once.
    let mut started = Vec::new();
    while started.len() < again.len() {
        let at = h.elapsed();
        h.run_until(at + secs(1.0));
        let granted: Vec<Ticket> = again
            .iter()
            .copied()
            .filter(|t| h.granted_at(*t).is_some_and(|g| g > at))
            .collect();
        assert!(granted.len() <= 1, "one at a time: {granted:?}");
        if let Some(&t) = granted.first() {
            started.push(h.granted_at(t).unwrap());
            h.success(h.lease(t).unwrap(), 10, 10);
        }
        assert!(h.elapsed() < secs(600.0), "all started: {started:?}");
    }
    assert!(
        started[0] >= secs(24.0),
        "a whole interval after the wall: {started:?}"
    );
    let gaps: Vec<f64> = started
        .windows(2)
        .map(|w| (w[1] - w[0]).as_secs_f64())
        .collect();
    assert!(
        gaps.windows(2).all(|g| g[1] <= g[0] + 1e-9),
        "the pace quickens as sessions get through: {gaps:?}"
    );
    assert!(h.broker.starts()[0].per_minute > 2.5);
    // A quiet while later, new sessions start at once again.
    h.run_until(h.elapsed() + secs(301.0));
    assert!(h.broker.starts().is_empty());
    assert!(h.events.iter().any(|e| matches!(
        e,
        Event::StartPace {
            account: None,
            per_minute: None
        }
    )));
    let fresh = h.acquire_from(300, Some("fresh"), |_| {});
    assert!(h.lease(fresh).is_some());
}

#[test]
fn a_session_that_cannot_wait_its_turn_is_told_why_and_how_long() {
    let mut h = harness();
    burst(&mut h, 4);
    let hurried = h.acquire_from(50, Some("hurried"), |a| a.deadline = Some(secs(5.0)));
    h.run_until(h.elapsed() + secs(6.0));
    match h.answer(hurried) {
        Some((_, _, Response::TimedOut(timed_out))) => {
            assert!(
                timed_out.reason.contains("one at a time") && timed_out.reason.contains("bare 429"),
                "{timed_out:?}"
            );
            // Its turn: 24 s after the wall, at two and a half a minute.
            assert_eq!(timed_out.retry_after, secs(19.0), "{timed_out:?}");
        }
        other => panic!("{other:?}"),
    }
    // Its connection closing takes a waiting session out of the line.
    let leaving = h.acquire_from(51, Some("leaving"), |_| {});
    assert_eq!(h.broker.starts()[0].waiting, 1);
    let out = h.broker.disconnect(h.now, ConnId(51));
    h.collect(out);
    assert!(h.answer(leaving).is_none());
    assert_eq!(h.broker.starts()[0].waiting, 0);
}

#[test]
fn a_session_let_start_meeting_the_wall_again_cuts_the_pace() {
    let mut h = harness();
    burst(&mut h, 4);
    let retry = h.acquire_from(4, Some("new-4"), |_| {});
    h.run_until(h.elapsed() + secs(25.0));
    let lease = h.lease(retry).expect("its turn came");
    h.report(lease, bare());
    assert_eq!(h.broker.starts()[0].per_minute, 1.25, "halved");
}

#[test]
fn a_session_waiting_to_start_stays_out_of_the_queue_when_its_key_joins_its_account() {
    let mut h = harness();
    burst(&mut h, 4);
    let org = || {
        let pairs = [("anthropic-organization-id", "org-starts")];
        RateLimitHeaders::parse(pairs, SystemTime::UNIX_EPOCH)
    };
    let answer = |h: &mut Harness, ticket: Ticket| {
        let usage = Usage::default();
        h.report_with(
            h.lease(ticket).unwrap(),
            Settlement::Success { usage },
            org(),
        );
    };
    // The first key belongs to an account, whose budget it joins.
    let first = h.acquire_from(100, Some("at-work"), |_| {});
    answer(&mut h, first);
    // A session new to pacer, on a second key of the account, waits its turn to start.
    let waiting = h.acquire_from(200, Some("new-on-k2"), |r| r.key = key("k2"));
    assert!(h.lease(waiting).is_none(), "it waits its turn");
    // The session at work calls with the second key: its answer ties the key to the account,
    // and the key's budget (with the waiting session) merges into the account's.
    let linking = h.acquire_from(101, Some("at-work"), |r| r.key = key("k2"));
    answer(&mut h, linking);
    assert!(h.lease(waiting).is_none(), "it still waits its turn");
    // When its turn comes, it is granted once — not also from the account's queue.
    h.run_until(secs(120.0));
    let granted = h
        .answers
        .iter()
        .filter(|(_, t, r)| *t == waiting && matches!(r, Response::Granted(_)))
        .count();
    assert_eq!(granted, 1, "{:?}", h.answer(waiting));
    assert_eq!(h.broker.counts().0, 0, "nobody is left waiting");
    let lease = h.lease(waiting).unwrap();
    h.success(lease, 10, 10);
    assert_eq!(h.broker.counts(), (0, 0));
}
