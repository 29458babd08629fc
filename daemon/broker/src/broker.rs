//! The [`Broker`] itself, what it is asked (`pacer status`, the status line, the gateway's
//! estimate of a wait, when to wake), the state file it saves and restores, and what the
//! shared store and the other daemons tell it.

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use pacer_api::Answer;
use pacer_protocol::BudgetOwner;
use pacer_protocol::message::{
    AccountStatus, Acquire, BudgetId, BudgetStatus, ClientStatus, SessionQuery, SessionStatus,
    SessionView, StartStatus,
};

use super::accounts::Accounts;
use super::budget::{Budget, BudgetIdx, Budgets, Readiness};
use super::clients::Clients;
use super::leases::{Lease, Leases};
use super::lockouts::{Lockout, Lockouts};
use super::overload::Overloads;
use super::owner::Owner;

use super::sessions::Sessions;
use super::shared::{self, ClusterEvent, Shares};
use super::snapshot::{
    AccountWindowsState, BudgetState, Kept, LeaseState, LinkState, LockoutState, OverloadState,
    Restoring, SessionState, WorkspaceState,
};
use super::starts::Starts;
use super::waiters::Waiters;
use super::windows::Windows;
use super::{
    Broker, BrokerConfig, BrokerState, InFlight, MAX_DETACHED_LEASES, Origin, Output, Sharing,
    Summary, TimeBase, later,
};

impl Broker {
    /// A broker with no budgets yet. Lease ids start at `first_lease` (the caller picks one that
    /// does not repeat the ids of an earlier run).
    pub fn new(config: BrokerConfig, time_base: TimeBase, first_lease: u64) -> Self {
        Self {
            accounts: Accounts::new(config.accounts.clone()),
            windows: Windows::new(config.windows.clone()),
            config,
            time_base,
            budgets: Budgets::default(),
            overloads: Overloads::default(),
            waiters: Waiters::default(),
            leases: Leases::new(first_lease),
            lockouts: Lockouts::default(),
            stopping: false,
            grant_events: false,
            clients: Clients::default(),
            shares: Shares::new(Sharing::Alone),
            sessions: Sessions::default(),
            starts: Starts::default(),
            capped: Default::default(),
            out: Vec::new(),
        }
    }

    /// Turns grant events on or off (on while at least one subscriber listens).
    pub fn set_events(&mut self, on: bool) {
        self.grant_events = on;
    }

    /// The local time zone's offset from UTC (seconds east), for the times messages give.
    pub fn set_utc_offset(&mut self, seconds: i32) {
        self.windows.set_utc_offset(seconds);
    }

    pub fn time_base(&self) -> TimeBase {
        self.time_base
    }

    /// The model class a model name belongs to.
    pub fn classify(&mut self, model: &str) -> Arc<str> {
        self.budgets.classify(&self.config.classes, model)
    }

    pub fn sharing(&self) -> Sharing {
        self.shares.sharing
    }
}

/// What is asked.
impl Broker {
    /// A snapshot of every budget, sorted by key and class.
    pub fn status(&self, now: Instant) -> Vec<BudgetStatus> {
        let mut out: Vec<BudgetStatus> = self
            .budgets
            .iter()
            .map(|(_, budget)| self.budget_status(budget, now))
            .collect();
        out.sort_by(|a, b| a.budget.cmp(&b.budget));
        out
    }

    fn budget_status(&self, budget: &Budget, now: Instant) -> BudgetStatus {
        let (owner, class) = (budget.owner(), budget.class());
        let lockout = self.lockouts.covering(owner, class, now);
        let overload = self.overloads.gate(class);
        let mut status = budget.status(lockout, overload, &self.time_base, now);
        let (waiting, clock) = (status.waiting_by_priority, &self.time_base);
        let held = self.windows.drain((owner, class), waiting, clock, now);
        status.drain_estimate = held.unwrap_or(status.drain_estimate);
        status
    }

    /// Every account, and every lone key with subscription windows or a lockout, sorted.
    pub fn accounts(&self, now: Instant) -> Vec<AccountStatus> {
        let mut owners = self.accounts.owners();
        owners.extend(self.windows.iter().map(|(owner, _)| owner.clone()));
        owners.extend(self.lockouts.iter().map(|(owner, _, _)| owner.clone()));
        owners
            .into_iter()
            .map(|owner| self.account(&owner, now))
            .collect()
    }

