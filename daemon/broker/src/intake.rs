//! What comes in: acquires, reports and releases, an answer's headers as they arrive, an
//! administrator's pause, connections closing, time passing, the daemon stopping or
//! reconfigured, the store's answers, other daemons' news, a saved state. Each returns the
//! outputs to deliver.

use std::sync::Arc;
use std::time::{Duration, Instant};

use pacer_api::Answer;
use pacer_api::ratelimit::{RateLimitHeaders, limit_named_in, names_the_organization};
use pacer_protocol::message::{
    Acquire, Event, LeaseId, Rejected, Reported, Response, SettledAs, TimedOut,
};
use pacer_protocol::{KeyFingerprint, Throttle};

use super::budget::{BudgetIdx, Charge, MAX_BUDGETS, Reservation};
use super::exchange::{refusal, stopping};
use super::holds;
use super::lockouts::{self, Lockout, MAX_RATE_LIMIT_WAIT};
use super::queue::WaiterId;
use super::shared::{ClaimAnswer, ClusterEvent, SharedLease, Shares};
use super::waiters::{self, Waiter};
use super::{
    Broker, BrokerConfig, BrokerError, ConnId, Origin, Output, Settlement, Ticket, cost, later,
};

/// A 429, as [`Broker::rate_limited`] takes it.
struct Refused<'a> {
    reserved: &'a Reservation,
    /// The organization's budget of a workspace's call, and what was reserved there.
    parent: Option<&'a (BudgetIdx, Reservation)>,
    retry_after: Duration,
    message: Option<String>,
    rejection: Option<Arc<Answer>>,
}

/// Acquires.
impl Broker {
    /// Asks for a permit. The answer comes back in the outputs, now or from a later call.
    pub fn acquire(&mut self, now: Instant, ticket: Ticket, req: &Acquire) -> Vec<Output> {
        self.acquire_from(now, ticket, req, &Origin::default())
    }

    /// Asks for a permit on behalf of `origin` (the gateway knows a call's Claude Code
    /// session).
    pub fn acquire_from(
        &mut self,
        now: Instant,
        ticket: Ticket,
        req: &Acquire,
        origin: &Origin,
    ) -> Vec<Output> {
        if self.stopping {
            self.answer(ticket, stopping());
            return self.take_output();
        }
        let invalid = waiters::invalid(req)
            .or_else(|| self.waiters.full_for(ticket.conn))
            .or_else(|| {
                self.leases
                    .full_for(ticket.conn, req.detached_ttl.is_some())
            });
        if let Some(reason) = invalid {
            return self.refuse(ticket, req, refusal(reason), now);
        }
        let owner = self.accounts.owner_of(req.key);
        let class = self.classify(&req.model);
        if let Some(lockout) = self.lockouts.covering(&owner, &class, now) {
            let rejected = lockout.rejected(&owner, &class, &self.time_base);
            return self.refuse(ticket, req, rejected, now);
        }
        let Some(b) = self.budget_of(&owner, &class, now) else {
            let reason = format!(
                "pacerd tracks at most {MAX_BUDGETS} account × model class budgets, and every one \
                 has calls waiting or in flight"
            );
            return self.refuse(ticket, req, refusal(reason), now);
        };
        let id = self.budgets[b].id();
        let max_share = holds::max_share_of(req, &self.config.windows);
        self.clients
            .asked(&req.client_id, (req.priority, max_share), id, now);
        let cost = self.budgets[b].cost_of(req);
        let bound = cost::usage_bound(req.max_tokens);
        let mut waiter = Waiter::new(ticket, req, origin.session.clone(), (b, cost, bound), now);
        waiter.max_share = max_share;
        let cap = self.cap_hold(b, (&req.client_id, max_share), now);
        // A Claude Code session new to pacer may have to wait its turn to start.
        let turn = origin
            .session
            .as_ref()
            .filter(|session| !self.sessions.is_started(session))
            .filter(|session| !self.starts.try_start(&owner, session, now));
        if turn.is_none()
            && cap.is_none()
            && !self.shares.is_shared()
            && self.budgets[b].grants_at_once(&cost, self.gate(b, &cost, now), now)
            && self.window_hold(b, req.priority, now).is_none()
        {
            self.budgets[b].granted_at_once(&waiter.client, req.priority, &cost);
            self.grant(waiter, None, now);
        } else if waiter.deadline.is_some_and(|d| d <= now) {
            // No time to wait: told how long it would be.
            let (retry_after, reason) = match (turn, &cap) {
                (Some(_), _) => self.starts.holdup(&owner, now),
                (None, Some(hold)) => self.windows.holdup(hold, &self.time_base, now),
                (None, None) => {
                    self.count_window_refusal(b, req.priority, now);
                    self.holdup(b, (req.priority, &cost), None, now)
                }
            };
            self.note_refusal(Some(b), None, &req.client_id, &reason, now);
            let timed_out = TimedOut {
                retry_after,
                reason,
            };
            self.answer(ticket, Response::TimedOut(timed_out));
        } else if let Some(session) = turn {
            // A Claude Code session new to pacer waits for its turn to start.
            let id = self.waiters.next_id();
            self.waiters.insert(id, waiter);
            self.starts.wait(id, &owner, session.clone());
        } else if cap.is_some() {
            // Past its cap: out of the queue, holding up nobody, until its window resets.
            let id = self.waiters.next_id();
            self.waiters.insert(id, waiter);
            self.capped.insert(id);
        } else {
            self.enqueue(waiter, now);
        }
        self.take_output()
    }

