//! What happened to a budget since the daemon started, for `pacer status`, `pacer top` and the
//! metrics: grants and how long they waited, 429s and 529s, refusals, tokens used.

use std::time::Duration;

use pacer_protocol::message::{Throttle, Throttles, WaitHistogram};

use super::Budget;

#[derive(Debug, Clone, Default)]
pub struct Tally {
    pub granted: u64,
    /// Every 429, and by kind.
    pub rate_limited: u64,
    pub throttled: Throttles,
    pub overloaded: u64,
    /// Acquires refused or timed out by pacer itself.
    pub refused: u64,
    pub input_tokens: u64,
    pub output_tokens: u64,
    pub waits: WaitHistogram,
}

impl Tally {
    /// Adds another budget's counts (its key joined this account).
    pub fn absorb(&mut self, other: &Tally) {
        self.granted += other.granted;
        self.rate_limited += other.rate_limited;
        self.throttled.absorb(&other.throttled);
        self.overloaded += other.overloaded;
        self.refused += other.refused;
        self.input_tokens += other.input_tokens;
        self.output_tokens += other.output_tokens;
        self.waits.absorb(&other.waits);
    }
}

impl Budget {
    pub fn tally(&self) -> &Tally {
        &self.tally
    }

    /// A grant waited this long in the queue.
    pub fn record_wait(&mut self, waited: Duration) {
        self.tally.waits.record(waited);
    }

    /// An acquire was refused or timed out by pacer itself.
    pub fn record_refusal(&mut self) {
        self.tally.refused += 1;
    }

    /// A 429 of this kind was answered.
    pub fn record_throttle(&mut self, kind: Throttle) {
        self.tally.rate_limited += 1;
        self.tally.throttled.count(kind);
    }

    /// A 529 was answered.
    pub fn record_overload(&mut self) {
        self.tally.overloaded += 1;
    }
}
