//! A cap per client (`--max-share`), on the fake clock: a capped client stops at its share of
//! a window while another goes on, its calls wait out of the queue and go when the window
//! resets, and one that cannot wait is told why and until when.

use super::windows::{TOKEN, Window, config};
use super::*;

/// A call of `client` (capped at `max_share_bp`, if any) on connection `conn`.
fn ask(h: &mut Harness, conn: u64, client: &str, max_share_bp: Option<u16>) -> Ticket {
    h.acquire(conn, |r| {
        r.key = key(TOKEN);
        r.client_id = client.into();
        r.max_share_bp = max_share_bp;
    })
}

/// A 5-hour window of `limit` calls, unused, resetting in an hour.
fn five_hours(limit: u64) -> Window {
    Window {
        name: "5h",
        limit,
        used: 0,
        reset_in: 3600,
        overage: false,
    }
}

/// Answers `lease` with the window one call further on.
fn answer(h: &mut Harness, window: &mut Window, lease: LeaseId) {
    window.used += 1;
    h.now += Duration::from_millis(100);
    let usage = Usage::default();
    h.report_with(lease, Settlement::Success { usage }, window.headers());
}

/// Two workers each of a client capped at 10 % and of one that is not, calling again as soon
/// as answered, for `rounds` answers: returns each client's grants, and what is still waiting.
fn run(h: &mut Harness, window: &mut Window, rounds: usize) -> ((u64, u64), Vec<Ticket>) {
    let mut waiting: Vec<(Ticket, bool)> = Vec::new();
    let mut conn = 100;
    let mut next = |h: &mut Harness, capped: bool| {
        conn += 1;
        match capped {
            true => (ask(h, conn, "loop", Some(1000)), true),
            false => (ask(h, conn, "keyboard", None), false),
        }
    };
    for capped in [true, true, false, false] {
        waiting.push(next(h, capped));
    }
    let (mut granted, mut in_flight) = ((0, 0), std::collections::VecDeque::new());
    for _ in 0..rounds {
        waiting.retain(|&(ticket, capped)| match h.lease(ticket) {
            Some(lease) => {
                in_flight.push_back((lease, capped));
                *if capped {
                    &mut granted.0
                } else {
                    &mut granted.1
                } += 1;
                false
            }
            None => true,
        });
        let Some((lease, capped)) = in_flight.pop_front() else {
            break;
        };
        answer(h, window, lease);
        waiting.push(next(h, capped));
    }
    let waiting = waiting.into_iter().map(|(t, _)| t);
    (granted, waiting.filter(|&t| h.lease(t).is_none()).collect())
}

#[test]
fn a_capped_client_stops_at_its_share_of_the_window_and_another_goes_on() {
    let mut h = Harness::new(config(1.0, false));
    let mut window = five_hours(60);
    let ((capped, other), waiting) = run(&mut h, &mut window, 40);
    // 10 % of a 60-call window is 6 calls; the share of one call is learned as they go.
    assert!(
        (5..=8).contains(&capped),
        "the capped client made {capped} calls"
    );
    assert!(other >= 30, "the other client made only {other} calls");
    // Its calls wait out of the queue: the budget's queue is empty, the other client is served.
    assert_eq!(waiting.len(), 2, "{waiting:?}");
    let queued: u32 = h.broker.status(h.now).iter().map(|b| b.waiting).sum();
    assert_eq!(queued, 0);
    let keyboard = ask(&mut h, 9, "keyboard", None);
    assert!(h.lease(keyboard).is_some());
    // `pacer status --clients` shows the cap, what was used of it and that it holds.
    let clients = h.broker.clients(h.now);
    let looped = clients.iter().find(|c| c.id == "loop").unwrap();
    assert_eq!(looped.max_share, Some(0.1));
    assert!(looped.capped, "{looped:?}");
    let used = looped.window_use.unwrap();
    assert!((0.08..=0.14).contains(&used), "{used}");
    let keyboard = clients.iter().find(|c| c.id == "keyboard").unwrap();
    assert_eq!((keyboard.max_share, keyboard.capped), (None, false));
    // The window resets: the capped calls that waited go.
    h.run_until(secs(3601.0));
    for ticket in waiting {
        assert!(h.lease(ticket).is_some(), "{:?}", h.answer(ticket));
    }
}

