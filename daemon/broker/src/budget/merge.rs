//! Two budgets becoming one: a key's budget joining its account's, while traffic flows.

use std::time::Instant;

use pacer_protocol::LimitKind;

use super::{Budget, Probe};

impl Budget {
    /// Takes `other` into this budget, conservatively: never more available than either had.
    ///
    /// - Limits learned by either are kept (the lower where both learned one).
    /// - Each bucket holds the lower of the two levels (a bucket only `other` had comes over
    ///   with its level).
    /// - A pause in force on either side holds (the later end wins).
    /// - Calls in flight on `other` now count here, and settle here.
    /// - `other`'s waiters are not moved by this: the caller queues them here.
    pub fn absorb(&mut self, other: Budget, now: Instant) {
        for kind in LimitKind::ALL {
            let learned = match (self.learned[kind], other.learned[kind]) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            };
            if let Some(limit) = learned {
                self.learn(kind, limit, now);
            }
        }
        for kind in LimitKind::ALL {
            let theirs = other.buckets[kind].as_ref().map(|b| b.level_at(now));
            let ours = self.buckets[kind].as_ref().map(|b| b.level_at(now));
            if let (Some(bucket), Some(theirs)) = (&mut self.buckets[kind], theirs) {
                let level = ours.map_or(theirs, |ours| ours.min(theirs));
                bucket.set_level(level, now);
            }
            self.calibrating[kind] |= other.calibrating[kind];
            self.calibration_floor[kind] =
                self.calibration_floor[kind].min(other.calibration_floor[kind]);
        }
        if let Some(until) = other.paused_until {
            self.extend_pause(until, &other.pause_reason);
        }
        self.in_flight += other.in_flight;
        self.tally.absorb(&other.tally);
        if self.input_average.is_empty() {
            self.input_average = other.input_average;
        }
        if self.output_average.is_empty() {
            self.output_average = other.output_average;
        }
        self.probe = match (self.probe, other.probe) {
            (Probe::Answered, _) | (_, Probe::Answered) => Probe::Answered,
            (Probe::InFlight { since }, _) | (_, Probe::InFlight { since }) => {
                Probe::InFlight { since }
            }
            _ => Probe::Unsent,
        };
    }
}
