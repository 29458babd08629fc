//! The fair queue of one budget's waiters.
//!
//! Order of service: strictly by priority (interactive, normal, batch); within a priority, by
//! what each client's calls cost of the budget's limits — start-time fair queueing (SFQ):
//!
//! - A waiter's *share* is what its call costs of the limits, as the largest fraction of any
//!   one limit it takes (its dominant share: a 29k-token call of a 100k-a-minute limit is 0.29,
//!   a 22-token one 0.0002). The budget works it out when the waiter joins.
//! - Each client's waiters get *start tags* as they arrive: the first at the priority's virtual
//!   time (or where the client's last call finished, if that is later), each next where the one
//!   before it finishes (its start plus its share). The virtual time is the start tag of the
//!   waiter served last in turn.
//! - The waiter served in turn is the client head with the smallest start tag (ties: first
//!   come), so clients that keep the queue busy each get an equal share of the limits — equal
//!   turns when calls cost alike, as round robin did — and a client of small calls is not made
//!   to wait a large call's whole refill per call.
//!
//! When the head cannot be served yet because a bucket must refill, the budget may grant a call
//! that fits now out of turn (see `Budget::backfill_candidate`): the client head of the
//! smallest share at the head's priority. Grants out of turn while one head waits take, per
//! limit, at most a quarter of the head's own cost ([`BACKFILL_SHARE`]), so the head's turn
//! comes at most a quarter of its refill time later than it would have; they raise their
//! client's tags like any grant, so a client served out of turn waits longer for its turns
//! after. Chosen over deficit round robin (which needs a quantum per round and still blocks
//! small calls behind a large head until their turn comes round) and over unbounded
//! backfilling (which starves large calls).
//!
//! Every operation is O(log n) in the number of waiters: each priority keeps its client heads in
//! a `BTreeMap` by start tag and another by share, and each client its waiters in a `BTreeMap`
//! keyed by their (monotonic) id.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;

use pacer_protocol::Priority;

use super::Costs;

/// Identifies a waiter; ids increase in arrival order.
pub type WaiterId = u64;

/// What a call costs of a budget's limits, in billionths of a whole minute's limit (see the
/// module's documentation): tags are sums of them.
pub type Share = u64;

/// One whole minute's limit, as a [`Share`].
pub const WHOLE: Share = 1_000_000_000;

/// The most that calls granted out of turn may take while one head waits, as a fraction of the
/// head's own cost (per limit).
pub const BACKFILL_SHARE: f64 = 0.25;

/// The most clients whose finish tags are remembered at one priority while they have nothing
/// queued (each is forgotten as soon as the virtual time passes it).
const MAX_REMEMBERED: usize = 65_536;

#[derive(Debug, Default)]
pub struct FairQueue {
    levels: [Level; 3],
    len: usize,
}

#[derive(Debug, Default)]
struct Level {
    /// Client heads in order of service: (start tag, waiter id) → client.
    order: BTreeMap<(Share, WaiterId), Arc<str>>,
    /// Client heads by share, for grants out of turn: (share, start tag, waiter id) → client.
    by_share: BTreeMap<(Share, Share, WaiterId), Arc<str>>,
    clients: HashMap<Arc<str>, ClientLine>,
    /// Where the calls of clients with nothing queued finished, while that is ahead of the
    /// virtual time (a client that comes back soon starts there, not before).
    finished: HashMap<Arc<str>, Share>,
    finished_by_tag: BTreeSet<(Share, Arc<str>)>,
    /// The start tag of the waiter served last in turn.
    virtual_time: Share,
    /// Total cost ever queued and ever removed at this priority; their difference is what is
    /// queued now, and a waiter's position is estimated from them without walking the queue.
    enqueued: Costs,
    dequeued: Costs,
}

#[derive(Debug)]
struct ClientLine {
    waiters: BTreeMap<WaiterId, Queued>,
    /// Its first waiter's start tag.
    start: Share,
    /// Where its last call served finished: its next waiter starts there, or at the virtual
    /// time if that is later. (A waiter that leaves unserved costs its client nothing.)
    finish: Share,
}

#[derive(Debug, Clone, Copy)]
struct Queued {
    cost: Costs,
    share: Share,
}

/// Where a waiter stood when it joined, for estimating how much is queued ahead of it later.
#[derive(Debug, Clone, Copy, Default)]
pub struct Mark(Costs);

impl Level {
    fn head(&self) -> Option<(WaiterId, &Arc<str>)> {
        self.order.first_key_value().map(|(&(_, id), c)| (id, c))
    }

    /// Makes a client's first waiter its head: its start tag is where the client's last call
    /// finished, or the virtual time if that is later.
    fn index_head(&mut self, client: &Arc<str>) {
        let virtual_time = self.virtual_time;
        let Some(line) = self.clients.get_mut(client) else {
            return;
        };
        if let Some((&id, queued)) = line.waiters.first_key_value() {
            line.start = line.finish.max(virtual_time);
            self.order.insert((line.start, id), client.clone());
            self.by_share
                .insert((queued.share, line.start, id), client.clone());
        }
    }

    fn unindex_head(&mut self, client: &Arc<str>) {
        let line = &self.clients[client];
        if let Some((&id, queued)) = line.waiters.first_key_value() {
            self.order.remove(&(line.start, id));
            self.by_share.remove(&(queued.share, line.start, id));
        }
    }

