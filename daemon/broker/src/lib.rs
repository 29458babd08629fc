//! The broker: every budget, waiter and lease, as a pure state machine.
//!
//! Nothing here does I/O or reads a clock. Each method takes `now` and returns the [`Output`]s to
//! deliver: answers to acquires that were waiting (possibly on other connections) and events for
//! subscribers. [`Broker::next_wakeup`] says when time alone will change something (a bucket
//! refills enough for the head of a queue, a deadline or pause passes), and the caller calls
//! [`Broker::tick`] then. The caller owns the one timer; the broker owns every rule.
//!
//! The rooms:
//! - this file: the [`Broker`] and its acquire path (grant at once, or queue and serve later);
//! - `admission`: whether an acquire is taken at all, and how long one would wait;
//! - `settle`: reports, releases and response headers — what a call's outcome changes;
//! - `link`: a key joining its account, its budgets merging into the account's;
//! - `lifecycle`: pauses, lockouts, connections closing, time passing, stopping;
//! - `status`: what `pacer status`, the state file and the service manager are shown;
//! - `shared`: budgets kept in a store shared with other daemons (claims, settlements and
//!   events the I/O layer carries to Redis and back), and the local share when it is away;
//! - `usage`: who used what — grants, settlements and refusals counted per budget and per
//!   client (`clients`), and told to subscribers;
//! - the tables the broker ties together: `budgets` (each a `budget`: buckets, pause, `queue`),
//!   `waiters`, `leases`, `overload` (per class), `accounts` (which keys share an account, and
//!   its subscription windows), `lockouts` (per owner); `owner`: whose budget it is;
//! - the parts: `bucket`, `cost`, `limits` (configured limits and model classes), `per_kind`,
//!   `time`, and `snapshot` (the state file's share);
//! - `calibration`: input-token estimates for gateway requests from their size, learned from
//!   real usage (kept by the hub beside the broker).

mod accounts;
mod admission;
mod bucket;
pub use bucket::Bucket;
mod budget;
mod budgets;
mod calibration;
mod clients;
mod config;
mod cost;
mod evict;
mod exchange;
mod leases;
mod lifecycle;
mod limits;
mod link;
mod lockouts;
mod overload;
mod owner;
mod per_kind;
mod queue;
mod refuse;
mod sessions;
mod settle;
mod shared;
mod snapshot;
mod starts;
mod status;
mod time;
mod usage;
mod waiters;
mod windows;
mod workspaces;

#[cfg(test)]
mod tests;

use std::sync::Arc;
use std::time::Duration;
use std::time::Instant;

use pacer_protocol::message::{
    Acquire, ErrorKind, ErrorReply, Event, Granted, Rejected, Response, TimedOut,
};
use pacer_protocol::{KeyFingerprint, Priority};

use accounts::Accounts;
pub use accounts::AccountsConfig;
use budget::Readiness;
use budgets::{BudgetIdx, Budgets, MAX_BUDGETS};
pub use calibration::Calibration;
pub use config::BrokerConfig;
pub use cost::Costs;
pub use exchange::{BrokerError, ConnId, Output, Settlement, Ticket};
use leases::{Lease, Leases};
pub use limits::{LimitSet, LimitTable, MAX_LIMIT, ModelClasses};
use lockouts::Lockouts;
use overload::Overloads;
use owner::Owner;
pub use per_kind::PerKind;
use queue::WaiterId;
pub use settle::MAX_RATE_LIMIT_WAIT;
pub use shared::{
    Claim, ClaimAnswer, ClusterEvent, SharedOp, Sharing, WindowReport, WindowsReport,
};
pub use snapshot::BrokerState;
pub use status::Summary;
pub use time::{FOREVER, TimeBase, later, local_time};
use waiters::{Waiter, Waiters};
pub use windows::{InFlight, WindowsConfig, window_length, window_title};