    /// One account as `pacer status` shows it: its keys, windows (with pacer's estimates,
    /// ceilings and forecast) and lockouts.
    fn account(&self, owner: &Owner, now: Instant) -> AccountStatus {
        let windows = self.windows.of(owner);
        let state = |s: Option<&pacer_api::unified::WindowState>| s.map(|s| s.as_str().to_owned());
        AccountStatus {
            parent: self
                .accounts
                .parent_of(owner)
                .map(|p| BudgetOwner::Account(p.to_string())),
            keys: self.accounts.keys_of(owner),
            windows: self.windows.status(owner, &self.time_base, now),
            unified_status: state(windows.and_then(|w| w.status.as_ref())),
            overage: state(windows.and_then(|w| w.overage.as_ref())),
            overage_in_use: windows.and_then(|w| w.overage_in_use),
            lockouts: self.lockouts.status_of(owner, &self.time_base, now),
            owner: owner.to_wire(),
        }
    }

    /// Totals over every budget, for the service manager's status line.
    pub fn summary(&self, now: Instant) -> Summary {
        let budgets = || self.budgets.iter().map(|(_, budget)| budget);
        Summary {
            budgets: self.budgets.len(),
            in_flight: budgets().map(|b| b.in_flight() as usize).sum(),
            waiting: self.waiters.len(),
            paused: budgets()
                .filter(|b| b.paused_until().is_some_and(|until| until > now))
                .count(),
        }
    }

    /// Leases held by live connections (detached leases, which outlive them, not counted).
    pub fn leases_in_flight(&self) -> usize {
        self.leases.owned()
    }

    /// The number of waiters and leases, for logs and tests.
    pub fn counts(&self) -> (usize, usize) {
        (self.waiters.len(), self.leases.len())
    }

    /// Every client seen recently, busiest first, with what of it waits now.
    pub fn clients(&self, now: Instant) -> Vec<ClientStatus> {
        let mut clients = self
            .clients
            .status(&self.waiters.by_client(), &self.time_base, now);
        for client in clients.iter_mut().filter(|c| c.max_share.is_some()) {
            self.cap_status(client, now);
        }
        clients
    }

    /// Every Claude Code session seen in the last day.
    pub fn sessions(&self, now: Instant) -> Vec<SessionStatus> {
        self.sessions.status(now, &self.time_base)
    }

    /// A session's account (or, when the session is not known, the only account with a budget
    /// of the model's class), with its windows and its budget of that class.
    pub fn session_view(&self, query: &SessionQuery, now: Instant) -> SessionView {
        let class = query
            .model
            .as_deref()
            .map(|model| Arc::<str>::from(self.config.classes.classify(model)));
        let known = query
            .session_id
            .as_deref()
            .and_then(|id| self.sessions.get(id))
            .and_then(|s| s.owner.clone());
        let by_session = known.is_some();
        // The model's only account: those with subscription windows first.
        let owner = known.or_else(|| {
            let windowed = |owner: &Owner| self.windows.of(owner).is_some();
            self.budgets.sole_owner(class.as_ref(), windowed)
        });
        let Some(owner) = owner else {
            return SessionView {
                account: None,
                budget: None,
                by_session,
            };
        };
        let budget = class
            .and_then(|class| self.budgets.find(&owner, &class))
            .map(|b| self.budget_status(&self.budgets[b], now));
        SessionView {
            account: Some(self.account(&owner, now)),
            budget,
            by_session,
        }
    }

    /// Where new sessions start at a pace, and how many wait.
    pub fn starts(&self) -> Vec<StartStatus> {
        self.starts.status(&self.time_base)
    }

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
            return Some(self.starts.holdup(&owner, now));
        }
        let max_share = crate::holds::max_share_of(req, &self.config.windows);
        if let Some(hold) = self.cap_hold(b, (&req.client_id, max_share), now) {
            return Some(self.windows.holdup(&hold, &self.time_base, now));
        }
        let cost = self.budgets[b].cost_of(req);
        let gate = self.gate(b, &cost, now);
        if self.budgets[b].grants_at_once(&cost, gate, now)
            && self.window_hold(b, req.priority, now).is_none()
        {
            return Some((Duration::ZERO, String::new()));
        }
        Some(self.holdup(b, (req.priority, &cost), None, now))
    }

    /// The API's answer that locked out the budget `id`, to replay to the requests it refuses.
    pub fn rejection(&self, id: &BudgetId, now: Instant) -> Option<Arc<Answer>> {
        let owner = Owner::from_wire(&id.owner);
        let lockout = self.lockouts.covering(&owner, &id.model_class, now)?;
        lockout.rejection.clone()
    }
}

