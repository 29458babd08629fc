//! What of the broker outlives a restart: pauses, lockouts and backoffs, learned limits, bucket
//! levels and running averages, which keys belong to which account, and what the accounts'
//! subscription windows looked like. (Waiters and leases belong to connections, which a restart
//! closes.)
//!
//! Times are saved on the wall clock; on restore, buckets are refilled for the time the daemon
//! was down, and pauses and lockouts still in force resume where they were. Files written before
//! accounts existed load as they are (every budget a key's).

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use pacer_api::Answer;
use pacer_api::unified::{
    MAX_WINDOW_NAME, UnifiedWindow, WindowState, is_window_name, sane_utilization,
};
use pacer_protocol::KeyFingerprint;
use pacer_protocol::message::LeaseId;
use pacer_protocol::text::{MAX_MESSAGE, bounded};
use serde::{Deserialize, Serialize};

use super::accounts::Accounts;
use super::budget::{Budget, BudgetIdx, Reservation, SavedBudget};
use super::cost::{RunningAverage, usage_bound};
use super::leases::{LEASE_MAX_AGE, Lease, unknown_client};
use super::lockouts::{Lockout, Lockouts, MAX_RATE_LIMIT_WAIT, Scope};
use super::overload::{Overload, Overloads};
use super::owner::Owner;
use super::sessions::{ClaudeSession, MAX_SESSION_ID, MAX_SESSIONS, Sessions};
use super::time::{TimeBase, later};
use super::windows::{AccountWindows, Estimate, Window, Windows};
use super::{MAX_LIMIT, PerKind};

