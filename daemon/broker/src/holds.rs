//! What holds a call up besides its budget's buckets: its account's windows (a priority's
//! ceiling), and its client's cap (`--max-share`). A call past its client's cap leaves the
//! queue, so that it holds up nobody else of its priority, and comes back when the window that
//! holds it resets (or is refused at its deadline, told when). What each window's ceilings and
//! caps allow is the `windows` table's (`windows::caps`).

use std::sync::Arc;
use std::time::{Duration, Instant};

use pacer_protocol::Priority;
use pacer_protocol::message::{Acquire, BASIS_POINTS, ClientStatus};

use super::budget::{BudgetIdx, Readiness};
use super::owner::Owner;
use super::queue::{Mark, WaiterId};
use super::windows::Hold;
use super::{Broker, Costs};

/// A client's cap: the lower of what it asked for and what the configuration names for it (a
/// client cannot loosen the operator's cap); `None` when uncapped (or capped at the whole
/// window).
pub(crate) fn max_share_of(req: &Acquire, config: &crate::WindowsConfig) -> Option<f64> {
    let asked = req
        .max_share_bp
        .map(|bp| f64::from(bp.min(BASIS_POINTS)) / f64::from(BASIS_POINTS));
    let named = config.max_share_of(&req.client_id);
    match (asked, named) {
        (Some(a), Some(n)) => Some(a.min(n)),
        (a, n) => a.or(n),
    }
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

/// Clients past their cap.
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
            if !self.park_if_capped(b, id, now) {
                return;
            }
        }
    }

    /// Takes waiter `id` out of budget `b`'s queue if its client's cap holds it; returns
    /// whether it did.
    pub(crate) fn park_if_capped(&mut self, b: BudgetIdx, id: WaiterId, now: Instant) -> bool {
        if self.waiter_capped(b, id, now).is_none() {
            return false;
        }
        let Some(w) = self.waiters.get(id) else {
            return false;
        };
        self.budgets[b].dequeue(id, &w.client, w.priority);
        self.capped.insert(id);
        true
    }

    /// Capped calls whose hold ended (their window reset, their share was learned smaller, the
    /// windows were forgotten) go back into their queues, oldest first, each looked at again
    /// after the one before was served: a reset lets go as many as the cap allows, not all.
    pub(crate) fn unpark_capped(&mut self, now: Instant) {
        let parked: Vec<WaiterId> = self.capped.iter().copied().collect();
        for id in parked {
            let Some(b) = self.waiters.get(id).map(|w| w.budget) else {
                self.capped.remove(&id);
                continue;
            };
            if self.waiter_capped(b, id, now).is_some() {
                continue;
            }
            self.capped.remove(&id);
            let Some(w) = self.waiters.get_mut(id) else {
                continue;
            };
            w.mark = self.budgets[b].enqueue(id, &w.client, w.priority, w.cost);
            self.serve(b, now);
        }
    }

    /// When the first capped call's hold ends by itself (its window resets); now, for one
    /// whose hold has ended already.
    pub(crate) fn next_unparking(&self, now: Instant) -> Option<Instant> {
        self.capped
            .iter()
            .filter_map(|&id| {
                let b = self.waiters.get(id)?.budget;
                match self.waiter_capped(b, id, now) {
                    Some(hold) => hold.until,
                    None => Some(now),
                }
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

/// What holds a call up, and for how long.
impl Broker {
    /// The moment before which budget `b` may not grant `cost`, decided outside it.
    pub(crate) fn gate(&self, b: BudgetIdx, cost: &Costs, now: Instant) -> Option<Instant> {
        self.budgets.gate(b, cost, &self.overloads, now)
    }

    /// Whether calls of `priority` on budget `b` are held by its account's windows now.
    pub(crate) fn window_hold(
        &self,
        b: BudgetIdx,
        priority: Priority,
        now: Instant,
    ) -> Option<Hold> {
        let budget = &self.budgets[b];
        let (owner, class) = (budget.owner(), budget.class());
        self.windows
            .hold(owner, class, priority, &self.time_base, now)
    }

    /// Whether waiter `id` of budget `b` is held by its account's windows.
    pub(crate) fn held_by_window(&self, b: BudgetIdx, id: WaiterId, now: Instant) -> bool {
        self.waiters
            .get(id)
            .is_some_and(|w| self.window_hold(b, w.priority, now).is_some())
    }

    /// How long a call of `priority` costing `cost` on budget `b` would still wait, and what
    /// holds it up: its account's windows, else the budget and those ahead of it in its queue
    /// (ahead of `mark`, where it joined; a newcomer's if it has not).
    pub(crate) fn holdup(
        &self,
        b: BudgetIdx,
        (priority, cost): (Priority, &Costs),
        mark: Option<Mark>,
        now: Instant,
    ) -> (Duration, String) {
        if let Some(hold) = self.window_hold(b, priority, now) {
            return self.windows.holdup(&hold, &self.time_base, now);
        }
        let (budget, gate) = (&self.budgets[b], self.gate(b, cost, now));
        let wait = match mark {
            Some(mark) => budget.waiter_wait(priority, mark, cost, gate, now),
            None => budget.newcomer_wait(priority, cost, gate, now),
        };
        let overloaded = self.overloads.gate(budget.class()).is_some();
        let text = budget.holdup_text(wait.holdup, overloaded, self.shares.is_shared());
        (wait.duration, text)
    }

    /// A window held a call of `b` until it was refused: counted for `pacer status`.
    pub(crate) fn count_window_refusal(&mut self, b: BudgetIdx, priority: Priority, now: Instant) {
        if let Some(hold) = self.window_hold(b, priority, now) {
            let owner = self.budgets[b].owner().clone();
            self.windows.count_refusal(&owner, &hold);
        }
    }

    /// Whether waiter `id` of budget `b`, costing `cost`, can be granted now.
    pub(crate) fn ready(&self, b: BudgetIdx, id: WaiterId, cost: &Costs, now: Instant) -> bool {
        let gate = self.gate(b, cost, now);
        self.budgets[b].readiness(cost, gate, now) == Readiness::Now
            && !self.held_by_window(b, id, now)
            && self.waiter_capped(b, id, now).is_none()
    }

    /// Serves `owner`'s budgets with waiters (its windows changed); see `tell_the_held`.
    pub(crate) fn serve_owner(&mut self, owner: &Owner, now: Instant) {
        self.unpark_capped(now);
        let budgets: Vec<BudgetIdx> = self
            .budgets
            .needing_attention()
            .filter(|&b| self.budgets[b].owner() == owner)
            .collect();
        for b in budgets {
            self.serve(b, now);
            self.tell_the_held(b, now);
        }
    }

    /// Calls queued on `b` before its account was known (behind the probe that found it) that
    /// its windows hold past their deadlines are told now, as a known token's are at once.
    pub(crate) fn tell_the_held(&mut self, b: BudgetIdx, now: Instant) {
        for id in self
            .waiters
            .ids_where(|w| w.budget == b && w.deadline.is_some())
        {
            let Some(w) = self.waiters.get(id) else {
                continue;
            };
            let Some(hold) = self.window_hold(b, w.priority, now) else {
                continue;
            };
            let (wait, _) = self.windows.holdup(&hold, &self.time_base, now);
            if w.deadline
                .is_some_and(|deadline| crate::later(now, wait) > deadline)
            {
                self.time_out(id, now);
            }
        }
    }
}
