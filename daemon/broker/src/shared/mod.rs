//! Budgets shared with the daemons of other machines (through Redis, which the I/O layer
//! speaks; nothing here does I/O).
//!
//! While shared, a budget's buckets, pause, in-flight slots, overload backoff and lockouts live
//! in the store; what stays here is each budget's fair queue and what the store cannot know
//! (first contact, the local view of pauses). The broker says what it needs and the I/O layer
//! brings the answer back:
//!
//! - [`Output::Claim`](crate::Output::Claim): capacity for the head of a queue (and its
//!   organization's, for a workspace). One claim per budget is out at a time;
//!   [`Broker::claim_answered`](crate::Broker::claim_answered) grants the head, or holds the
//!   budget until the store says it has refilled enough (or an event comes).
//! - [`Output::Shared`](crate::Output::Shared): what settles in the store ([`SharedOp::Settle`], also for capacity
//!   claimed for a waiter that left before the answer came), what other daemons must hear
//!   ([`SharedOp::Publish`]: pauses, lifts, backoffs, lockouts, links), and what was spent from a
//!   local share while the store was away ([`SharedOp::Charge`]).
//! - [`Broker::apply_shared`](crate::Broker::apply_shared) takes in what other daemons
//!   published (`events` checks it first).
//!
//! When the store is unreachable, [`Broker::set_sharing`](crate::Broker::set_sharing) puts the broker on a local share: every
//! budget's limits (and in-flight caps) divided by the number of daemons, its buckets starting
//! from its share of what the store last said was left; back in the store, what was spent
//! meanwhile is charged there.
//!
//! - this file: the broker's side of sharing ([`Shares`]: claims out, budgets holding off, what
//!   the local share spent);
//! - `messages`: the claims, answers, store work and events that cross to the I/O layer;
//! - `events`: what other daemons published, held to this daemon's own bounds.

mod events;
mod messages;

pub use events::checked;

pub use messages::{Claim, ClaimAnswer, ClusterEvent, SharedOp, WindowsReport};

use std::collections::HashMap;
use std::time::{Duration, Instant};

use pacer_protocol::message::BudgetId;

use super::budget::{BudgetIdx, Budgets, Readiness};
use super::overload::Overloads;
use super::queue::WaiterId;
use super::{Costs, PerKind, later};

/// Where the budgets' buckets are.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Sharing {
    /// In this daemon only (no store configured).
    Alone,
    /// In the store, shared with the other daemons.
    Shared,
    /// The store is unreachable: this daemon's share of every limit, locally.
    Fallback { share: f64 },
}

/// A permit granted from the store: what settles it there.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SharedLease {
    pub claim: u64,
    pub taken_before: f64,
}

/// What settling a lease in the store needs to know of it.
#[derive(Debug, Clone, Copy)]
pub struct LeaseShare {
    pub budget: BudgetIdx,
    /// A workspace's organization budget, charged with it.
    pub parent: Option<BudgetIdx>,
    pub reserved: Costs,
    /// `None`: granted from the local share while the store was away.
    pub shared: Option<SharedLease>,
}

/// The broker's side of sharing: claims out, budgets holding off, what fallback spent.
#[derive(Debug)]
pub struct Shares {
    pub sharing: Sharing,
    next_claim: u64,
    /// Claims out: the budget and the waiter each is for.
    claims: HashMap<u64, (BudgetIdx, WaiterId)>,
    /// The budgets with a claim out.
    claiming: HashMap<BudgetIdx, u64>,
    /// Budgets the store refused, until it has refilled enough.
    retry_at: HashMap<BudgetIdx, Instant>,
    /// Per budget: what the store last said was left.
    last_levels: HashMap<BudgetId, PerKind<Option<f64>>>,
    /// Per budget: spent from the local share while the store was away.
    spent: HashMap<BudgetId, Costs>,
}

impl Shares {
    pub fn new(sharing: Sharing) -> Self {
        Shares {
            sharing,
            next_claim: 1,
            claims: HashMap::new(),
            claiming: HashMap::new(),
            retry_at: HashMap::new(),
            last_levels: HashMap::new(),
            spent: HashMap::new(),
        }
    }

    pub fn is_shared(&self) -> bool {
        self.sharing == Sharing::Shared
    }

    pub fn is_on(&self) -> bool {
        self.sharing != Sharing::Alone
    }

    /// When a budget the store refused may ask again.
    pub fn retry_at(&self, b: BudgetIdx) -> Option<Instant> {
        self.retry_at.get(&b).copied()
    }

    pub fn is_claiming(&self, b: BudgetIdx) -> bool {
        self.claiming.contains_key(&b)
    }

    /// Budget `from` was merged into `into` (a key joined its account): claims out for it are
    /// answered for `into` (its waiters moved there).
    pub fn moved(&mut self, from: BudgetIdx, into: BudgetIdx) {
        self.retry_at.remove(&from);
        for (budget, _) in self.claims.values_mut() {
            if *budget == from {
                *budget = into;
            }
        }
        if let Some(claim) = self.claiming.remove(&from) {
            self.claiming.entry(into).or_insert(claim);
        }
    }

    /// A budget leaves the table: nothing of it may linger here (its slot is reused).
    pub fn forget(&mut self, b: BudgetIdx) {
        self.retry_at.remove(&b);
        if let Some(claim) = self.claiming.remove(&b) {
            self.claims.remove(&claim);
        }
    }

