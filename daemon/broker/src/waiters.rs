//! Acquires waiting in a budget's queue: who they are, when they give up, and which connection
//! they belong to. (Their order of service is the budget's [`super::queue::FairQueue`].)

use std::collections::{BTreeSet, HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use pacer_protocol::message::Acquire;
use pacer_protocol::{KeyFingerprint, Priority};

use super::budget::{BudgetIdx, Budgets};
use super::lockouts::Scope;
use super::owner::Owner;
use super::queue::{Mark, WaiterId};
use super::time::later;
use super::{
    ConnId, Costs, MAX_MODEL_LEN, MAX_NAME_LEN, MAX_WAITERS, MAX_WAITERS_PER_CONNECTION, Ticket,
};

/// Why an acquire's arguments are refused, if they are.
pub fn invalid(req: &Acquire) -> Option<String> {
    if req.model.trim().is_empty() {
        return Some("the model name is empty".into());
    }
    if req.model.len() > MAX_MODEL_LEN {
        return Some(format!(
            "the model name is {} bytes long; at most {MAX_MODEL_LEN} are taken",
            req.model.len()
        ));
    }
    if req.client_id.len() > MAX_NAME_LEN {
        return Some(format!(
            "the client id must be at most {MAX_NAME_LEN} bytes"
        ));
    }
    if req.detached_ttl.is_some_and(|ttl| ttl.is_zero()) {
        return Some("a detached permit needs a TTL above zero".into());
    }
    super::holds::invalid_cap(req)
}

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
    /// Its client's cap on each window (`--max-share`), 0 to 1.
    pub max_share: Option<f64>,
}

impl Waiter {
    /// What acquire `req` is once it is taken: budget `b`'s, reserving `cost` when granted,
    /// believed up to `bound`, for `session`.
    pub fn new(
        ticket: Ticket,
        req: &Acquire,
        session: Option<Arc<str>>,
        (b, cost, bound): (BudgetIdx, Costs, Costs),
        now: Instant,
    ) -> Waiter {
        Waiter {
            ticket,
            key: req.key,
            budget: b,
            client: Arc::from(req.client_id.as_str()),
            priority: req.priority,
            cost,
            bound,
            session,
            mark: Mark::default(),
            deadline: req.deadline.map(|d| later(now, d)),
            detached_ttl: req.detached_ttl,
            enqueued_at: now,
            max_share: None,
        }
    }
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

    /// The budgets any waiter is for.
    pub fn budgets(&self) -> BTreeSet<BudgetIdx> {
        self.by_id.values().map(|w| w.budget).collect()
    }

    /// Budget `source` was merged into `target`: its waiters join `target`'s queue in arrival
    /// order (each client's line stays first come, first served) — but those `parked` out of
    /// the queue (a session waiting to start, a client past its cap), which only change budget
    /// and join a queue when they are let go.
    pub fn move_budget(
        &mut self,
        (source, target): (BudgetIdx, BudgetIdx),
        budgets: &mut Budgets,
        parked: impl Fn(WaiterId) -> bool,
    ) {
        for id in self.ids_where(|w| w.budget == source) {
            let waiter = self.by_id.get_mut(&id).expect("listed");
            waiter.budget = target;
            if !parked(id) {
                waiter.mark =
                    budgets[target].enqueue(id, &waiter.client, waiter.priority, waiter.cost);
            }
        }
    }

    /// The waiters of `owner`'s budgets a lockout of `scope` covers (every class, or one).
    pub fn covered_by(&self, owner: &Owner, scope: &Scope, budgets: &Budgets) -> Vec<WaiterId> {
        self.ids_where(|w| {
            let budget = &budgets[w.budget];
            budget.owner() == owner && scope.as_deref().is_none_or(|s| s == &**budget.class())
        })
    }

    /// Why another acquire of connection `conn` may not wait, if it may not.
    pub fn full_for(&self, conn: ConnId) -> Option<String> {
        if self.by_conn.get(&conn).map_or(0, HashSet::len) >= MAX_WAITERS_PER_CONNECTION {
            return Some(format!(
                "this connection already has {MAX_WAITERS_PER_CONNECTION} acquires waiting, as \
                 many as one connection may"
            ));
        }
        (self.len() >= MAX_WAITERS).then(|| {
            format!(
                "pacerd already has {MAX_WAITERS} acquires waiting, as many as it takes; try \
                 again shortly"
            )
        })
    }

    /// Per client: how many of its acquires wait, and since when the oldest has.
    pub fn by_client(&self) -> HashMap<&str, (u32, Instant)> {
        let mut waiting: HashMap<&str, (u32, Instant)> = HashMap::new();
        for waiter in self.by_id.values() {
            let entry = waiting
                .entry(&*waiter.client)
                .or_insert((0, waiter.enqueued_at));
            entry.0 += 1;
            entry.1 = entry.1.min(waiter.enqueued_at);
        }
        waiting
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
