//! The fair queue on its own: turns, priorities, shares, grants out of turn.

use super::*;
use Priority::*;

fn client(name: &str) -> Arc<str> {
    Arc::from(name)
}

fn cost(tokens: u64) -> Costs {
    Costs::new(1, tokens, 0)
}

fn drain(q: &mut FairQueue) -> Vec<WaiterId> {
    std::iter::from_fn(|| q.pop_head()).collect()
}

#[test]
fn fifo_within_one_client() {
    let mut q = FairQueue::default();
    let a = client("a");
    for id in 1..=3 {
        q.push(id, &a, Normal, cost(1), 1);
    }
    assert_eq!(drain(&mut q), vec![1, 2, 3]);
    assert!(q.is_empty());
}

#[test]
fn clients_take_turns_within_a_priority() {
    let mut q = FairQueue::default();
    let (a, b, c) = (client("a"), client("b"), client("c"));
    // a floods the queue first; b and c arrive later but are not stuck behind all of a.
    for id in 1..=4 {
        q.push(id, &a, Normal, cost(1), 1);
    }
    q.push(10, &b, Normal, cost(1), 1);
    q.push(11, &b, Normal, cost(1), 1);
    q.push(20, &c, Normal, cost(1), 1);
    assert_eq!(drain(&mut q), vec![1, 10, 20, 2, 11, 3, 4]);
}

#[test]
fn higher_priorities_go_first() {
    let mut q = FairQueue::default();
    let (a, b) = (client("a"), client("b"));
    q.push(1, &a, Batch, cost(1), 1);
    q.push(2, &a, Normal, cost(1), 1);
    q.push(3, &b, Interactive, cost(1), 1);
    q.push(4, &b, Batch, cost(1), 1);
    assert_eq!(drain(&mut q), vec![3, 2, 1, 4]);
}

#[test]
fn head_is_stable_until_popped() {
    let mut q = FairQueue::default();
    let a = client("a");
    q.push(1, &a, Normal, cost(500), 500);
    q.push(2, &a, Normal, cost(1), 1);
    assert_eq!(q.head(), Some((1, cost(500))));
    assert_eq!(q.head(), Some((1, cost(500))));
    assert_eq!(q.pop_head(), Some(1));
    assert_eq!(q.head(), Some((2, cost(1))));
}

#[test]
fn removing_a_waiter_keeps_the_rest_in_order() {
    let mut q = FairQueue::default();
    let (a, b) = (client("a"), client("b"));
    q.push(1, &a, Normal, cost(1), 1);
    q.push(2, &a, Normal, cost(1), 1);
    q.push(3, &b, Normal, cost(1), 1);
    assert!(q.remove(1, "a", Normal));
    assert!(!q.remove(1, "a", Normal), "already removed");
    assert!(!q.remove(3, "b", Batch), "wrong priority");
    assert_eq!(q.len(), 2);
    assert_eq!(drain(&mut q), vec![2, 3]);
}

#[test]
fn removing_a_clients_last_waiter_drops_its_turn() {
    let mut q = FairQueue::default();
    let (a, b) = (client("a"), client("b"));
    q.push(1, &a, Normal, cost(1), 1);
    q.push(2, &b, Normal, cost(1), 1);
    assert!(q.remove(1, "a", Normal));
    assert_eq!(q.head(), Some((2, cost(1))));
    q.push(3, &a, Normal, cost(1), 1);
    assert_eq!(drain(&mut q), vec![2, 3]);
}

#[test]
fn cost_ahead_counts_higher_priorities_and_earlier_arrivals() {
    let mut q = FairQueue::default();
    let (a, b) = (client("a"), client("b"));
    q.push(1, &a, Interactive, cost(100), 100);
    q.push(2, &a, Normal, cost(10), 10);
    let mark = q.push(3, &b, Normal, cost(20), 20);
    q.push(4, &b, Normal, cost(40), 40);
    // Ahead of waiter 3: the interactive 100 and the normal 10 that came before it.
    assert_eq!(q.cost_ahead(Normal, mark), Costs::new(2, 110, 0));
    q.pop_head(); // the interactive one
    assert_eq!(q.cost_ahead(Normal, mark), Costs::new(1, 10, 0));
    // A newcomer at batch would wait behind everything queued.
    let newcomer = q.mark(Batch);
    assert_eq!(q.cost_ahead(Batch, newcomer), Costs::new(3, 70, 0));
}

