//! The broker: every budget, waiter and lease, as a pure state machine.
//!
//! Nothing here does I/O or reads a clock. Each method takes `now` and returns the [`Output`]s to
//! deliver: answers to acquires that were waiting (possibly on other connections) and events for
//! subscribers. [`Broker::next_wakeup`] says when time alone will change something (a bucket
//! refills enough for the head of a queue, a deadline or pause passes), and the server calls
//! [`Broker::tick`] then. The server owns the one timer; the broker owns every rule.

mod bucket;
mod budget;
mod cost;
mod lease;
mod limits;
mod queue;
mod snapshot;

#[cfg(test)]
mod tests;

use std::collections::{BTreeSet, HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use pacer_protocol::message::{
    Acquire, BudgetStatus, ErrorKind, ErrorReply, Event, Granted, LeaseId, Rejected, Response,
    TimedOut, Usage,
};
use pacer_protocol::ratelimit::{RateLimitHeaders, limit_named_in};
use pacer_protocol::{KeyFingerprint, LimitKind, Priority};

use budget::{Budget, Learned, Readiness, Reservation};
pub use cost::Costs;
use lease::{Lease, Waiter};
pub use limits::{LimitSet, LimitTable, ModelClasses};
use queue::WaiterId;
pub use snapshot::BrokerState;

/// The broker's share of the configuration.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct BrokerConfig {
    pub classes: ModelClasses,
    pub limits: LimitTable,
}

/// A connection, as the server numbers them. Leases and waiters belong to one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ConnId(pub u64);

/// Where to send the answer to an acquire: the connection and the request's id on it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Ticket {
    pub conn: ConnId,
    pub request: u64,
}

/// Something the server must deliver.
#[derive(Debug, Clone, PartialEq)]
pub enum Output {
    /// The answer to an acquire: [`Response::Granted`], [`Response::TimedOut`] or
    /// [`Response::Rejected`].
    Answer { ticket: Ticket, response: Response },
    /// An event for logs and subscribers. [`Event::Granted`] is only produced while
    /// [`Broker::set_events`] is on; the rest are rare and always produced.
    Event(Event),
}

/// Totals from [`Broker::summary`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Summary {
    pub budgets: usize,
    pub in_flight: usize,
    pub waiting: usize,
    pub paused: usize,
}

/// How a permitted call went, as the broker needs it (response headers already parsed).
#[derive(Debug, Clone, PartialEq)]
pub enum Settlement {
    Success {
        usage: Usage,
    },
    RateLimited {
        retry_after: Option<Duration>,
        message: Option<String>,
    },
    Overloaded {
        retry_after: Option<Duration>,
    },
    Failed,
    Unknown,
}

/// Why a report or release was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BrokerError {
    #[error("lease {0} is not held: it was already settled, it expired, or it was never granted")]
    UnknownLease(LeaseId),
}

/// How long a 429 without `retry-after` pauses its budget.
const DEFAULT_RATE_LIMIT_PAUSE: Duration = Duration::from_secs(1);
/// The first backoff after a 529, doubled for each consecutive one up to the maximum.
const OVERLOAD_BACKOFF_START: Duration = Duration::from_secs(1);
const OVERLOAD_BACKOFF_MAX: Duration = Duration::from_secs(32);
/// Bounds on what one connection may hold, so a runaway client cannot exhaust the daemon.
const MAX_WAITERS_PER_CONNECTION: usize = 65_536;
/// Each key × class pair is a budget; this many is far beyond any real machine's needs.
const MAX_BUDGETS: usize = 10_000;
const MAX_NAME_LEN: usize = 256;

/// The longest wait the broker reckons with. Durations from clients and headers are clamped to
/// it, so that no arithmetic on time can overflow.
pub const FOREVER: Duration = Duration::from_secs(366 * 24 * 3600);

/// `now + wait`, with `wait` clamped to [`FOREVER`].
pub fn later(now: Instant, wait: Duration) -> Instant {
    now.checked_add(wait.min(FOREVER)).unwrap_or(now)
}

