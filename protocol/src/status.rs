//! What a status snapshot (the answer to a `Status` request) shows: every budget, every
//! account.

use std::time::SystemTime;

use serde::{Deserialize, Serialize};

use std::time::Duration;

use crate::budget::{BudgetOwner, KeyFingerprint, LimitKind, Priority};
use crate::throttle::Throttles;

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
    /// Clients seen in the last [`CLIENTS_SEEN_WITHIN`] (with the first page only).
    pub clients: Vec<ClientStatus>,
    /// The daemon as a whole.
    pub daemon: DaemonStatus,
    /// The shared store, when budgets are shared with other daemons.
    pub cluster: Option<ClusterStatus>,
    /// Claude Code sessions seen in the last day (with the first page only).
    pub sessions: Vec<SessionStatus>,
    /// Where new Claude Code sessions are started at a pace (after the API answered sessions
    /// starting together with bare 429s), with the first page only. Empty: every new session
    /// starts at once. New in protocol 6.
    pub starts: Vec<StartStatus>,
    /// Set when lists were cut to fit one frame: what was left out.
    pub truncated: Option<String>,
}

/// Budgets shared through Redis, as this daemon sees it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ClusterStatus {
    /// The Redis URL, without its password.
    pub redis: String,
    pub connected: bool,
    /// This daemon's id in the heartbeat set.
    pub daemon_id: String,
    /// Daemons seen in the heartbeat set recently (this one included).
    pub daemons: u32,
    /// While Redis is away: the fraction of every limit this daemon runs on.
    pub local_share: Option<f64>,
    /// Why it is not connected, if it is not.
    pub problem: Option<String>,
}

/// How long a client stays in the status after it was last seen.
pub const CLIENTS_SEEN_WITHIN: std::time::Duration = std::time::Duration::from_secs(600);

/// One client (a process, a Claude Code session, a script) as the daemon saw it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ClientStatus {
    /// Its client id (`pacer run --name`, a session id, `<program>-<pid>`).
    pub id: String,
    pub priority: Priority,
    /// The budget of its latest acquire.
    pub budget: Option<BudgetId>,
    pub granted: u64,
    /// Tokens its settled calls used (input as counted against the limit).
    pub input_tokens: u64,
    pub output_tokens: u64,
    /// Acquires of it waiting now, and the longest of their waits so far.
    pub waiting: u32,
    pub longest_wait: Option<Duration>,
    /// All its granted calls waited, together.
    pub waited_total: Duration,
    /// Acquires of it refused or timed out by pacer itself.
    pub refused: u64,
    pub last_seen: SystemTime,
    /// Its cap on each subscription window (`--max-share`, `[windows.max_share]`), 0.0 to 1.0;
    /// what it used of the window it used most, as pacer counted its calls; and whether its
    /// calls are held by the cap now. New in protocol 7.
    pub max_share: Option<f64>,
    pub window_use: Option<f64>,
    pub capped: bool,
}

/// The daemon as a whole, beside its budgets.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DaemonStatus {
    pub started_at: Option<SystemTime>,
    /// Socket connections open now (gateway requests are not counted).
    pub connections: u32,
    /// Connections and requests turned away before reaching a budget (not allowed, too many,
    /// malformed).
    pub refused_connections: u64,
    /// Times the state file was written.
    pub state_saves: u64,
}

/// Why a budget lets nothing through.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum PauseCause {
    /// A 429 from the API: everyone waits out its `retry-after`.
    RateLimited,
    /// `pacer pause`.
    Administrator,
    /// A lockout: a spent subscription window, a 429 asking for longer than `max_hold`, a
    /// spend cap.
    Lockout,
}

impl PauseCause {
    pub fn as_str(self) -> &'static str {
        match self {
            PauseCause::RateLimited => "429",
            PauseCause::Administrator => "manual",
            PauseCause::Lockout => "lockout",
        }
    }
}

/// The upper bounds (seconds) of the queue-wait histogram's buckets; a last bucket takes the
/// rest.
pub const WAIT_BUCKETS: [f64; 10] = [0.01, 0.05, 0.25, 1.0, 2.5, 5.0, 15.0, 30.0, 60.0, 240.0];

/// How long granted acquires waited in the queue.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct WaitHistogram {
    /// Per bucket of [`WAIT_BUCKETS`] and one more for longer waits; not cumulative.
    pub counts: Vec<u64>,
    pub sum_seconds: f64,
}

impl WaitHistogram {
    pub fn record(&mut self, waited: Duration) {
        if self.counts.len() != WAIT_BUCKETS.len() + 1 {
            self.counts = vec![0; WAIT_BUCKETS.len() + 1];
        }
        let secs = waited.as_secs_f64();
        let bucket = WAIT_BUCKETS
            .iter()
            .position(|&bound| secs <= bound)
            .unwrap_or(WAIT_BUCKETS.len());
        self.counts[bucket] += 1;
        self.sum_seconds += secs;
    }

    pub fn count(&self) -> u64 {
        self.counts.iter().sum()
    }

