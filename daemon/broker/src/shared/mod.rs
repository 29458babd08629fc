//! Budgets shared with the daemons of other machines (through Redis, which the I/O layer
//! speaks; nothing here does I/O).
//!
//! While shared, a budget's buckets, pause, in-flight slots, overload backoff and lockouts live
//! in the store; what stays here is each budget's fair queue and what the store cannot know
//! (first contact, the local view of pauses). The broker says what it needs and the I/O layer
//! brings the answer back:
//!
//! - [`Output::Claim`]: capacity for the head of a queue (and its organization's, for a
//!   workspace). One claim per budget is out at a time; [`Broker::claim_answered`] grants the
//!   head, or holds the budget until the store says it has refilled enough (or an event comes).
//! - [`Output::Shared`]: what settles in the store ([`SharedOp::Settle`], also for capacity
//!   claimed for a waiter that left before the answer came), what other daemons must hear
//!   ([`SharedOp::Publish`]: pauses, lifts, backoffs, lockouts, links), and what was spent from a
//!   local share while the store was away ([`SharedOp::Charge`]).
//! - [`Broker::apply_shared`] takes in what other daemons published.
//!
//! When the store is unreachable, [`Broker::set_sharing`] puts the broker on a local share: every
//! budget's limits (and in-flight caps) divided by the number of daemons, its buckets starting
//! from its share of what the store last said was left; back in the store, what was spent
//! meanwhile is charged there.
//!
//! - `messages`: the claims, answers, store work and events that cross to the I/O layer;
//! - `events`: what other daemons published, taken in.

mod events;
mod messages;

pub use messages::{Claim, ClaimAnswer, ClusterEvent, SharedOp, WindowReport, WindowsReport};

use std::collections::HashMap;
use std::time::{Duration, Instant};

use pacer_protocol::LimitKind;
use pacer_protocol::message::BudgetId;

use super::budget::Readiness;
use super::budgets::BudgetIdx;
use super::lockouts::Lockout;
use super::queue::WaiterId;
use super::{Broker, Costs, LimitSet, Output, PerKind, later};

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

fn millis(d: Duration) -> u64 {
    d.as_millis().min(u128::from(u64::MAX)) as u64
}

impl Broker {
    pub fn sharing(&self) -> Sharing {
        self.shares.sharing
    }

    /// Asks the store for the head of budget `b`, if it is ready as far as this daemon can
    /// tell (no pause, backoff or first contact holding it) and no claim is out for it.
    pub(super) fn serve_shared(&mut self, b: BudgetIdx, now: Instant) {
        if self.shares.is_claiming(b) || self.shares.retry_at(b).is_some_and(|at| at > now) {
            return;
        }
        self.shares.retry_at.remove(&b);
        let Some((waiter, cost)) = self.budgets[b].head() else {
            return;
        };
        let gate = self.overload_gate(b);
        if self.budgets[b].local_readiness(gate, now) != Readiness::Now {
            return;
        }
        let id = self.shares.next_claim;
        self.shares.next_claim += 1;
        self.shares.claims.insert(id, (b, waiter));
        self.shares.claiming.insert(b, id);
        let budget = &self.budgets[b];
        let parent = budget
            .parent()
            .map(|p| (self.budgets[p].id(), self.budgets[p].limits()));
        self.out.push(Output::Claim(Claim {
            id,
            budget: budget.id(),
            cost,
            limits: budget.limits(),
            parent,
            class: budget.class().to_string(),
        }));
    }

    /// The store's answer to claim `id`.
    pub fn claim_answered(&mut self, now: Instant, id: u64, answer: ClaimAnswer) -> Vec<Output> {
        let Some((b, waiter)) = self.shares.claims.remove(&id) else {
            return self.take_output();
        };
        if self.shares.claiming.get(&b) == Some(&id) {
            self.shares.claiming.remove(&b);
        }
        // The waiter may have moved (its key joined an account) or left.
        let current = self.waiters.get(waiter).map(|w| w.budget);
        match answer {
            ClaimAnswer::Granted {
                taken_before,
                levels,
                limits,
            } => {
                let budget_id = self.budgets[b].id();
                self.learn_shared(b, limits, now);
                self.budgets[b].mirror(levels, now);
                self.shares.last_levels.insert(budget_id.clone(), levels);
                let at_head =
                    current.is_some_and(|c| self.budgets[c].head().map(|h| h.0) == Some(waiter));
                match current {
                    Some(c) if at_head => {
                        let lease = SharedLease {
                            claim: id,
                            taken_before,
                        };
                        self.grant_waiter(c, waiter, Some(lease), now);
                    }
                    _ => {
                        // Its waiter left: the capacity goes back, unused.
                        let reserved = self.claim_cost(b, waiter);
                        let parent = self.budgets[b].parent().map(|p| self.budgets[p].id());
                        self.out.push(Output::Shared(SharedOp::Settle {
                            budget: budget_id,
                            parent,
                            claim: id,
                            reserved,
                            used: Costs::default(),
                            taken_before: Some(taken_before),
                        }));
                    }
                }
            }
            ClaimAnswer::Refused { wait, limits } => {
                self.learn_shared(b, limits, now);
                // Every daemon refused would ask again at the same moment; the store's turns
                // decide who gets the refill, and a little jitter (from this daemon's own clock)
                // keeps them from all asking in the same instant.
                let entropy = now.duration_since(self.time_base.instant).subsec_nanos();
                let spread = (wait / 4).min(Duration::from_millis(40)).as_micros() as u32;
                let jitter = Duration::from_micros(u64::from(entropy % spread.max(1)));
                let retry = wait.max(Duration::from_millis(1)) + jitter;
                self.shares.retry_at.insert(b, later(now, retry));
            }
            ClaimAnswer::LockedOut { for_, reason } => {
                let owner = self.budgets[b].owner().clone();
                let lockout = Lockout {
                    until: later(now, for_),
                    reason,
                    rejection: None,
                };
                self.lock_out(&owner, None, lockout, now);
            }
            ClaimAnswer::Unavailable => {}
        }
        if let Some(c) = current {
            self.serve(c, now);
        }
        self.take_output()
    }

