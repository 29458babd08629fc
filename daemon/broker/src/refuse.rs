//! Refusing at once: lockouts, and how acquires and waiters they cover are answered.

use std::sync::Arc;
use std::time::Instant;

use pacer_protocol::message::{BudgetId, Event, Rejected, Response};

use super::lockouts::{Lockout, Scope};
use super::owner::Owner;
use super::{Broker, Output};
use pacer_api::Answer;

impl Broker {
    /// Why an acquire by `owner` for `class` is refused at once, if a lockout covers it.
    pub(super) fn locked_out(
        &self,
        owner: &Owner,
        class: &Arc<str>,
        now: Instant,
    ) -> Option<Rejected> {
        let lockout = self.lockouts.covering(owner, class, now)?;
        Some(self.rejected(owner, class, lockout))
    }

    pub(super) fn rejected(&self, owner: &Owner, class: &str, lockout: &Lockout) -> Rejected {
        Rejected {
            reason: lockout.reason.clone(),
            until: Some(self.time_base.to_wall(lockout.until)),
            budget: Some(BudgetId {
                owner: owner.to_wire(),
                model_class: class.to_owned(),
            }),
        }
    }

    /// The API's answer that locked out the budget `id`, to replay to the requests it refuses.
    pub fn rejection(&self, id: &BudgetId, now: Instant) -> Option<Arc<Answer>> {
        let owner = Owner::from_wire(&id.owner);
        let lockout = self.lockouts.covering(&owner, &id.model_class, now)?;
        lockout.rejection.clone()
    }

    /// Locks `owner`'s `scope` out: waiters it covers are refused now, and every acquire until
    /// `lockout.until`.
    pub(super) fn lock_out(&mut self, owner: &Owner, scope: Scope, lockout: Lockout, now: Instant) {
        if lockout.until <= now || !self.lockouts.lock(owner, scope.clone(), lockout.clone()) {
            return;
        }
        self.publish(super::ClusterEvent::Lockout {
            owner: owner.to_wire(),
            class: scope.as_deref().map(str::to_owned),
            for_ms: lockout.until.saturating_duration_since(now).as_millis() as u64,
            reason: lockout.reason.clone(),
        });
        self.out.push(Output::Event(Event::LockedOut {
            owner: owner.to_wire(),
            model_class: scope.as_deref().map(str::to_owned),
            until: self.time_base.to_wall(lockout.until),
            reason: lockout.reason.clone(),
        }));
        let budgets = &self.budgets;
        let ids = self.waiters.ids_where(|w| {
            let budget = &budgets[w.budget];
            budget.owner() == owner && scope.as_deref().is_none_or(|s| s == &**budget.class())
        });
        for id in ids {
            let Some(waiter) = self.drop_waiter(id) else {
                continue;
            };
            let class = self.budgets[waiter.budget].class().clone();
            let rejected = self.rejected(owner, &class, &lockout);
            self.answer(waiter.ticket, Response::Rejected(rejected));
        }
    }

    pub(super) fn lockout_ended(&mut self, owner: &Owner, scope: Scope) {
        self.out.push(Output::Event(Event::LockoutEnded {
            owner: owner.to_wire(),
            model_class: scope.as_deref().map(str::to_owned),
        }));
    }
}
