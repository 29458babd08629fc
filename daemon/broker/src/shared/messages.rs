//! What crosses between the broker and the store's I/O layer: claims for capacity and their
//! answers, work for the store, and the events daemons tell each other.

use std::time::{Duration, Instant};

use pacer_api::unified::{Unified, UnifiedWindow, WindowState, is_window_name, sane_utilization};
use pacer_protocol::message::BudgetId;
use pacer_protocol::{BudgetOwner, KeyFingerprint, LimitKind};
use serde::{Deserialize, Serialize};

use crate::{Costs, LimitSet, PerKind};

/// A request for capacity in the store.
#[derive(Debug, Clone, PartialEq)]
pub struct Claim {
    pub id: u64,
    pub budget: BudgetId,
    pub cost: Costs,
    /// The limits this daemon knows (configured, else learned); the store keeps the ones it is
    /// told and fills in the others.
    pub limits: LimitSet,
    /// For a workspace's budget: its organization's, which must have the capacity too.
    pub parent: Option<(BudgetId, LimitSet)>,
    /// The model class, whose overload backoff the store keeps.
    pub class: String,
}

/// What the store said to a claim.
#[derive(Debug, Clone, PartialEq)]
pub enum ClaimAnswer {
    Granted {
        /// The store's count of requests taken before this one (bounds a later refund).
        taken_before: f64,
        /// What each bucket holds after the take.
        levels: PerKind<Option<f64>>,
        limits: LimitSet,
    },
    /// Not yet: try again after `wait` (or when an event says something changed).
    Refused { wait: Duration, limits: LimitSet },
    /// A lockout in the store refuses every request until `for_` has passed.
    LockedOut { for_: Duration, reason: String },
    /// The store could not be asked (the broker is put on its local share first).
    Unavailable,
}

/// Work for the store.
#[derive(Debug, Clone, PartialEq)]
pub enum SharedOp {
    /// A call settled: its reservation is adjusted to what it used, its slot freed.
    Settle {
        budget: BudgetId,
        parent: Option<BudgetId>,
        claim: u64,
        reserved: Costs,
        used: Costs,
        /// For a permit given back unused: what the store had taken before it.
        taken_before: Option<f64>,
    },
    /// Tell the other daemons (and the store, where it keeps it).
    Publish(ClusterEvent),
    /// Spent from a local share while the store was away.
    Charge { budget: BudgetId, spent: Costs },
    /// A key's budget joined its account's: what the key's took is charged to the account's.
    Merge { from: BudgetId, into: BudgetId },
}

/// What one daemon tells the others.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum ClusterEvent {
    /// Everyone on `budget` waits `for_ms` (a 429, or an administrator); `drain` empties the
    /// named buckets (every bucket if the list is empty; none with `None`) so that grants
    /// resume at the refill pace.
    Pause {
        budget: BudgetId,
        for_ms: u64,
        reason: String,
        drain: Option<Vec<LimitKind>>,
    },
    /// An administrator lifted `budget`'s pause (and its class's backoff, its lockouts).
    Lift { budget: BudgetId },
    /// The class backs off after 529s.
    Overload { class: String, for_ms: u64 },
    /// Requests of `owner` (of one class, or every class) are refused at once.
    Lockout {
        owner: BudgetOwner,
        class: Option<String>,
        for_ms: u64,
        reason: String,
    },
    /// A key's responses named its account.
    Link {
        key: KeyFingerprint,
        account: String,
    },
    /// An in-flight slot of `budget` was freed: who waits for one may ask again.
    Freed { budget: BudgetId },
    /// What a response said of `owner`'s subscription windows.
    Windows {
        owner: BudgetOwner,
        windows: WindowsReport,
    },
    /// A limit was learned from response headers (the first contact's answer, say).
    Limit {
        budget: BudgetId,
        kind: LimitKind,
        limit: u64,
    },
    /// The sender's calls of `owner` in flight toward its subscription windows now, and answered
    /// since it started: they count toward the windows' ceilings on every daemon.
    WindowCalls {
        owner: BudgetOwner,
        in_flight: u32,
        answered: u64,
    },
}

impl ClusterEvent {
    /// Everyone on `budget` pauses until `until` (`drain`: the limits a 429 named).
    pub fn pause(
        budget: BudgetId,
        (now, until): (Instant, Instant),
        reason: &str,
        drain: Option<Vec<LimitKind>>,
    ) -> ClusterEvent {
        let for_ms = until.saturating_duration_since(now).as_millis();
        ClusterEvent::Pause {
            budget,
            for_ms: for_ms.min(u128::from(u64::MAX)) as u64,
            reason: reason.to_owned(),
            drain,
        }
    }
}

/// A subscription's windows as one response reported them (the unified headers), in a form
/// that crosses to other daemons.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WindowsReport {
    pub status: Option<WindowState>,
    pub windows: Vec<UnifiedWindow>,
    /// Extra usage: its status, and whether the account spends it now.
    #[serde(default)]
    pub overage: Option<WindowState>,
    #[serde(default)]
    pub overage_in_use: Option<bool>,
}

/// The most windows taken from one report (real accounts have two or three).
const MAX_WINDOWS: usize = 16;

impl WindowsReport {
    pub fn of(unified: &Unified) -> WindowsReport {
        WindowsReport {
            status: unified.status.clone(),
            overage: unified.overage_status.clone(),
            overage_in_use: unified.overage_in_use,
            windows: unified.windows.clone(),
        }
    }

    /// Back to what the headers said (what another daemon's response said), at `wall`: resets
    /// past [`pacer_api::ratelimit::MAX_RESET_AHEAD`] from it are not believed, as in headers.
    pub fn to_unified(&self, wall: std::time::SystemTime) -> Unified {
        let mut unified = Unified {
            status: self.status.clone(),
            overage_status: self.overage.clone(),
            overage_in_use: self.overage_in_use,
            // Held to the same rules as headers: another daemon (or whoever can write to the
            // channel) may send anything.
            windows: self
                .windows
                .iter()
                .filter(|w| is_window_name(&w.name))
                .take(MAX_WINDOWS)
                .map(|w| UnifiedWindow {
                    utilization: w.utilization.and_then(sane_utilization),
                    ..w.clone()
                })
                .collect(),
            ..Unified::default()
        };
        if let Some(horizon) = wall.checked_add(pacer_api::ratelimit::MAX_RESET_AHEAD) {
            unified.forget_resets_past(horizon);
        }
        unified
    }
}
