//! One budget: an owner (an API key, or an account) × a model class, with its buckets, pause,
//! in-flight count and queue; and `table`, every budget ([`Budgets`]).
//! Its state changes only through its own methods: here, in `reserve` (grants and their
//! settlement) and in `headers` (what response headers teach it); `wait` estimates how long a
//! waiter has left and what holds it up; `tally` counts what happened to it; `status` is what
//! `pacer status` shows of it; `stored` is a budget while its buckets live in the shared store;
//! `merge` a key's budget joining its account's; `saved` what the state file keeps.

use std::sync::Arc;
use std::time::{Duration, Instant};

use pacer_protocol::message::{Acquire, Available, BudgetId, Limits, PauseCause};
use pacer_protocol::{LimitKind, Priority};

use crate::bucket::Bucket;
use crate::cost::{Costs, RunningAverage};
use crate::limits::LimitSet;
use crate::owner::Owner;
use crate::queue::{BACKFILL_SHARE, FairQueue, Mark, Share, WHOLE, WaiterId};
use crate::{PerKind, later};

mod headers;
mod merge;
mod probe;
mod reserve;
mod saved;
mod status;
mod stored;
mod table;
mod tally;
mod wait;

use probe::Probe;
pub use reserve::Charge;
pub use saved::SavedBudget;
pub use table::{Budgets, MAX_BUDGETS};
pub use tally::Tally;
pub use wait::Holdup;

/// The reason an administrator's pause gives.
pub const ADMIN_PAUSE_REASON: &str = "paused by administrator";

/// Which buckets a grant's reservation was taken from.
pub type Charged = PerKind<bool>;

/// What a grant reserved, and from which buckets.
/// A budget's place in the table ([`Budgets`]); stable while the budget lives.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct BudgetIdx(pub(crate) usize);

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Reservation {
    pub cost: Costs,
    pub charged: Charged,
    /// Per kind: what the bucket had taken in all before this (see `Bucket::give_back`).
    pub taken_before: PerKind<f64>,
    /// Taken from the shared store, not from these buckets: it settles there.
    pub shared: bool,
    /// Per kind: the server's `remaining`, read when the call's answer arrived, lowered the
    /// bucket to a count that already holds the call's real use (input is counted when a
    /// request starts), so its settlement neither charges nor refunds that kind again.
    pub counted: Charged,
}

/// Whether a cost can be granted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Readiness {
    Now,
    /// Not before this moment (a bucket refills, a pause or backoff ends).
    At(Instant),
    /// Not until a call in flight settles (`max_in_flight` is reached).
    AfterSettlement,
}

#[derive(Debug)]
pub struct Budget {
    owner: Owner,
    class: Arc<str>,
    /// For a workspace's budget: its organization's budget of the same class, whose limits hold
    /// too (every grant must fit both, and is charged to both).
    parent: Option<BudgetIdx>,
    /// From the configuration; wins over what is learned.
    configured: LimitSet,
    /// From response headers.
    learned: PerKind<Option<u64>>,
    /// Per kind: the learned limit is only a lower bound inferred from workspaces (see
    /// [`Budget::learn_at_least`]); the first real one starts the bucket over.
    inferred: PerKind<bool>,
    /// One per enforced limit.
    buckets: PerKind<Option<Bucket>>,
    /// Calls granted and not yet settled.
    in_flight: u32,
    /// Every peer waits until then: a 429's retry-after, or an administrator's pause.
    paused_until: Option<Instant>,
    /// Why, for users: the 429's message, "paused by administrator".
    pause_reason: String,
    /// First contact: until the API has answered once, one call goes out and the others wait
    /// (at most `cold_start_hold`) for its answer, so that sessions started together do not
    /// stampede a limit nobody has seen yet, and a new token learns its account first.
    probe: Probe,
    /// A pause ended: the next call is a probe even though the limits are known.
    reprobe: bool,
    cold_start_hold: Duration,
    queue: FairQueue,
    /// Grants out of turn while the head waits for its buckets: for which head, and what they
    /// took (see [`Budget::backfill_candidate`]).
    backfilled: Option<(WaiterId, Costs)>,
    /// Real usage, for acquires that bring no estimate.
    input_average: RunningAverage,
    output_average: RunningAverage,
    /// Since the daemon started, for `pacer status`.
    tally: Tally,
    /// This daemon's share of the limits: 1, or a fraction while the shared store is away.
    share: f64,
    /// Calls answered with a success, since the daemon started.
    succeeded: u64,
    /// 429s in a row that said nothing of how long to wait: each doubles the next pause.
    blind_429s: u32,
    /// Per kind: the bucket was created while calls granted without it (its limit unknown)
    /// were still in flight. Until they have all been answered, the server's `remaining` counts
    /// some of them and not others, so each answer re-estimates the level (see
    /// [`Budget::apply_headers`]).
    calibrating: PerKind<bool>,
    /// When an acquire last asked for it, for forgetting the least recently used when the table
    /// is full.
    last_used: Instant,
    /// While calibrating: the lowest `remaining` seen. Every call the server processed before
    /// the one that reported it is counted in it; every call processed after that one is still
    /// in flight (its answer would have reported less).
    calibration_floor: PerKind<f64>,
}

