//! Granted permits not yet settled: what each reserved, who holds it, and when a detached one
//! settles by itself.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::sync::Arc;
use std::time::Instant;

use pacer_protocol::message::{BudgetId, Event, LeaseId, SettledAs};
use pacer_protocol::{KeyFingerprint, LimitKind};

use super::budget::{BudgetIdx, Budgets, Charged, Reservation};
use super::time::later;
use super::waiters::Waiter;
use super::{BrokerError, ConnId, Costs, MAX_DETACHED_LEASES, MAX_LEASES_PER_CONNECTION, PerKind};

/// A granted permit that has not been settled yet.
#[derive(Debug)]
pub struct Lease {
    /// The key the call is made with: its answer may tie the key to an account.
    pub key: KeyFingerprint,
    pub budget: BudgetIdx,
    /// The connection whose closing settles the lease; `None` for a detached lease.
    pub owner: Option<ConnId>,
    /// When a detached lease settles by itself.
    pub expires: Option<Instant>,
    /// When it was granted: a call in flight when the daemon died is believed over after
    /// [`LEASE_MAX_AGE`].
    pub granted_at: Instant,
    /// What was reserved, to be refunded or charged when the real usage is reported.
    pub reservation: Reservation,
    /// Per kind: no bucket existed when this was granted (the limit was unknown), so the call
    /// went out unmetered. While such calls are in flight, a new bucket is still calibrating.
    pub unmetered: PerKind<bool>,
    /// The budget's first call out: if it settles without a word from the API, the next one
    /// goes instead.
    pub probe: bool,
    /// For a workspace's call: its organization's budget, and what was reserved there.
    pub parent: Option<(BudgetIdx, Reservation)>,
    /// Who holds it, and how long it waited for its grant (for `pacer watch`, `pacer top`).
    pub client: Arc<str>,
    pub waited: std::time::Duration,
    /// Granted from the shared store: what settles it there.
    pub shared: Option<super::shared::SharedLease>,
    /// The most its report is believed to have used (see [`super::cost::usage_bound`]).
    pub bound: super::Costs,
    /// Counted in flight toward its account's windows (the account and the class it was
    /// counted under), until its answer comes.
    pub window_call: Option<(super::owner::Owner, Arc<str>)>,
    /// The Claude Code session it is for, if known.
    pub session: Option<Arc<str>>,
}

impl Lease {
    /// The lease granted to `waiter`: `reservation` taken (from the store, with `shared`), its
    /// organization's share `parent`, the budget's first contact if `probe`.
    pub fn new(
        waiter: Waiter,
        reservation: Reservation,
        probe: bool,
        parent: Option<(BudgetIdx, Reservation)>,
        shared: Option<super::shared::SharedLease>,
        now: Instant,
    ) -> Lease {
        let expires = waiter.detached_ttl.map(|ttl| later(now, ttl));
        Lease {
            key: waiter.key,
            budget: waiter.budget,
            owner: expires.is_none().then_some(waiter.ticket.conn),
            expires,
            granted_at: now,
            reservation,
            unmetered: reservation.charged.map(|_, charged| !charged),
            probe,
            parent,
            client: waiter.client,
            waited: now.saturating_duration_since(waiter.enqueued_at),
            shared,
            bound: waiter.bound,
            window_call: None,
            session: waiter.session,
        }
    }

    /// The event telling that it settled on `budget` as `outcome`, with these tokens.
    pub fn settled(&self, budget: BudgetId, outcome: SettledAs, tokens: (u64, u64)) -> Event {
        Event::Settled {
            budget,
            client_id: self.client.to_string(),
            outcome,
            input_tokens: tokens.0,
            output_tokens: tokens.1,
            waited: self.waited,
        }
    }

    /// What settling it in the shared store needs.
    pub fn share(&self) -> super::shared::LeaseShare {
        super::shared::LeaseShare {
            budget: self.budget,
            parent: self.parent.map(|(p, _)| p),
            reserved: self.reservation.cost,
            shared: self.shared,
        }
    }
}

/// A lease's client, for [`Lease::client`] where none is known (a lease restored from the
/// state file).
pub fn unknown_client() -> Arc<str> {
    Arc::from("(before restart)")
}