    /// The claim for the head of budget `b`, if it may ask the store now: no claim is out for
    /// it, the store did not ask it to wait, and nothing this daemon knows of holds it (a pause,
    /// the class's overload backoff, first contact).
    pub fn claim_head(
        &mut self,
        b: BudgetIdx,
        budgets: &Budgets,
        overloads: &Overloads,
        now: Instant,
    ) -> Option<Claim> {
        if self.is_claiming(b) || self.retry_at(b).is_some_and(|at| at > now) {
            return None;
        }
        self.retry_at.remove(&b);
        let budget = &budgets[b];
        let (waiter, cost) = budget.head()?;
        let gate = overloads.gate(budget.class());
        if budget.local_readiness(gate, now) != Readiness::Now {
            return None;
        }
        let id = self.next_claim;
        self.next_claim += 1;
        self.claims.insert(id, (b, waiter));
        self.claiming.insert(b, id);
        let parent = budget
            .parent()
            .map(|p| (budgets[p].id(), budgets[p].limits()));
        Some(Claim {
            id,
            budget: budget.id(),
            cost,
            limits: budget.limits(),
            parent,
            class: budget.class().to_string(),
        })
    }

    /// What the store's `answer` for budget `b` says of it: the limits it knows, what is left
    /// (mirrored here), or when to ask again — every daemon refused would ask again at the same
    /// moment; the store's turns decide who gets the refill, and a little jitter (from
    /// `entropy`, this daemon's own clock) keeps them from all asking in the same instant.
    pub fn heard(
        &mut self,
        b: BudgetIdx,
        answer: &ClaimAnswer,
        budgets: &mut Budgets,
        entropy: u32,
        now: Instant,
    ) {
        match answer {
            ClaimAnswer::Granted { levels, limits, .. } => {
                budgets[b].learn_all(limits, now);
                budgets[b].mirror(*levels, now);
                self.last_levels.insert(budgets[b].id(), *levels);
            }
            ClaimAnswer::Refused { wait, limits } => {
                budgets[b].learn_all(limits, now);
                let spread = (*wait / 4).min(Duration::from_millis(40)).as_micros() as u32;
                let jitter = Duration::from_micros(u64::from(entropy % spread.max(1)));
                let retry = (*wait).max(Duration::from_millis(1)) + jitter;
                self.retry_at.insert(b, later(now, retry));
            }
            ClaimAnswer::LockedOut { .. } | ClaimAnswer::Unavailable => {}
        }
    }

    /// Gives back capacity claimed for a waiter of budget `b` that left before the answer came:
    /// `reserved`, unused.
    pub fn unused(
        budgets: &Budgets,
        b: BudgetIdx,
        claim: u64,
        reserved: Costs,
        taken_before: f64,
    ) -> SharedOp {
        SharedOp::Settle {
            budget: budgets[b].id(),
            parent: budgets[b].parent().map(|p| budgets[p].id()),
            claim,
            reserved,
            used: Costs::default(),
            taken_before: Some(taken_before),
        }
    }

    /// Claim `id` was answered: the budget and the waiter it was for.
    pub fn answered(&mut self, id: u64) -> Option<(BudgetIdx, WaiterId)> {
        let (b, waiter) = self.claims.remove(&id)?;
        if self.claiming.get(&b) == Some(&id) {
            self.claiming.remove(&b);
        }
        Some((b, waiter))
    }

    /// Budget `b` may ask the store again at once (it freed, or learned, something).
    pub fn ask_again(&mut self, b: BudgetIdx) {
        self.retry_at.remove(&b);
    }

    /// What the store last said is left of budget `id` (the local share starts from it).
    pub fn last_levels(&self, id: &BudgetId) -> Option<PerKind<Option<f64>>> {
        self.last_levels.get(id).copied()
    }

    /// Moves to `sharing`. Claims out when the store goes away will not be answered (their heads
    /// are served locally instead); back in the store, what the local share spent is charged
    /// there (the store work returned).
    pub fn switch(&mut self, sharing: Sharing) -> Vec<SharedOp> {
        self.sharing = sharing;
        match sharing {
            Sharing::Fallback { .. } => {
                self.claims.clear();
                self.claiming.clear();
                self.retry_at.clear();
                Vec::new()
            }
            Sharing::Alone => Vec::new(),
            Sharing::Shared => std::mem::take(&mut self.spent)
                .into_iter()
                .filter(|(_, spent)| *spent != Costs::default())
                .map(|(budget, spent)| SharedOp::Charge { budget, spent })
                .collect(),
        }
    }

    /// A lease settles: in the store, its reservation adjusted to `used` (`None`: given back
    /// unused, bounded by what the store had taken before it); granted from the local share
    /// while the store was away, what it used is noted against what it reserved.
    pub fn settle(
        &mut self,
        lease: LeaseShare,
        used: Option<Costs>,
        budgets: &Budgets,
    ) -> Option<SharedOp> {
        let (id, reserved) = (budgets[lease.budget].id(), &lease.reserved);
        let Some(shared) = lease.shared else {
            match used {
                Some(used) => {
                    self.spend(&id, &used.minus(reserved), false);
                    self.spend(&id, &reserved.minus(&used), true);
                }
                None => self.spend(&id, reserved, true),
            }
            return None;
        };
        Some(SharedOp::Settle {
            budget: id,
            parent: lease.parent.map(|p| budgets[p].id()),
            claim: shared.claim,
            reserved: lease.reserved,
            used: used.unwrap_or_default(),
            taken_before: used.is_none().then_some(shared.taken_before),
        })
    }

    /// Notes spending from the local share (fallback only).
    pub fn spend(&mut self, budget: &BudgetId, amount: &Costs, refund: bool) {
        if !matches!(self.sharing, Sharing::Fallback { .. }) {
            return;
        }
        let spent = self.spent.entry(budget.clone()).or_default();
        *spent = if refund {
            spent.minus(amount)
        } else {
            spent.plus(amount)
        };
    }
}
