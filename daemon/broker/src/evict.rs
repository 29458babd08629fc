//! Keeping the budget table bounded without refusing anyone: when it is full, the budget that is
//! cheapest to forget goes (idle, least recently used, those that never saw a success first),
//! and a budget the API said has no model (a 404 before any success) goes at once.

use super::Broker;
use super::budgets::BudgetIdx;

impl Broker {
    /// Makes room for one more budget if the table is full. Returns whether there is room.
    pub(super) fn make_room(&mut self) -> bool {
        if self.budgets.len() < super::MAX_BUDGETS {
            return true;
        }
        match self.budgets.eviction_candidate() {
            Some(b) => {
                self.forget(b);
                true
            }
            None => false,
        }
    }

    /// Forgets budget `b` if nothing of it is left to lose: idle, never a success, nobody's
    /// parent.
    pub(super) fn forget_if_unused(&mut self, b: BudgetIdx) {
        let budget = &self.budgets[b];
        if budget.is_idle() && !budget.ever_succeeded() && self.budgets.is_no_parent(b) {
            self.forget(b);
        }
    }

    fn forget(&mut self, b: BudgetIdx) {
        self.shares.forget(b);
        self.budgets.remove(b);
    }
}
