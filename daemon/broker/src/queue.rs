//! The fair queue of one budget's waiters.
//!
//! Order of service: strictly by priority (interactive, normal, batch); within a priority, the
//! clients with waiters take turns (round-robin); within a client, first come first served. Only
//! the head is ever considered: if it cannot be served yet, nobody behind it is, so a large request
//! is not starved by a stream of small ones.
//!
//! Every operation is O(log n) in the number of waiters: each priority keeps its turn order in a
//! `BTreeMap` keyed by a turn counter, and each client its waiters in a `BTreeMap` keyed by their
//! (monotonic) id.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use pacer_protocol::Priority;

use super::Costs;

/// Identifies a waiter; ids increase in arrival order.
pub type WaiterId = u64;

#[derive(Debug, Default)]
pub struct FairQueue {
    levels: [Level; 3],
    len: usize,
}

#[derive(Debug, Default)]
struct Level {
    /// Whose turn is next: turn number → client. A client served goes to the back.
    turns: BTreeMap<u64, Arc<str>>,
    clients: HashMap<Arc<str>, ClientLine>,
    next_turn: u64,
    /// Total cost ever queued and ever removed at this priority; their difference is what is
    /// queued now, and a waiter's position is estimated from them without walking the queue.
    enqueued: Costs,
    dequeued: Costs,
}

#[derive(Debug)]
struct ClientLine {
    turn: u64,
    waiters: BTreeMap<WaiterId, Costs>,
}

/// Where a waiter stood when it joined, for estimating how much is queued ahead of it later.
#[derive(Debug, Clone, Copy, Default)]
pub struct Mark(Costs);

impl FairQueue {
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Waiters queued at `priority` (walks its clients: for status, not for the hot path).
    pub fn len_of(&self, priority: Priority) -> usize {
        self.levels[priority.index()]
            .clients
            .values()
            .map(|line| line.waiters.len())
            .sum()
    }

    /// Queues a waiter at the back of its client's line.
    pub fn push(
        &mut self,
        id: WaiterId,
        client: &Arc<str>,
        priority: Priority,
        cost: Costs,
    ) -> Mark {
        let level = &mut self.levels[priority.index()];
        let mark = Mark(level.enqueued);
        level.enqueued = level.enqueued.plus(&cost);
        let line = match level.clients.get_mut(client) {
            Some(line) => line,
            None => {
                let turn = level.next_turn;
                level.next_turn += 1;
                level.turns.insert(turn, client.clone());
                level.clients.entry(client.clone()).or_insert(ClientLine {
                    turn,
                    waiters: BTreeMap::new(),
                })
            }
        };
        line.waiters.insert(id, cost);
        self.len += 1;
        mark
    }

    /// The waiter to serve next, and its cost.
    pub fn head(&self) -> Option<(WaiterId, Costs)> {
        let level = self.levels.iter().find(|l| !l.turns.is_empty())?;
        let (_, client) = level.turns.first_key_value()?;
        let (&id, &cost) = level.clients[client].waiters.first_key_value()?;
        Some((id, cost))
    }

    /// Removes the head; its client goes to the back of the turn order.
    pub fn pop_head(&mut self) -> Option<WaiterId> {
        let level = self.levels.iter_mut().find(|l| !l.turns.is_empty())?;
        let (_, client) = level.turns.pop_first()?;
        let line = level.clients.get_mut(&client)?;
        let (id, cost) = line.waiters.pop_first()?;
        level.dequeued = level.dequeued.plus(&cost);
        if line.waiters.is_empty() {
            level.clients.remove(&client);
        } else {
            line.turn = level.next_turn;
            level.next_turn += 1;
            level.turns.insert(line.turn, client);
        }
        self.len -= 1;
        Some(id)
    }

