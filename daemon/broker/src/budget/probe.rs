//! First contact: until the API has answered a budget once, one call goes out and the others
//! wait — at most `cold_start_hold` — for its answer. Ten sessions started together after a
//! reset do not stampede a limit nobody has seen yet, and a new token learns its account (and
//! any pause on it) after one request. The same after every pause: one call finds out whether
//! the limit is back before the waiters go, so that a 429 it gets pauses them again instead of
//! arriving after a whole batch was let out.

use std::time::Instant;

use super::Budget;
use crate::later;
use crate::limits::LimitSet;

/// Where a budget that has never heard from the API stands (see [`Budget::readiness`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Probe {
    /// No call has gone out yet.
    Unsent,
    /// One call went out at `since`; the others wait for its answer's headers, a while.
    InFlight { since: Instant },
    /// The API answered (or the wait ran out): calls go as their limits allow.
    Answered,
}

impl Budget {
    /// Whether nothing is known of the limits: none configured, none learned, and no answer
    /// yet.
    pub(super) fn is_cold(&self) -> bool {
        self.probe != Probe::Answered && self.limits() == LimitSet::default()
    }

    /// Whether one call goes first and the others wait for its answer: nothing is known of the
    /// limits yet, or a pause just ended.
    fn probing(&self) -> bool {
        self.is_cold() || self.reprobe
    }

    /// While the first call is out, when the others may go anyway.
    pub(super) fn probe_hold(&self) -> Option<Instant> {
        match self.probe {
            Probe::InFlight { since } if self.probing() => Some(later(since, self.cold_start_hold)),
            _ => None,
        }
    }

    /// A grant at `now` is the first call out (true), or the hold has run out: either way the
    /// probe moves on.
    pub(super) fn advance_probe(&mut self, now: Instant) -> bool {
        if !self.probing() {
            return false;
        }
        match self.probe {
            Probe::Unsent => {
                self.probe = Probe::InFlight { since: now };
                true
            }
            Probe::InFlight { since } if later(since, self.cold_start_hold) <= now => {
                self.probe = Probe::Answered;
                self.reprobe = false;
                false
            }
            _ => false,
        }
    }

    /// The API answered a call of this budget: from now on calls go as their limits allow.
    pub fn probe_answered(&mut self) {
        self.probe = Probe::Answered;
        self.reprobe = false;
    }

    /// After a pause, one call goes out first again and the others wait for its answer (at most
    /// `cold_start_hold`), rather than everyone at once into what may be another 429.
    pub fn probe_again(&mut self) {
        self.probe = Probe::Unsent;
        self.reprobe = true;
    }

    /// The first call settled without a word from the API (it failed, or its caller went
    /// away): the next one goes out instead.
    pub fn probe_unanswered(&mut self) {
        if matches!(self.probe, Probe::InFlight { .. }) {
            self.probe = Probe::Unsent;
        }
    }
}