#[test]
fn a_capped_call_that_cannot_wait_is_told_its_cap_and_the_reset() {
    let mut h = Harness::new(config(1.0, false));
    let mut window = five_hours(10);
    // Capped at 20 % of a 10-call window: two calls.
    for conn in 0..2 {
        let ticket = ask(&mut h, conn, "loop", Some(2000));
        let lease = h.lease(ticket).expect("under its cap");
        answer(&mut h, &mut window, lease);
    }
    let held = h.acquire(5, |r| {
        r.key = key(TOKEN);
        r.client_id = "loop".into();
        r.max_share_bp = Some(2000);
        r.deadline = Some(secs(5.0));
    });
    assert!(h.lease(held).is_none());
    h.run_until(secs(10.0));
    let Some((told_at, _, Response::TimedOut(timed_out))) = h.answer(held).cloned() else {
        panic!("{:?}", h.answer(held))
    };
    assert!(
        timed_out
            .reason
            .starts_with("this client used its cap of 20 % of the 5-hour window"),
        "{}",
        timed_out.reason
    );
    let reset = secs(3600.0).saturating_sub(told_at);
    assert!(
        timed_out.retry_after.abs_diff(reset) <= secs(1.5),
        "{:?}, the reset in {reset:?}",
        timed_out.retry_after
    );
    // A cap named in the configuration holds a client that asks for none.
    let mut config = config(1.0, false);
    config.windows.max_share.insert("loop".into(), 0.2);
    h.broker.reconfigure(config.clone(), h.now);
    let again = h.acquire(6, |r| {
        r.key = key(TOKEN);
        r.client_id = "loop".into();
        r.deadline = Some(Duration::ZERO);
    });
    // (By its whole id, else the name before a session's `/`.)
    let named = &config.windows;
    assert_eq!(named.max_share_of("loop/3f2a9c1d"), Some(0.2));
    assert_eq!(named.max_share_of("looping"), None);
    assert!(matches!(
        h.answer(again),
        Some((_, _, Response::TimedOut(_)))
    ));
    // A cap of nothing, or of more than the window, is refused as a mistake.
    for bad in [0, 10_001] {
        let ticket = ask(&mut h, 7, "other", Some(bad));
        let Some((_, _, Response::Rejected(rejected))) = h.answer(ticket) else {
            panic!("{:?}", h.answer(ticket))
        };
        assert!(rejected.reason.contains("max share"), "{}", rejected.reason);
    }
}

#[test]
fn at_a_reset_a_capped_client_gets_its_share_of_the_new_window_not_a_burst() {
    let mut h = Harness::new(config(1.0, false));
    let mut window = five_hours(60);
    let (_, mut parked) = run(&mut h, &mut window, 40);
    // Eight more calls of the capped client wait out of the queue: ten in all.
    for conn in 0..8 {
        parked.push(ask(&mut h, 500 + conn, "loop", Some(1000)));
    }
    assert!(parked.iter().all(|&t| h.lease(t).is_none()));
    // The window resets; no answer has told of the new one yet. The calls made now count
    // toward it: about 6 (10 % of 60) go, the rest wait for the next reset.
    h.run_until(secs(3601.0));
    let granted = parked.iter().filter(|&&t| h.lease(t).is_some()).count();
    assert!(
        (5..=7).contains(&granted),
        "{granted} of 10 went at the reset"
    );
}

#[test]
fn resets_that_move_by_a_second_each_answer_are_one_window() {
    let mut h = Harness::new(config(1.0, false));
    let mut window = five_hours(60);
    // Each answer's reset a second off the one before (a clock read against the API's Date).
    let mut capped = 0;
    for call in 0..20u64 {
        let ticket = ask(&mut h, call, "loop", Some(1000));
        let Some(lease) = h.lease(ticket) else {
            break;
        };
        capped += 1;
        window.reset_in = 3600 + call % 2;
        answer(&mut h, &mut window, lease);
    }
    assert!(
        (5..=7).contains(&capped),
        "the capped client made {capped} calls"
    );
}

#[test]
fn the_operators_cap_holds_a_client_asking_for_more_and_the_first_call_always_goes() {
    let mut config = config(1.0, false);
    config.windows.max_share.insert("loop".into(), 0.1);
    let mut h = Harness::new(config);
    let mut window = five_hours(60);
    // The client asks for half of the window; the configuration gives it a tenth.
    let mut made = 0;
    for call in 0..40u64 {
        let ticket = ask(&mut h, call, "loop", Some(5000));
        let Some(lease) = h.lease(ticket) else {
            break;
        };
        made += 1;
        answer(&mut h, &mut window, lease);
    }
    assert!(
        (5..=7).contains(&made),
        "{made} calls under the operator's 10 %"
    );
    // A cap below what one call costs (0.5 % of a window where a call is 1.7 %) lets one call
    // of a window through rather than none.
    let other = ask(&mut h, 99, "tiny", Some(50));
    let lease = h.lease(other).expect("the first call of a window goes");
    answer(&mut h, &mut window, lease);
    let again = h.acquire(100, |r| {
        r.key = key(TOKEN);
        r.client_id = "tiny".into();
        r.max_share_bp = Some(50);
        r.deadline = Some(Duration::ZERO);
    });
    assert!(h.lease(again).is_none());
}