    /// What a claim asked for (its waiter's cost, if it is still known).
    fn claim_cost(&self, b: BudgetIdx, waiter: WaiterId) -> Costs {
        self.waiters
            .get(waiter)
            .map(|w| w.cost)
            .unwrap_or_else(|| self.budgets[b].head().map(|h| h.1).unwrap_or_default())
    }

    /// Limits the store knows that this daemon did not.
    fn learn_shared(&mut self, b: BudgetIdx, limits: LimitSet, now: Instant) {
        for kind in LimitKind::ALL {
            if let Some(limit) = limits.get(kind) {
                self.budgets[b].learn(kind, limit, now);
            }
        }
    }

    /// Moves between the store and a local share. Back in the store, what the local share spent
    /// is charged there.
    pub fn set_sharing(&mut self, now: Instant, sharing: Sharing) -> Vec<Output> {
        let before = self.shares.sharing;
        if before == sharing {
            return self.take_output();
        }
        self.shares.sharing = sharing;
        match sharing {
            Sharing::Fallback { share } => {
                // Claims out will not be answered: the heads are served locally instead.
                self.shares.claims.clear();
                self.shares.claiming.clear();
                self.shares.retry_at.clear();
                for b in self.budgets.indices() {
                    let id = self.budgets[b].id();
                    let last = self.shares.last_levels.get(&id).copied();
                    self.budgets[b].set_share(share, last, now);
                }
            }
            Sharing::Shared | Sharing::Alone => {
                for b in self.budgets.indices() {
                    self.budgets[b].set_share(1.0, None, now);
                }
                if sharing == Sharing::Shared {
                    for (budget, spent) in std::mem::take(&mut self.shares.spent) {
                        if spent != Costs::default() {
                            self.out
                                .push(Output::Shared(SharedOp::Charge { budget, spent }));
                        }
                    }
                }
            }
        }
        self.serve_all(now);
        self.take_output()
    }

    /// Tells the store and the other daemons, while sharing (not what came from them).
    pub(super) fn publish(&mut self, event: ClusterEvent) {
        self.for_store(SharedOp::Publish(event));
    }

    /// Work for the store that this daemon's decisions cause, while sharing (what other daemons
    /// told it they have done in the store already: [`Broker::apply_shared`] drops it).
    pub(super) fn for_store(&mut self, op: SharedOp) {
        if self.shares.is_on() {
            self.out.push(Output::Shared(op));
        }
    }

    /// A lease granted from the store is settled there: its reservation adjusted to `used`
    /// (`None`: given back unused, bounded by what the store had taken before it).
    pub(super) fn settle_shared(&mut self, lease: LeaseShare, used: Option<Costs>) {
        let id = self.budgets[lease.budget].id();
        let reserved = lease.reserved;
        let Some(shared) = lease.shared else {
            if let Some(used) = used {
                // Spent from the local share (fallback): the difference from the reservation.
                self.shares.spend(&id, &used.minus(&reserved), false);
                self.shares.spend(&id, &reserved.minus(&used), true);
            } else {
                self.shares.spend(&id, &reserved, true);
            }
            return;
        };
        self.out.push(Output::Shared(SharedOp::Settle {
            budget: id,
            parent: lease.parent.map(|p| self.budgets[p].id()),
            claim: shared.claim,
            reserved,
            used: used.unwrap_or_default(),
            taken_before: used.is_none().then_some(shared.taken_before),
        }));
    }

    /// A pause this daemon starts, for everyone.
    pub(super) fn publish_pause(
        &mut self,
        b: BudgetIdx,
        until: Instant,
        reason: &str,
        drain: Option<Vec<LimitKind>>,
        now: Instant,
    ) {
        let for_ms = millis(until.saturating_duration_since(now));
        let budget = self.budgets[b].id();
        self.publish(ClusterEvent::Pause {
            budget,
            for_ms,
            reason: reason.to_owned(),
            drain,
        });
    }
}
