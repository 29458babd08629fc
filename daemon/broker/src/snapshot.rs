//! What of the broker outlives a restart: pauses, lockouts and backoffs, learned limits, bucket
//! levels and running averages, which keys belong to which account, and what the accounts'
//! subscription windows looked like. (Waiters and leases belong to connections, which a restart
//! closes.)
//!
//! Times are saved on the wall clock; on restore, buckets are refilled for the time the daemon
//! was down, and pauses and lockouts still in force resume where they were. Files written before
//! accounts existed load as they are (every budget a key's).

use std::sync::Arc;
use std::time::{Instant, SystemTime};

use pacer_api::unified::{MAX_WINDOW_NAME, WindowState, is_window_name, sane_utilization};
use pacer_protocol::KeyFingerprint;
use pacer_protocol::text::{MAX_MESSAGE, bounded};
use serde::{Deserialize, Serialize};

use super::accounts::{Subscription, WindowInfo};
use super::budget::Reservation;
use super::budget::SavedBudget;
use super::cost::RunningAverage;
use super::leases::{LEASE_MAX_AGE, Lease};
use super::lockouts::Lockout;
use super::overload::Overload;
use super::owner::Owner;
use super::settle::MAX_RATE_LIMIT_WAIT;
use super::windows::Estimate;
use super::{Broker, PerKind, later};
use pacer_api::Answer;

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
    #[serde(default)]
    pub subscriptions: Vec<SubscriptionState>,
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
pub struct SubscriptionState {
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

/// One window as saved.
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

impl Broker {
    /// The state to save, as of `now`.
    pub fn snapshot(&self, now: Instant) -> BrokerState {
        let wall = |at: Instant| self.time_base.to_wall(at);
        let future = |at: &Option<Instant>| at.filter(|&at| at > now).map(wall);
        let budgets = self.budgets.iter().map(|(_, budget)| {
            let saved = budget.saved(now);
            BudgetState {
                owner: OwnerState::of(budget.owner()),
                model_class: budget.class().to_string(),
                learned: saved.learned,
                levels: saved.levels,
                paused_until: future(&budget.paused_until()),
                pause_reason: budget.pause_reason().to_owned(),
                input_average: saved.input_average,
                output_average: saved.output_average,
            }
        });
        let overloads = self
            .overloads
            .iter()
            .map(|(class, overload)| OverloadState {
                model_class: class.to_string(),
                consecutive: overload.consecutive,
                until: future(&overload.until),
            });
        let lockouts = self
            .lockouts
            .iter()
            .filter(|(_, _, lockout)| lockout.until > now)
            .map(|(owner, scope, lockout)| LockoutState {
                owner: OwnerState::of(owner),
                model_class: scope.as_deref().map(str::to_owned),
                until: wall(lockout.until),
                reason: lockout.reason.clone(),
                rejection: lockout.rejection.as_deref().map(|r| RejectionState {
                    status: r.status,
                    headers: r.headers.clone(),
                    body: String::from_utf8_lossy(&r.body).into_owned(),
                }),
            });
        let subscriptions =
            self.accounts
                .subscriptions()
                .map(|(owner, subscription)| SubscriptionState {
                    owner: OwnerState::of(owner),
                    status: state_of(&subscription.status),
                    windows: subscription
                        .windows
                        .iter()
                        .map(|(name, w)| SavedWindow {
                            name: name.clone(),
                            status: state_of(&w.status),
                            utilization: w.utilization,
                            reset: w.reset,
                            share: w.estimate.learned_share(),
                        })
                        .collect(),
                    overage: state_of(&subscription.overage),
                    overage_in_use: subscription.overage_in_use,
                });
        let links = self.accounts.links().map(|(key, account)| LinkState {
            key: key.to_string(),
            account: account.to_string(),
        });
        let workspaces = self
            .accounts
            .parents()
            .map(|(account, organization)| WorkspaceState {
                account: account.to_string(),
                organization: organization.to_string(),
            });
        let leases = self.leases.iter().map(|(id, lease)| {
            let budget = &self.budgets[lease.budget];
            let expires = lease
                .expires
                .unwrap_or_else(|| later(lease.granted_at, LEASE_MAX_AGE));
            LeaseState {
                id: id.0,
                owner: OwnerState::of(budget.owner()),
                model_class: budget.class().to_string(),
                expires: wall(expires),
                cost: lease.reservation.cost,
                charged: lease.reservation.charged,
            }
        });
        // Sorted where the tables are not, so that the same state always writes the same file.
        let mut leases: Vec<LeaseState> = leases.filter(|l| l.expires > wall(now)).collect();
        leases.sort_by_key(|l| l.id);
        let mut overloads: Vec<OverloadState> = overloads.collect();
        overloads.sort_by(|a, b| a.model_class.cmp(&b.model_class));
        let mut links: Vec<LinkState> = links.collect();
        links.sort_by(|a, b| a.key.cmp(&b.key));
        let mut sessions: Vec<SessionState> = self
            .sessions
            .iter()
            .filter_map(|(id, session)| {
                Some(SessionState {
                    id: id.to_string(),
                    owner: OwnerState::of(session.owner.as_ref()?),
                    last_seen: wall(session.last_seen),
                })
            })
            .collect();
        sessions.sort_by(|a, b| a.id.cmp(&b.id));
        BrokerState {
            sessions,
            leases,
            budgets: budgets.collect(),
            overloads,
            next_lease: self.leases.next_id(),
            links,
            workspaces: workspaces.collect(),
            lockouts: lockouts.collect(),
            subscriptions: subscriptions.collect(),
        }
    }