/// Anchors the monotonic clock to the wall clock, for the times shown to users.
#[derive(Debug, Clone, Copy)]
pub struct TimeBase {
    pub instant: Instant,
    pub wall: SystemTime,
}

impl TimeBase {
    pub fn to_wall(&self, at: Instant) -> SystemTime {
        match at.checked_duration_since(self.instant) {
            Some(after) => self.wall + after,
            None => self.wall - self.instant.duration_since(at),
        }
    }

    pub fn to_instant(&self, at: SystemTime) -> Instant {
        match at.duration_since(self.wall) {
            Ok(after) => later(self.instant, after),
            Err(before) => self
                .instant
                .checked_sub(before.duration())
                .unwrap_or(self.instant),
        }
    }
}

/// A model class's shared backoff after 529 (overloaded) answers.
#[derive(Debug, Default)]
struct Overload {
    consecutive: u32,
    until: Option<Instant>,
}

/// What one connection holds, so that its waiters and leases can be found when it closes.
#[derive(Debug, Default)]
struct ConnHoldings {
    waiters: HashSet<WaiterId>,
    leases: HashSet<LeaseId>,
}

pub struct Broker {
    config: BrokerConfig,
    time_base: TimeBase,
    /// Model name → class, so the patterns are matched once per model name.
    class_cache: HashMap<String, Arc<str>>,
    budget_index: HashMap<(KeyFingerprint, Arc<str>), usize>,
    budgets: Vec<Budget>,
    /// The budgets time can change: those with waiters or a pause. The timer only looks at these.
    attention: BTreeSet<usize>,
    overloads: HashMap<Arc<str>, Overload>,
    waiters: HashMap<WaiterId, Waiter>,
    /// Waiters' deadlines in time order.
    deadlines: BTreeSet<(Instant, WaiterId)>,
    leases: HashMap<LeaseId, Lease>,
    /// Detached leases' expiry times in time order.
    expiries: BTreeSet<(Instant, LeaseId)>,
    holdings: HashMap<ConnId, ConnHoldings>,
    /// Keys whose acquires fail fast until a moment, and why (a spend cap was reached).
    blocked: HashMap<KeyFingerprint, (Instant, String)>,
    next_waiter: WaiterId,
    next_lease: u64,
    /// Set when the daemon stops: acquires are refused while leases in flight get time to report.
    stopping: bool,
    /// Grant events cost allocations on the hot path; they are only built while someone listens.
    grant_events: bool,
    out: Vec<Output>,
}

impl Broker {
    /// A broker with no budgets yet. Lease ids start at `first_lease` (the server picks one that
    /// does not repeat the ids of an earlier run).
    pub fn new(config: BrokerConfig, time_base: TimeBase, first_lease: u64) -> Self {
        Self {
            config,
            time_base,
            class_cache: HashMap::new(),
            budget_index: HashMap::new(),
            budgets: Vec::new(),
            attention: BTreeSet::new(),
            overloads: HashMap::new(),
            waiters: HashMap::new(),
            deadlines: BTreeSet::new(),
            leases: HashMap::new(),
            expiries: BTreeSet::new(),
            holdings: HashMap::new(),
            blocked: HashMap::new(),
            next_waiter: 0,
            next_lease: first_lease.max(1),
            stopping: false,
            grant_events: false,
            out: Vec::new(),
        }
    }

    /// Turns grant events on or off (on while at least one subscriber listens).
    pub fn set_events(&mut self, on: bool) {
        self.grant_events = on;
    }

    pub fn time_base(&self) -> TimeBase {
        self.time_base
    }

    /// Replaces the configuration: new class patterns apply to later acquires, new limits to every
    /// budget at once, keeping bucket levels, waiters and leases.
    pub fn reconfigure(&mut self, config: BrokerConfig, now: Instant) -> Vec<Output> {
        self.config = config;
        self.class_cache.clear();
        for budget in &mut self.budgets {
            let configured = self.config.limits.for_budget(budget.key, &budget.class);
            budget.set_configured(configured, now);
        }
        self.serve_all(now);
        self.take_output()
    }