    /// Adds another histogram's counts (two budgets merged into one account).
    pub fn absorb(&mut self, other: &WaitHistogram) {
        if other.counts.is_empty() {
            return;
        }
        if self.counts.len() != other.counts.len() {
            self.counts = vec![0; other.counts.len()];
        }
        for (mine, theirs) in self.counts.iter_mut().zip(&other.counts) {
            *mine += theirs;
        }
        self.sum_seconds += other.sum_seconds;
    }
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
    /// Extra usage beyond the windows (`-unified-overage-status`: `allowed`, `rejected`, …), and
    /// whether the account is spending it now (`-unified-overage-in-use`).
    pub overage: Option<String>,
    pub overage_in_use: Option<bool>,
}

/// One subscription window (`5h`, `7d`, `7d_opus`, …).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WindowStatus {
    pub name: String,
    /// `allowed`, `allowed_warning`, `rejected`, or whatever the API said.
    pub status: Option<String>,
    /// The spent fraction, 0.0 to 1.0 (a little over 1.0 once spent).
    pub utilization: Option<f64>,
    pub reset: Option<SystemTime>,
    /// Where pacer reckons the window is now: the utilization last reported, plus the calls in
    /// flight (on every daemon) at what one call was seen to cost of it.
    pub estimated: Option<f64>,
    /// What one call was seen to cost of the window (learned from how its utilization moves).
    pub share: Option<f64>,
    /// Per priority: how far it may bring the window now, and whether it is held now.
    pub ceilings: Vec<PriorityCeiling>,
    /// Utilization spent per hour over the last 15 minutes, and when the window would run out
    /// at that rate (`None`: not before it resets, or nothing is being spent).
    pub burn_per_hour: Option<f64>,
    pub runs_out: Option<SystemTime>,
}

impl WindowStatus {
    /// A window with what the API said of it only.
    pub fn reported(
        name: String,
        status: Option<String>,
        utilization: Option<f64>,
        reset: Option<SystemTime>,
    ) -> WindowStatus {
        WindowStatus {
            name,
            status,
            utilization,
            reset,
            estimated: None,
            share: None,
            ceilings: Vec::new(),
            burn_per_hour: None,
            runs_out: None,
        }
    }

    /// The ceiling of `priority`, if one is set.
    pub fn ceiling(&self, priority: Priority) -> Option<&PriorityCeiling> {
        self.ceilings.iter().find(|c| c.priority == priority)
    }
}

/// How far one priority may bring a subscription window (`[windows]`), and whether its calls
/// are held now.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PriorityCeiling {
    pub priority: Priority,
    /// The share of the window it may bring it to now: its ceiling, paced (`pace = true`) by how
    /// much of the window has passed. 1.0 or more: never held by the window.
    pub ceiling: f64,
    /// Its calls are held now (they wait, and are answered 429 when they cannot be served in
    /// time): the window's estimate reaches the ceiling, or the account spends extra usage and
    /// this priority may not.
    pub held: bool,
    /// Calls of this priority the window held until they were refused, since the daemon started.
    pub refused: u64,
}

/// A pace at which new Claude Code sessions are let start (protocol 6).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StartStatus {
    /// The account whose new sessions it paces; `None`: every new session on this machine.
    pub account: Option<BudgetOwner>,
    /// New sessions let start a minute.
    pub per_minute: f64,
    /// Sessions waiting to start now.
    pub waiting: u32,
    /// When the next may start.
    pub next_start: Option<SystemTime>,
    /// When a bare 429 last met a session starting.
    pub last_wall: SystemTime,
}

/// A Claude Code session (`X-Claude-Code-Session-Id`) as the gateway saw it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SessionStatus {
    /// The whole session id.
    pub id: String,
    /// The account its calls went to, last.
    pub owner: Option<BudgetOwner>,
    pub last_seen: SystemTime,
    /// Its calls answered in the last hour, and their share of all the account's calls then.
    pub calls_last_hour: u64,
    pub share_last_hour: Option<f64>,
}

/// What `pacer statusline` asks: a session's account, or the only account of a model.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SessionQuery {
    /// Claude Code's session id, as its `X-Claude-Code-Session-Id` header carries it.
    pub session_id: Option<String>,
    /// The model the session uses, for its class's budget (and its account, when the session
    /// is not known yet).
    pub model: Option<String>,
}

/// The answer to a [`SessionQuery`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SessionView {
    /// The account the session's calls go to (or the model's only account), with its windows.
    pub account: Option<AccountStatus>,
    /// Its budget of the model's class: paused, waiting.
    pub budget: Option<BudgetStatus>,
    /// Whether the account was found by the session id (else by the model alone).
    pub by_session: bool,
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
    /// What kind of pause `paused_until` is.
    pub pause_cause: Option<PauseCause>,
    /// Waiting acquires per priority: interactive, normal, batch.
    pub waiting_by_priority: [u32; 3],
    /// When the queue would be empty if nobody else came, as far as the limits tell.
    pub drain_estimate: Option<Duration>,
    /// Since the daemon started: permits granted, 429s and 529s reported, acquires refused or
    /// timed out by pacer itself, and the tokens settled calls used.
    pub granted: u64,
    /// Every 429 reported; `throttled` counts them by kind.
    pub rate_limited: u64,
    pub throttled: Throttles,
    pub overloaded: u64,
    pub refused: u64,
    pub input_tokens: u64,
    pub output_tokens: u64,
    /// How long granted acquires waited in the queue.
    pub waits: WaitHistogram,
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
