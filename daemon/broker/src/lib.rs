//! The broker: every budget, waiter and lease, as a pure state machine.
//!
//! Nothing here does I/O or reads a clock. Each method takes `now` and returns the [`Output`]s to
//! deliver: answers to acquires that were waiting (possibly on other connections) and events for
//! subscribers. [`Broker::next_wakeup`] says when time alone will change something (a bucket
//! refills enough for the head of a queue, a deadline or pause passes), and the caller calls
//! [`Broker::tick`] then. The caller owns the one timer; the broker owns every rule.
//!
//! # A tour
//!
//! The [`Broker`] coordinates tables; each table owns its data and the rules about it.
//!
//! - `broker`: what the [`Broker`] is asked (`pacer status`, the status line, how long a call
//!   would wait, when to wake), the state file it saves and restores, and what other daemons
//!   tell it through the store;
//! - `intake`: what comes in from clients and time — acquires, reports, releases, headers,
//!   pauses, connections closing, time passing, the store's answers to claims;
//! - `steps`: the steps those share — finding a budget, granting, serving a queue, locking out,
//!   linking a key to its account, learning from headers, telling the store and subscribers;
//! - `holds`: what holds a call up besides its budget — its account's windows, its client's
//!   cap (`--max-share`: calls taken out of their queue until their window resets).
//!
//! A walk of one permit: [`Broker::acquire`] (`intake`) asks `waiters` whether the acquire may
//! wait, `lockouts` whether it is refused, `steps` for its budget and whether it is granted at
//! once (`budget`, `windows`), and `steps::grant` issues the lease (`leases`);
//! [`Broker::report`] (`intake`) takes the lease back, asks `exchange` what the settlement
//! comes to, settles it in `budget` (and `shared`), learns from its headers (`steps`) and
//! serves the queue (`steps`).
//!
//! The tables:
//! - `budget`: one budget (an owner × a model class: buckets, pause, first contact, tally) and
//!   `Budgets`, every budget, with the rules tying a workspace's to its
//!   organization's;
//! - `queue`: a budget's fair queue (start-time fair queueing by what a call costs);
//! - `waiters`: acquires waiting, and what an acquire may ask; `leases`: permits granted and
//!   not yet settled;
//! - `accounts`: which keys share an account; `owner`: whose budget it is;
//! - `windows`: each account's subscription windows, and whether they hold a priority's calls;
//! - `lockouts`: owners refused at once until a time (spent windows, spend caps, long waits);
//! - `overload`: a model class's backoff after 529s;
//! - `clients`: who asked for and used what; `sessions`: Claude Code sessions and their
//!   account; `starts`: the pace at which new sessions start once the API turned sessions
//!   starting together away;
//! - `shared`: budgets kept in a store shared with other daemons (claims, settlements and
//!   events the I/O layer carries to Redis and back), and the local share when it is away;
//! - `calibration`: input-token estimates for gateway requests from their size, learned from
//!   real usage (kept by the hub beside the broker).
//!
//! The parts: `bucket`, `cost`, `limits` (configured limits and model classes), `per_kind`,
//! `time`, `config`, `exchange` (what goes in and out: tickets, outputs, settlements) and
//! `snapshot` (the state file's format, and each table's share of it). This file: the
//! bounds every table keeps.
//!
//! Words: a lease *settles* when it ends — reported, released, expired or its connection
//! closed — and its reservation becomes what the call used. A budget is *served* when its
//! queue's head (and calls that fit out of turn) are granted.
//!
//! # Adding a window kind or a limit kind
//!
//! A new subscription window (a header `anthropic-ratelimit-unified-<name>-…`):
//! 1. `pacer_api::unified`: the name parsed (`is_window_name`, `window_class` if it is one
//!    model's), its title in `window_title` and its length in `window_length`;
//! 2. nothing else in the broker: `windows` holds every window by name, and the state file,
//!    `pacer status`, the status line and `/metrics` show every window they are given.
//!
//! A new per-minute limit kind is a wire enum, so it touches:
//! 1. `pacer_protocol::LimitKind` (its `ALL`, names, and a protocol version bump with golden
//!    fixtures);
//! 2. `PerKind` (one field per kind) and `cost::Costs` (what a call costs of it);
//! 3. `pacer_api::ratelimit`: its headers, and `limit_named_in` for 429 messages naming it;
//! 4. `budget`: nothing if the kind is metered like the others (buckets are per kind);
//! 5. the daemon's `[limits]` configuration keys, `/metrics` labels, and the README.

