//! A key joining its account while traffic flows: its budgets become the account's.
//!
//! For each class, the key's budget is either relabelled (the account has no budget of that
//! class yet) or merged into the account's: waiters keep their priority and their place in their
//! client's line, leases stay valid and settle against the account's budget, a pause in force on
//! either side holds, levels are combined conservatively, learned limits are kept (see
//! `Budget::absorb`). Its lockouts and subscription windows move along.

use std::sync::Arc;
use std::time::Instant;

use pacer_api::ratelimit::RateLimitHeaders;
use pacer_protocol::KeyFingerprint;
use pacer_protocol::message::{Event, LeaseId};

use super::budgets::BudgetIdx;
use super::owner::Owner;
use super::{Broker, Costs, Output};

impl Broker {
    /// Links `key` to the account a response for it names, if that is news.
    pub(super) fn link_if_named(
        &mut self,
        key: KeyFingerprint,
        headers: &RateLimitHeaders,
        now: Instant,
    ) {
        let named = self.accounts.account_named_by(
            key,
            headers.organization.as_deref(),
            headers.workspace.as_deref(),
        );
        if let Some((account, organization)) = named {
            if let Some(organization) = organization {
                self.accounts.set_parent(account.clone(), organization);
            }
            self.link(key, account, now);
        }
    }

    /// Makes `key` draw on `account`'s budgets, merging its own into them.
    pub(super) fn link(&mut self, key: KeyFingerprint, account: Arc<str>, now: Instant) {
        let from = Owner::Key(key);
        let to = Owner::Account(account.clone());
        self.accounts.link(key, account.clone());
        self.lockouts.move_owner(&from, &to);
        self.accounts.move_subscription(&from, &to);
        let mut touched = Vec::new();
        for source in self.budgets.owned_by(&from) {
            let class = self.budgets[source].class().clone();
            match self.budgets.find(&to, &class) {
                None => {
                    // The account has no budget of this class here, but the store may: what
                    // the key's took is carried over all the same.
                    let from = self.budgets[source].id();
                    self.budgets.relabel(source, &to);
                    let into = self.budgets[source].id();
                    self.for_store(super::SharedOp::Merge { from, into });
                    touched.push(source);
                }
                Some(target) => {
                    let (from, into) = (self.budgets[source].id(), self.budgets[target].id());
                    self.merge(source, target, now);
                    self.for_store(super::SharedOp::Merge { from, into });
                    touched.push(target);
                }
            }
        }
        // A new member may bring limits of its own from the configuration; a workspace's
        // budgets answer to their organization's too.
        let keys = self.accounts.keys_of(&to);
        for b in self.budgets.owned_by(&to) {
            let configured = self.config.limits.for_keys(&keys, self.budgets[b].class());
            self.budgets[b].set_configured(configured, now);
            self.adopt_parent(b, now);
            self.charge_parent_for_calls_in_flight(b, now);
        }
        self.out.push(Output::Event(Event::KeyLinked {
            key,
            account: account.to_string(),
        }));
        self.publish(super::ClusterEvent::Link {
            key,
            account: account.to_string(),
        });
        for b in touched {
            self.serve(b, now);
        }
    }

    /// Calls that went out before their key was known to be a workspace's count against the
    /// organization too.
    fn charge_parent_for_calls_in_flight(&mut self, b: BudgetIdx, now: Instant) {
        if self.budgets[b].parent().is_none() {
            return;
        }
        let uncharged: Vec<(LeaseId, Costs)> = self
            .leases
            .of_budget(b)
            .filter(|(_, lease)| lease.parent.is_none())
            .map(|(id, lease)| (id, lease.reservation.cost))
            .collect();
        for (id, cost) in uncharged {
            let parent = self.charge_parent(b, &cost, now);
            if let Some(lease) = self.leases.get_mut(id) {
                lease.parent = parent;
            }
        }
    }

    /// Budget `source` joins `target` and leaves the table.
    fn merge(&mut self, source: BudgetIdx, target: BudgetIdx, now: Instant) {
        let moved = self.waiters.ids_where(|w| w.budget == source);
        for lease in self.leases.of_budget_mut(source) {
            lease.budget = target;
        }
        self.shares.moved(source, target);
        let absorbed = self.budgets.remove(source);
        self.budgets[target].absorb(absorbed, now);
        // In arrival order: each client's line stays first come, first served.
        for id in moved {
            let Some(waiter) = self.waiters.get_mut(id) else {
                continue;
            };
            waiter.budget = target;
            waiter.mark =
                self.budgets[target].enqueue(id, &waiter.client, waiter.priority, waiter.cost);
        }
        self.budgets.touch(target);
    }
}