    /// Refuses acquire `req` at once with `rejected`.
    fn refuse(
        &mut self,
        ticket: Ticket,
        req: &Acquire,
        rejected: Rejected,
        now: Instant,
    ) -> Vec<Output> {
        let (budget, reason) = (rejected.budget.clone(), rejected.reason.clone());
        self.note_refusal(None, budget, &req.client_id, &reason, now);
        self.answer(ticket, Response::Rejected(rejected));
        self.take_output()
    }

    /// The gateway answered a request itself, without waiting for a permit (the wait it would
    /// need outlasts what it may hold the request): counted and told like any refusal.
    pub fn refused_locally(&mut self, now: Instant, req: &Acquire, reason: &str) -> Vec<Output> {
        let b = self.budget_for(req.key, &req.model, now);
        if let Some(b) = b {
            self.count_window_refusal(b, req.priority, now);
        }
        self.note_refusal(b, None, &req.client_id, reason, now);
        self.take_output()
    }
}

/// A call's outcome: reports, releases and the response headers that teach the limits.
impl Broker {
    /// Settles a lease with the outcome of its call. Says what a 429 was taken for, and until
    /// when it holds the budget.
    pub fn report(
        &mut self,
        now: Instant,
        lease: LeaseId,
        settlement: Settlement,
        headers: &RateLimitHeaders,
    ) -> Result<(Vec<Output>, Reported), BrokerError> {
        let key = self
            .leases
            .get(lease)
            .ok_or(BrokerError::UnknownLease(lease))?
            .key;
        // First: the answer may tie the key to an account, moving the lease with it.
        self.link_if_named(key, headers, now);
        let mut held = self.leases.take(lease)?;
        // Its answer came: its cost is in the utilization the API reports from now on.
        self.end_window_call(held.window_call.take(), now);
        let verdict = settlement.verdict(headers, &held.reservation.cost, &held.bound);
        let success = matches!(settlement, Settlement::Success { .. });
        self.note_session(&held, success, verdict.throttle, now);
        self.note_settled(&held, verdict.told, verdict.tokens, now);
        self.settle_shared(held.share(), Some(verdict.used));
        let (b, reserved, parent) = (held.budget, &held.reservation, held.parent.as_ref());
        let unknown_model = matches!(settlement, Settlement::ClientError { status: 404 });
        if let Some(charge) = verdict.charge {
            self.budgets.settle(b, reserved, parent, charge, now);
        }
        let mut until = None;
        match settlement {
            Settlement::Success { .. } => self.overloads.succeeded(self.budgets[b].class()),
            // A bare 429 says nothing of the budget: it is settled like the caller's mistake.
            Settlement::RateLimited { .. } if verdict.throttle == Some(Throttle::Bare) => {
                self.budgets[b].record_throttle(Throttle::Bare);
            }
            Settlement::RateLimited {
                retry_after,
                message,
                rejection,
            } => {
                let retry_after = match retry_after.or(headers.retry_after) {
                    Some(wait) => wait.min(MAX_RATE_LIMIT_WAIT),
                    // No usable wait (negative, garbled): back off exponentially.
                    None => self.budgets[b].blind_pause(),
                };
                // Learn first: the 429's own headers may create the bucket it names.
                self.learn(b, headers, None, now);
                let refused = Refused {
                    reserved,
                    parent,
                    retry_after,
                    message,
                    rejection: rejection.map(Arc::new),
                };
                until = Some(self.rate_limited(b, refused, headers, now));
            }
            Settlement::SpendCapped { message, rejection } => {
                self.budgets[b].record_throttle(Throttle::SpendCap);
                let owner = self.budgets[b].owner().clone();
                let lockout = Lockout::spend_cap(message, rejection, now);
                until = Some(lockout.until);
                self.lock_out(&owner, None, lockout, now);
            }
            Settlement::Overloaded { retry_after } => {
                self.budgets[b].record_overload();
                self.overloaded(b, retry_after.or(headers.retry_after), now);
            }
            Settlement::Failed | Settlement::ClientError { .. } | Settlement::Unknown => {}
        }
        if until.is_none() {
            // After settling: the server's `remaining` already counts this call.
            self.learn(b, headers, None, now);
        }
        match verdict.answered {
            _ if !held.probe => {}
            true => self.budgets[b].probe_answered(),
            false => self.budgets[b].probe_unanswered(),
        }
        self.budgets[b].finish();
        self.serve(b, now);
        let budget = &self.budgets[b];
        if unknown_model
            && budget.is_idle()
            && !budget.ever_succeeded()
            && self.budgets.is_no_parent(b)
        {
            // A model the API does not have: its budget is not worth a slot of the table.
            self.shares.forget(b);
            self.budgets.remove(b);
        }
        let reported = Reported {
            throttle: verdict.throttle,
            until: until.map(|at| self.time_base.to_wall(at)),
        };
        Ok((self.take_output(), reported))
    }