mod accounts;
mod broker;
mod bucket;
mod budget;
mod calibration;
mod clients;
mod config;
mod cost;
mod exchange;
mod holds;
mod intake;
mod leases;
mod limits;
mod lockouts;
mod overload;
mod owner;
mod per_kind;
mod queue;
mod sessions;
mod shared;
mod snapshot;
mod starts;
mod steps;
mod time;
mod waiters;
mod windows;

#[cfg(test)]
mod tests;

use std::sync::Arc;

use accounts::Accounts;
pub use accounts::AccountsConfig;
pub use bucket::Bucket;
pub use calibration::Calibration;
pub use config::BrokerConfig;
pub use cost::Costs;
pub use exchange::{BrokerError, ConnId, Output, Settlement, Ticket, Verdict};
pub use limits::{LimitSet, LimitTable, MAX_LIMIT, ModelClasses};
pub use lockouts::MAX_RATE_LIMIT_WAIT;
pub use per_kind::PerKind;
pub use shared::{Claim, ClaimAnswer, ClusterEvent, SharedOp, Sharing, WindowsReport};
pub use snapshot::BrokerState;
pub use time::{FOREVER, TimeBase, later, local_time};
pub use windows::{InFlight, Step, WindowsConfig, window_length, window_title};

use budget::Budgets;
use clients::Clients;
use leases::Leases;
use lockouts::Lockouts;
use overload::Overloads;
use sessions::Sessions;
use shared::Shares;
use starts::Starts;
use waiters::Waiters;
use windows::Windows;

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

/// The broker. Its methods come in three kinds:
/// - what comes in (`intake`): [`acquire`](Broker::acquire), [`report`](Broker::report),
///   [`release`](Broker::release), [`observe`](Broker::observe), [`pause`](Broker::pause),
///   [`disconnect`](Broker::disconnect), [`tick`](Broker::tick), [`stop`](Broker::stop),
///   [`reconfigure`](Broker::reconfigure), [`windows_heartbeat`](Broker::windows_heartbeat),
///   [`claim_answered`](Broker::claim_answered); and (`broker`) [`restore`](Broker::restore),
///   [`apply_shared`](Broker::apply_shared), [`set_sharing`](Broker::set_sharing);
/// - what is asked (`broker`): [`status`](Broker::status), [`accounts`](Broker::accounts),
///   [`clients`](Broker::clients), [`sessions`](Broker::sessions),
///   [`session_view`](Broker::session_view), [`starts`](Broker::starts),
///   [`estimate_wait`](Broker::estimate_wait), [`rejection`](Broker::rejection),
///   [`summary`](Broker::summary) and the like;
/// - what goes out: the [`Output`]s every input returns (answers, events, claims and work for
///   the store), [`next_wakeup`](Broker::next_wakeup) (when to call [`tick`](Broker::tick))
///   and [`snapshot`](Broker::snapshot) (the state to save).
pub struct Broker {
    pub(crate) config: BrokerConfig,
    pub(crate) time_base: TimeBase,
    pub(crate) budgets: Budgets,
    pub(crate) overloads: Overloads,
    pub(crate) waiters: Waiters,
    pub(crate) leases: Leases,
    pub(crate) accounts: Accounts,
    pub(crate) lockouts: Lockouts,
    /// Each account's subscription windows, and the calls in flight toward them.
    pub(crate) windows: Windows,
    /// Set when the daemon stops: acquires are refused while leases in flight get time to report.
    pub(crate) stopping: bool,
    /// Grant events cost allocations on the hot path; they are only built while someone listens.
    pub(crate) grant_events: bool,
    pub(crate) clients: Clients,
    pub(crate) shares: Shares,
    /// Claude Code sessions: their account, their calls in the last hour.
    pub(crate) sessions: Sessions,
    /// The pace at which new sessions start, once the API turned sessions starting together
    /// away, and the sessions waiting to start.
    pub(crate) starts: Starts,
    /// Waiters whose client used its cap of a window (`--max-share`): out of their queues
    /// until the window resets (see `capped`).
    pub(crate) capped: std::collections::BTreeSet<queue::WaiterId>,
    /// What the operation under way will return.
    pub(crate) out: Vec<Output>,
}

/// Where an acquire comes from, beyond what it says itself.
#[derive(Debug, Clone, Default)]
pub struct Origin {
    /// The Claude Code session (`X-Claude-Code-Session-Id`) the gateway saw on the request.
    pub session: Option<Arc<str>>,
}

/// Totals from [`Broker::summary`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Summary {
    pub budgets: usize,
    pub in_flight: usize,
    pub waiting: usize,
    pub paused: usize,
}
