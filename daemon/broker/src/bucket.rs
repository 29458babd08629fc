//! A continuously refilled token bucket: the shape of every Anthropic per-minute limit.

use std::time::{Duration, Instant};

/// Tolerance for floating-point refill arithmetic: a bucket that is short by less than this is
/// treated as holding the amount, so a timer set for the exact refill moment always succeeds.
const EPSILON: f64 = 1e-6;

/// One limit's bucket. Holds at most `capacity` (the per-minute limit) and refills at
/// `capacity / 60` per second. The level may go negative: a debt from usage that turned out larger
/// than reserved, or from a cost larger than the capacity, which later grants wait out.
#[derive(Debug, Clone, PartialEq)]
pub struct Bucket {
    capacity: f64,
    level: f64,
    /// Everything ever taken (refunds not subtracted): what was taken between two moments
    /// bounds a refund (see [`Bucket::give_back`]).
    taken: f64,
    /// The moment `level` was last brought up to date; refill is computed lazily from here.
    updated: Instant,
}

impl Bucket {
    /// A full bucket for a per-minute `limit`.
    pub fn full(limit: u64, now: Instant) -> Self {
        let capacity = limit as f64;
        Self {
            capacity,
            level: capacity,
            taken: 0.0,
            updated: now,
        }
    }

    /// The per-minute limit this bucket enforces.
    pub fn limit(&self) -> u64 {
        self.capacity as u64
    }

    fn rate_per_sec(&self) -> f64 {
        self.capacity / 60.0
    }

    /// What the bucket holds at `now`, without changing it.
    pub fn level_at(&self, now: Instant) -> f64 {
        let elapsed = now.saturating_duration_since(self.updated).as_secs_f64();
        (self.level + elapsed * self.rate_per_sec()).min(self.capacity)
    }

    fn refill(&mut self, now: Instant) {
        if now > self.updated {
            self.level = self.level_at(now);
            self.updated = now;
        }
    }

    /// The amount that must be present before `cost` is granted: the cost itself, or the whole
    /// capacity when the cost is larger (so an oversized request waits for a full bucket instead of
    /// waiting forever).
    fn threshold(&self, cost: u64) -> f64 {
        (cost as f64).min(self.capacity)
    }

    /// How long until the bucket holds `amount` (zero if it already does).
    pub fn time_until(&self, amount: f64, now: Instant) -> Duration {
        let short = amount - self.level_at(now);
        if short <= EPSILON {
            return Duration::ZERO;
        }
        // Round up to the next microsecond so that a timer set for this moment finds it full.
        let micros = (short / self.rate_per_sec() * 1e6).ceil();
        Duration::from_micros(micros.min(u64::MAX as f64) as u64)
    }

    /// How long until `cost` can be granted.
    pub fn time_until_cost(&self, cost: u64, now: Instant) -> Duration {
        self.time_until(self.threshold(cost), now)
    }

    /// How long until the bucket has covered `queued` tokens for waiters ahead and then `cost` for
    /// one more: an estimate of a queued caller's wait.
    pub fn time_until_after(&self, queued: u64, cost: u64, now: Instant) -> Duration {
        self.time_until(queued as f64 + self.threshold(cost), now)
    }

    /// Takes `cost`, which may leave the bucket in debt (at most a whole bucket below zero: a
    /// cost larger than the limit waits for a full bucket, and then for one more minute).
    pub fn take(&mut self, cost: u64, now: Instant) {
        self.refill(now);
        let floor = (-self.capacity).min(self.level);
        self.level = (self.level - cost as f64).max(floor);
        self.taken += cost as f64;
    }

    /// Charges what a call used beyond its reservation, into debt if need be — but never
    /// deeper than a whole bucket below zero (a minute of refill): one call's report, however
    /// absurd, cannot hold a budget up for longer than that.
    pub fn charge(&mut self, amount: u64, now: Instant) {
        self.refill(now);
        let floor = (-self.capacity).min(self.level);
        self.level = (self.level - amount as f64).max(floor);
    }

    /// Everything ever taken, for [`Bucket::give_back`].
    pub fn taken(&self) -> f64 {
        self.taken
    }

    /// Returns `amount` taken when [`Bucket::taken`] was `taken_before` (a call that never went
    /// out), no more than the bucket would hold had it never been taken. Had it not been taken,
    /// the bucket would have filled up sooner and lost refill to its capacity: a plain refund
    /// would count that refill twice. The bucket without the reservation holds at most its
    /// capacity less what was taken since, so that is the most the refund brings it to.
    pub fn give_back(&mut self, amount: u64, taken_before: f64, now: Instant) {
        self.refill(now);
        let taken_since = (self.taken - taken_before - amount as f64).max(0.0);
        let ceiling = (self.capacity - taken_since).min(self.capacity);
        let refunded = (self.level + amount as f64).min(ceiling);
        self.level = self.level.max(refunded);
    }

    /// Returns `amount` (a refund), never above capacity.
    pub fn give(&mut self, amount: u64, now: Instant) {
        self.refill(now);
        self.level = (self.level + amount as f64).min(self.capacity);
    }

    /// The server says only `remaining` is left: believe it when it is less than we think.
    pub fn lower_to(&mut self, remaining: f64, now: Instant) {
        self.refill(now);
        if remaining.is_finite() {
            self.level = self.level.min(remaining);
        }
    }

    /// Sets the level (within capacity), up or down: a fresh estimate of what the server has.
    pub fn set_level(&mut self, level: f64, now: Instant) {
        self.refill(now);
        if level.is_finite() {
            self.level = level.min(self.capacity);
        }
    }

