//! The steps every input shares: finding a budget, granting, serving a queue, locking out,
//! linking a key to its account, learning from an answer's headers, and telling the store and
//! the subscribers. Each step asks the tables for their rules and ties their answers together.

use std::sync::Arc;
use std::time::Instant;

use pacer_api::ratelimit::RateLimitHeaders;
use pacer_protocol::message::{BudgetId, Event, Granted, LeaseId, Response, SettledAs};
use pacer_protocol::{KeyFingerprint, Throttle};

use super::budget::{BudgetIdx, Learned};
use super::leases::Lease;
use super::lockouts::{Lockout, Scope};
use super::owner::Owner;
use super::queue::WaiterId;
use super::shared::{ClusterEvent, LeaseShare, SharedLease, SharedOp, WindowsReport};
use super::starts::told;
use super::waiters::Waiter;
use super::{Broker, Costs, Output};

/// Finding budgets.
impl Broker {
    /// The budget of an owner and class, created on first use (forgetting an idle one when the
    /// table is full); `None` when every one of [`MAX_BUDGETS`](super::budget::MAX_BUDGETS) is
    /// busy.
    pub(crate) fn budget_of(
        &mut self,
        owner: &Owner,
        class: &Arc<str>,
        now: Instant,
    ) -> Option<BudgetIdx> {
        let (limits, accounts) = (&self.config.limits, &self.accounts);
        let configured = || limits.for_keys(&accounts.keys_of(owner), class);
        let hold = self.config.cold_start_hold;
        // Waiters out of their queue (a session waiting to start, a client past its cap) keep
        // their budget from being forgotten.
        let waiters = &self.waiters;
        let busy = || waiters.budgets();
        let (b, forgotten) =
            self.budgets
                .get_or_create(owner, class, (configured, busy), hold, now)?;
        if let Some(forgotten) = forgotten {
            self.shares.forget(forgotten);
        }
        self.adopt_parent(b, now);
        Some(b)
    }

    /// The budget a key and model draw on now, created on first use.
    pub(crate) fn budget_for(
        &mut self,
        key: KeyFingerprint,
        model: &str,
        now: Instant,
    ) -> Option<BudgetIdx> {
        let owner = self.accounts.owner_of(key);
        let class = self.classify(model);
        self.budget_of(&owner, &class, now)
    }

    /// The budget a wire id names, created if this daemon has none yet.
    pub(crate) fn budget_by_id(&mut self, id: &BudgetId, now: Instant) -> Option<BudgetIdx> {
        let class: Arc<str> = Arc::from(id.model_class.as_str());
        self.budget_of(&Owner::from_wire(&id.owner), &class, now)
    }

    /// Gives budget `b` its organization's budget as a parent, if its owner is a workspace.
    fn adopt_parent(&mut self, b: BudgetIdx, now: Instant) {
        if self.budgets[b].parent().is_some() {
            return;
        }
        let Some(parent) = self.accounts.parent_of(self.budgets[b].owner()).cloned() else {
            return;
        };
        let class = self.budgets[b].class().clone();
        if let Some(p) = self.budget_of(&Owner::Account(parent), &class, now) {
            self.budgets[b].set_parent(p);
            self.budgets.teach_parent(b, now);
        }
    }
}

/// Queues and grants.
impl Broker {
    /// Queues a waiter in its budget's fair queue, and serves the budget.
    pub(crate) fn enqueue(&mut self, mut waiter: Waiter, now: Instant) {
        let b = waiter.budget;
        let id = self.waiters.next_id();
        waiter.mark = self.budgets[b].enqueue(id, &waiter.client, waiter.priority, waiter.cost);
        self.waiters.insert(id, waiter);
        self.serve(b, now);
    }