    /// Removes a waiter wherever it stands (it timed out or its connection closed). Its client
    /// keeps its turn.
    pub fn remove(&mut self, id: WaiterId, client: &str, priority: Priority) -> bool {
        let level = &mut self.levels[priority.index()];
        let Some(line) = level.clients.get_mut(client) else {
            return false;
        };
        let Some(cost) = line.waiters.remove(&id) else {
            return false;
        };
        level.dequeued = level.dequeued.plus(&cost);
        if line.waiters.is_empty() {
            let turn = line.turn;
            level.turns.remove(&turn);
            level.clients.remove(client);
        }
        self.len -= 1;
        true
    }

    /// Where a waiter joining `priority` now would stand.
    pub fn mark(&self, priority: Priority) -> Mark {
        Mark(self.levels[priority.index()].enqueued)
    }

    /// An estimate of the cost queued ahead of a waiter that joined `priority` at `mark`:
    /// everything at higher priorities, plus what joined its own priority before it and is still
    /// queued (as if its priority were served first come, first served).
    pub fn cost_ahead(&self, priority: Priority, mark: Mark) -> Costs {
        let own = &self.levels[priority.index()];
        let mut ahead = mark.0.minus(&own.dequeued);
        for level in &self.levels[..priority.index()] {
            ahead = ahead.plus(&level.enqueued.minus(&level.dequeued));
        }
        ahead
    }
}

#[cfg(test)]
mod tests {
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
            q.push(id, &a, Normal, cost(1));
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
            q.push(id, &a, Normal, cost(1));
        }
        q.push(10, &b, Normal, cost(1));
        q.push(11, &b, Normal, cost(1));
        q.push(20, &c, Normal, cost(1));
        assert_eq!(drain(&mut q), vec![1, 10, 20, 2, 11, 3, 4]);
    }

    #[test]
    fn higher_priorities_go_first() {
        let mut q = FairQueue::default();
        let (a, b) = (client("a"), client("b"));
        q.push(1, &a, Batch, cost(1));
        q.push(2, &a, Normal, cost(1));
        q.push(3, &b, Interactive, cost(1));
        q.push(4, &b, Batch, cost(1));
        assert_eq!(drain(&mut q), vec![3, 2, 1, 4]);
    }

    #[test]
    fn head_is_stable_until_popped() {
        let mut q = FairQueue::default();
        let a = client("a");
        q.push(1, &a, Normal, cost(500));
        q.push(2, &a, Normal, cost(1));
        assert_eq!(q.head(), Some((1, cost(500))));
        assert_eq!(q.head(), Some((1, cost(500))));
        assert_eq!(q.pop_head(), Some(1));
        assert_eq!(q.head(), Some((2, cost(1))));
    }

    #[test]
    fn removing_a_waiter_keeps_the_rest_in_order() {
        let mut q = FairQueue::default();
        let (a, b) = (client("a"), client("b"));
        q.push(1, &a, Normal, cost(1));
        q.push(2, &a, Normal, cost(1));
        q.push(3, &b, Normal, cost(1));
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
        q.push(1, &a, Normal, cost(1));
        q.push(2, &b, Normal, cost(1));
        assert!(q.remove(1, "a", Normal));
        assert_eq!(q.head(), Some((2, cost(1))));
        q.push(3, &a, Normal, cost(1));
        assert_eq!(drain(&mut q), vec![2, 3]);
    }

    #[test]
    fn cost_ahead_counts_higher_priorities_and_earlier_arrivals() {
        let mut q = FairQueue::default();
        let (a, b) = (client("a"), client("b"));
        q.push(1, &a, Interactive, cost(100));
        q.push(2, &a, Normal, cost(10));
        let mark = q.push(3, &b, Normal, cost(20));
        q.push(4, &b, Normal, cost(40));
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
                q.push(id, c, Normal, cost(1));
                id += 1;
            }
        }
        // Waiters were pushed round by round, so round-robin service returns them in id order.
        assert_eq!(drain(&mut q), (0..10_000).collect::<Vec<_>>());
    }
}
