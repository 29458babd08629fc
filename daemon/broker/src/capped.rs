//! Clients past their cap (`--max-share`): their calls leave the queue, so that they hold up
//! nobody else of their priority, and come back when the window that holds them resets (or are
//! refused at their deadline, told when). What each window's cap allows is the `windows`
//! table's (`windows::caps`).

use std::sync::Arc;
use std::time::Instant;

use pacer_protocol::message::{Acquire, BASIS_POINTS, ClientStatus};

use super::Broker;
use super::budget::BudgetIdx;
use super::owner::Owner;
use super::queue::WaiterId;
use super::windows::Hold;

/// A client's cap: what it asked for, else what the configuration names for it; `None` when
/// uncapped (or capped at the whole window).
pub(crate) fn max_share_of(req: &Acquire, config: &crate::WindowsConfig) -> Option<f64> {
    let asked = req
        .max_share_bp
        .map(|bp| f64::from(bp.min(BASIS_POINTS)) / f64::from(BASIS_POINTS));
    asked
        .or_else(|| config.max_share_of(&req.client_id))
        .filter(|share| *share < 1.0)
}

/// Why an acquire's cap is refused, if it is.
pub(crate) fn invalid_cap(req: &Acquire) -> Option<String> {
    match req.max_share_bp {
        Some(0) => Some("a max share of 0 would let no call through: give more than 0 %".into()),
        Some(bp) if bp > BASIS_POINTS => Some(format!(
            "a max share of {} % is more than the whole window: give at most 100 %",
            f64::from(bp) / 100.0
        )),
        _ => None,
    }
}

impl Broker {
    /// Whether a call of `client`, capped at `max_share`, on budget `b` is held by its cap now.
    pub(crate) fn cap_hold(
        &self,
        b: BudgetIdx,
        (client, max_share): (&str, Option<f64>),
        now: Instant,
    ) -> Option<Hold> {
        let max_share = max_share?;
        let budget = &self.budgets[b];
        self.windows.cap_hold(
            (budget.owner(), budget.class()),
            (client, max_share),
            &self.time_base,
            now,
        )
    }

    /// Whether waiter `id` of budget `b` is held by its client's cap.
    pub(crate) fn waiter_capped(&self, b: BudgetIdx, id: WaiterId, now: Instant) -> Option<Hold> {
        let w = self.waiters.get(id)?;
        self.cap_hold(b, (&w.client, w.max_share), now)
    }

    /// Takes the queue's capped heads out of budget `b`'s queue, until its head is a call its
    /// cap lets go (or none is left).
    pub(crate) fn park_capped_heads(&mut self, b: BudgetIdx, now: Instant) {
        while let Some((id, _)) = self.budgets[b].head() {
            if self.waiter_capped(b, id, now).is_none() {
                return;
            }
            self.budgets[b].pop_head();
            self.capped.insert(id);
        }
    }

    /// Capped calls whose hold ended (their window reset, their share was learned smaller) go
    /// back into their queues.
    pub(crate) fn unpark_capped(&mut self, now: Instant) {
        let free: Vec<(WaiterId, BudgetIdx)> = self
            .capped
            .iter()
            .filter_map(|&id| Some((id, self.waiters.get(id)?.budget)))
            .filter(|&(id, b)| self.waiter_capped(b, id, now).is_none())
            .collect();
        for (id, b) in free {
            self.capped.remove(&id);
            let Some(w) = self.waiters.get_mut(id) else {
                continue;
            };
            w.mark = self.budgets[b].enqueue(id, &w.client, w.priority, w.cost);
            self.serve(b, now);
        }
    }

    /// When the first capped call's hold ends by itself (its window resets).
    pub(crate) fn next_unparking(&self, now: Instant) -> Option<Instant> {
        self.capped
            .iter()
            .filter_map(|&id| {
                let b = self.waiters.get(id)?.budget;
                self.waiter_capped(b, id, now)?.until
            })
            .min()
    }

    /// What `status`'s client (capped) used of its windows, and whether its cap holds it now.
    pub(crate) fn cap_status(&self, status: &mut ClientStatus, now: Instant) {
        let Some(budget) = &status.budget else {
            return;
        };
        let (owner, class) = (
            Owner::from_wire(&budget.owner),
            Arc::from(budget.model_class.as_str()),
        );
        let wall = self.time_base.to_wall(now);
        status.window_use = self.windows.cap_use(&owner, &status.id, wall);
        status.capped = status.max_share.is_some_and(|max_share| {
            let client = (status.id.as_str(), max_share);
            let hold = self
                .windows
                .cap_hold((&owner, &class), client, &self.time_base, now);
            hold.is_some()
        });
    }

    /// A granted call of a capped client: counted toward its account's windows.
    pub(crate) fn count_capped(&mut self, b: BudgetIdx, client: &Arc<str>, now: Instant) {
        let (owner, class): (Owner, Arc<str>) = (
            self.budgets[b].owner().clone(),
            self.budgets[b].class().clone(),
        );
        let clock = &self.time_base;
        self.windows
            .count_capped((&owner, &class), client, clock, now);
    }
}
