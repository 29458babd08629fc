//! What a status snapshot (the answer to a `Status` request) shows: every budget, every
//! account.

use std::time::SystemTime;

use serde::{Deserialize, Serialize};

use crate::budget::{BudgetOwner, KeyFingerprint, LimitKind};

/// The answer to a `Status` request.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StatusSnapshot {
    pub daemon_version: String,
    /// Every budget the daemon knows of, sorted by owner and class.
    pub budgets: Vec<BudgetStatus>,
    /// Every account, and every key with subscription windows, sorted by owner.
    pub accounts: Vec<AccountStatus>,
    /// Upstreams registered by wrapped commands that had their own `ANTHROPIC_BASE_URL`.
    pub routes: Vec<RouteStatus>,
    /// Set when more budgets or accounts follow: ask for them with `StatusPage(next_page)`.
    pub next_page: Option<u32>,
}

/// A registered route.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RouteStatus {
    pub id: String,
    /// The upstream URL, without credentials.
    pub upstream: String,
    /// The clients registered on it or seen using it.
    pub clients: Vec<String>,
    pub last_used: SystemTime,
}

/// A budget: one owner (an API key, or an account) × one model class.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct BudgetId {
    pub owner: BudgetOwner,
    pub model_class: String,
}

impl std::fmt::Display for BudgetId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.owner, self.model_class)
    }
}

/// An account (or a lone key) as a status snapshot shows it, beyond its budgets.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AccountStatus {
    pub owner: BudgetOwner,
    /// For a workspace, its organization's account: both limits hold for its keys.
    pub parent: Option<BudgetOwner>,
    /// The keys that draw on the account's budgets (for a lone key, itself).
    pub keys: Vec<KeyFingerprint>,
    /// The subscription's windows, as the last response reported them.
    pub windows: Vec<WindowStatus>,
    /// The overall status of the subscription's limit (`allowed`, `allowed_warning`,
    /// `rejected`), if reported.
    pub unified_status: Option<String>,
    /// Set while every request of the account (or of one of its classes) is refused at once.
    pub lockouts: Vec<LockoutStatus>,
}

/// One subscription window (`5h`, `7d`, `7d_opus`, …).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WindowStatus {
    pub name: String,
    /// `allowed`, `allowed_warning`, `rejected`, or whatever the API said.
    pub status: Option<String>,
    /// The spent fraction, 0.0 to 1.0.
    pub utilization: Option<f64>,
    pub reset: Option<SystemTime>,
}

/// A lockout: requests refused at once, without going upstream, until a time.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LockoutStatus {
    /// The model class it covers; `None` for every class.
    pub model_class: Option<String>,
    pub until: SystemTime,
    /// Why: a spent window, a long 429, a spend cap.
    pub reason: String,
}

/// One budget as a status snapshot shows it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BudgetStatus {
    pub budget: BudgetId,
    /// The limits in force (configured, else learned); `None` is not enforced.
    pub limits: Limits,
    /// What each limited bucket holds now; negative while in debt.
    pub available: Available,
    pub in_flight: u32,
    pub waiting: u32,
    /// Set while every peer of the budget waits out a 429 or an administrator's pause, or while
    /// a lockout refuses its requests.
    pub paused_until: Option<SystemTime>,
    /// Why it is paused: the 429's message, "paused by administrator", a lockout's reason.
    pub pause_reason: Option<String>,
    /// Set while the model class backs off after 529 (overloaded) answers.
    pub overloaded_until: Option<SystemTime>,
    /// Permits granted since the daemon started.
    pub granted: u64,
    /// 429 answers reported since the daemon started.
    pub rate_limited: u64,
}

/// Per-minute limits of a budget.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Limits {
    pub rpm: Option<u64>,
    pub itpm: Option<u64>,
    pub otpm: Option<u64>,
    pub max_in_flight: Option<u32>,
}

impl Limits {
    /// The limit of one kind.
    pub fn get(&self, kind: LimitKind) -> Option<u64> {
        match kind {
            LimitKind::Requests => self.rpm,
            LimitKind::InputTokens => self.itpm,
            LimitKind::OutputTokens => self.otpm,
        }
    }
}

/// What each bucket of a budget holds; `None` where the limit is not enforced.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Available {
    pub requests: Option<i64>,
    pub input_tokens: Option<i64>,
    pub output_tokens: Option<i64>,
}