    /// The model class a model name belongs to.
    pub fn classify(&mut self, model: &str) -> Arc<str> {
        if let Some(class) = self.class_cache.get(model) {
            return class.clone();
        }
        let class: Arc<str> = Arc::from(self.config.classes.classify(model));
        if self.class_cache.len() < 4096 {
            self.class_cache.insert(model.to_owned(), class.clone());
        }
        class
    }

    /// The budget of a key and model, created on first use; `None` past [`MAX_BUDGETS`].
    fn budget_for(&mut self, key: KeyFingerprint, model: &str, now: Instant) -> Option<usize> {
        let class = self.classify(model);
        self.budget_for_class(key, class, now)
    }

    fn budget_for_class(
        &mut self,
        key: KeyFingerprint,
        class: Arc<str>,
        now: Instant,
    ) -> Option<usize> {
        if let Some(&index) = self.budget_index.get(&(key, class.clone())) {
            return Some(index);
        }
        if self.budgets.len() >= MAX_BUDGETS {
            return None;
        }
        let configured = self.config.limits.for_budget(key, &class);
        self.budgets
            .push(Budget::new(key, class.clone(), configured, now));
        let index = self.budgets.len() - 1;
        self.budget_index.insert((key, class), index);
        Some(index)
    }

    /// Keeps [`Broker::attention`] in step after budget `b` changed.
    fn touch(&mut self, b: usize) {
        let budget = &self.budgets[b];
        if budget.queue.is_empty() && budget.paused_until.is_none() {
            self.attention.remove(&b);
        } else {
            self.attention.insert(b);
        }
    }

    fn gate(&self, budget: usize) -> Option<Instant> {
        self.overloads
            .get(&self.budgets[budget].class)
            .and_then(|o| o.until)
    }

    /// Asks for a permit. The answer comes back in the outputs, now or from a later call.
    pub fn acquire(&mut self, now: Instant, ticket: Ticket, req: &Acquire) -> Vec<Output> {
        if self.stopping {
            self.out.push(Output::Answer {
                ticket,
                response: stopping(),
            });
            return self.take_output();
        }
        if let Some(reason) = self
            .invalid(ticket, req)
            .or_else(|| self.blocked_reason(req.key, now))
        {
            let response = Response::Rejected(Rejected { reason });
            self.out.push(Output::Answer { ticket, response });
            return self.take_output();
        }
        let Some(b) = self.budget_for(req.key, &req.model, now) else {
            let reason = format!("pacerd tracks at most {MAX_BUDGETS} key × model class budgets");
            let response = Response::Rejected(Rejected { reason });
            self.out.push(Output::Answer { ticket, response });
            return self.take_output();
        };
        let cost = self.budgets[b].cost_of(req);
        let queue_empty = self.budgets[b].queue.is_empty();
        if queue_empty && self.budgets[b].readiness(&cost, self.gate(b), now) == Readiness::Now {
            let grant = Grant {
                ticket,
                client_id: &req.client_id,
                priority: req.priority,
                detached_ttl: req.detached_ttl,
                cost,
                waited: Duration::ZERO,
            };
            self.grant(b, grant, now);
            return self.take_output();
        }
        let deadline = req.deadline.map(|d| later(now, d));
        if deadline.is_some_and(|d| d <= now) {
            let retry_after = self.estimate_wait(now, req);
            let response = Response::TimedOut(TimedOut { retry_after });
            self.out.push(Output::Answer { ticket, response });
            return self.take_output();
        }
        let client: Arc<str> = Arc::from(req.client_id.as_str());
        let id = self.next_waiter;
        self.next_waiter += 1;
        let mark = self.budgets[b].queue.push(id, &client, req.priority, cost);
        if let Some(deadline) = deadline {
            self.deadlines.insert((deadline, id));
        }
        self.holdings
            .entry(ticket.conn)
            .or_default()
            .waiters
            .insert(id);
        self.waiters.insert(
            id,
            Waiter {
                ticket,
                budget: b,
                client,
                priority: req.priority,
                cost,
                mark,
                deadline,
                detached_ttl: req.detached_ttl,
                enqueued_at: now,
            },
        );
        self.serve(b, now);
        self.take_output()
    }