/// The broker's durable state.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct BrokerState {
    pub budgets: Vec<BudgetState>,
    /// Model classes backing off after 529s.
    pub overloads: Vec<OverloadState>,
    /// The next lease id, so that a restarted daemon never reuses one.
    pub next_lease: u64,
    /// Keys that responses tied to an account.
    #[serde(default)]
    pub links: Vec<LinkState>,
    /// Workspace accounts and their organizations'.
    #[serde(default)]
    pub workspaces: Vec<WorkspaceState>,
    /// Owners refusing requests at once until a time.
    #[serde(default)]
    pub lockouts: Vec<LockoutState>,
    /// Each account's subscription windows.
    #[serde(default)]
    pub subscriptions: Vec<AccountWindowsState>,
    /// Calls in flight when saved: after a crash their slots stay taken until they expire.
    #[serde(default)]
    pub leases: Vec<LeaseState>,
    /// Claude Code sessions and the account their calls went to (kept a day).
    #[serde(default)]
    pub sessions: Vec<SessionState>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SessionState {
    pub id: String,
    #[serde(flatten)]
    pub owner: OwnerState,
    pub last_seen: SystemTime,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LeaseState {
    /// Its id, so that a detached lease can still be reported after a restart.
    pub id: u64,
    #[serde(flatten)]
    pub owner: OwnerState,
    pub model_class: String,
    /// When its slot is taken to be free again.
    pub expires: SystemTime,
    /// What it reserved, from which buckets: a report settles it exactly.
    pub cost: PerKind<u64>,
    pub charged: PerKind<bool>,
}

/// Whose: a key (16 hex characters) or an account's label.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct OwnerState {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub account: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BudgetState {
    #[serde(flatten)]
    pub owner: OwnerState,
    pub model_class: String,
    /// Limits learned from headers, per kind (requests, input tokens, output tokens).
    pub learned: PerKind<Option<u64>>,
    /// Bucket levels when saved, per kind.
    pub levels: PerKind<Option<f64>>,
    pub paused_until: Option<SystemTime>,
    #[serde(default)]
    pub pause_reason: String,
    pub input_average: RunningAverage,
    pub output_average: RunningAverage,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OverloadState {
    pub model_class: String,
    pub consecutive: u32,
    pub until: Option<SystemTime>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LinkState {
    pub key: String,
    pub account: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WorkspaceState {
    pub account: String,
    pub organization: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LockoutState {
    #[serde(flatten)]
    pub owner: OwnerState,
    /// The class it covers; none for every class.
    pub model_class: Option<String>,
    pub until: SystemTime,
    pub reason: String,
    /// The API's answer replayed to the requests it refuses.
    pub rejection: Option<RejectionState>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RejectionState {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AccountWindowsState {
    #[serde(flatten)]
    pub owner: OwnerState,
    pub status: Option<String>,
    pub windows: Vec<SavedWindow>,
    /// Extra usage: its status, and whether the account was spending it.
    #[serde(default)]
    pub overage: Option<String>,
    #[serde(default)]
    pub overage_in_use: Option<bool>,
}

/// One window as the state file keeps it ([`UnifiedWindow`] beside its learned share; the file
/// keeps times in its own form).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SavedWindow {
    pub name: String,
    pub status: Option<String>,
    pub utilization: Option<f64>,
    pub reset: Option<SystemTime>,
    /// What one call was seen to cost of it.
    #[serde(default)]
    pub share: Option<f64>,
}

/// Where a restore stands: the monotonic and the wall clock now, and for how long the daemon
/// was down.
#[derive(Debug, Clone, Copy)]
pub struct Restoring {
    pub now: Instant,
    pub wall_now: SystemTime,
    pub downtime: Duration,
}

impl Restoring {
    /// A saved time still to come; none further than any wait the broker believes (a damaged
    /// file).
    pub fn instant(&self, at: SystemTime) -> Option<Instant> {
        let left = at.duration_since(self.wall_now).ok()?;
        Some(later(self.now, left.min(MAX_RATE_LIMIT_WAIT)))
    }
}

/// The tables a saved state fills in without a budget of theirs.
pub struct Kept<'a> {
    pub accounts: &'a mut Accounts,
    pub overloads: &'a mut Overloads,
    pub lockouts: &'a mut Lockouts,
    pub windows: &'a mut Windows,
    pub sessions: &'a mut Sessions,
}

impl BrokerState {
    /// Puts back what `kept` kept (taking it out of the state): links first, so that every
    /// budget restored after is filed under the owner it has now. Entries that no longer make
    /// sense (a malformed key) are skipped.
    pub fn restore_kept(&mut self, kept: Kept<'_>, clock: &TimeBase, at: &Restoring) {
        for (account, organization) in self.workspaces.iter().filter_map(|w| w.restore()) {
            kept.accounts.set_parent(account, organization);
        }
        for (key, account) in self.links.iter().filter_map(|l| l.restore()) {
            kept.accounts.link(key, account);
        }
        for (class, overload) in self.overloads.drain(..).map(|o| o.restore(at)) {
            kept.overloads.restore(class, overload, at.now);
        }
        for (owner, scope, lockout) in self.lockouts.drain(..).filter_map(|l| l.restore(at)) {
            kept.lockouts.lock(&owner, scope, lockout);
        }
        for (owner, windows) in self.subscriptions.drain(..).filter_map(|s| s.restore()) {
            kept.windows.restore(owner, windows);
        }
        let sessions = self.sessions.drain(..).take(MAX_SESSIONS);
        for (id, owner, last_seen) in sessions.filter_map(|s| s.restore(clock, at.now)) {
            kept.sessions.restore(id, owner, last_seen, clock);
        }
    }

    /// Sorts what the tables do not keep in order, so that the same state always writes the
    /// same file.
    pub fn sort(&mut self) {
        self.leases.sort_by_key(|l| l.id);
        self.overloads
            .sort_by(|a, b| a.model_class.cmp(&b.model_class));
        self.links.sort_by(|a, b| a.key.cmp(&b.key));
        self.sessions.sort_by(|a, b| a.id.cmp(&b.id));
    }
}

impl OwnerState {
    fn of(owner: &Owner) -> OwnerState {
        match owner {
            Owner::Key(key) => OwnerState {
                key: Some(key.to_string()),
                account: None,
            },
            Owner::Account(label) => OwnerState {
                key: None,
                account: Some(label.to_string()),
            },
        }
    }

    /// The owner, if the entry names one properly.
    fn owner(&self) -> Option<Owner> {
        match (&self.account, &self.key) {
            (Some(account), _) if is_account_label(account) => {
                Some(Owner::Account(Arc::from(account.as_str())))
            }
            (_, Some(key)) => key.parse().ok().map(Owner::Key),
            _ => None,
        }
    }
}

/// The longest account label taken from a state file or another daemon (`org-` and 12 hex
/// characters, a workspace's, or a name from the configuration, at most 64).
pub const MAX_ACCOUNT_LABEL: usize = 128;

/// Whether `label` can be an account's: not empty, not too long, printable.
pub fn is_account_label(label: &str) -> bool {
    !label.is_empty()
        && label.len() <= MAX_ACCOUNT_LABEL
        && label.chars().all(|c| !c.is_control() && !c.is_whitespace())
}

fn state_of(status: &Option<WindowState>) -> Option<String> {
    status.as_ref().map(|s| s.as_str().to_owned())
}

fn parse_state(status: &Option<String>) -> Option<WindowState> {
    status
        .as_deref()
        .map(|s| WindowState::parse(&bounded(s, MAX_WINDOW_NAME)))
}

impl BudgetState {
    pub fn of(budget: &Budget, clock: &TimeBase, now: Instant) -> BudgetState {
        let saved = budget.saved(now);
        BudgetState {
            owner: OwnerState::of(budget.owner()),
            model_class: budget.class().to_string(),
            learned: saved.learned,
            levels: saved.levels,
            paused_until: budget
                .paused_until()
                .filter(|&at| at > now)
                .map(|at| clock.to_wall(at)),
            pause_reason: budget.pause_reason().to_owned(),
            input_average: saved.input_average,
            output_average: saved.output_average,
        }
    }

    /// Whose budget it is, and of which class, if the entry names an owner properly.
    pub fn budget(&self) -> Option<(Owner, Arc<str>)> {
        Some((self.owner.owner()?, Arc::from(self.model_class.as_str())))
    }

    /// Puts what was saved back into `budget`: levels refilled for the downtime, a pause still
    /// in force resumed.
    pub fn restore_into(self, budget: &mut Budget, at: &Restoring) {
        let kept = SavedBudget {
            learned: self.learned,
            levels: self.levels,
            input_average: self.input_average,
            output_average: self.output_average,
        };
        budget.restore(&kept, at.downtime, at.now);
        if let Some(until) = self.paused_until.and_then(|t| at.instant(t)) {
            budget.extend_pause(until, &bounded(&self.pause_reason, MAX_MESSAGE));
        }
    }
}

impl OverloadState {
    pub fn of(class: &Arc<str>, overload: &Overload, clock: &TimeBase, now: Instant) -> Self {
        OverloadState {
            model_class: class.to_string(),
            consecutive: overload.consecutive,
            until: overload
                .until
                .filter(|&at| at > now)
                .map(|at| clock.to_wall(at)),
        }
    }

    pub fn restore(self, at: &Restoring) -> (Arc<str>, Overload) {
        let overload = Overload {
            consecutive: self.consecutive,
            until: self.until.and_then(|t| at.instant(t)),
        };
        (Arc::from(self.model_class.as_str()), overload)
    }
}

impl LinkState {
    pub fn of((key, account): (KeyFingerprint, &Arc<str>)) -> LinkState {
        LinkState {
            key: key.to_string(),
            account: account.to_string(),
        }
    }

    pub fn restore(&self) -> Option<(KeyFingerprint, Arc<str>)> {
        let key = self.key.parse::<KeyFingerprint>().ok()?;
        is_account_label(&self.account).then(|| (key, Arc::from(self.account.as_str())))
    }
}

impl WorkspaceState {
    pub fn of((account, organization): (&Arc<str>, &Arc<str>)) -> WorkspaceState {
        WorkspaceState {
            account: account.to_string(),
            organization: organization.to_string(),
        }
    }

    /// The workspace's account and its organization's.
    pub fn restore(&self) -> Option<(Arc<str>, Arc<str>)> {
        (is_account_label(&self.account) && is_account_label(&self.organization)).then(|| {
            (
                Arc::from(self.account.as_str()),
                Arc::from(self.organization.as_str()),
            )
        })
    }
}

impl LockoutState {
    /// A lockout still in force at `now`.
    pub fn of(
        (owner, scope, lockout): (&Owner, &Scope, &Lockout),
        clock: &TimeBase,
        now: Instant,
    ) -> Option<LockoutState> {
        (lockout.until > now).then(|| LockoutState {
            owner: OwnerState::of(owner),
            model_class: scope.as_deref().map(str::to_owned),
            until: clock.to_wall(lockout.until),
            reason: lockout.reason.clone(),
            rejection: lockout.rejection.as_deref().map(|r| RejectionState {
                status: r.status,
                headers: r.headers.clone(),
                body: String::from_utf8_lossy(&r.body).into_owned(),
            }),
        })
    }

    /// The lockout, if it names an owner properly and is still in force.
    pub fn restore(self, at: &Restoring) -> Option<(Owner, Scope, Lockout)> {
        let (owner, until) = (self.owner.owner()?, at.instant(self.until)?);
        let rejection = self
            .rejection
            .map(|r| Arc::new(Answer::bounded(r.status, r.headers, r.body.into_bytes())));
        let lockout = Lockout {
            until,
            reason: bounded(&self.reason, MAX_MESSAGE),
            rejection,
        };
        Some((owner, self.model_class.as_deref().map(Arc::from), lockout))
    }
}

impl AccountWindowsState {
    pub fn of((owner, account): (&Owner, &AccountWindows)) -> AccountWindowsState {
        AccountWindowsState {
            owner: OwnerState::of(owner),
            status: state_of(&account.status),
            windows: account
                .windows
                .iter()
                .map(|(name, w)| SavedWindow {
                    name: name.clone(),
                    status: state_of(&w.said.status),
                    utilization: w.said.utilization,
                    reset: w.said.reset,
                    share: w.estimate.learned_share(),
                })
                .collect(),
            overage: state_of(&account.overage),
            overage_in_use: account.overage_in_use,
        }
    }

    /// The account's windows, if the entry names an owner properly (windows with names no
    /// window has are left out).
    pub fn restore(self) -> Option<(Owner, AccountWindows)> {
        let windows = self
            .windows
            .iter()
            .filter(|w| is_window_name(&w.name))
            .map(|w| {
                let said = UnifiedWindow {
                    name: w.name.clone(),
                    status: parse_state(&w.status),
                    utilization: w.utilization.and_then(sane_utilization),
                    reset: w.reset,
                };
                let estimate = Estimate::with_share(w.share);
                let window = Window {
                    said,
                    estimate,
                    seen: None,
                };
                (w.name.clone(), window)
            })
            .take(crate::windows::MAX_WINDOWS_PER_ACCOUNT)
            .collect();
        let account = AccountWindows {
            status: parse_state(&self.status),
            windows,
            overage: parse_state(&self.overage),
            overage_in_use: self.overage_in_use,
            ..AccountWindows::default()
        };
        Some((self.owner.owner()?, account))
    }
}

impl SessionState {
    /// A session whose account is known.
    pub fn of(
        (id, session): (&Arc<str>, &ClaudeSession),
        clock: &TimeBase,
    ) -> Option<SessionState> {
        Some(SessionState {
            id: id.to_string(),
            owner: OwnerState::of(session.owner.as_ref()?),
            last_seen: clock.to_wall(session.last_seen),
        })
    }

    /// The session, its account and when it was last seen, if the entry is sound.
    pub fn restore(self, clock: &TimeBase, now: Instant) -> Option<(Arc<str>, Owner, Instant)> {
        if self.id.is_empty() || self.id.len() > MAX_SESSION_ID {
            return None;
        }
        let last_seen = clock.to_instant(self.last_seen).min(now);
        Some((Arc::from(self.id.as_str()), self.owner.owner()?, last_seen))
    }
}

impl LeaseState {
    /// A lease as saved: its slot stays taken after a crash until it expires.
    pub fn of(
        (id, lease): (LeaseId, &Lease),
        budget: &Budget,
        clock: &TimeBase,
        now: Instant,
    ) -> Option<LeaseState> {
        let expires = lease
            .expires
            .unwrap_or_else(|| later(lease.granted_at, LEASE_MAX_AGE));
        (expires > now).then(|| LeaseState {
            id: id.0,
            owner: OwnerState::of(budget.owner()),
            model_class: budget.class().to_string(),
            expires: clock.to_wall(expires),
            cost: lease.reservation.cost,
            charged: lease.reservation.charged,
        })
    }

    /// Whose budget it drew on, and when it expires, if the entry is sound and not expired.
    pub fn budget(&self, at: &Restoring) -> Option<(Owner, Arc<str>, Instant)> {
        let (owner, expires) = (self.owner.owner()?, at.instant(self.expires)?);
        Some((owner, Arc::from(self.model_class.as_str()), expires))
    }

    /// The lease of budget `b` (`budget`) it was, expiring at `expires` (at most
    /// [`LEASE_MAX_AGE`] from now): its reservation is already in the saved levels.
    pub fn lease(
        &self,
        (b, budget): (BudgetIdx, &Budget),
        expires: Instant,
        now: Instant,
    ) -> Lease {
        Lease {
            key: KeyFingerprint::ANONYMOUS,
            budget: b,
            owner: None,
            expires: Some(expires.min(later(now, LEASE_MAX_AGE))),
            granted_at: now,
            reservation: Reservation {
                cost: self.cost.map(|_, n| n.min(MAX_LIMIT)),
                charged: self.charged,
                // Nothing is known of what was taken before the restart.
                taken_before: budget.taken_totals(),
                shared: false,
                counted: PerKind::default(),
            },
            unmetered: PerKind::default(),
            bound: usage_bound(None),
            window_call: None,
            session: None,
            probe: false,
            parent: None,
            client: unknown_client(),
            waited: Duration::ZERO,
            shared: None,
        }
    }
}