    /// Gives a lease back unused: everything it reserved is refunded.
    pub fn release(&mut self, now: Instant, lease: LeaseId) -> Result<Vec<Output>, BrokerError> {
        let mut held = self.leases.take(lease)?;
        self.end_window_call(held.window_call.take(), now);
        self.note_settled(&held, SettledAs::Released, (0, 0), now);
        self.settle_shared(held.share(), None);
        let (b, parent) = (held.budget, held.parent.as_ref());
        self.budgets
            .settle(b, &held.reservation, parent, Charge::All, now);
        if held.probe {
            self.budgets[b].probe_unanswered();
        }
        self.budgets[b].finish();
        self.serve(b, now);
        Ok(self.take_output())
    }

    /// Feeds the rate-limit headers of a response as soon as they arrive, before its body (and
    /// the settlement) has: the next acquire already knows the limits.
    pub fn observe(
        &mut self,
        now: Instant,
        lease: LeaseId,
        headers: &RateLimitHeaders,
    ) -> Vec<Output> {
        if let Some(key) = self.leases.get(lease).map(|held| held.key) {
            self.link_if_named(key, headers, now);
            let held = self.leases.get_mut(lease).expect("still held");
            let (b, call) = (held.budget, held.window_call.take());
            self.end_window_call(call, now);
            // The API answered: a budget's first contact is over.
            self.budgets[b].probe_answered();
            self.learn(b, headers, Some(lease), now);
            self.serve(b, now);
        }
        self.take_output()
    }

    /// A 429: the limit it names is drained so that grants resume at the refill pace, and every
    /// peer pauses — or, for a spent window or a wait longer than `max_hold`, is locked out.
    /// The organization's budget is the one refused when the message names it.
    fn rate_limited(
        &mut self,
        b: BudgetIdx,
        refused: Refused<'_>,
        headers: &RateLimitHeaders,
        now: Instant,
    ) -> Instant {
        let message = refused.message.as_deref();
        let named = message.and_then(limit_named_in);
        let target = match refused.parent {
            Some((p, parent)) if message.is_some_and(names_the_organization) => {
                self.budgets[b].refund_output(refused.reserved, now);
                self.budgets[*p].rate_limited(parent, named, now);
                *p
            }
            parent => {
                self.budgets[b].rate_limited(refused.reserved, named, now);
                if let Some((p, parent)) = parent {
                    self.budgets[*p].refund_output(parent, now);
                }
                b
            }
        };
        let reason = refused
            .message
            .unwrap_or_else(|| "rate limited (429)".into());
        let (retry_after, rejection) = (refused.retry_after, refused.rejection);
        let until = later(now, retry_after);
        let owner = self.budgets[target].owner().clone();
        let spent =
            lockouts::of_spent_windows(&headers.unified, until, &rejection, &self.time_base, now);
        if let Some(latest) = spent.iter().map(|(_, lockout)| lockout.until).max() {
            // A spent subscription window: what it covers is locked out until its reset.
            self.budgets[target].record_throttle(Throttle::Window);
            for (scope, lockout) in spent {
                self.lock_out(&owner, scope, lockout, now);
            }
            return latest;
        }
        self.budgets[target].record_throttle(Throttle::PerMinute);
        if retry_after > self.config.max_hold {
            let class = Some(self.budgets[target].class().clone());
            let lockout = Lockout {
                until,
                reason: format!("{reason} (the API asks to wait longer than max_hold)"),
                rejection,
            };
            self.lock_out(&owner, class, lockout, now);
        } else {
            let drain = Some(named.into_iter().collect());
            let budget = self.budgets[target].id();
            self.publish(ClusterEvent::pause(budget, (now, until), &reason, drain));
            self.extend_pause(target, until, reason);
        }
        until
    }

