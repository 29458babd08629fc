//! What response headers teach a budget: limits learned, and the server's `remaining` believed
//! where it is lower than the buckets' — with care while a new bucket calibrates.

use std::time::Instant;

use pacer_api::ratelimit::RateLimitHeaders;
use pacer_protocol::LimitKind;

use super::{Budget, Learned};
use crate::{Costs, PerKind};

impl Budget {
    /// Records that the limit is at least `limit`: an organization learns from its workspaces
    /// that its own limit is no lower than theirs. Returns whether the limit in force changed.
    pub fn learn_at_least(&mut self, kind: LimitKind, limit: u64, now: Instant) -> bool {
        match self.learned[kind] {
            Some(known) if known >= limit => false,
            known => {
                if known.is_none() {
                    self.inferred[kind] = true;
                }
                self.learn(kind, limit, now)
            }
        }
    }

    /// The limits learned from headers.
    pub fn learned(&self) -> crate::PerKind<Option<u64>> {
        self.learned
    }

    /// Records a limit read from response headers. Returns whether the limit in force changed.
    pub fn learn(&mut self, kind: LimitKind, limit: u64, now: Instant) -> bool {
        if limit == 0 || self.learned[kind] == Some(limit) {
            return false;
        }
        let before = self.limits().get(kind);
        self.learned[kind] = Some(limit);
        self.sync_buckets(now);
        before != self.limits().get(kind)
    }

    /// Learns every limit in `limits` (what the shared store knows).
    pub fn learn_all(&mut self, limits: &crate::LimitSet, now: Instant) {
        for kind in LimitKind::ALL {
            if let Some(limit) = limits.get(kind) {
                self.learn(kind, limit, now);
            }
        }
    }

    /// Whether headers would change what this budget knows of `kind`'s limit, or a bucket of
    /// that kind is still calibrating: either way the caller must tell
    /// [`Budget::apply_headers`] what else is in flight.
    pub fn needs_in_flight_for(&self, headers: &RateLimitHeaders) -> bool {
        LimitKind::ALL.into_iter().any(|kind| {
            self.calibrating[kind]
                || (headers.window(kind).limit.is_some()
                    && (self.limits().get(kind).is_none() || self.inferred[kind]))
        })
    }

    /// Learns limits from response headers and believes the server's `remaining` counts where
    /// they are lower than the buckets'. Returns the limits whose value in force changed.
    ///
    /// While a kind is calibrating (its bucket is new, and calls granted before it existed
    /// are still in flight), its level is instead set to the lowest `remaining` seen so far less
    /// `in_flight_elsewhere`, the calls the server may not have counted in it yet. That errs on
    /// the safe side, and rises again as those calls come back. Afterwards the bucket counts
    /// every grant itself and `remaining` only ever lowers it.
    pub fn apply_headers(
        &mut self,
        headers: &RateLimitHeaders,
        in_flight_elsewhere: &Costs,
        now: Instant,
    ) -> (Vec<Learned>, PerKind<bool>) {
        let mut changed = Vec::new();
        let mut lowered = PerKind::<bool>::default();
        for kind in LimitKind::ALL {
            let window = headers.window(kind);
            // A bucket sized by an inferred limit counts as new when the real limit arrives.
            let existed = self.buckets[kind].is_some() && !self.inferred[kind];
            if window.limit.is_some() {
                self.inferred[kind] = false;
            }
            if let Some(limit) = window.limit
                && (self.learn(kind, limit, now) || !existed)
            {
                changed.push(Learned {
                    kind,
                    limit,
                    new_bucket: !existed,
                });
                if !existed {
                    self.calibrating[kind] = true;
                    self.calibration_floor[kind] = f64::INFINITY;
                }
            }
            if let (Some(remaining), Some(bucket)) = (window.remaining, &mut self.buckets[kind]) {
                if self.calibrating[kind] {
                    let floor = &mut self.calibration_floor[kind];
                    *floor = floor.min(remaining as f64);
                    let uncounted = in_flight_elsewhere[kind] as f64;
                    bucket.set_level(*floor - uncounted, now);
                    lowered[kind] = true;
                } else {
                    let before = bucket.level_at(now);
                    bucket.lower_to(remaining as f64, now);
                    lowered[kind] = bucket.level_at(now) < before;
                }
            }
        }
        (changed, lowered)
    }

    /// Calibration of a kind ends once no call granted without its bucket is left in flight.
    pub fn end_calibration(&mut self, unmetered_left: PerKind<bool>) {
        for (kind, calibrating) in self.calibrating.iter_mut() {
            if !unmetered_left[kind] {
                *calibrating = false;
            }
        }
    }
}