/// What goes out, besides each input's outputs.
impl Broker {
    /// The state to save, as of `now`.
    pub fn snapshot(&self, now: Instant) -> BrokerState {
        let clock = &self.time_base;
        let lease = |(id, lease): (_, &Lease)| {
            LeaseState::of((id, lease), &self.budgets[lease.budget], clock, now)
        };
        let mut state = BrokerState {
            budgets: self
                .budgets
                .iter()
                .map(|(_, budget)| BudgetState::of(budget, clock, now))
                .collect(),
            overloads: self
                .overloads
                .iter()
                .map(|(class, overload)| OverloadState::of(class, overload, clock, now))
                .collect(),
            next_lease: self.leases.next_id(),
            links: self.accounts.links().map(LinkState::of).collect(),
            workspaces: self.accounts.parents().map(WorkspaceState::of).collect(),
            lockouts: self
                .lockouts
                .iter()
                .filter_map(|lockout| LockoutState::of(lockout, clock, now))
                .collect(),
            subscriptions: self.windows.iter().map(AccountWindowsState::of).collect(),
            leases: self.leases.iter().filter_map(lease).collect(),
            sessions: self
                .sessions
                .iter()
                .filter_map(|session| SessionState::of(session, clock))
                .collect(),
        };
        state.sort();
        state
    }

    /// When time alone will next change something, if ever.
    pub fn next_wakeup(&self, now: Instant) -> Option<Instant> {
        let budgets = self
            .budgets
            .needing_attention()
            .flat_map(|b| self.budget_wakeups(b, now));
        [
            self.waiters.next_deadline(),
            self.leases.next_expiry(),
            self.lockouts.next_expiry(),
            self.starts.next_wakeup(),
            self.next_unparking(now),
        ]
        .into_iter()
        .chain(budgets)
        .flatten()
        .min()
    }

    /// When time alone changes something for budget `b`: its pause ends, its head can be served
    /// (or asked for again, while shared), a call that may go out of turn fits.
    fn budget_wakeups(&self, b: BudgetIdx, now: Instant) -> [Option<Instant>; 3] {
        let shared = self.shares.is_shared();
        let budget = &self.budgets[b];
        let head = budget.head().and_then(|(id, cost)| {
            let readiness = if shared {
                // The store decides; ask it again when it said to (or when the pause, backoff
                // or first contact holding the head ends).
                if self.shares.is_claiming(b) {
                    return None;
                }
                let local = budget.local_readiness(self.overloads.gate(budget.class()), now);
                match (local, self.shares.retry_at(b)) {
                    (Readiness::At(at), retry) => Readiness::At(retry.map_or(at, |r| r.max(at))),
                    (_, Some(retry)) => Readiness::At(retry),
                    (other, None) => other,
                }
            } else {
                budget.readiness(&cost, self.gate(b, &cost, now), now)
            };
            match readiness {
                // Ready, but for its account's windows: wake when their hold ends (the pace
                // lets it in, the window resets), if that is known.
                Readiness::Now => {
                    let priority = self.waiters.get(id)?.priority;
                    match self.window_hold(b, priority, now) {
                        Some(hold) => hold.until,
                        None => Some(now),
                    }
                }
                Readiness::At(at) => Some(at),
                Readiness::AfterSettlement => None,
            }
        });
        // A call that may go out of turn while the head waits, when it will fit.
        let out_of_turn = (!shared)
            .then(|| budget.backfill_candidate(now))
            .flatten()
            .and_then(
                |(_, cost)| match budget.readiness(&cost, self.gate(b, &cost, now), now) {
                    Readiness::At(at) => Some(at),
                    _ => None,
                },
            );
        [budget.paused_until(), head, out_of_turn]
    }
}

/// The state file.
impl Broker {
    /// Restores a state saved at `saved_at` (wall clock); `wall_now` is the wall clock at `now`.
    /// Entries that no longer make sense (a malformed key) are skipped.
    pub fn restore(
        &mut self,
        mut state: BrokerState,
        saved_at: SystemTime,
        now: Instant,
        wall_now: SystemTime,
    ) {
        let downtime = wall_now.duration_since(saved_at).unwrap_or_default();
        let at = Restoring {
            now,
            wall_now,
            downtime,
        };
        let kept = Kept {
            accounts: &mut self.accounts,
            overloads: &mut self.overloads,
            lockouts: &mut self.lockouts,
            windows: &mut self.windows,
            sessions: &mut self.sessions,
        };
        state.restore_kept(kept, &self.time_base, &at);
        for saved in state.budgets {
            let Some((owner, class)) = saved.budget() else {
                continue;
            };
            let Some(b) = self.budget_of(&owner, &class, now) else {
                break;
            };
            saved.restore_into(&mut self.budgets[b], &at);
            self.budgets.touch(b);
        }
        // Calls that were in flight: their slots stay taken (their reservations are already in
        // the saved levels) until they expire, at most LEASE_MAX_AGE from now.
        for saved in state.leases.into_iter().take(MAX_DETACHED_LEASES) {
            let Some((owner, class, expires)) = saved.budget(&at) else {
                continue;
            };
            let Some(b) = self.budget_of(&owner, &class, now) else {
                continue;
            };
            self.budgets[b].hold_in_flight();
            let lease = saved.lease((b, &self.budgets[b]), expires, now);
            self.leases.restore(saved.id, lease);
        }
        self.leases.set_next(state.next_lease);
    }
}