    /// Takes waiter `id` out of `client`'s line, `served` or not; its next waiter becomes its
    /// head. Returns it, with the start tag it had if it was the head.
    fn take(&mut self, client: &Arc<str>, id: WaiterId, served: bool) -> Option<(Queued, Share)> {
        let is_head = self
            .clients
            .get(client)?
            .waiters
            .first_key_value()
            .is_some_and(|(&first, _)| first == id);
        if is_head {
            self.unindex_head(client);
        }
        let line = self.clients.get_mut(client)?;
        let queued = line.waiters.remove(&id)?;
        let start = line.start;
        if served {
            // Served in turn or out of it, a head finishes its share past its start.
            line.finish = line.finish.max(start).saturating_add(queued.share);
        }
        self.dequeued = self.dequeued.plus(&queued.cost);
        if line.waiters.is_empty() {
            let finish = line.finish;
            self.clients.remove(client);
            self.remember(client, finish);
        } else if is_head {
            self.index_head(client);
        }
        Some((queued, start))
    }

    /// Remembers where the calls of `client`, which has nothing queued, finished, while that is
    /// ahead of the virtual time (and while fewer than [`MAX_REMEMBERED`] are).
    fn remember(&mut self, client: &Arc<str>, finish: Share) {
        if let Some(old) = self.finished.remove(client) {
            self.finished_by_tag.remove(&(old, client.clone()));
        }
        if finish > self.virtual_time && self.finished.len() < MAX_REMEMBERED {
            self.finished.insert(client.clone(), finish);
            self.finished_by_tag.insert((finish, client.clone()));
        }
    }

    /// Moves the virtual time to `tag`, forgetting finish tags it has passed.
    fn advance(&mut self, tag: Share) {
        self.virtual_time = self.virtual_time.max(tag);
        while let Some((finish, client)) = self.finished_by_tag.first().cloned() {
            if finish > self.virtual_time {
                break;
            }
            self.finished_by_tag.pop_first();
            self.finished.remove(&client);
        }
    }
}

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

    /// Queues a waiter at the back of its client's line; `share` is what it costs of the
    /// budget's limits.
    pub fn push(
        &mut self,
        id: WaiterId,
        client: &Arc<str>,
        priority: Priority,
        cost: Costs,
        share: Share,
    ) -> Mark {
        let level = &mut self.levels[priority.index()];
        let mark = Mark(level.enqueued);
        level.enqueued = level.enqueued.plus(&cost);
        let new_client = !level.clients.contains_key(client);
        let line = match level.clients.get_mut(client) {
            Some(line) => line,
            None => {
                let finish = level.finished.remove(client).unwrap_or(0);
                level.finished_by_tag.remove(&(finish, client.clone()));
                level.clients.entry(client.clone()).or_insert(ClientLine {
                    waiters: BTreeMap::new(),
                    start: 0,
                    finish,
                })
            }
        };
        line.waiters.insert(id, Queued { cost, share });
        if new_client {
            level.index_head(client);
        }
        self.len += 1;
        mark
    }

    /// The waiter to serve next, and its cost.
    pub fn head(&self) -> Option<(WaiterId, Costs)> {
        let level = self.levels.iter().find(|l| !l.order.is_empty())?;
        let (id, client) = level.head()?;
        Some((id, level.clients[client].waiters[&id].cost))
    }

    /// Removes the head; the virtual time moves to its start tag.
    pub fn pop_head(&mut self) -> Option<WaiterId> {
        let level = self.levels.iter_mut().find(|l| !l.order.is_empty())?;
        let (id, client) = level.head().map(|(id, c)| (id, c.clone()))?;
        let (_, start) = level.take(&client, id, true)?;
        level.advance(start);
        self.len -= 1;
        Some(id)
    }

    /// A call of `client` granted at once (nobody was queued at any priority): it counts
    /// against its client's turns, and moves the virtual time, as one served in turn does.
    pub fn served_at_once(&mut self, client: &Arc<str>, priority: Priority, share: Share) {
        let level = &mut self.levels[priority.index()];
        let finish = level.finished.get(client).copied().unwrap_or(0);
        let start = finish.max(level.virtual_time);
        level.advance(start);
        level.remember(client, start.saturating_add(share));
    }

    /// The waiter that may go out of turn while the head waits: at the head's priority, the
    /// client head of the smallest share, not the head's own client. `None` when there is none.
    pub fn backfill_candidate(&self) -> Option<(WaiterId, Costs)> {
        let level = self.levels.iter().find(|l| !l.order.is_empty())?;
        let (_, head_client) = level.head()?;
        let (&(_, _, id), client) = level
            .by_share
            .iter()
            .find(|(_, client)| *client != head_client)?;
        Some((id, level.clients[client].waiters[&id].cost))
    }

    /// Removes a waiter wherever it stands, unserved (it timed out, or its connection closed):
    /// it costs its client nothing.
    pub fn remove(&mut self, id: WaiterId, client: &str, priority: Priority) -> bool {
        self.take(id, client, priority, false)
    }

    /// Takes a waiter out of turn to be served (a [`FairQueue::backfill_candidate`]): it counts
    /// against its client's turns like a call served in turn.
    pub fn serve_out_of_turn(&mut self, id: WaiterId, client: &str, priority: Priority) -> bool {
        self.take(id, client, priority, true)
    }

    fn take(&mut self, id: WaiterId, client: &str, priority: Priority, served: bool) -> bool {
        let level = &mut self.levels[priority.index()];
        let Some((client, _)) = level.clients.get_key_value(client) else {
            return false;
        };
        let client = client.clone();
        if level.take(&client, id, served).is_none() {
            return false;
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
mod tests;