/// A limit learned from headers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Learned {
    pub kind: LimitKind,
    pub limit: u64,
    /// The limit was not enforced before: its bucket is new.
    pub new_bucket: bool,
}

impl Budget {
    pub fn new(
        owner: Owner,
        class: Arc<str>,
        configured: LimitSet,
        cold_start_hold: Duration,
        now: Instant,
    ) -> Self {
        let mut budget = Self {
            owner,
            class,
            parent: None,
            configured,
            learned: PerKind::default(),
            inferred: PerKind::default(),
            buckets: PerKind::default(),
            in_flight: 0,
            paused_until: None,
            pause_reason: String::new(),
            probe: Probe::Unsent,
            reprobe: false,
            cold_start_hold,
            queue: FairQueue::default(),
            backfilled: None,
            input_average: RunningAverage::default(),
            output_average: RunningAverage::default(),
            tally: Tally::default(),
            share: 1.0,
            succeeded: 0,
            blind_429s: 0,
            calibrating: PerKind::default(),
            last_used: now,
            calibration_floor: PerKind::splat(f64::INFINITY),
        };
        budget.sync_buckets(now);
        budget
    }

    pub fn id(&self) -> BudgetId {
        BudgetId {
            owner: self.owner.to_wire(),
            model_class: self.class.to_string(),
        }
    }

    pub fn owner(&self) -> &Owner {
        &self.owner
    }

    pub fn parent(&self) -> Option<BudgetIdx> {
        self.parent
    }

    /// Makes `parent`'s limits hold for this budget too (a workspace's organization).
    pub fn set_parent(&mut self, parent: BudgetIdx) {
        self.parent = Some(parent);
    }

    /// Files the budget under another owner (a key's budget becoming its account's).
    pub fn set_owner(&mut self, owner: Owner) {
        self.owner = owner;
    }

    pub fn class(&self) -> &Arc<str> {
        &self.class
    }

    pub fn in_flight(&self) -> u32 {
        self.in_flight
    }

    pub fn paused_until(&self) -> Option<Instant> {
        self.paused_until
    }

    /// Why the budget is paused (meaningful while it is).
    pub fn pause_reason(&self) -> &str {
        &self.pause_reason
    }

    /// What kind of pause it is (meaningful while it is).
    pub fn pause_cause(&self) -> PauseCause {
        if self.pause_reason == ADMIN_PAUSE_REASON {
            PauseCause::Administrator
        } else {
            PauseCause::RateLimited
        }
    }

    /// Whether nothing waits on the budget, nothing of it is in flight and it is not paused: it
    /// can be forgotten without anyone noticing but its learned limits and levels.
    pub fn is_idle(&self) -> bool {
        self.queue.is_empty() && self.in_flight == 0 && self.paused_until.is_none()
    }

    /// Whether a call of it ever succeeded (since the daemon started).
    pub fn ever_succeeded(&self) -> bool {
        self.succeeded > 0
    }

    pub fn last_used(&self) -> Instant {
        self.last_used
    }

    /// An acquire asked for it.
    pub fn used_at(&mut self, now: Instant) {
        self.last_used = self.last_used.max(now);
    }

    /// The pause for a 429 that gave no usable wait: 1 s, doubled for each such 429 in a row,
    /// up to a minute (a success starts over).
    pub fn blind_pause(&mut self) -> Duration {
        self.blind_429s = self.blind_429s.saturating_add(1);
        let doublings = (self.blind_429s - 1).min(6);
        Duration::from_secs(1 << doublings)
    }

    /// Whether time alone can change this budget (a pause to end, waiters to serve).
    pub fn needs_attention(&self) -> bool {
        !self.queue.is_empty() || self.paused_until.is_some()
    }

    /// The limits in force: configured, else learned.
    pub fn limits(&self) -> LimitSet {
        let learned = LimitSet {
            rpm: self.learned[LimitKind::Requests],
            itpm: self.learned[LimitKind::InputTokens],
            otpm: self.learned[LimitKind::OutputTokens],
            max_in_flight: None,
        };
        self.configured.or(learned)
    }