    /// Grants `waiter` (taken from its queue, or never queued): its cost is reserved, a lease
    /// issued, and the answer and event go out. `shared`: granted by the store.
    pub(crate) fn grant(&mut self, waiter: Waiter, shared: Option<SharedLease>, now: Instant) {
        let (b, cost) = (waiter.budget, waiter.cost);
        let (reservation, probe) = match shared {
            Some(_) => self.budgets[b].take_shared(&cost, now),
            None => self.budgets[b].take(&cost, now),
        };
        self.shares.spend(&self.budgets[b].id(), &cost, false);
        let parent = match shared {
            Some(_) => self.budgets[b]
                .parent()
                .map(|p| (p, self.budgets[p].reservation_shared(&cost))),
            None => self.budgets.charge_parent(b, &cost, now),
        };
        let (ticket, priority) = (waiter.ticket, waiter.priority);
        let capped = waiter.max_share.is_some();
        let mut lease = Lease::new(waiter, reservation, probe, parent, shared, now);
        let waited = lease.waited;
        self.budgets[b].record_wait(waited);
        self.clients.granted(&lease.client, waited, now);
        if capped {
            self.count_capped(b, &lease.client.clone(), now);
        }
        lease.window_call = self.start_window_call(b);
        let client_id = lease.client.to_string();
        let lease = self.leases.issue(lease);
        self.answer(ticket, Response::Granted(Granted { lease, waited }));
        if self.grant_events {
            let budget = self.budgets[b].id();
            let granted = Event::Granted {
                budget,
                lease,
                priority,
                client_id,
                waited,
            };
            self.out.push(Output::Event(granted));
        }
    }

    /// Grants queued waiters of budget `b`, head first, while the head can be served; while the
    /// head waits for its buckets, calls that fit now go out of turn (within its allowance, see
    /// `queue`). While shared, asks the store for the head instead.
    pub(crate) fn serve(&mut self, b: BudgetIdx, now: Instant) {
        self.park_capped_heads(b, now);
        if self.shares.is_shared() {
            let claim = self
                .shares
                .claim_head(b, &self.budgets, &self.overloads, now);
            self.out.extend(claim.map(Output::Claim));
        } else {
            while let Some((id, cost)) = self.budgets[b].head() {
                if !self.ready(b, id, &cost, now) {
                    break;
                }
                self.grant_head(b, id, None, now);
                self.park_capped_heads(b, now);
            }
            while let Some((id, cost)) = self.budgets[b].backfill_candidate(now) {
                if self.park_if_capped(b, id, now) {
                    continue;
                }
                if !self.ready(b, id, &cost, now) {
                    break;
                }
                let Some(waiter) = self.waiters.remove(id) else {
                    break;
                };
                self.budgets[b].take_out_of_turn(id, &waiter.client, waiter.priority, &cost);
                self.grant(waiter, None, now);
            }
        }
        self.budgets.touch(b);
    }

    /// Grants the head of budget `b`, waiter `id`.
    pub(crate) fn grant_head(
        &mut self,
        b: BudgetIdx,
        id: WaiterId,
        shared: Option<SharedLease>,
        now: Instant,
    ) {
        self.budgets[b].pop_head();
        let waiter = self
            .waiters
            .remove(id)
            .expect("a queued waiter is in the waiter table");
        self.grant(waiter, shared, now);
    }

    pub(crate) fn serve_all(&mut self, now: Instant) {
        let budgets: Vec<BudgetIdx> = self.budgets.needing_attention().collect();
        for b in budgets {
            self.serve(b, now);
        }
    }

    /// Takes a waiter out of its queue and forgets it (it timed out, left, or is refused).
    pub(crate) fn drop_waiter(&mut self, id: WaiterId) -> Option<Waiter> {
        let waiter = self.waiters.remove(id)?;
        self.starts.leave(id);
        self.capped.remove(&id);
        let b = waiter.budget;
        self.budgets[b].dequeue(id, &waiter.client, waiter.priority);
        self.budgets.touch(b);
        Some(waiter)
    }
}

/// Sessions starting together (see `starts`).
impl Broker {
    /// Lets the sessions whose turn has come start: their acquires join their budgets' queues.
    pub(crate) fn admit_starters(&mut self, now: Instant) {
        for id in self.starts.admit(now) {
            let Some(waiter) = self.waiters.get_mut(id) else {
                continue;
            };
            let b = waiter.budget;
            waiter.mark = self.budgets[b].enqueue(id, &waiter.client, waiter.priority, waiter.cost);
            self.serve(b, now);
        }
        let relaxed = self.starts.relax(now);
        self.out
            .extend(relaxed.into_iter().map(|c| Output::Event(told(c))));
    }