    /// Empties the bucket (keeping any debt), so that grants resume at the refill pace.
    pub fn drain(&mut self, now: Instant) {
        self.refill(now);
        self.level = self.level.min(0.0);
    }

    /// Sets the level to one saved `ago`, refilled for the time since. A level outside
    /// [-capacity, capacity] (a damaged file) is held to it.
    pub fn restore(&mut self, level: f64, ago: Duration, now: Instant) {
        if !level.is_finite() {
            return;
        }
        let level = level.clamp(-self.capacity, self.capacity);
        let refilled = level + ago.as_secs_f64() * self.rate_per_sec();
        self.level = refilled.min(self.capacity);
        self.updated = now;
    }

    /// Changes the limit, keeping the level (clamped to the new capacity).
    pub fn set_limit(&mut self, limit: u64, now: Instant) {
        self.refill(now);
        self.capacity = limit as f64;
        self.level = self.level.min(self.capacity);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secs(s: f64) -> Duration {
        Duration::from_secs_f64(s)
    }

    #[test]
    fn starts_full_and_refills_at_limit_per_minute() {
        let t0 = Instant::now();
        let mut b = Bucket::full(60, t0);
        assert_eq!(b.level_at(t0), 60.0);
        b.take(60, t0);
        assert_eq!(b.level_at(t0), 0.0);
        assert!((b.level_at(t0 + secs(1.0)) - 1.0).abs() < 1e-9);
        assert!((b.level_at(t0 + secs(30.0)) - 30.0).abs() < 1e-9);
        // Never above capacity.
        assert_eq!(b.level_at(t0 + secs(3600.0)), 60.0);
    }

    #[test]
    fn time_until_a_cost_is_covered() {
        let t0 = Instant::now();
        let mut b = Bucket::full(10, t0); // one token every 6 s
        b.take(10, t0);
        assert_eq!(b.time_until_cost(1, t0), secs(6.0));
        assert_eq!(b.time_until_cost(1, t0 + secs(6.0)), Duration::ZERO);
        // Waiting for 3 more tokens after 2 queued ahead: 5 tokens, 30 s.
        assert_eq!(b.time_until_after(2, 3, t0), secs(30.0));
    }

    #[test]
    fn a_timer_set_for_the_refill_moment_finds_the_bucket_ready() {
        let t0 = Instant::now();
        let mut b = Bucket::full(7, t0); // awkward rate: 7/60 per second
        b.take(7, t0);
        let wait = b.time_until_cost(3, t0);
        assert_eq!(b.time_until_cost(3, t0 + wait), Duration::ZERO);
    }

    #[test]
    fn a_cost_above_capacity_waits_for_a_full_bucket_then_leaves_debt() {
        let t0 = Instant::now();
        let mut b = Bucket::full(100, t0);
        b.take(50, t0);
        // 250 > capacity 100: needs the bucket full, i.e. 50 more tokens = 30 s.
        assert_eq!(b.time_until_cost(250, t0), secs(30.0));
        let t1 = t0 + secs(30.0);
        assert_eq!(b.time_until_cost(250, t1), Duration::ZERO);
        b.take(250, t1);
        // Into debt, but no deeper than a whole bucket: paid off by a minute of refill.
        assert!((b.level_at(t1) + 100.0).abs() < 1e-9);
        assert_eq!(b.time_until(0.0, t1), secs(60.0));
    }

    #[test]
    fn no_cost_or_charge_leaves_more_than_a_bucket_of_debt() {
        let t0 = Instant::now();
        let mut b = Bucket::full(100, t0);
        b.charge(1_000_000_000_000_000_000, t0);
        assert_eq!(b.level_at(t0), -100.0);
        b.take(u64::MAX, t0);
        assert_eq!(b.level_at(t0), -100.0);
        // Back at zero after a minute of refill, full after two.
        assert_eq!(b.time_until(0.0, t0), secs(60.0));
    }

    #[test]
    fn refunds_never_exceed_capacity() {
        let t0 = Instant::now();
        let mut b = Bucket::full(100, t0);
        b.take(10, t0);
        b.give(50, t0);
        assert_eq!(b.level_at(t0), 100.0);
    }

    #[test]
    fn lower_to_only_lowers() {
        let t0 = Instant::now();
        let mut b = Bucket::full(100, t0);
        b.lower_to(40.0, t0);
        assert_eq!(b.level_at(t0), 40.0);
        b.lower_to(90.0, t0);
        assert_eq!(b.level_at(t0), 40.0);
    }

    #[test]
    fn drain_keeps_debt() {
        let t0 = Instant::now();
        let mut b = Bucket::full(100, t0);
        b.drain(t0);
        assert_eq!(b.level_at(t0), 0.0);
        b.take(30, t0);
        b.drain(t0);
        assert_eq!(b.level_at(t0), -30.0);
    }

    #[test]
    fn a_new_limit_keeps_the_level_within_capacity() {
        let t0 = Instant::now();
        let mut b = Bucket::full(100, t0);
        b.set_limit(40, t0);
        assert_eq!(b.level_at(t0), 40.0);
        assert_eq!(b.limit(), 40);
        b.set_limit(400, t0);
        assert_eq!(b.level_at(t0), 40.0);
        // Refill now runs at the new rate: 400/60 per second.
        assert!((b.level_at(t0 + secs(6.0)) - 80.0).abs() < 1e-9);
    }
}
