//! Reservations: what a grant takes from the buckets, and how its settlement refunds or charges
//! the difference.

use std::time::Instant;

use pacer_protocol::LimitKind;

use super::{Budget, Charged, Reservation};
use crate::{Costs, PerKind};

/// What settling a call's reservation does with it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Charge {
    /// The call used these tokens: the difference from the reservation is refunded or charged.
    Used { input: u64, output: u64 },
    /// The API processed nothing (the caller's mistake, a bare 429): the tokens come back, the
    /// request stays counted.
    Tokens,
    /// The call produced no output (it failed, or was turned away).
    Output,
    /// The call was never made: everything comes back.
    All,
}

impl Budget {
    /// Settles a reservation of this budget's as `charge` says (with `child`: a workspace's
    /// call, in this organization's buckets only, no averages or counts).
    pub fn settle(&mut self, reservation: &Reservation, charge: Charge, child: bool, now: Instant) {
        match charge {
            Charge::Used { input, output } if child => {
                self.settle_for_child(reservation, input, output, now)
            }
            Charge::Used { input, output } => self.settle_usage(reservation, input, output, now),
            Charge::Tokens => self.refund_tokens(reservation, now),
            Charge::Output => self.refund_output(reservation, now),
            Charge::All => self.refund(reservation, now),
        }
    }

    /// Reserves `cost` for a granted call. Returns the reservation (which buckets it was taken
    /// from: a limit learned later has no reservation to refund), and whether the call is the
    /// budget's first contact with the API.
    pub fn take(&mut self, cost: &Costs, now: Instant) -> (Reservation, bool) {
        let reservation = self.take_for_child(cost, now);
        self.in_flight += 1;
        self.tally.granted += 1;
        (reservation, self.advance_probe(now))
    }

    /// Reserves `cost` in the buckets only (for a call of a workspace this organization's
    /// budget covers, and for every grant of its own).
    pub fn take_for_child(&mut self, cost: &Costs, now: Instant) -> Reservation {
        let mut reservation = Reservation {
            cost: *cost,
            charged: Charged::default(),
            taken_before: PerKind::default(),
            shared: false,
            counted: Charged::default(),
        };
        for (kind, bucket) in self.buckets_mut() {
            reservation.taken_before[kind] = bucket.taken();
            bucket.take(cost[kind], now);
            reservation.charged[kind] = true;
        }
        reservation
    }

    /// Settles a workspace's call in this organization's buckets (no averages, no counts).
    fn settle_for_child(
        &mut self,
        reservation: &Reservation,
        used_input: u64,
        used_output: u64,
        now: Instant,
    ) {
        self.adjust(LimitKind::InputTokens, reservation, used_input, now);
        self.adjust(LimitKind::OutputTokens, reservation, used_output, now);
    }

    /// What each bucket has taken in all (a reservation restored from the state file starts
    /// from here).
    pub fn taken_totals(&self) -> PerKind<f64> {
        let mut totals = PerKind::default();
        for (kind, bucket) in self.buckets() {
            totals[kind] = bucket.taken();
        }
        totals
    }

    /// Takes an in-flight slot for a call granted before a restart (its reservation is already in
    /// the levels).
    pub fn hold_in_flight(&mut self) {
        self.in_flight += 1;
    }

    /// Frees a call's in-flight slot.
    pub fn finish(&mut self) {
        self.in_flight = self.in_flight.saturating_sub(1);
    }

    /// Settles a reservation against what the call really used: the difference is refunded or
    /// charged (possibly into debt). Also feeds the running averages.
    fn settle_usage(
        &mut self,
        reservation: &Reservation,
        used_input: u64,
        used_output: u64,
        now: Instant,
    ) {
        self.input_average.record(used_input);
        self.output_average.record(used_output);
        self.tally.input_tokens += used_input;
        self.tally.output_tokens += used_output;
        self.succeeded += 1;
        self.blind_429s = 0;
        self.adjust(LimitKind::InputTokens, reservation, used_input, now);
        self.adjust(LimitKind::OutputTokens, reservation, used_output, now);
    }

    /// Refunds everything a reservation took (the call was never made).
    fn refund(&mut self, reservation: &Reservation, now: Instant) {
        for kind in LimitKind::ALL {
            self.adjust(kind, reservation, 0, now);
        }
    }

    /// Refunds the token reservations of a call the API did not process (the caller's mistake);
    /// the request stays counted.
    fn refund_tokens(&mut self, reservation: &Reservation, now: Instant) {
        self.adjust(LimitKind::InputTokens, reservation, 0, now);
        self.adjust(LimitKind::OutputTokens, reservation, 0, now);
    }

    /// Refunds the output reservation of a call that produced no output (it failed).
    pub fn refund_output(&mut self, reservation: &Reservation, now: Instant) {
        self.adjust(LimitKind::OutputTokens, reservation, 0, now);
    }

    /// Refunds the part of a reservation that was not used, or charges what was used beyond it.
    /// A bucket created after the grant held no reservation: it is charged all that was used.
    fn adjust(&mut self, kind: LimitKind, reservation: &Reservation, used: u64, now: Instant) {
        if reservation.shared || reservation.counted[kind] {
            // Held in the shared store, and settled there; or already in the server's count,
            // which the bucket was lowered to.
            return;
        }
        let reserved = if reservation.charged[kind] {
            reservation.cost[kind]
        } else {
            0
        };
        if let Some(bucket) = &mut self.buckets[kind] {
            if reserved > used && kind == LimitKind::Requests {
                // A call that never went out: no more back than had it never been granted.
                bucket.give_back(reserved - used, reservation.taken_before[kind], now);
            } else if reserved > used {
                // Tokens reserved by an estimate and not used: the estimate is corrected.
                bucket.give(reserved - used, now);
            } else {
                bucket.charge(used - reserved, now);
            }
        }
    }

    /// A 429 for a limit was answered: refund the output reservation (a rejected call produces
    /// none) and drain the bucket the error names (every bucket if it names none), so that
    /// grants resume at the refill pace.
    pub fn rate_limited(
        &mut self,
        reservation: &Reservation,
        named: Option<LimitKind>,
        now: Instant,
    ) {
        self.refund_output(reservation, now);
        for (kind, bucket) in self.buckets_mut() {
            if named.is_none_or(|named| named == kind) {
                bucket.drain(now);
            }
        }
    }
}
