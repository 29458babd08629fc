//! Every budget, found by owner × model class, and the few that time can change; and what ties
//! a workspace's budget to its organization's.
//!
//! Workspaces: a workspace may set limits lower than its organization's. A key whose responses
//! name a workspace draws on the workspace's account; each of that account's budgets has the
//! organization's budget of the same class as its parent. Every grant must fit both — the
//! workspace's buckets, and the organization's buckets and pause — and is charged to both, so a
//! workspace's lower limits hold for its keys while the organization's limit holds for all of
//! them. The organization's limits are its own (learned from its other keys, or configured);
//! failing those, it learns from its workspaces that its limits are at least theirs.

use std::collections::{BTreeSet, HashMap};
use std::ops::{Index, IndexMut};
use std::sync::Arc;
use std::time::{Duration, Instant};

use pacer_protocol::LimitKind;

use super::{Budget, BudgetIdx, Charge, Reservation};
use crate::cost::Costs;
use crate::limits::{LimitSet, ModelClasses};
use crate::overload::Overloads;
use crate::owner::Owner;

/// Each owner × class pair is a budget; this many is far beyond any real machine's needs.
pub const MAX_BUDGETS: usize = 10_000;
/// Model names whose class is remembered, so the patterns are matched once per name.
const MAX_CACHED_MODELS: usize = 4096;

#[derive(Debug, Default)]
pub struct Budgets {
    /// Slots; a budget merged into another leaves its slot free for the next one.
    slots: Vec<Option<Budget>>,
    free: Vec<BudgetIdx>,
    index: HashMap<(Owner, Arc<str>), BudgetIdx>,
    /// Model name → class.
    class_cache: HashMap<String, Arc<str>>,
    /// The budgets time can change: those with waiters or a pause. The timer only looks at these.
    attention: BTreeSet<BudgetIdx>,
}

impl Budgets {
    /// The model class a model name belongs to.
    pub fn classify(&mut self, classes: &ModelClasses, model: &str) -> Arc<str> {
        if let Some(class) = self.class_cache.get(model) {
            return class.clone();
        }
        let class: Arc<str> = Arc::from(classes.classify(model));
        if self.class_cache.len() < MAX_CACHED_MODELS {
            self.class_cache.insert(model.to_owned(), class.clone());
        }
        class
    }

    /// Applies new configuration: class patterns to later lookups, limits to every budget.
    pub fn reconfigure(&mut self, configured: impl Fn(&Owner, &str) -> LimitSet, now: Instant) {
        self.class_cache.clear();
        for budget in self.slots.iter_mut().flatten() {
            let limits = configured(budget.owner(), budget.class());
            budget.set_configured(limits, now);
        }
    }

    /// The budget of an owner and class, if it exists.
    pub fn find(&self, owner: &Owner, class: &Arc<str>) -> Option<BudgetIdx> {
        self.index.get(&(owner.clone(), class.clone())).copied()
    }

    /// The budget of an owner and class, created on first use with `configured` limits. When
    /// the table is full, the new budget takes the place of the one cheapest to forget
    /// ([`Budgets::eviction_candidate`]; never one of `busy`, those some waiter out of its queue
    /// is for), returned too: nothing of it may linger elsewhere. `None` when every budget is
    /// busy.
    pub fn get_or_create(
        &mut self,
        owner: &Owner,
        class: &Arc<str>,
        (configured, busy): (
            impl FnOnce() -> LimitSet,
            impl FnOnce() -> BTreeSet<BudgetIdx>,
        ),
        cold_start_hold: Duration,
        now: Instant,
    ) -> Option<(BudgetIdx, Option<BudgetIdx>)> {
        if let Some(b) = self.find(owner, class) {
            self[b].used_at(now);
            return Some((b, None));
        }
        let mut forgotten = None;
        if self.len() >= MAX_BUDGETS {
            let b = self.eviction_candidate(&busy())?;
            self.remove(b);
            forgotten = Some(b);
        }
        let budget = Budget::new(
            owner.clone(),
            class.clone(),
            configured(),
            cold_start_hold,
            now,
        );
        let b = match self.free.pop() {
            Some(b) => {
                self.slots[b.0] = Some(budget);
                b
            }
            None => {
                self.slots.push(Some(budget));
                BudgetIdx(self.slots.len() - 1)
            }
        };
        self.index.insert((owner.clone(), class.clone()), b);
        Some((b, forgotten))
    }

    /// Whether no budget has `b` as its parent (a workspace's budget points at its
    /// organization's by index, so that one must stay while they do).
    pub fn is_no_parent(&self, b: BudgetIdx) -> bool {
        self.iter().all(|(_, budget)| budget.parent() != Some(b))
    }

    /// The budget that is cheapest to forget: idle (nothing waiting, in flight or paused), no
    /// workspace's parent, and used least recently — those that never saw a success first.
    pub fn eviction_candidate(&self, busy: &BTreeSet<BudgetIdx>) -> Option<BudgetIdx> {
        let parents: BTreeSet<BudgetIdx> = self.iter().filter_map(|(_, b)| b.parent()).collect();
        self.iter()
            .filter(|(b, budget)| budget.is_idle() && !parents.contains(b) && !busy.contains(b))
            .min_by_key(|(_, budget)| (budget.ever_succeeded(), budget.last_used()))
            .map(|(b, _)| b)
    }

