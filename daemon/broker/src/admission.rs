//! Before an acquire waits: whether it is taken at all (its arguments, its connection's share),
//! and how long one made now would wait.

use std::time::{Duration, Instant};

use pacer_protocol::Priority;
use pacer_protocol::message::Acquire;

use super::Costs;
use super::budgets::BudgetIdx;

use super::{
    Broker, MAX_DETACHED_LEASES, MAX_LEASES_PER_CONNECTION, MAX_MODEL_LEN, MAX_NAME_LEN,
    MAX_WAITERS, MAX_WAITERS_PER_CONNECTION, Origin, Ticket,
};

impl Broker {
    /// How long an acquire made now would wait, as far as the broker can tell (zero if it would
    /// be granted at once; `None` if it would be refused at once), and what holds it up: the
    /// gateway answers 429 straight away rather than hold a request it cannot serve in time.
    pub fn estimate_wait(
        &mut self,
        now: Instant,
        req: &Acquire,
        origin: &Origin,
    ) -> Option<(Duration, String)> {
        let owner = self.accounts.owner_of(req.key);
        let class = self.classify(&req.model);
        if self.lockouts.covering(&owner, &class, now).is_some() {
            return None;
        }
        let b = self.budget_of(&owner, &class, now)?;
        // A session new to pacer waits its turn to start first (a wait it would not have to
        // make when its start is already under way).
        let starting = origin.session.as_ref().is_some_and(|session| {
            !self.sessions.is_started(session) && !self.starts.is_starting(session)
        });
        if starting
            && let Some((wait, _)) = self.starts.wait_for(&owner, now)
            && !wait.is_zero()
        {
            return Some(self.start_holdup(&owner, now));
        }
        let budget = &self.budgets[b];
        let cost = budget.cost_of(req);
        let gate = self.gate(b, &cost, now);
        if budget.grants_at_once(&cost, gate, now)
            && self.window_hold(b, req.priority, now).is_none()
        {
            return Some((Duration::ZERO, String::new()));
        }
        Some(self.newcomer_wait(b, req.priority, &cost, now))
    }

    /// How long an acquire of `priority` with `cost` made now on budget `b` would wait, and what
    /// holds it up: its account's windows, else the budget (and its queue).
    pub(super) fn newcomer_wait(
        &self,
        b: BudgetIdx,
        priority: Priority,
        cost: &Costs,
        now: Instant,
    ) -> (Duration, String) {
        if let Some(held) = self.window_holdup(b, priority, now) {
            return held;
        }
        let gate = self.gate(b, cost, now);
        let wait = self.budgets[b].newcomer_wait(priority, cost, gate, now);
        (wait.duration, self.holdup_text(b, wait.holdup))
    }

    pub(super) fn invalid(&self, ticket: Ticket, req: &Acquire) -> Option<String> {
        if req.model.trim().is_empty() {
            return Some("the model name is empty".into());
        }
        if req.model.len() > MAX_MODEL_LEN {
            return Some(format!(
                "the model name is {} bytes long; at most {MAX_MODEL_LEN} are taken",
                req.model.len()
            ));
        }
        if req.client_id.len() > MAX_NAME_LEN {
            return Some(format!(
                "the client id must be at most {MAX_NAME_LEN} bytes"
            ));
        }
        if req.detached_ttl.is_some_and(|ttl| ttl.is_zero()) {
            return Some("a detached permit needs a TTL above zero".into());
        }
        if self.waiters.of_conn(ticket.conn) >= MAX_WAITERS_PER_CONNECTION {
            return Some(format!(
                "this connection already has {MAX_WAITERS_PER_CONNECTION} acquires waiting, as \
                 many as one connection may"
            ));
        }
        if self.leases.held_by(ticket.conn) >= MAX_LEASES_PER_CONNECTION {
            return Some(format!(
                "this connection already holds {MAX_LEASES_PER_CONNECTION} permits, as many as \
                 one connection may: report or release some first"
            ));
        }
        if self.waiters.len() >= MAX_WAITERS {
            return Some(format!(
                "pacerd already has {MAX_WAITERS} acquires waiting, as many as it takes; try \
                 again shortly"
            ));
        }
        if req.detached_ttl.is_some() && self.leases.detached() >= MAX_DETACHED_LEASES {
            return Some(format!(
                "pacerd already holds {MAX_DETACHED_LEASES} detached permits, as many as it \
                 takes: report or release some (`pacer report`, `pacer release`)"
            ));
        }
        None
    }
}