/// Bounds on what one connection, and every connection together, may hold, so that runaway
/// clients cannot exhaust the daemon's memory (or a state file fill the disk).
pub const MAX_WAITERS_PER_CONNECTION: usize = 4_096;
pub const MAX_WAITERS: usize = 65_536;
/// Permits one connection may hold at once (calls in flight under it).
pub const MAX_LEASES_PER_CONNECTION: usize = 4_096;
/// Detached leases (shell scripts' permits) outlive their connection: at most this many at once.
pub const MAX_DETACHED_LEASES: usize = 10_000;
/// The longest client id taken (a `pacer run --name`, a session, a script's id).
pub const MAX_NAME_LEN: usize = 256;
/// The longest model name taken: real ones are a few dozen characters; a model matching no
/// pattern is a class of its own, and each class a budget, so this bounds what a name can cost.
pub const MAX_MODEL_LEN: usize = 128;

pub struct Broker {
    config: BrokerConfig,
    time_base: TimeBase,
    budgets: Budgets,
    overloads: Overloads,
    waiters: Waiters,
    leases: Leases,
    accounts: Accounts,
    lockouts: Lockouts,
    /// Set when the daemon stops: acquires are refused while leases in flight get time to report.
    stopping: bool,
    /// Grant events cost allocations on the hot path; they are only built while someone listens.
    grant_events: bool,
    clients: clients::Clients,
    /// When clients not seen for a while were last forgotten.
    last_prune: Option<Instant>,
    shares: shared::Shares,
    /// Calls in flight toward each account's subscription windows, here and elsewhere.
    window_use: windows::WindowUse,
    /// Claude Code sessions: their account, their calls in the last hour.
    sessions: sessions::Sessions,
    /// The pace at which new sessions start, once the API turned sessions starting together
    /// away, and the sessions waiting to start.
    starts: starts::Starts,
    /// Seconds east of UTC, for the times messages give (`until 16:40`).
    utc_offset: i32,
    /// What the operation under way will return.
    out: Vec<Output>,
}

/// Where an acquire comes from, beyond what it says itself.
#[derive(Debug, Clone, Default)]
pub struct Origin {
    /// The Claude Code session (`X-Claude-Code-Session-Id`) the gateway saw on the request.
    pub session: Option<Arc<str>>,
}

/// What [`Broker::grant`] needs to know of the acquire being granted.
struct Grant {
    ticket: Ticket,
    key: KeyFingerprint,
    client: Arc<str>,
    /// Granted from the shared store: what settles it there.
    shared: Option<shared::SharedLease>,
    priority: Priority,
    detached_ttl: Option<Duration>,
    cost: Costs,
    /// The most its report is believed to have used.
    bound: Costs,
    waited: Duration,
    /// The Claude Code session it is for, if the gateway saw one.
    session: Option<Arc<str>>,
}