    /// Files budget `b` under another owner.
    pub fn relabel(&mut self, b: BudgetIdx, owner: &Owner) {
        let class = self[b].class().clone();
        self.index.remove(&(self[b].owner().clone(), class.clone()));
        self[b].set_owner(owner.clone());
        self.index.insert((owner.clone(), class), b);
    }

    /// Takes budget `b` out of the table (it was merged into another, or forgotten); its slot
    /// is reused.
    pub fn remove(&mut self, b: BudgetIdx) -> Budget {
        let budget = self.slots[b.0].take().expect("a live budget");
        self.index
            .remove(&(budget.owner().clone(), budget.class().clone()));
        self.attention.remove(&b);
        self.free.push(b);
        budget
    }

    /// The budgets of an owner, one per class.
    pub fn owned_by(&self, owner: &Owner) -> Vec<BudgetIdx> {
        self.iter()
            .filter(|(_, budget)| budget.owner() == owner)
            .map(|(b, _)| b)
            .collect()
    }

    /// Keeps the attention set in step after budget `b` changed.
    pub fn touch(&mut self, b: BudgetIdx) {
        if self[b].needs_attention() {
            self.attention.insert(b);
        } else {
            self.attention.remove(&b);
        }
    }

    /// The budgets with waiters or a pause.
    pub fn needing_attention(&self) -> impl Iterator<Item = BudgetIdx> + '_ {
        self.attention.iter().copied()
    }

    pub fn iter(&self) -> impl Iterator<Item = (BudgetIdx, &Budget)> {
        self.slots
            .iter()
            .enumerate()
            .filter_map(|(i, slot)| Some((BudgetIdx(i), slot.as_ref()?)))
    }

    pub fn indices(&self) -> Vec<BudgetIdx> {
        self.iter().map(|(b, _)| b).collect()
    }

    pub fn len(&self) -> usize {
        self.slots.len() - self.free.len()
    }

    /// The only owner with a budget of `class` (of any class with none), preferring owners for
    /// which `preferred` holds when there are several.
    pub fn sole_owner(
        &self,
        class: Option<&Arc<str>>,
        preferred: impl Fn(&Owner) -> bool,
    ) -> Option<Owner> {
        let owners: BTreeSet<&Owner> = self
            .iter()
            .map(|(_, b)| b)
            .filter(|b| class.is_none_or(|c| b.class() == c))
            .map(|b| b.owner())
            .collect();
        let favoured: Vec<&&Owner> = owners.iter().filter(|o| preferred(o)).collect();
        match (favoured.as_slice(), owners.len()) {
            ([one], _) => Some((**one).clone()),
            ([], 1) => owners.into_iter().next().cloned(),
            _ => None,
        }
    }

    /// The moment before which budget `b` may not grant `cost`, decided outside it: its class's
    /// overload backoff, and its organization's capacity if it is a workspace's.
    pub fn gate(
        &self,
        b: BudgetIdx,
        cost: &Costs,
        overloads: &Overloads,
        now: Instant,
    ) -> Option<Instant> {
        let overload = overloads.gate(self[b].class());
        let parent = self[b]
            .parent()
            .and_then(|p| self[p].capacity_at(cost, now));
        overload.max(parent)
    }

    /// Reserves a workspace's grant in its organization's buckets too.
    pub fn charge_parent(
        &mut self,
        b: BudgetIdx,
        cost: &Costs,
        now: Instant,
    ) -> Option<(BudgetIdx, Reservation)> {
        let p = self[b].parent()?;
        Some((p, self[p].take_for_child(cost, now)))
    }

    /// What a workspace's limits teach its organization: its limits are at least theirs.
    pub fn teach_parent(&mut self, b: BudgetIdx, now: Instant) {
        let Some(p) = self[b].parent() else {
            return;
        };
        let learned = self[b].learned();
        for kind in LimitKind::ALL {
            if let Some(limit) = learned[kind] {
                self[p].learn_at_least(kind, limit, now);
            }
        }
    }

    /// Settles a call of budget `b` as `charge` says, and its organization's share of it
    /// (`parent`: what was reserved there).
    pub fn settle(
        &mut self,
        b: BudgetIdx,
        reserved: &Reservation,
        parent: Option<&(BudgetIdx, Reservation)>,
        charge: Charge,
        now: Instant,
    ) {
        self[b].settle(reserved, charge, false, now);
        if let Some((p, reserved)) = parent {
            self[*p].settle(reserved, charge, true, now);
        }
    }
}

impl Index<BudgetIdx> for Budgets {
    type Output = Budget;

    fn index(&self, b: BudgetIdx) -> &Budget {
        self.slots[b.0].as_ref().expect("a live budget")
    }
}

impl IndexMut<BudgetIdx> for Budgets {
    fn index_mut(&mut self, b: BudgetIdx) -> &mut Budget {
        self.slots[b.0].as_mut().expect("a live budget")
    }
}
