//! Who used what: each grant, settlement and refusal counted for its budget and its client, and
//! told to subscribers (`pacer watch`, `pacer top`) as it happens — with the reason in words
//! when pacer itself holds a request up or refuses it.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use pacer_protocol::message::{Acquire, BudgetId, ClientStatus, Event, SettledAs};

use super::budget::Holdup;
use super::budgets::BudgetIdx;
use super::leases::Lease;
use super::{Broker, Output};

/// How often clients not seen for a while are forgotten.
const PRUNE_EVERY: Duration = Duration::from_secs(60);

impl Broker {
    /// pacer refused an acquire (rejected it at once, or its deadline passed in the queue):
    /// counted for its budget (if it has one) and its client, and told to subscribers and the
    /// log.
    pub(super) fn note_refusal(
        &mut self,
        b: Option<BudgetIdx>,
        budget: Option<BudgetId>,
        client: &str,
        reason: &str,
        now: Instant,
    ) {
        if let Some(b) = b {
            self.budgets[b].record_refusal();
        }
        self.clients.refused(client, now);
        // Always told (and so logged), listener or not: refusals are what a user asks about.
        self.out.push(Output::Event(Event::Refused {
            budget: budget.or_else(|| b.map(|b| self.budgets[b].id())),
            client_id: client.to_owned(),
            reason: reason.to_owned(),
        }));
    }

    /// The gateway answered a request itself, without waiting for a permit (the wait it would
    /// need outlasts what it may hold the request): counted and told like any refusal.
    pub fn refused_locally(&mut self, now: Instant, req: &Acquire, reason: &str) -> Vec<Output> {
        let owner = self.accounts.owner_of(req.key);
        let class = self.classify(&req.model);
        let b = self.budget_of(&owner, &class, now);
        if let Some(b) = b {
            self.count_window_refusal(b, req.priority, now);
        }
        self.note_refusal(b, None, &req.client_id, reason, now);
        self.take_output()
    }

    /// A client asked for a permit on budget `b`.
    pub(super) fn note_asked(&mut self, b: BudgetIdx, req: &Acquire, now: Instant) {
        let id = self.budgets[b].id();
        self.clients.asked(&req.client_id, req.priority, id, now);
    }

    /// A permit was granted after waiting `waited` in the queue.
    pub(super) fn note_grant(
        &mut self,
        b: BudgetIdx,
        client: &str,
        waited: Duration,
        now: Instant,
    ) {
        self.budgets[b].record_wait(waited);
        self.clients.granted(client, waited, now);
    }

    /// A lease was settled: its client is credited with the tokens, subscribers are told.
    pub(super) fn note_settled(
        &mut self,
        lease: &Lease,
        outcome: SettledAs,
        tokens: (u64, u64),
        now: Instant,
    ) {
        self.clients.settled(&lease.client, tokens.0, tokens.1, now);
        if self.grant_events {
            self.out.push(Output::Event(Event::Settled {
                budget: self.budgets[lease.budget].id(),
                client_id: lease.client.to_string(),
                outcome,
                input_tokens: tokens.0,
                output_tokens: tokens.1,
                waited: lease.waited,
            }));
        }
    }

    /// Forgets clients not seen recently (at most once a minute).
    pub(super) fn prune_clients(&mut self, now: Instant) {
        if self
            .last_prune
            .is_some_and(|at| now.saturating_duration_since(at) < PRUNE_EVERY)
        {
            return;
        }
        self.last_prune = Some(now);
        self.clients.prune(now);
        self.sessions.prune(now);
    }

    /// Every client seen recently, busiest first, with what of it waits now.
    pub fn clients(&self, now: Instant) -> Vec<ClientStatus> {
        let mut waiting: HashMap<&str, (u32, Instant)> = HashMap::new();
        for waiter in self.waiters.iter() {
            let entry = waiting
                .entry(&*waiter.client)
                .or_insert((0, waiter.enqueued_at));
            entry.0 += 1;
            entry.1 = entry.1.min(waiter.enqueued_at);
        }
        self.clients.status(&waiting, &self.time_base, now)
    }

    /// What holds a waiter of budget `b` up, in words.
    pub(super) fn holdup_text(&self, b: BudgetIdx, holdup: Holdup) -> String {
        let budget = &self.budgets[b];
        let shared_store_decides = matches!(holdup, Holdup::Spent(_) | Holdup::InFlightCap);
        if self.shares.is_shared() && shared_store_decides {
            return "the budget shared through Redis has no room yet (its limits, or its \
                    in-flight cap)"
                .into();
        }
        match holdup {
            Holdup::Paused => format!("the budget is paused: {}", budget.pause_reason()),
            Holdup::Gate if self.overload_gate(b).is_some() => format!(
                "the {} models are overloaded (529): every key backs off",
                budget.class()
            ),
            Holdup::Gate => "the organization's budget this workspace shares is spent".into(),
            Holdup::FirstContact => {
                "the first call to this budget is out; the others wait for its answer".into()
            }
            Holdup::InFlightCap => "max_in_flight calls are in flight".into(),
            Holdup::Spent(kind) => format!(
                "the {} limit ({kind} per minute) is spent for now",
                kind.short_name()
            ),
        }
    }
}

/// A lease's client, for [`Lease::client`] where none is known (a lease restored from the
/// state file).
pub fn unknown_client() -> Arc<str> {
    Arc::from("(before restart)")
}