    /// A call of lease `held` was settled: its session (if the gateway saw one) is noted with
    /// its account, and counted if it was a `success`. If the session was starting, a success
    /// means it got through, a bare 429 (`throttle`) that it met the wall.
    pub(crate) fn note_session(
        &mut self,
        held: &Lease,
        success: bool,
        throttle: Option<Throttle>,
        now: Instant,
    ) {
        let Some(session) = &held.session else {
            return;
        };
        let owner = self.budgets[held.budget].owner().clone();
        if !self.sessions.is_started(session) {
            if success {
                self.starts.started(&owner, session, now);
            } else if throttle == Some(Throttle::Bare) {
                let slowed = self.starts.wall(&owner, session, now);
                self.out
                    .extend(slowed.into_iter().map(|c| Output::Event(told(c))));
            }
        }
        self.sessions
            .note(session, &owner, success, now, &self.time_base);
    }
}

/// Pauses and lockouts.
impl Broker {
    /// Locks `owner`'s `scope` out: waiters it covers are refused now, and every acquire until
    /// `lockout.until`.
    pub(crate) fn lock_out(&mut self, owner: &Owner, scope: Scope, lockout: Lockout, now: Instant) {
        if lockout.until <= now || !self.lockouts.lock(owner, scope.clone(), lockout.clone()) {
            return;
        }
        self.publish(ClusterEvent::Lockout {
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
        for id in self.waiters.covered_by(owner, &scope, &self.budgets) {
            let Some(waiter) = self.drop_waiter(id) else {
                continue;
            };
            let class = self.budgets[waiter.budget].class().clone();
            let rejected = lockout.rejected(owner, &class, &self.time_base);
            self.answer(waiter.ticket, Response::Rejected(rejected));
        }
    }

    pub(crate) fn lockout_ended(&mut self, owner: &Owner, scope: Scope) {
        self.out.push(Output::Event(Event::LockoutEnded {
            owner: owner.to_wire(),
            model_class: scope.as_deref().map(str::to_owned),
        }));
    }

    /// Lifts budget `b`'s pause, its owner's lockouts of its class, its class's backoff, and
    /// forgets what its owner's windows said (the next answer says again).
    pub(crate) fn lift(&mut self, b: BudgetIdx) {
        self.end_pause(b);
        let owner = self.budgets[b].owner().clone();
        let class = self.budgets[b].class().clone();
        for scope in self.lockouts.lift(&owner, &class) {
            self.lockout_ended(&owner, scope);
        }
        self.overloads.lift(&class);
        self.windows.forget(&owner);
    }

    pub(crate) fn end_pause(&mut self, b: BudgetIdx) {
        if self.budgets[b].end_pause() {
            self.budgets[b].probe_again();
            self.out.push(Output::Event(Event::PauseEnded {
                budget: self.budgets[b].id(),
            }));
        }
    }

    pub(crate) fn extend_pause(&mut self, b: BudgetIdx, until: Instant, reason: String) {
        if self.budgets[b].extend_pause(until, &reason) {
            self.out.push(Output::Event(Event::PauseStarted {
                budget: self.budgets[b].id(),
                until: self.time_base.to_wall(until),
                reason,
            }));
        }
    }

    /// The wall clock stepped (an NTP correction, a person setting it) by `step`: this daemon's
    /// instants map to the wall clock as it is now, and what was read against the old one — a
    /// window's reset — moves with it. Deadlines held as instants (pauses, lockouts) were
    /// measured from the API's own clock (see `RateLimitHeaders::parse`) and stay.
    pub fn rebase(&mut self, step: crate::Step) {
        if let Some(wall) = step.apply(self.time_base.wall) {
            self.time_base.wall = wall;
            self.windows.shift(step);
        }
    }
}

/// A key joining its account while traffic flows: its budgets become the account's.
///
/// For each class, the key's budget is either relabelled (the account has no budget of that
/// class yet) or merged into the account's: waiters keep their priority and their place in their
/// client's line, leases stay valid and settle against the account's budget, a pause in force on
/// either side holds, levels are combined conservatively, learned limits are kept (see
/// `Budget::absorb`). Its lockouts and subscription windows move along.
impl Broker {
    /// Links `key` to the account a response for it names, if that is news.
    pub(crate) fn link_if_named(
        &mut self,
        key: KeyFingerprint,
        headers: &RateLimitHeaders,
        now: Instant,
    ) {
        let (organization, workspace) = (&headers.organization, &headers.workspace);
        let named =
            self.accounts
                .account_named_by(key, organization.as_deref(), workspace.as_deref());
        if let Some((account, organization)) = named {
            if let Some(organization) = organization {
                self.accounts.set_parent(account.clone(), organization);
            }
            self.link(key, account, now);
        }
    }

    /// Makes `key` draw on `account`'s budgets, merging its own into them.
    pub(crate) fn link(&mut self, key: KeyFingerprint, account: Arc<str>, now: Instant) {
        let (from, to) = (Owner::Key(key), Owner::Account(account.clone()));
        self.accounts.link(key, account.clone());
        self.lockouts.move_owner(&from, &to);
        self.windows.move_owner(&from, &to);
        let mut touched = Vec::new();
        for source in self.budgets.owned_by(&from) {
            let class = self.budgets[source].class().clone();
            let from = self.budgets[source].id();
            let target = match self.budgets.find(&to, &class) {
                // The account has no budget of this class here, but the store may: what the
                // key's took is carried over all the same.
                None => {
                    self.budgets.relabel(source, &to);
                    source
                }
                Some(target) => {
                    self.merge(source, target, now);
                    target
                }
            };
            let into = self.budgets[target].id();
            self.clients.rename_budget(&from, &into);
            self.for_store(SharedOp::Merge { from, into });
            touched.push(target);
        }
        // A new member may bring limits of its own from the configuration; a workspace's
        // budgets answer to their organization's too.
        let keys = self.accounts.keys_of(&to);
        for b in self.budgets.owned_by(&to) {
            let configured = self.config.limits.for_keys(&keys, self.budgets[b].class());
            self.budgets[b].set_configured(configured, now);
            self.adopt_parent(b, now);
            self.leases.charge_parents(b, &mut self.budgets, now);
        }
        let account = account.to_string();
        let linked = Event::KeyLinked {
            key,
            account: account.clone(),
        };
        self.out.push(Output::Event(linked));
        self.publish(ClusterEvent::Link { key, account });
        for b in touched {
            self.serve(b, now);
            self.tell_the_held(b, now);
        }
    }

    /// Budget `source` joins `target` and leaves the table.
    fn merge(&mut self, source: BudgetIdx, target: BudgetIdx, now: Instant) {
        self.leases.move_budget(source, target);
        self.shares.moved(source, target);
        let absorbed = self.budgets.remove(source);
        self.budgets[target].absorb(absorbed, now);
        let (capped, starts) = (&self.capped, &self.starts);
        let parked = |id| capped.contains(&id) || starts.is_waiting(id);
        self.waiters
            .move_budget((source, target), &mut self.budgets, parked);
        self.budgets.touch(target);
    }
}

/// What an answer's headers teach.
impl Broker {
    /// Applies the headers of an answer to budget `b`; `answering` is the lease of the call
    /// answered, if it is still held.
    pub(crate) fn learn(
        &mut self,
        b: BudgetIdx,
        headers: &RateLimitHeaders,
        answering: Option<LeaseId>,
        now: Instant,
    ) {
        // Only while a bucket calibrates (rare and brief): what else is in flight.
        let (in_flight_elsewhere, unmetered_left) =
            match self.budgets[b].needs_in_flight_for(headers) {
                true => self.leases.in_flight_besides(b, answering),
                false => Default::default(),
            };
        let (learned, lowered) = self.budgets[b].apply_headers(headers, &in_flight_elsewhere, now);
        // The server counts a call's input when the request starts: a `remaining` that lowered
        // the bucket as the answer arrived holds the answered call's real input already.
        if let Some(id) = answering {
            self.leases.counted(id, lowered);
        }
        for Learned {
            kind,
            limit,
            new_bucket,
        } in learned
        {
            if new_bucket {
                self.leases.charge_new_bucket(b, kind);
            }
            let budget = self.budgets[b].id();
            let event = Event::LimitLearned {
                budget: budget.clone(),
                kind,
                limit,
            };
            self.out.push(Output::Event(event));
            self.publish(ClusterEvent::Limit {
                budget,
                kind,
                limit,
            });
        }
        self.budgets[b].end_calibration(unmetered_left);
        self.budgets.teach_parent(b, now);
        let owner = self.budgets[b].owner().clone();
        let class = self.budgets[b].class().clone();
        let (crossed, moved) = self
            .windows
            .observe(&owner, &headers.unified, Some(&class), now);
        if !headers.unified.is_empty() {
            // What the windows hold may have changed for the account's other budgets too.
            self.serve_owner(&owner, now);
        }
        self.out.extend(crossed.into_iter().map(Output::Event));
        if moved {
            let windows = WindowsReport::of(&headers.unified);
            self.publish(ClusterEvent::Windows {
                owner: owner.to_wire(),
                windows,
            });
        }
    }

    /// A call of budget `b` was granted: counted in flight toward its account's windows, if it
    /// has any. Returns what to end when its answer comes.
    fn start_window_call(&mut self, b: BudgetIdx) -> Option<(Owner, Arc<str>)> {
        let (owner, class) = (
            self.budgets[b].owner().clone(),
            self.budgets[b].class().clone(),
        );
        self.windows.start_call(&owner, &class).then(|| {
            self.tell_window_calls(&owner);
            (owner, class)
        })
    }

    /// The answer to a call counted in flight came (or never will): its cost is in the
    /// utilization the API reports now. Calls held by the windows may go.
    pub(crate) fn end_window_call(&mut self, call: Option<(Owner, Arc<str>)>, now: Instant) {
        if let Some((owner, class)) = call {
            self.windows.end_call(&owner, &class);
            self.tell_window_calls(&owner);
            self.serve_owner(&owner, now);
        }
    }

    /// Tells the other daemons sharing the account what this one has in flight toward its
    /// windows and has had answered.
    pub(crate) fn tell_window_calls(&mut self, owner: &Owner) {
        if self.shares.is_on() {
            let told = self.windows.calls_here(owner);
            self.publish(ClusterEvent::WindowCalls {
                owner: owner.to_wire(),
                in_flight: told.in_flight,
                answered: told.answered,
            });
        }
    }
}

/// What goes out: answers, events, work for the store.
impl Broker {
    pub(crate) fn answer(&mut self, ticket: super::Ticket, response: Response) {
        self.out.push(Output::Answer { ticket, response });
    }

    pub(crate) fn take_output(&mut self) -> Vec<Output> {
        std::mem::take(&mut self.out)
    }

    /// Tells the store and the other daemons, while sharing (not what came from them).
    pub(crate) fn publish(&mut self, event: ClusterEvent) {
        self.for_store(SharedOp::Publish(event));
    }

    /// Work for the store that this daemon's decisions cause, while sharing (what other daemons
    /// told it they have done in the store already: [`Broker::apply_shared`] drops it).
    pub(crate) fn for_store(&mut self, op: SharedOp) {
        if self.shares.is_on() {
            self.out.push(Output::Shared(op));
        }
    }

    /// A lease settles in the store, or in the local share while the store is away.
    pub(crate) fn settle_shared(&mut self, lease: LeaseShare, used: Option<Costs>) {
        let op = self.shares.settle(lease, used, &self.budgets);
        self.out.extend(op.map(Output::Shared));
    }

    /// pacer refused an acquire (rejected it at once, or its deadline passed in the queue):
    /// counted for its budget (if it has one) and its client, and told to subscribers and the
    /// log — always, listener or not: refusals are what a user asks about.
    pub(crate) fn note_refusal(
        &mut self,
        b: Option<BudgetIdx>,
        id: Option<BudgetId>,
        client: &str,
        reason: &str,
        now: Instant,
    ) {
        if let Some(b) = b {
            self.budgets[b].record_refusal();
        }
        let budget = id.or_else(|| b.map(|b| self.budgets[b].id()));
        let refused = self.clients.refused(client, budget, reason, now);
        self.out.push(Output::Event(refused));
    }

    /// A lease ended: its client is credited with the tokens, subscribers are told.
    pub(crate) fn note_settled(
        &mut self,
        lease: &Lease,
        outcome: SettledAs,
        tokens: (u64, u64),
        now: Instant,
    ) {
        self.clients.settled(&lease.client, tokens, now);
        if self.grant_events {
            let budget = self.budgets[lease.budget].id();
            self.out
                .push(Output::Event(lease.settled(budget, outcome, tokens)));
        }
    }

    /// A lease ended without a report (its connection closed, or it expired): its outcome is
    /// unknown, its reservation stays spent, its slot is freed.
    pub(crate) fn settle_unknown(&mut self, mut lease: Lease, now: Instant) {
        self.end_window_call(lease.window_call.take(), now);
        self.note_settled(&lease, SettledAs::Unknown, (0, 0), now);
        self.settle_shared(lease.share(), Some(lease.reservation.cost));
        self.budgets[lease.budget].finish();
    }
}
