//! How long a waiter has left, and what holds it up: the budget's pause, something outside it
//! (the model class's overload backoff, a workspace's organization), the first contact, the
//! in-flight cap, or a spent limit.

use std::time::{Duration, Instant};

use pacer_protocol::{LimitKind, Priority};

use super::Budget;
use crate::cost::Costs;
use crate::queue::Mark;

/// What a wait is for, the longest of what holds a waiter up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Holdup {
    /// The budget's own pause (a 429, an administrator).
    Paused,
    /// Something outside the budget: the overload backoff, the organization's budget.
    Gate,
    /// The first call to a budget with no known limit is out; the others wait for its answer.
    FirstContact,
    /// `max_in_flight` calls are in flight.
    InFlightCap,
    /// A limit's bucket (with the waiters ahead) needs time to refill.
    Spent(LimitKind),
}

/// An estimate of a wait.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Wait {
    pub duration: Duration,
    pub holdup: Holdup,
}

impl Budget {
    /// How long a waiter with `cost`, and `ahead` queued before it, still has to wait, and what
    /// for.
    pub fn wait_estimate(
        &self,
        ahead: &Costs,
        cost: &Costs,
        gate: Option<Instant>,
        now: Instant,
    ) -> Wait {
        let until =
            |at: Option<Instant>| at.map_or(Duration::ZERO, |at| at.saturating_duration_since(now));
        let mut terms = vec![
            (until(self.paused_until), Holdup::Paused),
            (until(gate), Holdup::Gate),
            (until(self.probe_hold()), Holdup::FirstContact),
        ];
        for (kind, bucket) in self.buckets() {
            let refill = bucket.time_until_after(ahead[kind], cost[kind], now);
            terms.push((refill, Holdup::Spent(kind)));
        }
        let (duration, holdup) = terms
            .into_iter()
            .max_by_key(|(duration, _)| *duration)
            .expect("there are terms");
        if duration.is_zero() && self.at_in_flight_cap() {
            // The wait depends on when calls in flight finish, which nobody knows: suggest a
            // short retry rather than claiming none is needed.
            return Wait {
                duration: Duration::from_secs(1),
                holdup: Holdup::InFlightCap,
            };
        }
        Wait { duration, holdup }
    }

    /// How long a newcomer at `priority` with `cost` would wait behind the current queue.
    pub fn newcomer_wait(
        &self,
        priority: Priority,
        cost: &Costs,
        gate: Option<Instant>,
        now: Instant,
    ) -> Wait {
        let ahead = self.queue.cost_ahead(priority, self.queue.mark(priority));
        self.wait_estimate(&ahead, cost, gate, now)
    }

    /// How long a queued waiter that joined at `mark` still has to wait.
    pub fn waiter_wait(
        &self,
        priority: Priority,
        mark: Mark,
        cost: &Costs,
        gate: Option<Instant>,
        now: Instant,
    ) -> Wait {
        let ahead = self.queue.cost_ahead(priority, mark);
        self.wait_estimate(&ahead, cost, gate, now)
    }

    /// Waiting acquires per priority: interactive, normal, batch.
    pub fn waiting_by_priority(&self) -> [u32; 3] {
        [Priority::Interactive, Priority::Normal, Priority::Batch]
            .map(|priority| self.queue.len_of(priority) as u32)
    }

    /// When the whole queue would be served if nobody else came: the wait of a batch newcomer
    /// that costs nothing. `None` with nobody waiting.
    pub fn drain_estimate(&self, gate: Option<Instant>, now: Instant) -> Option<Duration> {
        if self.queue.is_empty() {
            return None;
        }
        let nothing = Costs::new(0, 0, 0);
        Some(
            self.newcomer_wait(Priority::Batch, &nothing, gate, now)
                .duration,
        )
    }
}