impl Broker {
    /// A broker with no budgets yet. Lease ids start at `first_lease` (the caller picks one that
    /// does not repeat the ids of an earlier run).
    pub fn new(config: BrokerConfig, time_base: TimeBase, first_lease: u64) -> Self {
        Self {
            accounts: Accounts::new(config.accounts.clone()),
            config,
            time_base,
            budgets: Budgets::default(),
            overloads: Overloads::default(),
            waiters: Waiters::default(),
            leases: Leases::new(first_lease),
            lockouts: Lockouts::default(),
            stopping: false,
            grant_events: false,
            clients: clients::Clients::default(),
            last_prune: None,
            shares: shared::Shares::new(Sharing::Alone),
            window_use: windows::WindowUse::default(),
            sessions: sessions::Sessions::default(),
            starts: starts::Starts::default(),
            utc_offset: 0,
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

    /// The local time zone's offset from UTC (seconds east), for the times messages give.
    pub fn set_utc_offset(&mut self, seconds: i32) {
        self.utc_offset = seconds.clamp(-18 * 3600, 18 * 3600);
    }

    /// Replaces the configuration: new class patterns apply to later acquires, new limits to every
    /// budget at once, keeping bucket levels, waiters and leases.
    pub fn reconfigure(&mut self, config: BrokerConfig, now: Instant) -> Vec<Output> {
        let tied = self.accounts.configure(config.accounts.clone());
        self.config = config;
        for (key, account) in tied {
            self.link(key, account, now);
        }
        let (limits, accounts) = (&self.config.limits, &self.accounts);
        self.budgets.reconfigure(
            |owner, class| limits.for_keys(&accounts.keys_of(owner), class),
            now,
        );
        self.serve_all(now);
        self.take_output()
    }

    /// The model class a model name belongs to.
    pub fn classify(&mut self, model: &str) -> Arc<str> {
        self.budgets.classify(&self.config.classes, model)
    }

    /// The budget of an owner and class, created on first use (forgetting an idle one when the
    /// table is full); `None` when every one of [`MAX_BUDGETS`] is busy.
    fn budget_of(&mut self, owner: &Owner, class: &Arc<str>, now: Instant) -> Option<BudgetIdx> {
        if self.budgets.find(owner, class).is_none() && !self.make_room() {
            return None;
        }
        let (limits, accounts) = (&self.config.limits, &self.accounts);
        let b = self.budgets.get_or_create(
            owner,
            class,
            || limits.for_keys(&accounts.keys_of(owner), class),
            self.config.cold_start_hold,
            now,
        )?;
        self.adopt_parent(b, now);
        Some(b)
    }

    /// The budget a key and model draw on now, created on first use.
    fn budget_for(&mut self, key: KeyFingerprint, model: &str, now: Instant) -> Option<BudgetIdx> {
        let owner = self.accounts.owner_of(key);
        let class = self.classify(model);
        self.budget_of(&owner, &class, now)
    }

    fn answer(&mut self, ticket: Ticket, response: Response) {
        self.out.push(Output::Answer { ticket, response });
    }

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
        if let Some(reason) = self.invalid(ticket, req) {
            self.note_refusal(None, None, &req.client_id, &reason, now);
            self.answer(ticket, Response::Rejected(refusal(reason)));
            return self.take_output();
        }
        let owner = self.accounts.owner_of(req.key);
        let class = self.classify(&req.model);
        if let Some(rejected) = self.locked_out(&owner, &class, now) {
            let (budget, reason) = (rejected.budget.clone(), rejected.reason.clone());
            self.note_refusal(None, budget, &req.client_id, &reason, now);
            self.answer(ticket, Response::Rejected(rejected));
            return self.take_output();
        }
        let Some(b) = self.budget_of(&owner, &class, now) else {
            let reason = format!(
                "pacerd tracks at most {MAX_BUDGETS} account × model class budgets, and every one \
                 has calls waiting or in flight"
            );
            self.note_refusal(None, None, &req.client_id, &reason, now);
            self.answer(ticket, Response::Rejected(refusal(reason)));
            return self.take_output();
        };
        self.note_asked(b, req, now);
        let cost = self.budgets[b].cost_of(req);
        let bound = cost::usage_bound(req.max_tokens);
        // A Claude Code session new to pacer may have to wait its turn to start.
        let turn = origin
            .session
            .as_ref()
            .filter(|session| !self.sessions.is_started(session))
            .filter(|session| !self.starts.try_start(&owner, session, now));
        if let Some(session) = turn {
            let waiter = self.waiter(ticket, req, origin, b, cost, bound, now);
            self.wait_to_start(waiter, &owner, session.clone(), now);
            return self.take_output();
        }
        let local = !self.shares.is_shared();
        if local
            && self.budgets[b].grants_at_once(&cost, self.gate(b, &cost, now), now)
            && self.window_hold(b, req.priority, now).is_none()
        {
            let client: Arc<str> = Arc::from(req.client_id.as_str());
            self.budgets[b].granted_at_once(&client, req.priority, &cost);
            let grant = Grant {
                ticket,
                key: req.key,
                client,
                shared: None,
                priority: req.priority,
                detached_ttl: req.detached_ttl,
                cost,
                bound,
                waited: Duration::ZERO,
                session: origin.session.clone(),
            };
            self.grant(b, grant, now);
            return self.take_output();
        }
        let waiter = self.waiter(ticket, req, origin, b, cost, bound, now);
        if waiter.deadline.is_some_and(|d| d <= now) {
            let (retry_after, reason) = self.newcomer_wait(b, req.priority, &cost, now);
            self.count_window_refusal(b, req.priority, now);
            self.note_refusal(Some(b), None, &req.client_id, &reason, now);
            let timed_out = TimedOut {
                retry_after,
                reason,
            };
            self.answer(ticket, Response::TimedOut(timed_out));
            return self.take_output();
        }
        self.enqueue(waiter, now);
        self.take_output()
    }

    /// What an acquire that waits is, wherever it waits.
    #[allow(clippy::too_many_arguments)]
    fn waiter(
        &self,
        ticket: Ticket,
        req: &Acquire,
        origin: &Origin,
        b: BudgetIdx,
        cost: Costs,
        bound: Costs,
        now: Instant,
    ) -> Waiter {
        Waiter {
            ticket,
            key: req.key,
            budget: b,
            client: Arc::from(req.client_id.as_str()),
            priority: req.priority,
            cost,
            bound,
            session: origin.session.clone(),
            mark: queue::Mark::default(),
            deadline: req.deadline.map(|d| later(now, d)),
            detached_ttl: req.detached_ttl,
            enqueued_at: now,
        }
    }

    /// Queues a waiter in its budget's fair queue, and serves the budget.
    fn enqueue(&mut self, mut waiter: Waiter, now: Instant) {
        let b = waiter.budget;
        let id = self.waiters.next_id();
        waiter.mark = self.budgets[b].enqueue(id, &waiter.client, waiter.priority, waiter.cost);
        self.waiters.insert(id, waiter);
        self.serve(b, now);
    }

    fn grant(&mut self, b: BudgetIdx, grant: Grant, now: Instant) {
        let (reservation, probe) = match grant.shared {
            Some(_) => self.budgets[b].take_shared(&grant.cost, now),
            None => self.budgets[b].take(&grant.cost, now),
        };
        let id = self.budgets[b].id();
        self.shares.spend(&id, &grant.cost, false);
        let parent = match grant.shared {
            Some(_) => self.budgets[b]
                .parent()
                .map(|p| (p, self.budgets[p].reservation_shared(&grant.cost))),
            None => self.charge_parent(b, &grant.cost, now),
        };
        let expires = grant.detached_ttl.map(|ttl| later(now, ttl));
        self.note_grant(b, &grant.client, grant.waited, now);
        let window_call = self.start_window_call(b);
        let lease = self.leases.issue(Lease {
            key: grant.key,
            probe,
            parent,
            granted_at: now,
            budget: b,
            owner: expires.is_none().then_some(grant.ticket.conn),
            expires,
            reservation,
            unmetered: reservation.charged.map(|_, charged| !charged),
            client: grant.client.clone(),
            waited: grant.waited,
            shared: grant.shared,
            bound: grant.bound,
            window_call,
            session: grant.session.clone(),
        });
        let response = Response::Granted(Granted {
            lease,
            waited: grant.waited,
        });
        self.answer(grant.ticket, response);
        if self.grant_events {
            self.out.push(Output::Event(Event::Granted {
                budget: self.budgets[b].id(),
                lease,
                priority: grant.priority,
                client_id: grant.client.to_string(),
                waited: grant.waited,
            }));
        }
    }

    /// Grants queued waiters of budget `b`, head first, while the head can be served (while
    /// shared, asks the store for the head instead).
    fn serve(&mut self, b: BudgetIdx, now: Instant) {
        if self.shares.is_shared() {
            self.serve_shared(b, now);
            self.budgets.touch(b);
            return;
        }
        while let Some((id, cost)) = self.budgets[b].head() {
            let gate = self.gate(b, &cost, now);
            if self.budgets[b].readiness(&cost, gate, now) != Readiness::Now
                || self.head_held_by_window(b, id, now)
            {
                break;
            }
            self.grant_waiter(b, id, None, now);
        }
        // The head waits (for its buckets to refill): calls that fit now may go out of turn,
        // within its allowance (see `queue`).
        while let Some((id, cost)) = self.budgets[b].backfill_candidate(now) {
            let gate = self.gate(b, &cost, now);
            if self.budgets[b].readiness(&cost, gate, now) != Readiness::Now
                || self.head_held_by_window(b, id, now)
            {
                break;
            }
            self.grant_out_of_turn(b, id, now);
        }
        self.budgets.touch(b);
    }

    /// Whether waiter `id`, the head of budget `b`, is held by its account's windows.
    fn head_held_by_window(&self, b: BudgetIdx, id: WaiterId, now: Instant) -> bool {
        self.waiters
            .get(id)
            .is_some_and(|w| self.window_hold(b, w.priority, now).is_some())
    }

    /// Grants the head of budget `b`, waiter `id`.
    fn grant_waiter(
        &mut self,
        b: BudgetIdx,
        id: WaiterId,
        shared: Option<shared::SharedLease>,
        now: Instant,
    ) {
        self.budgets[b].pop_head();
        let waiter = self
            .waiters
            .remove(id)
            .expect("a queued waiter is in the waiter table");
        self.grant_queued(b, waiter, shared, now);
    }

    /// Grants waiter `id` of budget `b` out of turn, while the head waits for its buckets.
    fn grant_out_of_turn(&mut self, b: BudgetIdx, id: WaiterId, now: Instant) {
        let Some(waiter) = self.waiters.remove(id) else {
            return;
        };
        self.budgets[b].take_out_of_turn(id, &waiter.client, waiter.priority, &waiter.cost);
        self.grant_queued(b, waiter, None, now);
    }

    /// Grants a waiter taken out of budget `b`'s queue.
    fn grant_queued(
        &mut self,
        b: BudgetIdx,
        waiter: Waiter,
        shared: Option<shared::SharedLease>,
        now: Instant,
    ) {
        let grant = Grant {
            ticket: waiter.ticket,
            key: waiter.key,
            client: waiter.client.clone(),
            shared,
            priority: waiter.priority,
            detached_ttl: waiter.detached_ttl,
            cost: waiter.cost,
            bound: waiter.bound,
            session: waiter.session.clone(),
            waited: now.saturating_duration_since(waiter.enqueued_at),
        };
        self.grant(b, grant, now);
    }

    fn serve_all(&mut self, now: Instant) {
        let budgets: Vec<BudgetIdx> = self.budgets.needing_attention().collect();
        for b in budgets {
            self.serve(b, now);
        }
    }

    /// Takes a waiter out of its queue and forgets it (it timed out, left, or is refused).
    fn drop_waiter(&mut self, id: WaiterId) -> Option<Waiter> {
        let waiter = self.waiters.remove(id)?;
        self.starts.leave(id);
        let b = waiter.budget;
        self.budgets[b].dequeue(id, &waiter.client, waiter.priority);
        self.budgets.touch(b);
        Some(waiter)
    }

    /// Takes waiters out of their queues and answers each with `answer`, in the order given.
    fn answer_waiters(&mut self, ids: Vec<WaiterId>, answer: impl Fn(&Waiter) -> Response) {
        for id in ids {
            if let Some(waiter) = self.drop_waiter(id) {
                let response = answer(&waiter);
                self.answer(waiter.ticket, response);
            }
        }
    }

    fn take_output(&mut self) -> Vec<Output> {
        std::mem::take(&mut self.out)
    }
}

/// A refusal that no budget in particular made (bad arguments, too many budgets).
fn refusal(reason: String) -> Rejected {
    Rejected {
        reason,
        until: None,
        budget: None,
    }
}

fn stopping() -> Response {
    Response::Error(ErrorReply {
        kind: ErrorKind::Stopping,
        message: "pacerd is stopping; retry once it is back".to_owned(),
    })
}
