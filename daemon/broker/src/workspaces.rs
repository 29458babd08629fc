//! Workspaces: a workspace may set limits lower than its organization's. A key whose responses
//! name a workspace draws on the workspace's account; each of that account's budgets has the
//! organization's budget of the same class as its parent. Every grant must fit both — the
//! workspace's buckets, and the organization's buckets and pause — and is charged to both, so a
//! workspace's lower limits hold for its keys while the organization's limit holds for all of
//! them. The organization's limits are its own (learned from its other keys, or configured);
//! failing those, it learns from its workspaces that its limits are at least theirs.

use std::time::Instant;

use pacer_protocol::LimitKind;

use super::budget::Reservation;
use super::budgets::BudgetIdx;
use super::owner::Owner;
use super::{Broker, Costs};

impl Broker {
    /// The moment before which budget `b` may not grant `cost`, decided outside it: its class's
    /// overload backoff, and its organization's capacity if it is a workspace's.
    pub(super) fn gate(&self, b: BudgetIdx, cost: &Costs, now: Instant) -> Option<Instant> {
        let overload = self.overload_gate(b);
        let parent = self.budgets[b]
            .parent()
            .and_then(|p| self.budgets[p].capacity_at(cost, now));
        overload.max(parent)
    }

    /// When the class's overload backoff ends, if one is in force.
    pub(super) fn overload_gate(&self, b: BudgetIdx) -> Option<Instant> {
        self.overloads.gate(self.budgets[b].class())
    }

    /// Gives budget `b` its organization's budget as a parent, if its owner is a workspace.
    pub(super) fn adopt_parent(&mut self, b: BudgetIdx, now: Instant) {
        if self.budgets[b].parent().is_some() {
            return;
        }
        let Some(parent) = self.accounts.parent_of(self.budgets[b].owner()).cloned() else {
            return;
        };
        let class = self.budgets[b].class().clone();
        if let Some(p) = self.budget_of(&Owner::Account(parent), &class, now) {
            self.budgets[b].set_parent(p);
            self.teach_parent(b, now);
        }
    }

    /// Reserves a workspace's grant in its organization's buckets too.
    pub(super) fn charge_parent(
        &mut self,
        b: BudgetIdx,
        cost: &Costs,
        now: Instant,
    ) -> Option<(BudgetIdx, Reservation)> {
        let p = self.budgets[b].parent()?;
        Some((p, self.budgets[p].take_for_child(cost, now)))
    }

    /// What a workspace's limits teach its organization: its limits are at least theirs.
    pub(super) fn teach_parent(&mut self, b: BudgetIdx, now: Instant) {
        let Some(p) = self.budgets[b].parent() else {
            return;
        };
        let learned = self.budgets[b].learned();
        for kind in LimitKind::ALL {
            if let Some(limit) = learned[kind] {
                self.budgets[p].learn_at_least(kind, limit, now);
            }
        }
    }

    /// Whether a 429's message says the organization's limit was hit (rather than the
    /// workspace's).
    pub(super) fn names_the_organization(message: Option<&str>) -> bool {
        message.is_some_and(|m| {
            let m = m.to_ascii_lowercase();
            m.contains("organization") && !m.contains("workspace")
        })
    }
}