    /// How long an acquire made now would wait, as far as the broker can tell (zero if it would
    /// be granted at once): the gateway answers 429 straight away rather than hold a request it
    /// cannot serve in time.
    pub fn estimate_wait(&mut self, now: Instant, req: &Acquire) -> Duration {
        let Some(b) = self.budget_for(req.key, &req.model, now) else {
            return Duration::ZERO;
        };
        let budget = &self.budgets[b];
        let cost = budget.cost_of(req);
        if budget.queue.is_empty() && budget.readiness(&cost, self.gate(b), now) == Readiness::Now {
            return Duration::ZERO;
        }
        let ahead = budget
            .queue
            .cost_ahead(req.priority, budget.queue.mark(req.priority));
        budget.wait_estimate(&ahead, &cost, self.gate(b), now)
    }

    fn invalid(&self, ticket: Ticket, req: &Acquire) -> Option<String> {
        if req.model.trim().is_empty() {
            return Some("the model name is empty".into());
        }
        if req.model.len() > MAX_NAME_LEN || req.client_id.len() > MAX_NAME_LEN {
            return Some(format!(
                "model and client id must be at most {MAX_NAME_LEN} bytes"
            ));
        }
        if req.detached_ttl.is_some_and(|ttl| ttl.is_zero()) {
            return Some("a detached permit needs a TTL above zero".into());
        }
        let waiting = self
            .holdings
            .get(&ticket.conn)
            .map_or(0, |h| h.waiters.len());
        if waiting >= MAX_WAITERS_PER_CONNECTION {
            return Some(format!(
                "this connection already has {MAX_WAITERS_PER_CONNECTION} acquires waiting"
            ));
        }
        None
    }

    fn grant(&mut self, b: usize, grant: Grant<'_>, now: Instant) {
        let lease = LeaseId(self.next_lease);
        self.next_lease += 1;
        let charged = self.budgets[b].take(&grant.cost, now);
        let expires = grant.detached_ttl.map(|ttl| later(now, ttl));
        match expires {
            Some(at) => {
                self.expiries.insert((at, lease));
            }
            None => {
                let holdings = self.holdings.entry(grant.ticket.conn).or_default();
                holdings.leases.insert(lease);
            }
        }
        self.leases.insert(
            lease,
            Lease {
                budget: b,
                owner: expires.is_none().then_some(grant.ticket.conn),
                expires,
                reservation: Reservation {
                    cost: grant.cost,
                    charged,
                },
                unmetered: charged.map(|charged| !charged),
            },
        );
        let response = Response::Granted(Granted {
            lease,
            waited: grant.waited,
        });
        self.out.push(Output::Answer {
            ticket: grant.ticket,
            response,
        });
        if self.grant_events {
            self.out.push(Output::Event(Event::Granted {
                budget: self.budgets[b].id(),
                lease,
                priority: grant.priority,
                client_id: grant.client_id.to_owned(),
                waited: grant.waited,
            }));
        }
    }

    /// Grants queued waiters of budget `b`, head first, while the head can be served.
    fn serve(&mut self, b: usize, now: Instant) {
        self.serve_queue(b, now);
        self.touch(b);
    }

