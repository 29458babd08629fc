//! A budget while its buckets live in the shared store: what is decided here (pauses, the
//! overload backoff, first contact) and what is not (the buckets, the in-flight cap), and the
//! local share it falls back to when the store is away.

use std::time::Instant;

use pacer_protocol::LimitKind;

use super::{Budget, Charged, Readiness, Reservation};
use crate::{Costs, PerKind};

impl Budget {
    /// Whether the head could go as far as this daemon decides: no pause, no backoff (`gate`),
    /// no first contact holding it. The buckets and the in-flight cap are the store's.
    pub fn local_readiness(&self, gate: Option<Instant>, now: Instant) -> Readiness {
        let at = [self.paused_until, gate, self.probe_hold()]
            .into_iter()
            .flatten()
            .max()
            .unwrap_or(now);
        if at <= now {
            Readiness::Now
        } else {
            Readiness::At(at)
        }
    }

    /// A grant the store made: counted here, its reservation held there.
    pub fn take_shared(&mut self, cost: &Costs, now: Instant) -> (Reservation, bool) {
        self.in_flight += 1;
        self.tally.granted += 1;
        (self.reservation_shared(cost), self.advance_probe(now))
    }

    /// A reservation held in the store.
    pub fn reservation_shared(&self, cost: &Costs) -> Reservation {
        Reservation {
            cost: *cost,
            charged: Charged::default(),
            taken_before: PerKind::default(),
            shared: true,
            counted: Charged::default(),
        }
    }

    /// Runs on `share` of the limits (1: all of them). A bucket starts from its share of what
    /// the store last said was left (`last`), else full.
    pub fn set_share(&mut self, share: f64, last: Option<PerKind<Option<f64>>>, now: Instant) {
        self.share = share.clamp(0.0, 1.0);
        self.sync_buckets(now);
        if let Some(last) = last {
            for (kind, bucket) in self.buckets_mut() {
                if let Some(level) = last[kind] {
                    bucket.set_level(level * share, now);
                }
            }
        }
    }

    /// Shows what the store said its buckets hold (for `pacer status`; the store decides).
    pub fn mirror(&mut self, levels: PerKind<Option<f64>>, now: Instant) {
        for (kind, bucket) in self.buckets_mut() {
            if let Some(level) = levels[kind] {
                bucket.set_level(level, now);
            }
        }
    }

    /// Empties the named buckets (another daemon's 429 named them).
    pub fn drain(&mut self, kinds: &[LimitKind], now: Instant) {
        for (kind, bucket) in self.buckets_mut() {
            if kinds.is_empty() || kinds.contains(&kind) {
                bucket.drain(now);
            }
        }
    }
}