    /// Restores a state saved at `saved_at` (wall clock); `wall_now` is the wall clock at `now`.
    /// Entries that no longer make sense (a malformed key) are skipped.
    pub fn restore(
        &mut self,
        state: BrokerState,
        saved_at: SystemTime,
        now: Instant,
        wall_now: SystemTime,
    ) {
        let downtime = wall_now.duration_since(saved_at).unwrap_or_default();
        // Times still to come; none further than any wait the broker believes (a damaged file).
        let instant = |at: SystemTime| -> Option<Instant> {
            let left = at.duration_since(wall_now).ok()?;
            Some(later(now, left.min(MAX_RATE_LIMIT_WAIT)))
        };
        // Links first, so that every budget is filed under the owner it has now.
        for workspace in &state.workspaces {
            if is_account_label(&workspace.account) && is_account_label(&workspace.organization) {
                self.accounts.set_parent(
                    Arc::from(workspace.account.as_str()),
                    Arc::from(workspace.organization.as_str()),
                );
            }
        }
        for link in &state.links {
            if let Ok(key) = link.key.parse::<KeyFingerprint>()
                && is_account_label(&link.account)
            {
                self.accounts.link(key, Arc::from(link.account.as_str()));
            }
        }
        for saved in state.budgets {
            let Some(owner) = saved.owner.owner() else {
                continue;
            };
            let class = Arc::from(saved.model_class.as_str());
            let Some(b) = self.budget_of(&owner, &class, now) else {
                break;
            };
            let budget = &mut self.budgets[b];
            let kept = SavedBudget {
                learned: saved.learned,
                levels: saved.levels,
                input_average: saved.input_average,
                output_average: saved.output_average,
            };
            budget.restore(&kept, downtime, now);
            if let Some(until) = saved.paused_until.and_then(instant) {
                budget.extend_pause(until, &bounded(&saved.pause_reason, MAX_MESSAGE));
            }
            self.budgets.touch(b);
        }
        for saved in state.overloads {
            self.overloads.restore(
                Arc::from(saved.model_class.as_str()),
                Overload {
                    consecutive: saved.consecutive,
                    until: saved.until.and_then(instant),
                },
                now,
            );
        }
        for saved in state.lockouts {
            let (Some(owner), Some(until)) = (saved.owner.owner(), instant(saved.until)) else {
                continue;
            };
            let rejection = saved
                .rejection
                .map(|r| Arc::new(Answer::bounded(r.status, r.headers, r.body.into_bytes())));
            let scope = saved.model_class.as_deref().map(Arc::from);
            let lockout = Lockout {
                until,
                reason: bounded(&saved.reason, MAX_MESSAGE),
                rejection,
            };
            self.lockouts.lock(&owner, scope, lockout);
        }
        for saved in state.subscriptions {
            let Some(owner) = saved.owner.owner() else {
                continue;
            };
            let windows = saved
                .windows
                .iter()
                .filter(|w| is_window_name(&w.name))
                .map(|w| {
                    let info = WindowInfo {
                        status: parse_state(&w.status),
                        utilization: w.utilization.and_then(sane_utilization),
                        reset: w.reset,
                        estimate: Estimate::with_share(w.share),
                    };
                    (w.name.clone(), info)
                })
                .collect();
            let subscription = Subscription {
                status: parse_state(&saved.status),
                windows,
                overage: parse_state(&saved.overage),
                overage_in_use: saved.overage_in_use,
                ..Subscription::default()
            };
            self.accounts.restore_subscription(owner, subscription);
        }
        for saved in state
            .sessions
            .into_iter()
            .take(super::sessions::MAX_SESSIONS)
        {
            let last_seen = self.time_base.to_instant(saved.last_seen).min(now);
            let (Some(owner), true) = (
                saved.owner.owner(),
                !saved.id.is_empty() && saved.id.len() <= super::sessions::MAX_SESSION_ID,
            ) else {
                continue;
            };
            self.sessions.restore(
                Arc::from(saved.id.as_str()),
                owner,
                last_seen,
                &self.time_base,
            );
        }
        // Calls that were in flight: their slots stay taken (their reservations are already in
        // the saved levels) until they expire, at most LEASE_MAX_AGE from now.
        for saved in state.leases.into_iter().take(super::MAX_DETACHED_LEASES) {
            let (Some(owner), Some(expires)) = (saved.owner.owner(), instant(saved.expires)) else {
                continue;
            };
            let class = Arc::from(saved.model_class.as_str());
            let Some(b) = self.budget_of(&owner, &class, now) else {
                continue;
            };
            self.budgets[b].hold_in_flight();
            let lease = Lease {
                key: pacer_protocol::KeyFingerprint::ANONYMOUS,
                budget: b,
                owner: None,
                expires: Some(expires.min(later(now, LEASE_MAX_AGE))),
                granted_at: now,
                reservation: Reservation {
                    cost: saved.cost.map(|_, n| n.min(crate::limits::MAX_LIMIT)),
                    charged: saved.charged,
                    // Nothing is known of what was taken before the restart.
                    taken_before: self.budgets[b].taken_totals(),
                    shared: false,
                    counted: PerKind::default(),
                },
                unmetered: PerKind::default(),
                bound: super::cost::usage_bound(None),
                window_call: None,
                session: None,
                probe: false,
                parent: None,
                client: super::usage::unknown_client(),
                waited: std::time::Duration::ZERO,
                shared: None,
            };
            self.leases.restore(saved.id, lease);
        }
        self.leases.set_next(state.next_lease);
    }
}
