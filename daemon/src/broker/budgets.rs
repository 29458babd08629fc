//! Every budget, found by key × model class, and the few that time can change.

use std::collections::{BTreeSet, HashMap};
use std::ops::{Index, IndexMut};
use std::sync::Arc;
use std::time::Instant;

use pacer_protocol::KeyFingerprint;

use super::BrokerConfig;
use super::budget::Budget;

/// Each key × class pair is a budget; this many is far beyond any real machine's needs.
pub const MAX_BUDGETS: usize = 10_000;
/// Model names whose class is remembered, so the patterns are matched once per name.
const MAX_CACHED_MODELS: usize = 4096;

/// A budget's place in the table; stable for the daemon's life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct BudgetIdx(usize);

#[derive(Debug, Default)]
pub struct Budgets {
    budgets: Vec<Budget>,
    index: HashMap<(KeyFingerprint, Arc<str>), BudgetIdx>,
    /// Model name → class.
    class_cache: HashMap<String, Arc<str>>,
    /// The budgets time can change: those with waiters or a pause. The timer only looks at these.
    attention: BTreeSet<BudgetIdx>,
}

impl Budgets {
    /// The model class a model name belongs to.
    pub fn classify(&mut self, config: &BrokerConfig, model: &str) -> Arc<str> {
        if let Some(class) = self.class_cache.get(model) {
            return class.clone();
        }
        let class: Arc<str> = Arc::from(config.classes.classify(model));
        if self.class_cache.len() < MAX_CACHED_MODELS {
            self.class_cache.insert(model.to_owned(), class.clone());
        }
        class
    }

    /// Applies new configuration: class patterns to later lookups, limits to every budget.
    pub fn reconfigure(&mut self, config: &BrokerConfig, now: Instant) {
        self.class_cache.clear();
        for budget in &mut self.budgets {
            let configured = config.limits.for_budget(budget.key(), budget.class());
            budget.set_configured(configured, now);
        }
    }

    /// The budget of a key and class, created on first use; `None` past [`MAX_BUDGETS`].
    pub fn get_or_create(
        &mut self,
        config: &BrokerConfig,
        key: KeyFingerprint,
        class: Arc<str>,
        now: Instant,
    ) -> Option<BudgetIdx> {
        if let Some(&b) = self.index.get(&(key, class.clone())) {
            return Some(b);
        }
        if self.budgets.len() >= MAX_BUDGETS {
            return None;
        }
        let configured = config.limits.for_budget(key, &class);
        self.budgets
            .push(Budget::new(key, class.clone(), configured, now));
        let b = BudgetIdx(self.budgets.len() - 1);
        self.index.insert((key, class), b);
        Some(b)
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
        self.budgets
            .iter()
            .enumerate()
            .map(|(i, budget)| (BudgetIdx(i), budget))
    }

    pub fn indices(&self) -> impl Iterator<Item = BudgetIdx> + use<> {
        (0..self.budgets.len()).map(BudgetIdx)
    }

    pub fn len(&self) -> usize {
        self.budgets.len()
    }
}

impl Index<BudgetIdx> for Budgets {
    type Output = Budget;

    fn index(&self, b: BudgetIdx) -> &Budget {
        &self.budgets[b.0]
    }
}

impl IndexMut<BudgetIdx> for Budgets {
    fn index_mut(&mut self, b: BudgetIdx) -> &mut Budget {
        &mut self.budgets[b.0]
    }
}