    /// A 529: the model class backs off, on every key.
    fn overloaded(&mut self, b: BudgetIdx, retry_after: Option<Duration>, now: Instant) {
        let class = self.budgets[b].class().clone();
        if let Some(until) = self.overloads.record(&class, retry_after, now) {
            let for_ms = until.saturating_duration_since(now).as_millis() as u64;
            self.publish(ClusterEvent::Overload {
                class: class.to_string(),
                for_ms,
            });
            self.out.push(Output::Event(Event::Overloaded {
                model_class: class.to_string(),
                until: self.time_base.to_wall(until),
            }));
        }
    }
}

/// Around the calls: an administrator's pause, connections closing, time passing, stopping,
/// a new configuration.
impl Broker {
    /// An administrator's pause: sets the budget's pause to exactly `until`. A time not after
    /// `now` lifts it — and with it any lockout of the budget and its class's overload backoff.
    pub fn pause(
        &mut self,
        now: Instant,
        key: KeyFingerprint,
        model: &str,
        until: Instant,
    ) -> Vec<Output> {
        let Some(b) = self.budget_for(key, model, now) else {
            return Vec::new();
        };
        if until <= now {
            self.lift(b);
            let budget = self.budgets[b].id();
            self.publish(ClusterEvent::Lift { budget });
        } else {
            let reason = super::budget::ADMIN_PAUSE_REASON;
            self.budgets[b].set_pause(until, reason);
            self.out.push(Output::Event(Event::PauseStarted {
                budget: self.budgets[b].id(),
                until: self.time_base.to_wall(until),
                reason: reason.into(),
            }));
            let budget = self.budgets[b].id();
            self.publish(ClusterEvent::pause(budget, (now, until), reason, None));
        }
        self.serve(b, now);
        self.take_output()
    }

    /// A connection closed: its waiters leave the queues, and the leases it held settle as
    /// "unknown outcome" (the reservation stays spent; the in-flight slot is freed). Detached
    /// leases are not affected.
    pub fn disconnect(&mut self, now: Instant, conn: ConnId) -> Vec<Output> {
        let mut touched = Vec::new();
        for id in self.waiters.ids_of_conn(conn) {
            if let Some(waiter) = self.drop_waiter(id) {
                touched.push(waiter.budget);
            }
        }
        for lease in self.leases.take_conn(conn) {
            touched.push(lease.budget);
            self.settle_unknown(lease, now);
        }
        touched.sort_unstable();
        touched.dedup();
        for b in touched {
            self.serve(b, now);
        }
        self.take_output()
    }

    /// Applies everything that time alone changes: pauses and backoffs that ended, detached leases
    /// that expired, waiters that can now be granted, deadlines that passed.
    pub fn tick(&mut self, now: Instant) -> Vec<Output> {
        for b in self.budgets.indices() {
            if self.budgets[b]
                .paused_until()
                .is_some_and(|until| until <= now)
            {
                self.end_pause(b);
            }
        }
        self.overloads.expire(now);
        for (owner, scope) in self.lockouts.expire(now) {
            self.lockout_ended(&owner, scope);
        }
        while let Some(lease) = self.leases.take_expired(now) {
            self.settle_unknown(lease, now);
        }
        if self.clients.prune_due(now) {
            self.clients.prune(now);
            self.sessions.prune(now);
        }
        self.admit_starters(now);
        self.windows.expire_caps(self.time_base.to_wall(now));
        self.unpark_capped(now);
        self.serve_all(now);
        while let Some(id) = self.waiters.first_expired(now) {
            self.time_out(id, now);
        }
        self.take_output()
    }