/// How long a call in flight when the daemon died is taken to hold its slot: the longest a
/// call lasts (Claude Code's and the SDKs' request timeout is 10 minutes).
pub const LEASE_MAX_AGE: std::time::Duration = std::time::Duration::from_secs(600);

#[derive(Debug)]
pub struct Leases {
    by_id: HashMap<LeaseId, Lease>,
    /// Detached leases' expiry times in time order.
    expiries: BTreeSet<(Instant, LeaseId)>,
    /// Each connection's leases, settled as "unknown outcome" when it closes.
    by_conn: HashMap<ConnId, HashSet<LeaseId>>,
    /// How many leases have an owner (read on every operation, so kept rather than counted).
    owned: usize,
    /// Never reused, even across restarts (see [`Leases::set_next`]).
    next: u64,
}

impl Leases {
    pub fn new(first: u64) -> Self {
        Self {
            by_id: HashMap::new(),
            expiries: BTreeSet::new(),
            by_conn: HashMap::new(),
            owned: 0,
            next: first.max(1),
        }
    }

    /// Records a new lease and returns its id.
    pub fn issue(&mut self, lease: Lease) -> LeaseId {
        // Lease 0 means "unpaced" to the command line: never hand it out, even after a wrap.
        let id = LeaseId(self.next);
        self.next = self.next.checked_add(1).unwrap_or(1);
        if let Some(at) = lease.expires {
            self.expiries.insert((at, id));
        }
        if let Some(owner) = lease.owner {
            self.by_conn.entry(owner).or_default().insert(id);
            self.owned += 1;
        }
        self.by_id.insert(id, lease);
        id
    }

    /// Puts back a lease from the state file under its own id (a new one if that is taken or
    /// 0).
    pub fn restore(&mut self, id: u64, lease: Lease) {
        if id == 0 || id >= 1 << 62 || self.by_id.contains_key(&LeaseId(id)) {
            self.issue(lease);
            return;
        }
        let id = LeaseId(id);
        if let Some(at) = lease.expires {
            self.expiries.insert((at, id));
        }
        self.next = self.next.max(id.0 + 1);
        self.by_id.insert(id, lease);
    }

    pub fn get(&self, id: LeaseId) -> Option<&Lease> {
        self.by_id.get(&id)
    }

    pub fn get_mut(&mut self, id: LeaseId) -> Option<&mut Lease> {
        self.by_id.get_mut(&id)
    }

    /// Takes a lease out to settle it.
    pub fn take(&mut self, id: LeaseId) -> Result<Lease, BrokerError> {
        let lease = self
            .by_id
            .remove(&id)
            .ok_or(BrokerError::UnknownLease(id))?;
        if let Some(at) = lease.expires {
            self.expiries.remove(&(at, id));
        }
        if let Some(owner) = lease.owner {
            self.owned -= 1;
            if let Some(ids) = self.by_conn.get_mut(&owner) {
                ids.remove(&id);
                if ids.is_empty() {
                    self.by_conn.remove(&owner);
                }
            }
        }
        Ok(lease)
    }

    /// Takes out every lease a connection held.
    pub fn take_conn(&mut self, conn: ConnId) -> Vec<Lease> {
        let ids = self.by_conn.remove(&conn).unwrap_or_default();
        let leases: Vec<Lease> = ids
            .into_iter()
            .filter_map(|id| self.by_id.remove(&id))
            .collect();
        self.owned -= leases.len();
        leases
    }

    /// Takes out one detached lease whose time is up at `now`, if any.
    pub fn take_expired(&mut self, now: Instant) -> Option<Lease> {
        let &(at, id) = self.expiries.first()?;
        if at > now {
            return None;
        }
        self.take(id).ok()
    }

    pub fn next_expiry(&self) -> Option<Instant> {
        self.expiries.first().map(|&(at, _)| at)
    }

    /// The leases of one budget.
    pub fn of_budget(&self, budget: BudgetIdx) -> impl Iterator<Item = (LeaseId, &Lease)> {
        self.by_id
            .iter()
            .filter(move |(_, l)| l.budget == budget)
            .map(|(&id, l)| (id, l))
    }

