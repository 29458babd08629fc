//! One budget: an API key × a model class, with its buckets, pause, in-flight count and queue.

use std::sync::Arc;
use std::time::{Duration, Instant};

use pacer_protocol::message::{Acquire, Available, BudgetId, Limits};
use pacer_protocol::ratelimit::RateLimitHeaders;
use pacer_protocol::{KeyFingerprint, LimitKind};

use super::bucket::Bucket;
use super::cost::{Costs, RunningAverage};
use super::later;
use super::limits::LimitSet;
use super::queue::FairQueue;

/// Which buckets a grant's reservation was taken from, per [`LimitKind::index`].
pub type Charged = [bool; 3];

/// What a grant reserved, and from which buckets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Reservation {
    pub cost: Costs,
    pub charged: Charged,
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
    pub key: KeyFingerprint,
    pub class: Arc<str>,
    /// From the configuration; wins over what is learned.
    configured: LimitSet,
    /// From response headers, per [`LimitKind::index`].
    learned: [Option<u64>; 3],
    /// One per enforced limit, per [`LimitKind::index`].
    buckets: [Option<Bucket>; 3],
    pub in_flight: u32,
    /// Every peer waits until then: a 429's retry-after, or an administrator's pause.
    pub paused_until: Option<Instant>,
    pub queue: FairQueue,
    pub input_average: RunningAverage,
    pub output_average: RunningAverage,
    pub granted: u64,
    pub rate_limited: u64,
    /// Per kind: the bucket was created while calls granted without it (its limit unknown)
    /// were still in flight. Until they have all been answered, the server's `remaining` counts
    /// some of them and not others, so each answer re-estimates the level (see
    /// [`Budget::apply_headers`]).
    pub calibrating: [bool; 3],
    /// While calibrating: the lowest `remaining` seen. Every call the server processed before
    /// the one that reported it is counted in it; every call processed after that one is still
    /// in flight (its answer would have reported less).
    calibration_floor: [f64; 3],
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
    pub fn new(key: KeyFingerprint, class: Arc<str>, configured: LimitSet, now: Instant) -> Self {
        let mut budget = Self {
            key,
            class,
            configured,
            learned: [None; 3],
            buckets: [None, None, None],
            in_flight: 0,
            paused_until: None,
            queue: FairQueue::default(),
            input_average: RunningAverage::default(),
            output_average: RunningAverage::default(),
            granted: 0,
            rate_limited: 0,
            calibrating: [false; 3],
            calibration_floor: [f64::INFINITY; 3],
        };
        budget.sync_buckets(now);
        budget
    }

    pub fn id(&self) -> BudgetId {
        BudgetId {
            key: self.key,
            model_class: self.class.to_string(),
        }
    }

    /// The limits in force: configured, else learned.
    pub fn limits(&self) -> LimitSet {
        let learned = LimitSet {
            rpm: self.learned[0],
            itpm: self.learned[1],
            otpm: self.learned[2],
            max_in_flight: None,
        };
        self.configured.or(learned)
    }

    /// The limits learned from headers, per [`LimitKind::index`].
    pub fn learned_limits(&self) -> [Option<u64>; 3] {
        self.learned
    }

    /// What each bucket holds at `now`, per [`LimitKind::index`].
    pub fn levels(&self, now: Instant) -> [Option<f64>; 3] {
        std::array::from_fn(|i| self.buckets[i].as_ref().map(|b| b.level_at(now)))
    }

    /// Sets a bucket to a level saved `downtime` ago, refilled for that time.
    pub fn restore_level(
        &mut self,
        kind: LimitKind,
        level: f64,
        downtime: std::time::Duration,
        now: Instant,
    ) {
        if let Some(bucket) = &mut self.buckets[kind.index()] {
            bucket.restore(level, downtime, now);
        }
    }

    /// Applies a new configuration; buckets keep their levels (clamped to new capacities).
    pub fn set_configured(&mut self, configured: LimitSet, now: Instant) {
        self.configured = configured;
        self.sync_buckets(now);
    }

    /// Records a limit read from response headers. Returns whether the limit in force changed.
    pub fn learn(&mut self, kind: LimitKind, limit: u64, now: Instant) -> bool {
        if limit == 0 || self.learned[kind.index()] == Some(limit) {
            return false;
        }
        let before = self.limits().get(kind);
        self.learned[kind.index()] = Some(limit);
        self.sync_buckets(now);
        before != self.limits().get(kind)
    }

    /// Creates, resizes or removes buckets to match the limits in force. A new bucket starts full.
    fn sync_buckets(&mut self, now: Instant) {
        let limits = self.limits();
        for kind in LimitKind::ALL {
            let slot = &mut self.buckets[kind.index()];
            match (limits.get(kind), slot.as_mut()) {
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
        Costs([1, input, output])
    }

    /// Whether `cost` can be granted now; `gate` is a moment decided outside the budget (the model
    /// class's overload backoff) before which nothing is granted.
    pub fn readiness(&self, cost: &Costs, gate: Option<Instant>, now: Instant) -> Readiness {
        if self
            .limits()
            .max_in_flight
            .is_some_and(|max| self.in_flight >= max)
        {
            return Readiness::AfterSettlement;
        }
        let mut at = now;
        for until in [self.paused_until, gate].into_iter().flatten() {
            at = at.max(until);
        }
        for kind in LimitKind::ALL {
            if let Some(bucket) = &self.buckets[kind.index()] {
                at = at.max(later(now, bucket.time_until_cost(cost.get(kind), now)));
            }
        }
        if at <= now {
            Readiness::Now
        } else {
            Readiness::At(at)
        }
    }

    /// An estimate of how long a waiter with `cost` and `ahead` queued before it still has to
    /// wait.
    pub fn wait_estimate(
        &self,
        ahead: &Costs,
        cost: &Costs,
        gate: Option<Instant>,
        now: Instant,
    ) -> Duration {
        let mut wait = Duration::ZERO;
        for until in [self.paused_until, gate].into_iter().flatten() {
            wait = wait.max(until.saturating_duration_since(now));
        }
        for kind in LimitKind::ALL {
            if let Some(bucket) = &self.buckets[kind.index()] {
                wait = wait.max(bucket.time_until_after(ahead.get(kind), cost.get(kind), now));
            }
        }
        let capped = self
            .limits()
            .max_in_flight
            .is_some_and(|max| self.in_flight >= max);
        if wait.is_zero() && capped {
            // The wait depends on when calls in flight finish, which nobody knows: suggest a
            // short retry rather than claiming none is needed.
            wait = Duration::from_secs(1);
        }
        wait
    }

    /// Reserves `cost` for a granted call. Returns which buckets the reservation was taken from
    /// (a limit learned later has no reservation to refund).
    pub fn take(&mut self, cost: &Costs, now: Instant) -> Charged {
        let mut charged = [false; 3];
        self.for_each_bucket(|kind, bucket| {
            bucket.take(cost.get(kind), now);
            charged[kind.index()] = true;
        });
        self.in_flight += 1;
        self.granted += 1;
        charged
    }

    /// Frees a call's in-flight slot.
    pub fn finish(&mut self) {
        self.in_flight = self.in_flight.saturating_sub(1);
    }

    /// Settles a reservation against what the call really used: the difference is refunded or
    /// charged (possibly into debt). Also feeds the running averages.
    pub fn settle_usage(
        &mut self,
        reservation: &Reservation,
        used_input: u64,
        used_output: u64,
        now: Instant,
    ) {
        self.input_average.record(used_input);
        self.output_average.record(used_output);
        for (kind, used) in [
            (LimitKind::InputTokens, used_input),
            (LimitKind::OutputTokens, used_output),
        ] {
            self.adjust(kind, reservation, used, now);
        }
    }

    /// Refunds the part of a reservation that was not used, or charges what was used beyond it.
    /// A bucket created after the grant held no reservation: it is charged all that was used.
    pub fn adjust(&mut self, kind: LimitKind, reservation: &Reservation, used: u64, now: Instant) {
        let reserved = if reservation.charged[kind.index()] {
            reservation.cost.get(kind)
        } else {
            0
        };
        if let Some(bucket) = &mut self.buckets[kind.index()] {
            if reserved > used {
                bucket.give(reserved - used, now);
            } else {
                bucket.take(used - reserved, now);
            }
        }
    }

    /// Learns limits from response headers and believes the server's `remaining` counts where
    /// they are lower than the buckets'. Returns the limits whose value in force changed.
    ///
    /// While a kind is being calibrated (its bucket is new, and calls granted before it existed
    /// are still in flight), its level is instead set to the lowest `remaining` seen so far less
    /// `in_flight_elsewhere`, the calls the server may not have counted in it yet. That errs on
    /// the safe side, and rises again as those calls come back. Afterwards the bucket counts
    /// every grant itself and `remaining` only ever lowers it.
    pub fn apply_headers(
        &mut self,
        headers: &RateLimitHeaders,
        in_flight_elsewhere: &Costs,
        now: Instant,
    ) -> Vec<Learned> {
        let mut changed = Vec::new();
        for kind in LimitKind::ALL {
            let window = headers.window(kind);
            let existed = self.buckets[kind.index()].is_some();
            if let Some(limit) = window.limit
                && self.learn(kind, limit, now)
            {
                changed.push(Learned {
                    kind,
                    limit,
                    new_bucket: !existed,
                });
                if !existed {
                    self.calibrating[kind.index()] = true;
                    self.calibration_floor[kind.index()] = f64::INFINITY;
                }
            }
            if let (Some(remaining), Some(bucket)) =
                (window.remaining, &mut self.buckets[kind.index()])
            {
                if self.calibrating[kind.index()] {
                    let floor = &mut self.calibration_floor[kind.index()];
                    *floor = floor.min(remaining as f64);
                    let uncounted = in_flight_elsewhere.get(kind) as f64;
                    bucket.set_level(*floor - uncounted, now);
                } else {
                    bucket.lower_to(remaining as f64, now);
                }
            }
        }
        changed
    }

    /// Empties the bucket of `kind`, or every bucket when the limit hit is unknown.
    pub fn drain(&mut self, kind: Option<LimitKind>, now: Instant) {
        self.for_each_bucket(|k, bucket| {
            if kind.is_none_or(|kind| kind == k) {
                bucket.drain(now);
            }
        });
    }

    /// Pauses every peer until `until`, unless already paused for longer. Returns whether the
    /// pause was extended.
    pub fn extend_pause(&mut self, until: Instant) -> bool {
        if self.paused_until.is_some_and(|current| current >= until) {
            return false;
        }
        self.paused_until = Some(until);
        true
    }

    fn for_each_bucket(&mut self, mut f: impl FnMut(LimitKind, &mut Bucket)) {
        for kind in LimitKind::ALL {
            if let Some(bucket) = &mut self.buckets[kind.index()] {
                f(kind, bucket);
            }
        }
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
            self.buckets[kind.index()]
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