/// The shared store and the other daemons.
impl Broker {
    /// Moves between the store and a local share: every budget's limits (and in-flight caps)
    /// divided among the daemons, its buckets starting from its share of what the store last
    /// said was left. Back in the store, what the local share spent is charged there.
    pub fn set_sharing(&mut self, now: Instant, sharing: Sharing) -> Vec<Output> {
        if self.shares.sharing == sharing {
            return self.take_output();
        }
        for op in self.shares.switch(sharing) {
            self.out.push(Output::Shared(op));
        }
        for b in self.budgets.indices() {
            let (share, last) = match sharing {
                Sharing::Fallback { share } => {
                    (share, self.shares.last_levels(&self.budgets[b].id()))
                }
                Sharing::Shared | Sharing::Alone => (1.0, None),
            };
            self.budgets[b].set_share(share, last, now);
        }
        self.serve_all(now);
        self.take_output()
    }

    /// What daemon `from` published. It is in the store already: none of what it causes here
    /// goes back there (no [`Output::Shared`] in what this returns). It is held to this
    /// daemon's own bounds first (`shared::checked`).
    pub fn apply_shared(&mut self, now: Instant, from: &str, event: ClusterEvent) -> Vec<Output> {
        if let Some(event) = shared::checked(event, from) {
            self.apply_event(now, from, event);
        }
        let mut outputs = self.take_output();
        outputs.retain(|output| !matches!(output, Output::Shared(_)));
        outputs
    }

    fn apply_event(&mut self, now: Instant, from: &str, event: ClusterEvent) {
        let until = |for_ms: u64| later(now, Duration::from_millis(for_ms));
        let b = match &event {
            ClusterEvent::Pause { budget, .. }
            | ClusterEvent::Lift { budget }
            | ClusterEvent::Freed { budget }
            | ClusterEvent::Limit { budget, .. } => self.budget_by_id(budget, now),
            _ => None,
        };
        // What frees or teaches a budget lets it ask the store again at once.
        let ask_again = !matches!(event, ClusterEvent::Pause { .. });
        match (event, b) {
            (
                ClusterEvent::Pause {
                    for_ms,
                    reason,
                    drain,
                    ..
                },
                Some(b),
            ) => {
                if let Some(kinds) = &drain {
                    self.budgets[b].drain(kinds, now);
                }
                self.extend_pause(b, until(for_ms), reason);
            }
            (ClusterEvent::Lift { .. }, Some(b)) => self.lift(b),
            (ClusterEvent::Limit { kind, limit, .. }, Some(b)) => {
                self.budgets[b].learn(kind, limit, now);
            }
            (ClusterEvent::Overload { class, for_ms }, _) => {
                self.overloads
                    .extend(&Arc::from(class.as_str()), until(for_ms));
            }
            (
                ClusterEvent::Lockout {
                    owner,
                    class,
                    for_ms,
                    reason,
                },
                _,
            ) => {
                let lockout = Lockout {
                    until: until(for_ms),
                    reason,
                    rejection: None,
                };
                let scope = class.map(|c| Arc::from(c.as_str()));
                self.lock_out(&Owner::from_wire(&owner), scope, lockout, now);
            }
            (ClusterEvent::Link { key, account }, _) => {
                self.link(key, Arc::from(account.as_str()), now);
            }
            (ClusterEvent::Windows { owner, windows }, _) => {
                let owner = Owner::from_wire(&owner);
                let unified = windows.to_unified(self.time_base.to_wall(now));
                let (crossed, _) = self.windows.observe(&owner, &unified, None, now);
                self.out.extend(crossed.into_iter().map(Output::Event));
                self.serve_owner(&owner, now);
            }
            (
                ClusterEvent::WindowCalls {
                    owner,
                    in_flight,
                    answered,
                },
                _,
            ) => {
                let owner = Owner::from_wire(&owner);
                let told = InFlight {
                    in_flight,
                    answered,
                };
                self.windows.told(&owner, from, told, now);
                self.serve_owner(&owner, now);
            }
            // Freed: its budget is served below; a budget no budget can be: nothing.
            _ => {}
        }
        if let Some(b) = b {
            if ask_again {
                self.shares.ask_again(b);
            }
            self.serve(b, now);
        }
    }
}
