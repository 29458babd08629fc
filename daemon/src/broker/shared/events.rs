//! What other daemons published, taken in: their pauses, lifts, backoffs, lockouts, links,
//! freed slots and learned limits, applied here without being published again.

use std::sync::Arc;
use std::time::{Duration, Instant};

use pacer_protocol::message::{BudgetId, Event};

use super::ClusterEvent;
use crate::broker::budgets::BudgetIdx;
use crate::broker::lockouts::Lockout;
use crate::broker::owner::Owner;
use crate::broker::{Broker, Output, later};

impl Broker {
    /// What another daemon published (not published again).
    pub fn apply_shared(&mut self, now: Instant, event: ClusterEvent) -> Vec<Output> {
        self.applying_shared = true;
        self.apply_event(now, event);
        self.applying_shared = false;
        self.take_output()
    }

    fn apply_event(&mut self, now: Instant, event: ClusterEvent) {
        match event {
            ClusterEvent::Pause {
                budget,
                for_ms,
                reason,
                drain,
            } => {
                if let Some(b) = self.budget_by_id(&budget, now) {
                    let until = later(now, Duration::from_millis(for_ms));
                    if let Some(kinds) = &drain {
                        self.budgets[b].drain(kinds, now);
                    }
                    self.extend_pause(b, until, reason);
                    self.serve(b, now);
                }
            }
            ClusterEvent::Lift { budget } => {
                if let Some(b) = self.budget_by_id(&budget, now) {
                    self.lift(b, now);
                    self.shares.retry_at.remove(&b);
                    self.serve(b, now);
                }
            }
            ClusterEvent::Overload { class, for_ms } => {
                let class: Arc<str> = Arc::from(class.as_str());
                let until = later(now, Duration::from_millis(for_ms));
                self.overloads.extend(&class, until);
            }
            ClusterEvent::Lockout {
                owner,
                class,
                for_ms,
                reason,
            } => {
                let lockout = Lockout {
                    until: later(now, Duration::from_millis(for_ms)),
                    reason,
                    rejection: None,
                };
                let owner = Owner::from_wire(&owner);
                self.lock_out(&owner, class.map(|c| Arc::from(c.as_str())), lockout, now);
            }
            ClusterEvent::Link { key, account } => {
                self.link(key, Arc::from(account.as_str()), now);
            }
            ClusterEvent::Windows { owner, windows } => {
                let owner = Owner::from_wire(&owner);
                let (crossed, _) = self
                    .accounts
                    .observe_subscription(&owner, &windows.to_unified());
                for window in crossed {
                    self.out.push(Output::Event(Event::Window {
                        owner: owner.to_wire(),
                        window,
                    }));
                }
            }
            ClusterEvent::Freed { budget } => {
                if let Some(b) = self.budget_by_id(&budget, now) {
                    self.shares.retry_at.remove(&b);
                    self.serve(b, now);
                }
            }
            ClusterEvent::Limit {
                budget,
                kind,
                limit,
            } => {
                if let Some(b) = self.budget_by_id(&budget, now) {
                    self.budgets[b].learn(kind, limit, now);
                    self.shares.retry_at.remove(&b);
                    self.serve(b, now);
                }
            }
        }
    }

    /// The budget a wire id names, created if this daemon has none yet.
    fn budget_by_id(&mut self, id: &BudgetId, now: Instant) -> Option<BudgetIdx> {
        let owner = Owner::from_wire(&id.owner);
        let class: Arc<str> = Arc::from(id.model_class.as_str());
        self.budget_of(&owner, &class, now)
    }
}