    fn serve_queue(&mut self, b: usize, now: Instant) {
        while let Some((id, cost)) = self.budgets[b].queue.head() {
            if self.budgets[b].readiness(&cost, self.gate(b), now) != Readiness::Now {
                break;
            }
            self.budgets[b].queue.pop_head();
            let waiter = self
                .forget_waiter(id)
                .expect("a queued waiter is in the waiter table");
            let grant = Grant {
                ticket: waiter.ticket,
                client_id: &waiter.client,
                priority: waiter.priority,
                detached_ttl: waiter.detached_ttl,
                cost,
                waited: now.saturating_duration_since(waiter.enqueued_at),
            };
            self.grant(b, grant, now);
        }
    }

    fn serve_all(&mut self, now: Instant) {
        let budgets: Vec<usize> = self.attention.iter().copied().collect();
        for b in budgets {
            self.serve(b, now);
        }
    }

    /// Forgets a waiter everywhere but in its budget's queue (from which it was just popped).
    fn forget_waiter(&mut self, id: WaiterId) -> Option<Waiter> {
        let waiter = self.waiters.remove(&id)?;
        if let Some(deadline) = waiter.deadline {
            self.deadlines.remove(&(deadline, id));
        }
        if let Some(holdings) = self.holdings.get_mut(&waiter.ticket.conn) {
            holdings.waiters.remove(&id);
        }
        Some(waiter)
    }

    /// Takes a waiter out of its queue and forgets it (it timed out, left, or is refused).
    fn drop_waiter(&mut self, id: WaiterId) -> Option<Waiter> {
        let waiter = self.forget_waiter(id)?;
        let b = waiter.budget;
        self.budgets[b]
            .queue
            .remove(id, &waiter.client, waiter.priority);
        self.touch(b);
        Some(waiter)
    }

    /// Settles a lease with the outcome of its call.
    pub fn report(
        &mut self,
        now: Instant,
        lease: LeaseId,
        settlement: Settlement,
        headers: &RateLimitHeaders,
    ) -> Result<Vec<Output>, BrokerError> {
        let held = self.take_lease(lease)?;
        let b = held.budget;
        let reserved = held.reservation;
        let rate_limited = matches!(settlement, Settlement::RateLimited { .. });
        match settlement {
            Settlement::Success { usage } => {
                let budget = &mut self.budgets[b];
                budget.settle_usage(
                    &reserved,
                    usage.counted_input_tokens(),
                    usage.output_tokens,
                    now,
                );
                if let Some(overload) = self.overloads.get_mut(&budget.class) {
                    overload.consecutive = 0;
                }
            }
            Settlement::RateLimited {
                retry_after,
                message,
            } => {
                let retry_after = retry_after
                    .or(headers.retry_after)
                    .unwrap_or(DEFAULT_RATE_LIMIT_PAUSE);
                // Learn first: the 429's own headers may create the bucket it names.
                self.learn(b, headers, None, now);
                let limit = message.as_deref().and_then(limit_named_in);
                let budget = &mut self.budgets[b];
                budget.rate_limited += 1;
                // A rejected call produced no output.
                budget.adjust(LimitKind::OutputTokens, &reserved, 0, now);
                budget.drain(limit, now);
                let reason = message.unwrap_or_else(|| "rate limited (429)".into());
                self.extend_pause(b, later(now, retry_after), reason);
            }
            Settlement::Overloaded { retry_after } => {
                self.budgets[b].adjust(LimitKind::OutputTokens, &reserved, 0, now);
                self.overloaded(b, retry_after.or(headers.retry_after), now);
            }
            Settlement::Failed => {
                self.budgets[b].adjust(LimitKind::OutputTokens, &reserved, 0, now);
            }
            Settlement::Unknown => {}
        }
        if !rate_limited {
            // After settling: the server's `remaining` already counts this call.
            self.learn(b, headers, None, now);
        }
        self.budgets[b].finish();
        self.serve(b, now);
        Ok(self.take_output())
    }

    /// Gives a lease back unused: everything it reserved is refunded.
    pub fn release(&mut self, now: Instant, lease: LeaseId) -> Result<Vec<Output>, BrokerError> {
        let held = self.take_lease(lease)?;
        let budget = &mut self.budgets[held.budget];
        for kind in LimitKind::ALL {
            budget.adjust(kind, &held.reservation, 0, now);
        }
        budget.finish();
        self.serve(held.budget, now);
        Ok(self.take_output())
    }

