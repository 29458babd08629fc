//! What other daemons published, taken in: their pauses, lifts, backoffs, lockouts, links,
//! freed slots and learned limits, applied here without being published again.

use std::sync::Arc;
use std::time::{Duration, Instant};

use pacer_protocol::message::{BudgetId, Event};

use super::ClusterEvent;
use crate::budgets::BudgetIdx;
use crate::lockouts::Lockout;
use crate::overload::OVERLOAD_BACKOFF_MAX;
use crate::owner::Owner;
use crate::settle::MAX_RATE_LIMIT_WAIT;
use crate::snapshot::is_account_label;
use crate::{Broker, MAX_LIMIT, MAX_MODEL_LEN, Output, later};
use pacer_protocol::BudgetOwner;
use pacer_protocol::text::{MAX_MESSAGE, bounded};

/// Whether an owner from another daemon is one this daemon could have.
fn is_owner(owner: &BudgetOwner) -> bool {
    match owner {
        BudgetOwner::Key(_) => true,
        BudgetOwner::Account(label) => is_account_label(label),
    }
}

/// Whether a model class from another daemon is one this daemon could have.
fn is_class(class: &str) -> bool {
    !class.trim().is_empty() && class.len() <= MAX_MODEL_LEN
}

impl Broker {
    /// What daemon `from` published. It is in the store already: none of what it causes here
    /// goes back there (no [`Output::Shared`] in what this returns).
    pub fn apply_shared(&mut self, now: Instant, from: &str, event: ClusterEvent) -> Vec<Output> {
        self.apply_event(now, from, event);
        let mut outputs = self.take_output();
        outputs.retain(|output| !matches!(output, Output::Shared(_)));
        outputs
    }

    /// Every value is held to the same caps as this daemon's own (whoever can publish on the
    /// channel could send anything): pauses and lockouts at most [`MAX_RATE_LIMIT_WAIT`],
    /// overload backoffs at most [`OVERLOAD_BACKOFF_MAX`], limits at most [`MAX_LIMIT`], names
    /// and reasons bounded.
    fn apply_event(&mut self, now: Instant, from: &str, event: ClusterEvent) {
        let capped = |for_ms: u64, cap: Duration| Duration::from_millis(for_ms).min(cap);
        match event {
            ClusterEvent::Pause {
                budget,
                for_ms,
                reason,
                drain,
            } => {
                if let Some(b) = self.budget_by_id(&budget, now) {
                    let until = later(now, capped(for_ms, MAX_RATE_LIMIT_WAIT));
                    if let Some(kinds) = &drain {
                        self.budgets[b].drain(kinds, now);
                    }
                    self.extend_pause(b, until, bounded(&reason, MAX_MESSAGE));
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
                if !is_class(&class) {
                    return;
                }
                let class: Arc<str> = Arc::from(class.as_str());
                let until = later(now, capped(for_ms, OVERLOAD_BACKOFF_MAX));
                self.overloads.extend(&class, until);
            }
            ClusterEvent::Lockout {
                owner,
                class,
                for_ms,
                reason,
            } => {
                if !is_owner(&owner) || class.as_deref().is_some_and(|c| !is_class(c)) {
                    return;
                }
                let lockout = Lockout {
                    until: later(now, capped(for_ms, MAX_RATE_LIMIT_WAIT)),
                    reason: bounded(&reason, MAX_MESSAGE),
                    rejection: None,
                };
                let owner = Owner::from_wire(&owner);
                self.lock_out(&owner, class.map(|c| Arc::from(c.as_str())), lockout, now);
            }
            ClusterEvent::Link { key, account } => {
                if is_account_label(&account) {
                    self.link(key, Arc::from(account.as_str()), now);
                }
            }
            ClusterEvent::Windows { owner, windows } => {
                if !is_owner(&owner) {
                    return;
                }
                let owner = Owner::from_wire(&owner);
                let (crossed, _) =
                    self.accounts
                        .observe_subscription(&owner, &windows.to_unified(), None, now);
                for window in crossed {
                    self.out.push(Output::Event(Event::Window {
                        owner: owner.to_wire(),
                        window,
                    }));
                }
                self.serve_owner(&owner, now);
            }
            ClusterEvent::WindowCalls {
                owner,
                in_flight,
                answered,
            } => {
                if !is_owner(&owner) || from.is_empty() || from.len() > 256 {
                    return;
                }
                let told = crate::InFlight {
                    in_flight: in_flight.min(super::super::MAX_WAITERS as u32),
                    answered,
                };
                self.told_window_calls(&Owner::from_wire(&owner), from, told, now);
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
                if !(1..=MAX_LIMIT).contains(&limit) {
                    return;
                }
                if let Some(b) = self.budget_by_id(&budget, now) {
                    self.budgets[b].learn(kind, limit, now);
                    self.shares.retry_at.remove(&b);
                    self.serve(b, now);
                }
            }
        }
    }

    /// The budget a wire id names, created if this daemon has none yet (`None` for a name no
    /// budget can have).
    fn budget_by_id(&mut self, id: &BudgetId, now: Instant) -> Option<BudgetIdx> {
        if !is_owner(&id.owner) || !is_class(&id.model_class) {
            return None;
        }
        let owner = Owner::from_wire(&id.owner);
        let class: Arc<str> = Arc::from(id.model_class.as_str());
        self.budget_of(&owner, &class, now)
    }
}
