//! Granted permits not yet settled: what each reserved, who holds it, and when a detached one
//! settles by itself.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::sync::Arc;
use std::time::Instant;

use pacer_protocol::KeyFingerprint;
use pacer_protocol::message::LeaseId;

use super::budget::Reservation;
use super::budgets::BudgetIdx;
use super::{BrokerError, ConnId, PerKind};

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

    /// Leases held by connection `conn`.
    pub fn held_by(&self, conn: ConnId) -> usize {
        self.by_conn.get(&conn).map_or(0, HashSet::len)
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