    fn take_lease(&mut self, lease: LeaseId) -> Result<Lease, BrokerError> {
        let held = self
            .leases
            .remove(&lease)
            .ok_or(BrokerError::UnknownLease(lease))?;
        if let Some(at) = held.expires {
            self.expiries.remove(&(at, lease));
        }
        if let Some(owner) = held.owner
            && let Some(holdings) = self.holdings.get_mut(&owner)
        {
            holdings.leases.remove(&lease);
        }
        Ok(held)
    }

    /// Makes every acquire for `key` fail fast until `until` (the API said its spend cap is
    /// reached: retrying cannot help). Waiters of that key are answered at once.
    pub fn block_key(
        &mut self,
        now: Instant,
        key: KeyFingerprint,
        until: Instant,
        reason: String,
    ) -> Vec<Output> {
        if until > now {
            self.blocked.insert(key, (until, reason.clone()));
        }
        let ids: Vec<WaiterId> = self
            .waiters
            .iter()
            .filter(|(_, w)| self.budgets[w.budget].key == key)
            .map(|(&id, _)| id)
            .collect();
        self.answer_waiters(ids, |_| {
            Response::Rejected(Rejected {
                reason: reason.clone(),
            })
        });
        self.take_output()
    }

    /// Takes waiters out of their queues and answers each with `answer`, in arrival order.
    fn answer_waiters(&mut self, mut ids: Vec<WaiterId>, answer: impl Fn(&Waiter) -> Response) {
        ids.sort_unstable();
        for id in ids {
            if let Some(waiter) = self.drop_waiter(id) {
                let response = answer(&waiter);
                self.out.push(Output::Answer {
                    ticket: waiter.ticket,
                    response,
                });
            }
        }
    }

    fn blocked_reason(&mut self, key: KeyFingerprint, now: Instant) -> Option<String> {
        let (until, reason) = self.blocked.get(&key)?;
        if *until > now {
            return Some(reason.clone());
        }
        self.blocked.remove(&key);
        None
    }

    /// Feeds the rate-limit headers of a response as soon as they arrive, before its body (and
    /// the settlement) has: the next acquire already knows the limits.
    pub fn observe(
        &mut self,
        now: Instant,
        lease: LeaseId,
        headers: &RateLimitHeaders,
    ) -> Vec<Output> {
        if let Some(held) = self.leases.get(&lease) {
            let b = held.budget;
            self.learn(b, headers, Some(lease), now);
            self.serve(b, now);
        }
        self.take_output()
    }

    /// Applies the headers of an answer to budget `b`; `answering` is the lease of the call
    /// answered, if it is still held.
    fn learn(
        &mut self,
        b: usize,
        headers: &RateLimitHeaders,
        answering: Option<LeaseId>,
        now: Instant,
    ) {
        let budget = &self.budgets[b];
        let calibrating = LimitKind::ALL.iter().any(|&kind| {
            budget.calibrating[kind.index()]
                || (headers.window(kind).limit.is_some() && budget.limits().get(kind).is_none())
        });
        // Only while a bucket calibrates (rare and brief): what else is in flight.
        let mut in_flight_elsewhere = Costs::default();
        let mut unmetered_left = [false; 3];
        if calibrating {
            for (id, lease) in &self.leases {
                if lease.budget == b && Some(*id) != answering {
                    in_flight_elsewhere = in_flight_elsewhere.plus(&lease.reservation.cost);
                    for (left, unmetered) in unmetered_left.iter_mut().zip(lease.unmetered) {
                        *left |= unmetered;
                    }
                }
            }
        }
        for Learned {
            kind,
            limit,
            new_bucket,
        } in self.budgets[b].apply_headers(headers, &in_flight_elsewhere, now)
        {
            if new_bucket {
                // The new bucket's level accounts for every call in flight (counted by the
                // server, or subtracted): they are now charged to it, and their settlement
                // refunds or charges it like any other.
                for lease in self.leases.values_mut().filter(|l| l.budget == b) {
                    lease.reservation.charged[kind.index()] = true;
                }
            }
            self.out.push(Output::Event(Event::LimitLearned {
                budget: self.budgets[b].id(),
                kind,
                limit,
            }));
        }
        // Calibration ends once no call granted without the bucket is left in flight.
        let budget = &mut self.budgets[b];
        for kind in LimitKind::ALL {
            if !unmetered_left[kind.index()] {
                budget.calibrating[kind.index()] = false;
            }
        }
    }