    pub fn of_budget_mut(&mut self, budget: BudgetIdx) -> impl Iterator<Item = &mut Lease> {
        self.by_id.values_mut().filter(move |l| l.budget == budget)
    }

    /// Leases held by live connections (detached leases, which outlive them, not counted).
    pub fn owned(&self) -> usize {
        self.owned
    }

    pub fn len(&self) -> usize {
        self.by_id.len()
    }

    /// Why connection `conn` may not hold another lease (a `detached` one, say), if it may not.
    pub fn full_for(&self, conn: ConnId, detached: bool) -> Option<String> {
        if self.by_conn.get(&conn).map_or(0, HashSet::len) >= MAX_LEASES_PER_CONNECTION {
            return Some(format!(
                "this connection already holds {MAX_LEASES_PER_CONNECTION} permits, as many as \
                 one connection may: report or release some first"
            ));
        }
        (detached && self.detached() >= MAX_DETACHED_LEASES).then(|| {
            format!(
                "pacerd already holds {MAX_DETACHED_LEASES} detached permits, as many as it \
                 takes: report or release some (`pacer report`, `pacer release`)"
            )
        })
    }

    /// Budget `source` was merged into `target`: its leases settle there.
    pub fn move_budget(&mut self, source: BudgetIdx, target: BudgetIdx) {
        for lease in self.of_budget_mut(source) {
            lease.budget = target;
        }
    }

    /// Calls of budget `b` that went out before their key was known to be a workspace's count
    /// against its organization too.
    pub fn charge_parents(&mut self, b: BudgetIdx, budgets: &mut Budgets, now: Instant) {
        if budgets[b].parent().is_none() {
            return;
        }
        for lease in self.of_budget_mut(b).filter(|lease| lease.parent.is_none()) {
            lease.parent = budgets.charge_parent(b, &lease.reservation.cost, now);
        }
    }

    /// What budget `b`'s calls in flight reserved, but for the one `answering`, and which kinds
    /// any of them could not charge (for a bucket calibrating from headers).
    pub fn in_flight_besides(&self, b: BudgetIdx, answering: Option<LeaseId>) -> (Costs, Charged) {
        let mut reserved = Costs::default();
        let mut unmetered = Charged::default();
        for (_, lease) in self.of_budget(b).filter(|(id, _)| Some(*id) != answering) {
            reserved = reserved.plus(&lease.reservation.cost);
            for (kind, left) in unmetered.iter_mut() {
                *left |= lease.unmetered[kind];
            }
        }
        (reserved, unmetered)
    }

    /// The server's `remaining`, read as lease `id`'s answer arrived, lowered these kinds of its
    /// budget to a count that holds the call's real use already.
    pub fn counted(&mut self, id: LeaseId, lowered: Charged) {
        if let Some(lease) = self.get_mut(id) {
            for kind in [LimitKind::Requests, LimitKind::InputTokens] {
                lease.reservation.counted[kind] |= lowered[kind];
            }
        }
    }

    /// Budget `b` has a new bucket of `kind`, whose level accounts for every call in flight:
    /// they are charged to it now, and settle against it like any other.
    pub fn charge_new_bucket(&mut self, b: BudgetIdx, kind: LimitKind) {
        for lease in self.of_budget_mut(b) {
            lease.reservation.charged[kind] = true;
        }
    }

    /// Leases that outlive their connection (or were restored from the state file).
    pub fn detached(&self) -> usize {
        self.by_id.len() - self.owned
    }

    /// The id the next lease will get.
    pub fn next_id(&self) -> u64 {
        self.next
    }

    /// Moves the next id forward (never back): a restored daemon continues where the last one
    /// stopped. (A damaged file's absurd counter is held far below the wrap.)
    pub fn set_next(&mut self, next: u64) {
        self.next = self.next.max(next.min(1 << 62));
    }

    pub fn iter(&self) -> impl Iterator<Item = (LeaseId, &Lease)> {
        self.by_id.iter().map(|(&id, lease)| (id, lease))
    }
}
