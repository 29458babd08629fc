//! The pace of sessions starting together, on a fake clock.

use super::*;
use pacer_protocol::KeyFingerprint;

fn session(name: &str) -> Arc<str> {
    Arc::from(name)
}

fn owner(name: &str) -> Owner {
    Owner::Key(KeyFingerprint::of(name))
}

const SEC: Duration = Duration::from_secs(1);

#[test]
fn until_a_bare_429_is_seen_every_session_starts_at_once() {
    let t0 = Instant::now();
    let mut starts = Starts::default();
    let account = owner("a");
    for i in 0..10 {
        assert!(starts.try_start(&account, &session(&format!("s{i}")), t0));
    }
    assert!(starts.paces().is_empty());
    assert_eq!(starts.wait_for(&account, t0), None);
}

#[test]
fn a_wall_paces_new_sessions_at_half_what_got_through_then_each_success_adds_one() {
    let t0 = Instant::now();
    let mut starts = Starts::default();
    let account = owner("a");
    // Four sessions get through, then a bare 429 meets the fifth.
    for i in 0..4 {
        let s = session(&format!("s{i}"));
        assert!(starts.try_start(&account, &s, t0));
        starts.started(&account, &s, t0 + SEC);
    }
    let fifth = session("s4");
    assert!(starts.try_start(&account, &fifth, t0 + SEC));
    let changes = starts.wall(&account, &fifth, t0 + 2 * SEC);
    assert_eq!(
        changes,
        vec![(None, Some(2.0)), (Some(account.clone()), Some(2.0))],
        "half of four a minute, for the machine and the account"
    );
    // One every 30 s: not before.
    let wall = t0 + 2 * SEC;
    assert!(!starts.try_start(&account, &fifth, wall + 29 * SEC));
    assert!(starts.try_start(&account, &fifth, wall + 30 * SEC));
    // Its calls go on while it starts; another new session waits its turn.
    assert!(starts.try_start(&account, &fifth, wall + 31 * SEC));
    assert!(!starts.try_start(&account, &session("s5"), wall + 31 * SEC));
    // It got through: three a minute now, the next 20 s after the last start.
    starts.started(&account, &fifth, wall + 32 * SEC);
    assert_eq!(starts.paces()[0].1.per_minute, 3.0);
    assert!(!starts.try_start(&account, &session("s5"), wall + 49 * SEC));
    assert!(starts.try_start(&account, &session("s5"), wall + 50 * SEC));
}

#[test]
fn a_burst_of_bare_429s_cuts_the_pace_once_and_pushes_the_next_start_out() {
    let t0 = Instant::now();
    let mut starts = Starts::default();
    let account = owner("a");
    for i in 0..8 {
        starts.started(&account, &session(&format!("old{i}")), t0);
    }
    let changes = starts.wall(&account, &session("n0"), t0);
    assert_eq!(changes[0], (None, Some(4.0)));
    // Six more from the same burst: no further cut, but the next start waits an interval
    // (15 s) from the last of them.
    for i in 1..7 {
        assert!(
            starts
                .wall(&account, &session(&format!("n{i}")), t0 + SEC)
                .is_empty()
        );
    }
    assert_eq!(starts.paces()[0].1.per_minute, 4.0);
    assert!(!starts.try_start(&account, &session("n0"), t0 + 15 * SEC));
    // A start 16 s later meets the wall again: a new signal, halved, and the next start waits
    // a whole interval (30 s) from it.
    let again = t0 + 16 * SEC;
    assert!(starts.try_start(&account, &session("n0"), again));
    assert_eq!(
        starts.wall(&account, &session("n0"), again)[0],
        (None, Some(2.0))
    );
    assert!(!starts.try_start(&account, &session("n0"), again + 29 * SEC));
    assert!(starts.try_start(&account, &session("n0"), again + 30 * SEC));
    // Never below one a minute.
    for i in 0..10u64 {
        starts.wall(
            &account,
            &session("n0"),
            again + Duration::from_secs(60 * (i + 1)),
        );
    }
    assert_eq!(starts.paces()[0].1.per_minute, MIN_PER_MINUTE);
}

#[test]
fn waiting_sessions_are_let_start_one_turn_at_a_time_in_arrival_order() {
    let t0 = Instant::now();
    let mut starts = Starts::default();
    let account = owner("a");
    starts.wall(&account, &session("first"), t0);
    for id in [7, 3, 5] {
        starts.wait(id, &account, session(&format!("w{id}")));
    }
    assert!(starts.is_waiting(5));
    assert!(starts.admit(t0 + SEC).is_empty());
    assert_eq!(starts.next_wakeup(), Some(t0 + 60 * SEC));
    assert_eq!(starts.admit(t0 + 60 * SEC), vec![3]);
    assert_eq!(starts.admit(t0 + 61 * SEC), Vec::<WaiterId>::new());
    assert_eq!(starts.admit(t0 + 120 * SEC), vec![5]);
    starts.leave(7);
    assert!(!starts.is_waiting(7));
    let (wait, per_minute) = starts.wait_for(&account, t0 + 150 * SEC).unwrap();
    assert_eq!((wait, per_minute), (30 * SEC, 1.0));
}

#[test]
fn after_a_quiet_while_with_nobody_waiting_sessions_start_unhindered_again() {
    let t0 = Instant::now();
    let mut starts = Starts::default();
    let account = owner("a");
    starts.wall(&account, &session("s"), t0);
    starts.wait(1, &account, session("w"));
    // Quiet long enough, but someone waits: the pace stays.
    assert!(starts.relax(t0 + QUIET).is_empty());
    starts.leave(1);
    assert_eq!(starts.next_wakeup(), Some(t0 + QUIET));
    let lifted = starts.relax(t0 + QUIET);
    assert_eq!(lifted, vec![(None, None), (Some(account.clone()), None)]);
    assert!(starts.paces().is_empty());
    assert!(starts.try_start(&account, &session("x"), t0 + QUIET));
    assert!(starts.try_start(&account, &session("y"), t0 + QUIET));
}

#[test]
fn one_accounts_wall_paces_the_machine_but_not_the_other_accounts_own_gate() {
    let t0 = Instant::now();
    let mut starts = Starts::default();
    let (a, b) = (owner("a"), owner("b"));
    starts.wall(&a, &session("a1"), t0);
    // The machine's pace holds b's new sessions too (the wall may be per source)…
    assert!(!starts.try_start(&b, &session("b1"), t0 + SEC));
    assert!(starts.try_start(&b, &session("b1"), t0 + 60 * SEC));
    // …but b's account has no pace of its own.
    let paces = starts.paces();
    assert_eq!(paces.len(), 2);
    assert_eq!(paces[1].0, Some(&a));
}
