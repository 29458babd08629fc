//! What the broker shows: every budget for `pacer status`, totals for the service manager.

use std::time::Instant;

use pacer_protocol::message::BudgetStatus;

use super::Broker;

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
            .map(|(b, budget)| BudgetStatus {
                budget: budget.id(),
                limits: budget.limits_snapshot(),
                available: budget.available(now),
                in_flight: budget.in_flight(),
                waiting: budget.waiting() as u32,
                paused_until: to_wall(budget.paused_until()),
                overloaded_until: to_wall(self.gate(b)),
                granted: budget.granted(),
                rate_limited: budget.rate_limited_count(),
            })
            .collect();
        out.sort_by(|a, b| a.budget.cmp(&b.budget));
        out
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
