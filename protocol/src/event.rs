//! What the daemon streams to subscribers (a `Subscribe` request).

use std::time::{Duration, SystemTime};

use serde::{Deserialize, Serialize};

use crate::budget::{BudgetOwner, KeyFingerprint, LeaseId, LimitKind, Priority};
use crate::status::{BudgetId, WindowStatus};
use crate::throttle::Throttle;

/// Something that happened in the daemon, streamed to subscribers.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Event {
    /// A permit was granted.
    Granted {
        budget: BudgetId,
        lease: LeaseId,
        priority: Priority,
        client_id: String,
        waited: Duration,
    },
    /// Every peer of a budget waits until `until` (a 429, or an administrator's pause). Sent again
    /// when a later 429 moves the end by a second or more (not for each 429 of the same pause).
    PauseStarted {
        budget: BudgetId,
        until: SystemTime,
        /// Why: the 429's message, or "paused by administrator".
        reason: String,
    },
    /// A budget's pause has passed (or was lifted).
    PauseEnded { budget: BudgetId },
    /// A limit was learned from response headers, or changed.
    LimitLearned {
        budget: BudgetId,
        kind: LimitKind,
        limit: u64,
    },
    /// A model class backs off after a 529 until `until`.
    Overloaded {
        model_class: String,
        until: SystemTime,
    },
    /// A key's responses named its account: from now on its budgets are the account's.
    KeyLinked {
        key: KeyFingerprint,
        account: String,
    },
    /// A subscription window crossed 75 %, 90 % or 100 %, or its status changed.
    Window {
        owner: BudgetOwner,
        window: WindowStatus,
    },
    /// Requests of an owner (or of one of its classes) are refused at once until `until`.
    LockedOut {
        owner: BudgetOwner,
        model_class: Option<String>,
        until: SystemTime,
        reason: String,
    },
    /// A lockout ended (its time passed, or it was lifted).
    LockoutEnded {
        owner: BudgetOwner,
        model_class: Option<String>,
    },
    /// A granted call was settled: how it went, what it used, how long it waited for its permit.
    Settled {
        budget: BudgetId,
        client_id: String,
        outcome: SettledAs,
        input_tokens: u64,
        output_tokens: u64,
        waited: Duration,
    },
    /// pacer itself refused an acquire (it timed out in the queue, or was rejected at once),
    /// and why.
    Refused {
        budget: Option<BudgetId>,
        client_id: String,
        reason: String,
    },
    /// New Claude Code sessions are started at a pace (`per_minute`) — a bare 429 met a
    /// session starting — or, `None`, at once again. `account`: whose sessions; `None`: every
    /// session on this machine. New in protocol 6.
    StartPace {
        account: Option<BudgetOwner>,
        per_minute: Option<f64>,
    },
}

/// How a call ended, as its report said.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum SettledAs {
    Success,
    /// An upstream 429.
    RateLimited,
    /// An upstream 529.
    Overloaded,
    Failed,
    Unknown,
    /// Given back unused.
    Released,
    /// The API refused it as the caller's mistake (a 4xx other than 429).
    ClientError,
    /// An upstream 429, and which kind (new in protocol 6, which sends it for every 429
    /// instead of `RateLimited`).
    Throttled(Throttle),
}

impl SettledAs {
    pub fn as_str(self) -> &'static str {
        match self {
            SettledAs::Success => "ok",
            SettledAs::RateLimited => "429",
            SettledAs::Overloaded => "529",
            SettledAs::Failed => "failed",
            SettledAs::Unknown => "unknown",
            SettledAs::Released => "released",
            SettledAs::ClientError => "4xx",
            SettledAs::Throttled(Throttle::PerMinute) => "429",
            SettledAs::Throttled(Throttle::Window) => "429 window",
            SettledAs::Throttled(Throttle::SpendCap) => "429 spend-cap",
            SettledAs::Throttled(Throttle::Bare) => "429 bare",
        }
    }
}
