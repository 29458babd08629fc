//! What the broker shows: every budget for `pacer status`, totals for the service manager.

use std::time::Instant;

use pacer_protocol::BudgetOwner;
use pacer_protocol::message::{AccountStatus, BudgetStatus, LockoutStatus, PauseCause};

use super::Broker;
use super::budget::Budget;
use super::owner::Owner;

/// Totals from [`Broker::summary`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Summary {
    pub budgets: usize,
    pub in_flight: usize,
    pub waiting: usize,
    pub paused: usize,
}

impl Broker {
    /// A snapshot of every budget, sorted by key and class.
    pub fn status(&self, now: Instant) -> Vec<BudgetStatus> {
        let to_wall = |at: Option<Instant>| {
            at.filter(|&at| at > now)
                .map(|at| self.time_base.to_wall(at))
        };
        let mut out: Vec<BudgetStatus> = self
            .budgets
            .iter()
            .map(|(b, budget)| {
                let (paused_until, cause, pause_reason) = self.pause_of(budget, now);
                let paused = paused_until.is_some_and(|at| at > now);
                let tally = budget.tally();
                BudgetStatus {
                    budget: budget.id(),
                    limits: budget.limits_snapshot(),
                    available: budget.available(now),
                    in_flight: budget.in_flight(),
                    waiting: budget.waiting() as u32,
                    paused_until: to_wall(paused_until),
                    pause_reason: paused.then_some(pause_reason),
                    pause_cause: paused.then_some(cause),
                    overloaded_until: to_wall(self.overload_gate(b)),
                    waiting_by_priority: budget.waiting_by_priority(),
                    drain_estimate: budget.drain_estimate(self.overload_gate(b), now),
                    granted: tally.granted,
                    rate_limited: tally.rate_limited,
                    throttled: tally.throttled,
                    overloaded: tally.overloaded,
                    refused: tally.refused,
                    input_tokens: tally.input_tokens,
                    output_tokens: tally.output_tokens,
                    waits: tally.waits.clone(),
                }
            })
            .collect();
        out.sort_by(|a, b| a.budget.cmp(&b.budget));
        out
    }

    /// Until when, and why, a budget lets nothing through: its own pause, or a lockout of its
    /// owner, whichever ends later.
    fn pause_of(&self, budget: &Budget, now: Instant) -> (Option<Instant>, PauseCause, String) {
        let own = budget.paused_until().map(|until| {
            let reason = budget.pause_reason().to_owned();
            (until, budget.pause_cause(), reason)
        });
        let locked = self
            .lockouts
            .covering(budget.owner(), budget.class(), now)
            .map(|lockout| (lockout.until, PauseCause::Lockout, lockout.reason.clone()));
        match own
            .into_iter()
            .chain(locked)
            .max_by_key(|(until, _, _)| *until)
        {
            Some((until, cause, reason)) => (Some(until), cause, reason),
            None => (None, PauseCause::RateLimited, String::new()),
        }
    }

    /// Every account, and every lone key with subscription windows or a lockout, sorted.
    pub fn accounts(&self, now: Instant) -> Vec<AccountStatus> {
        let mut owners = self.accounts.owners();
        owners.extend(self.lockouts.iter().map(|(owner, _, _)| owner.clone()));
        owners
            .into_iter()
            .map(|owner| self.account(&owner, now))
            .collect()
    }

    /// One account as `pacer status` shows it: its keys, windows (with pacer's estimates,
    /// ceilings and forecast) and lockouts.
    pub fn account(&self, owner: &Owner, now: Instant) -> AccountStatus {
        let owner = owner.clone();
        let subscription = self.accounts.subscription(&owner);
        AccountStatus {
            parent: self
                .accounts
                .parent_of(&owner)
                .map(|p| BudgetOwner::Account(p.to_string())),
            keys: self.accounts.keys_of(&owner),
            windows: subscription
                .map(|s| {
                    s.windows
                        .iter()
                        .map(|(name, w)| self.window_status(&owner, name, w, now))
                        .collect()
                })
                .unwrap_or_default(),
            unified_status: subscription
                .and_then(|s| s.status.as_ref())
                .map(|s| s.as_str().to_owned()),
            overage: subscription
                .and_then(|s| s.overage.as_ref())
                .map(|s| s.as_str().to_owned()),
            overage_in_use: subscription.and_then(|s| s.overage_in_use),
            lockouts: self
                .lockouts
                .of(&owner)
                .filter(|(_, lockout)| lockout.until > now)
                .map(|(scope, lockout)| LockoutStatus {
                    model_class: scope.as_deref().map(str::to_owned),
                    until: self.time_base.to_wall(lockout.until),
                    reason: lockout.reason.clone(),
                })
                .collect(),
            owner: owner.to_wire(),
        }
    }

    /// Totals over every budget, for the service manager's status line.
    pub fn summary(&self, now: Instant) -> Summary {
        let budgets = || self.budgets.iter().map(|(_, budget)| budget);
        Summary {
            budgets: self.budgets.len(),
            in_flight: budgets().map(|b| b.in_flight() as usize).sum(),
            waiting: self.waiters.len(),
            paused: budgets()
                .filter(|b| b.paused_until().is_some_and(|until| until > now))
                .count(),
        }
    }

    /// Leases held by live connections (detached leases, which outlive them, not counted).
    pub fn leases_in_flight(&self) -> usize {
        self.leases.owned()
    }

    /// The number of waiters and leases, for logs and tests.
    pub fn counts(&self) -> (usize, usize) {
        (self.waiters.len(), self.leases.len())
    }
}