#[test]
fn ten_thousand_waiters_drain_in_fair_order() {
    let mut q = FairQueue::default();
    let clients: Vec<_> = (0..100).map(|i| client(&format!("c{i}"))).collect();
    let mut id = 0;
    for _ in 0..100 {
        for c in &clients {
            q.push(id, c, Normal, cost(1), 1);
            id += 1;
        }
    }
    // Waiters were pushed round by round, so round-robin service returns them in id order.
    assert_eq!(drain(&mut q), (0..10_000).collect::<Vec<_>>());
}

#[test]
fn a_client_of_small_calls_is_not_made_to_wait_a_large_calls_turn_per_call() {
    let mut q = FairQueue::default();
    let (big, small) = (client("big"), client("small"));
    // Shares of the limit: a large call takes a quarter, a small one a thousandth.
    for id in 0..4 {
        q.push(id, &big, Normal, cost(250), 250);
    }
    for id in 10..14 {
        q.push(id, &small, Normal, cost(1), 1);
    }
    // Round robin would go big, small, big, small…; by share, the small calls are done after
    // the first large one.
    assert_eq!(drain(&mut q), vec![0, 10, 11, 12, 13, 1, 2, 3]);
}

#[test]
fn clients_that_keep_the_queue_busy_get_equal_shares_of_the_limit() {
    let mut q = FairQueue::default();
    let (a, b) = (client("a"), client("b"));
    // a's calls cost three times b's: over the drain, b gets three turns per turn of a.
    for id in 0..10 {
        q.push(id, &a, Normal, cost(3), 3);
    }
    for id in 100..130 {
        q.push(id, &b, Normal, cost(1), 1);
    }
    let served = drain(&mut q);
    let mut share = (0u64, 0u64);
    for id in &served[..20] {
        if *id < 100 {
            share.0 += 3;
        } else {
            share.1 += 1;
        }
    }
    assert!(share.0.abs_diff(share.1) <= 3, "{share:?} of {served:?}");
}

#[test]
fn a_client_back_soon_starts_where_it_finished_and_one_back_late_at_the_virtual_time() {
    let mut q = FairQueue::default();
    let (a, b) = (client("a"), client("b"));
    q.push(1, &a, Normal, cost(10), 10);
    q.push(2, &b, Normal, cost(10), 10);
    q.push(3, &b, Normal, cost(10), 10);
    assert_eq!(q.pop_head(), Some(1)); // a done; it finished at 10
    // Back at once: it starts where it finished (10), not at the virtual time (0), so it does
    // not go before b's second call (which starts at 10 too, and came first).
    q.push(4, &a, Normal, cost(10), 10);
    assert_eq!(drain(&mut q), vec![2, 3, 4]);
    // The level emptied: everyone starts even again.
    q.push(5, &b, Normal, cost(10), 10);
    q.push(6, &a, Normal, cost(10), 10);
    assert_eq!(drain(&mut q), vec![5, 6]);
}

#[test]
fn the_candidate_out_of_turn_is_the_smallest_other_clients_head() {
    let mut q = FairQueue::default();
    let (big, medium, small) = (client("big"), client("medium"), client("small"));
    q.push(1, &big, Normal, cost(500), 500);
    q.push(2, &big, Normal, cost(1), 1);
    q.push(3, &medium, Normal, cost(50), 50);
    q.push(4, &small, Normal, cost(5), 5);
    q.push(5, &small, Normal, cost(5), 5);
    assert_eq!(q.head(), Some((1, cost(500))));
    // Not big's own next call, though it is the smallest: the smallest other head.
    assert_eq!(q.backfill_candidate(), Some((4, cost(5))));
    assert!(q.remove(4, "small", Normal));
    assert_eq!(q.backfill_candidate(), Some((5, cost(5))));
    assert!(q.remove(5, "small", Normal));
    assert_eq!(q.backfill_candidate(), Some((3, cost(50))));
    assert_eq!(q.head(), Some((1, cost(500))), "the head keeps its turn");
    // Lower priorities never go out of turn.
    q.push(6, &small, Batch, cost(1), 1);
    assert!(q.remove(3, "medium", Normal));
    assert_eq!(q.backfill_candidate(), None);
}