    /// Applies a new configuration; buckets keep their levels (clamped to new capacities).
    pub fn set_configured(&mut self, configured: LimitSet, now: Instant) {
        self.configured = configured;
        self.sync_buckets(now);
    }

    /// Creates, resizes or removes buckets to match the limits in force (this daemon's share of
    /// them). A new bucket starts full.
    fn sync_buckets(&mut self, now: Instant) {
        let limits = self.limits();
        let share = self.share;
        for (kind, slot) in self.buckets.iter_mut() {
            let limit = limits
                .get(kind)
                .map(|l| ((l as f64 * share).round() as u64).max(1));
            match (limit, slot.as_mut()) {
                (None, _) => *slot = None,
                (Some(limit), None) => *slot = Some(Bucket::full(limit, now)),
                (Some(limit), Some(bucket)) if bucket.limit() != limit => {
                    bucket.set_limit(limit, now)
                }
                (Some(_), Some(_)) => {}
            }
        }
    }

    /// What an acquire will reserve: one request; the caller's input estimate, else the running
    /// average of real input; the caller's output estimate, else the running average of real
    /// output — either capped at `max_tokens`, which is never reserved itself.
    pub fn cost_of(&self, acquire: &Acquire) -> Costs {
        let input = acquire
            .input_tokens
            .unwrap_or_else(|| self.input_average.estimate());
        let output = acquire
            .output_tokens
            .unwrap_or_else(|| self.output_average.estimate());
        let output = acquire.max_tokens.map_or(output, |max| output.min(max));
        Costs::new(1, input, output)
    }

    pub(super) fn at_in_flight_cap(&self) -> bool {
        self.limits().max_in_flight.is_some_and(|max| {
            let share = ((f64::from(max) * self.share).round() as u32).max(1);
            self.in_flight >= share
        })
    }

    /// Whether `cost` can be granted now; `gate` is a moment decided outside the budget (the model
    /// class's overload backoff) before which nothing is granted.
    pub fn readiness(&self, cost: &Costs, gate: Option<Instant>, now: Instant) -> Readiness {
        if self.at_in_flight_cap() {
            return Readiness::AfterSettlement;
        }
        let mut at = now;
        for until in [self.paused_until, gate, self.probe_hold()]
            .into_iter()
            .flatten()
        {
            at = at.max(until);
        }
        for (kind, bucket) in self.buckets() {
            at = at.max(later(now, bucket.time_until_cost(cost[kind], now)));
        }
        if at <= now {
            Readiness::Now
        } else {
            Readiness::At(at)
        }
    }

    /// Whether the queue is empty and `cost` could be granted at once.
    pub fn grants_at_once(&self, cost: &Costs, gate: Option<Instant>, now: Instant) -> bool {
        self.queue.is_empty() && self.readiness(cost, gate, now) == Readiness::Now
    }

    pub fn waiting(&self) -> usize {
        self.queue.len()
    }

    /// Queues a waiter; returns where it stands.
    pub fn enqueue(
        &mut self,
        id: WaiterId,
        client: &Arc<str>,
        priority: Priority,
        cost: Costs,
    ) -> Mark {
        let share = self.share_of(&cost);
        self.queue.push(id, client, priority, cost, share)
    }

    /// What `cost` takes of this budget's limits: the largest fraction of any one limit in
    /// force (its dominant share), in billionths; with no limit known, every call alike.
    fn share_of(&self, cost: &Costs) -> Share {
        let mut limited = false;
        let mut share = 0.0f64;
        for (kind, bucket) in self.buckets() {
            limited = true;
            share = share.max(cost[kind] as f64 / bucket.limit().max(1) as f64);
        }
        let share = if limited { share } else { 0.001 };
        ((share * WHOLE as f64).round() as Share).clamp(1, WHOLE.saturating_mul(1_000_000))
    }

    /// A waiter that may be granted out of turn while the head waits for its buckets to refill
    /// (see `queue`), if its client head of the smallest share is within the head's allowance:
    /// with it, what went out of turn while this head waited stays within [`BACKFILL_SHARE`] of
    /// the head's own cost on every limit the head would then no longer fit at once. Whether
    /// it fits now (the buckets, a pause, the in-flight cap) is the caller's to check.
    pub fn backfill_candidate(&self, now: Instant) -> Option<(WaiterId, Costs)> {
        let (head, head_cost) = self.queue.head()?;
        let (id, cost) = self.queue.backfill_candidate()?;
        let used = match self.backfilled {
            Some((for_head, used)) if for_head == head => used,
            _ => Costs::default(),
        };
        let after = used.plus(&cost);
        for (kind, bucket) in self.buckets() {
            let head_still_fits =
                bucket.level_at(now) - cost[kind] as f64 >= head_cost[kind] as f64;
            if !head_still_fits && after[kind] as f64 > head_cost[kind] as f64 * BACKFILL_SHARE {
                return None;
            }
        }
        Some((id, cost))
    }