    fn extend_pause(&mut self, b: usize, until: Instant, reason: String) {
        if self.budgets[b].extend_pause(until) {
            self.out.push(Output::Event(Event::PauseStarted {
                budget: self.budgets[b].id(),
                until: self.time_base.to_wall(until),
                reason,
            }));
        }
    }

    fn overloaded(&mut self, b: usize, retry_after: Option<Duration>, now: Instant) {
        let class = self.budgets[b].class.clone();
        let overload = self.overloads.entry(class.clone()).or_default();
        overload.consecutive = overload.consecutive.saturating_add(1);
        let doublings = overload.consecutive.saturating_sub(1).min(16);
        let backoff = (OVERLOAD_BACKOFF_START * 2u32.pow(doublings)).min(OVERLOAD_BACKOFF_MAX);
        let until = later(now, backoff.max(retry_after.unwrap_or_default()));
        if overload.until.is_none_or(|current| current < until) {
            overload.until = Some(until);
            self.out.push(Output::Event(Event::Overloaded {
                model_class: class.to_string(),
                until: self.time_base.to_wall(until),
            }));
        }
    }

    /// An administrator's pause: sets the budget's pause to exactly `until` (a time not after
    /// `now` lifts it).
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
            self.end_pause(b);
        } else {
            self.budgets[b].paused_until = None;
            self.extend_pause(b, until, "paused by administrator".into());
        }
        self.serve(b, now);
        self.take_output()
    }

    fn end_pause(&mut self, b: usize) {
        if self.budgets[b].paused_until.take().is_some() {
            self.out.push(Output::Event(Event::PauseEnded {
                budget: self.budgets[b].id(),
            }));
        }
    }

    /// A connection closed: its waiters leave the queues, and the leases it held settle as
    /// "unknown outcome" (the reservation stays spent; the in-flight slot is freed). Detached
    /// leases are not affected.
    pub fn disconnect(&mut self, now: Instant, conn: ConnId) -> Vec<Output> {
        let Some(holdings) = self.holdings.remove(&conn) else {
            return Vec::new();
        };
        let mut touched = Vec::new();
        for id in holdings.waiters {
            if let Some(waiter) = self.drop_waiter(id) {
                touched.push(waiter.budget);
            }
        }
        for lease in holdings.leases {
            if let Some(held) = self.leases.remove(&lease) {
                self.budgets[held.budget].finish();
                touched.push(held.budget);
            }
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
        for b in 0..self.budgets.len() {
            if self.budgets[b]
                .paused_until
                .is_some_and(|until| until <= now)
            {
                self.end_pause(b);
            }
        }
        for overload in self.overloads.values_mut() {
            if overload.until.is_some_and(|until| until <= now) {
                overload.until = None;
            }
        }
        while let Some(&(at, lease)) = self.expiries.first()
            && at <= now
        {
            if let Ok(held) = self.take_lease(lease) {
                self.budgets[held.budget].finish();
            }
        }
        self.serve_all(now);
        while let Some(&(at, id)) = self.deadlines.first()
            && at <= now
        {
            self.time_out(id, now);
        }
        self.take_output()
    }

    fn time_out(&mut self, id: WaiterId, now: Instant) {
        let (b, priority, mark, cost) = {
            let w = &self.waiters[&id];
            (w.budget, w.priority, w.mark, w.cost)
        };
        let budget = &self.budgets[b];
        let ahead = budget.queue.cost_ahead(priority, mark);
        let retry_after = budget.wait_estimate(&ahead, &cost, self.gate(b), now);
        self.answer_waiters(vec![id], |_| Response::TimedOut(TimedOut { retry_after }));
        // The head may have left: whoever is next may be servable.
        self.serve(b, now);
    }

    /// The daemon is stopping: every waiting acquire, and every acquire from now on, is answered
    /// with a "stopping" error. Reports and releases are still taken.
    pub fn stop(&mut self) -> Vec<Output> {
        self.stopping = true;
        let ids = self.waiters.keys().copied().collect();
        self.answer_waiters(ids, |_| stopping());
        self.take_output()
    }

    /// Leases held by live connections (detached leases, which outlive them, not counted).
    pub fn leases_in_flight(&self) -> usize {
        self.leases.values().filter(|l| l.owner.is_some()).count()
    }

    /// When time alone will next change something, if ever.
    pub fn next_wakeup(&self, now: Instant) -> Option<Instant> {
        let mut next: Option<Instant> = None;
        let mut consider = |at: Instant| next = Some(next.map_or(at, |n| n.min(at)));
        if let Some(&(at, _)) = self.deadlines.first() {
            consider(at);
        }
        if let Some(&(at, _)) = self.expiries.first() {
            consider(at);
        }
        for &b in &self.attention {
            let budget = &self.budgets[b];
            if let Some(until) = budget.paused_until {
                consider(until);
            }
            if let Some((_, cost)) = budget.queue.head() {
                match budget.readiness(&cost, self.gate(b), now) {
                    Readiness::Now => consider(now),
                    Readiness::At(at) => consider(at),
                    Readiness::AfterSettlement => {}
                }
            }
        }
        next
    }

    /// A snapshot of every budget, sorted by key and class.
    pub fn status(&self, now: Instant) -> Vec<BudgetStatus> {
        let to_wall = |at: Option<Instant>| {
            at.filter(|&at| at > now)
                .map(|at| self.time_base.to_wall(at))
        };
        let mut out: Vec<BudgetStatus> = self
            .budgets
            .iter()
            .enumerate()
            .map(|(b, budget)| BudgetStatus {
                budget: budget.id(),
                limits: budget.limits_snapshot(),
                available: budget.available(now),
                in_flight: budget.in_flight,
                waiting: budget.queue.len() as u32,
                paused_until: to_wall(budget.paused_until),
                overloaded_until: to_wall(self.gate(b)),
                granted: budget.granted,
                rate_limited: budget.rate_limited,
            })
            .collect();
        out.sort_by(|a, b| a.budget.cmp(&b.budget));
        out
    }

    /// Totals over every budget, for the service manager's status line.
    pub fn summary(&self, now: Instant) -> Summary {
        let budgets = &self.budgets;
        Summary {
            budgets: budgets.len(),
            in_flight: budgets.iter().map(|b| b.in_flight as usize).sum(),
            waiting: self.waiters.len(),
            paused: budgets
                .iter()
                .filter(|b| b.paused_until.is_some_and(|until| until > now))
                .count(),
        }
    }

    /// The number of waiters and leases, for logs and tests.
    pub fn counts(&self) -> (usize, usize) {
        (self.waiters.len(), self.leases.len())
    }

    fn take_output(&mut self) -> Vec<Output> {
        std::mem::take(&mut self.out)
    }
}

fn stopping() -> Response {
    Response::Error(ErrorReply {
        kind: ErrorKind::Stopping,
        message: "pacerd is stopping; retry once it is back".to_owned(),
    })
}

/// What [`Broker::grant`] needs to know of the acquire being granted.
struct Grant<'a> {
    ticket: Ticket,
    client_id: &'a str,
    priority: Priority,
    detached_ttl: Option<Duration>,
    cost: Costs,
    waited: Duration,
}