    /// Waiter `id`'s deadline passed: it is told how much longer it would have waited, and why.
    pub(crate) fn time_out(&mut self, id: WaiterId, now: Instant) {
        let Some(w) = self.waiters.get(id) else {
            return;
        };
        let (b, priority) = (w.budget, w.priority);
        let starting = self.starts.is_waiting(id);
        let capped = self.waiter_capped(b, id, now);
        let (retry_after, reason) = match (starting, &capped) {
            (true, _) => self.starts.holdup(self.budgets[b].owner(), now),
            (false, Some(hold)) => self.windows.holdup(hold, &self.time_base, now),
            (false, None) => self.holdup(b, (priority, &w.cost), Some(w.mark), now),
        };
        let client = w.client.clone();
        if !starting && capped.is_none() {
            self.count_window_refusal(b, priority, now);
        }
        self.note_refusal(Some(b), None, &client, &reason, now);
        let timed_out = TimedOut {
            retry_after,
            reason,
        };
        if let Some(waiter) = self.drop_waiter(id) {
            self.answer(waiter.ticket, Response::TimedOut(timed_out));
        }
        // The head may have left: whoever is next may be servable.
        self.serve(b, now);
    }

    /// Every heartbeat: what other daemons told and did not tell again is forgotten, and this
    /// daemon tells again what it has in flight (so that a daemon that joins, or missed a
    /// message, knows).
    pub fn windows_heartbeat(&mut self, now: Instant) -> Vec<Output> {
        for owner in self.windows.expire(now) {
            self.tell_window_calls(&owner);
        }
        let owners: Vec<_> = self.windows.iter().map(|(o, _)| o.clone()).collect();
        for owner in owners {
            self.serve_owner(&owner, now);
        }
        self.take_output()
    }

    /// The daemon is stopping: every waiting acquire, and every acquire from now on, is answered
    /// with a "stopping" error. Reports and releases are still taken.
    pub fn stop(&mut self) -> Vec<Output> {
        self.stopping = true;
        for id in self.waiters.ids_where(|_| true) {
            if let Some(waiter) = self.drop_waiter(id) {
                self.answer(waiter.ticket, stopping());
            }
        }
        self.take_output()
    }

    /// Replaces the configuration: new class patterns apply to later acquires, new limits to every
    /// budget at once, keeping bucket levels, waiters and leases.
    pub fn reconfigure(&mut self, config: BrokerConfig, now: Instant) -> Vec<Output> {
        let tied = self.accounts.configure(config.accounts.clone());
        self.windows.configure(config.windows.clone());
        self.config = config;
        for (key, account) in tied {
            self.link(key, account, now);
        }
        let (limits, accounts) = (&self.config.limits, &self.accounts);
        self.budgets.reconfigure(
            |owner, class| limits.for_keys(&accounts.keys_of(owner), class),
            now,
        );
        self.unpark_capped(now);
        self.serve_all(now);
        self.take_output()
    }
}

/// The shared store's answers.
impl Broker {
    /// The store's answer to claim `id`.
    pub fn claim_answered(&mut self, now: Instant, id: u64, answer: ClaimAnswer) -> Vec<Output> {
        let Some((b, waiter)) = self.shares.answered(id) else {
            return self.take_output();
        };
        // The waiter may have moved (its key joined an account) or left.
        let current = self.waiters.get(waiter).map(|w| w.budget);
        let entropy = now.duration_since(self.time_base.instant).subsec_nanos();
        self.shares
            .heard(b, &answer, &mut self.budgets, entropy, now);
        match answer {
            ClaimAnswer::Granted { taken_before, .. } => {
                let at_head =
                    current.is_some_and(|c| self.budgets[c].head().map(|h| h.0) == Some(waiter));
                match current {
                    Some(c) if at_head => {
                        let lease = SharedLease {
                            claim: id,
                            taken_before,
                        };
                        self.grant_head(c, waiter, Some(lease), now);
                    }
                    _ => {
                        // Its waiter left: the capacity goes back, unused.
                        let reserved = match self.waiters.get(waiter) {
                            Some(w) => w.cost,
                            None => self.budgets[b].head().map(|h| h.1).unwrap_or_default(),
                        };
                        let op = Shares::unused(&self.budgets, b, id, reserved, taken_before);
                        self.out.push(Output::Shared(op));
                    }
                }
            }
            ClaimAnswer::LockedOut { for_, reason } => {
                let owner = self.budgets[b].owner().clone();
                let lockout = Lockout {
                    until: later(now, for_),
                    reason,
                    rejection: None,
                };
                self.lock_out(&owner, None, lockout, now);
            }
            ClaimAnswer::Refused { .. } | ClaimAnswer::Unavailable => {}
        }
        if let Some(c) = current {
            self.serve(c, now);
        }
        self.take_output()
    }
}
