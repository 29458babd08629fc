//! Acquires waiting in a budget's queue: who they are, when they give up, and which connection
//! they belong to. (Their order of service is the budget's [`super::queue::FairQueue`].)

use std::collections::{BTreeSet, HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use pacer_protocol::{KeyFingerprint, Priority};

use super::budgets::BudgetIdx;
use super::queue::{Mark, WaiterId};
use super::{ConnId, Costs, Ticket};

/// An acquire waiting in a budget's queue.
#[derive(Debug)]
pub struct Waiter {
    pub ticket: Ticket,
    /// The key the call will be made with.
    pub key: KeyFingerprint,
    pub budget: BudgetIdx,
    pub client: Arc<str>,
    pub priority: Priority,
    /// What it will reserve when granted.
    pub cost: Costs,
    /// The most its report will be believed to have used.
    pub bound: Costs,
    /// The Claude Code session it is for, if known.
    pub session: Option<Arc<str>>,
    /// Where it joined the queue, for estimating its remaining wait if it times out.
    pub mark: Mark,
    pub deadline: Option<Instant>,
    /// Carried over to the lease: the permit will outlive the connection.
    pub detached_ttl: Option<Duration>,
    pub enqueued_at: Instant,
}

#[derive(Debug, Default)]
pub struct Waiters {
    by_id: HashMap<WaiterId, Waiter>,
    /// Deadlines in time order, so the earliest is found at once.
    deadlines: BTreeSet<(Instant, WaiterId)>,
    /// Each connection's waiters, so they leave when it closes.
    by_conn: HashMap<ConnId, HashSet<WaiterId>>,
    next: WaiterId,
}

impl Waiters {
    /// The id the next waiter will get.
    pub fn next_id(&mut self) -> WaiterId {
        let id = self.next;
        self.next += 1;
        id
    }

    pub fn insert(&mut self, id: WaiterId, waiter: Waiter) {
        if let Some(deadline) = waiter.deadline {
            self.deadlines.insert((deadline, id));
        }
        self.by_conn
            .entry(waiter.ticket.conn)
            .or_default()
            .insert(id);
        self.by_id.insert(id, waiter);
    }

    pub fn iter(&self) -> impl Iterator<Item = &Waiter> {
        self.by_id.values()
    }

    pub fn get(&self, id: WaiterId) -> Option<&Waiter> {
        self.by_id.get(&id)
    }

    pub fn get_mut(&mut self, id: WaiterId) -> Option<&mut Waiter> {
        self.by_id.get_mut(&id)
    }

    /// Forgets a waiter (it was granted, timed out, left or is refused). Taking it out of its
    /// budget's queue is the caller's business.
    pub fn remove(&mut self, id: WaiterId) -> Option<Waiter> {
        let waiter = self.by_id.remove(&id)?;
        if let Some(deadline) = waiter.deadline {
            self.deadlines.remove(&(deadline, id));
        }
        if let Some(ids) = self.by_conn.get_mut(&waiter.ticket.conn) {
            ids.remove(&id);
            if ids.is_empty() {
                self.by_conn.remove(&waiter.ticket.conn);
            }
        }
        Some(waiter)
    }

    /// How many acquires a connection has waiting.
    pub fn of_conn(&self, conn: ConnId) -> usize {
        self.by_conn.get(&conn).map_or(0, HashSet::len)
    }

    /// The waiters of a connection, in arrival order.
    pub fn ids_of_conn(&self, conn: ConnId) -> Vec<WaiterId> {
        let mut ids: Vec<WaiterId> = self
            .by_conn
            .get(&conn)
            .map(|ids| ids.iter().copied().collect())
            .unwrap_or_default();
        ids.sort_unstable();
        ids
    }

    /// The waiters `select` picks, in arrival order.
    pub fn ids_where(&self, mut select: impl FnMut(&Waiter) -> bool) -> Vec<WaiterId> {
        let mut ids: Vec<WaiterId> = self
            .by_id
            .iter()
            .filter(|(_, w)| select(w))
            .map(|(&id, _)| id)
            .collect();
        ids.sort_unstable();
        ids
    }

    pub fn next_deadline(&self) -> Option<Instant> {
        self.deadlines.first().map(|&(at, _)| at)
    }

    /// A waiter whose deadline has passed at `now`, earliest first.
    pub fn first_expired(&self, now: Instant) -> Option<WaiterId> {
        self.deadlines
            .first()
            .filter(|&&(at, _)| at <= now)
            .map(|&(_, id)| id)
    }

    pub fn len(&self) -> usize {
        self.by_id.len()
    }
}