    /// A call of `client` is granted at once (nobody queued): it counts against its client's
    /// turns all the same.
    pub fn granted_at_once(&mut self, client: &Arc<str>, priority: Priority, cost: &Costs) {
        let share = self.share_of(cost);
        self.queue.served_at_once(client, priority, share);
    }

    /// Takes waiter `id` (a [`Budget::backfill_candidate`]) out of the queue to be granted out
    /// of turn, counting it against the head's allowance.
    pub fn take_out_of_turn(
        &mut self,
        id: WaiterId,
        client: &str,
        priority: Priority,
        cost: &Costs,
    ) {
        if let Some((head, _)) = self.queue.head() {
            let used = match self.backfilled {
                Some((for_head, used)) if for_head == head => used,
                _ => Costs::default(),
            };
            self.backfilled = Some((head, used.plus(cost)));
        }
        self.queue.serve_out_of_turn(id, client, priority);
    }

    /// Takes a waiter out of the queue wherever it stands.
    pub fn dequeue(&mut self, id: WaiterId, client: &str, priority: Priority) {
        self.queue.remove(id, client, priority);
    }

    /// The waiter to serve next, and its cost.
    pub fn head(&self) -> Option<(WaiterId, Costs)> {
        self.queue.head()
    }

    /// Takes the head out of the queue (it is being served).
    pub fn pop_head(&mut self) {
        self.queue.pop_head();
    }

    /// When the buckets and the pause alone let `cost` through (`None`: now). A workspace's
    /// budget asks this of its organization's: its queue and its in-flight cap are its own.
    pub fn capacity_at(&self, cost: &Costs, now: Instant) -> Option<Instant> {
        let mut at = now;
        if let Some(until) = self.paused_until {
            at = at.max(until);
        }
        for (kind, bucket) in self.buckets() {
            at = at.max(later(now, bucket.time_until_cost(cost[kind], now)));
        }
        (at > now).then_some(at)
    }

    /// Pauses every peer until `until`, unless already paused for longer. Returns whether that
    /// is news: the budget was not paused, or the end moved by a second or more (the held
    /// requests of one pause all get 429s moments apart: they extend it, they do not start one).
    pub fn extend_pause(&mut self, until: Instant, reason: &str) -> bool {
        let current = self.paused_until;
        if current.is_some_and(|current| current >= until) {
            return false;
        }
        self.paused_until = Some(until);
        reason.clone_into(&mut self.pause_reason);
        current.is_none_or(|current| until.duration_since(current) >= Duration::from_secs(1))
    }

    /// Sets the pause to exactly `until`, shorter or longer (an administrator's pause).
    pub fn set_pause(&mut self, until: Instant, reason: &str) {
        self.paused_until = Some(until);
        reason.clone_into(&mut self.pause_reason);
    }

    /// Lifts the pause. Returns whether there was one.
    pub fn end_pause(&mut self) -> bool {
        self.paused_until.take().is_some()
    }

    fn buckets(&self) -> impl Iterator<Item = (LimitKind, &Bucket)> {
        self.buckets
            .iter()
            .filter_map(|(kind, bucket)| Some((kind, bucket.as_ref()?)))
    }

    fn buckets_mut(&mut self) -> impl Iterator<Item = (LimitKind, &mut Bucket)> {
        self.buckets
            .iter_mut()
            .filter_map(|(kind, bucket)| Some((kind, bucket.as_mut()?)))
    }

    pub fn limits_snapshot(&self) -> Limits {
        let limits = self.limits();
        Limits {
            rpm: limits.rpm,
            itpm: limits.itpm,
            otpm: limits.otpm,
            max_in_flight: limits.max_in_flight,
        }
    }

    pub fn available(&self, now: Instant) -> Available {
        let level = |kind: LimitKind| {
            self.buckets[kind]
                .as_ref()
                .map(|b| b.level_at(now).floor() as i64)
        };
        Available {
            requests: level(LimitKind::Requests),
            input_tokens: level(LimitKind::InputTokens),
            output_tokens: level(LimitKind::OutputTokens),
        }
    }
}
