//! What a call's outcome changes: reports, releases and the response headers that teach the
//! broker the limits.

use std::time::{Duration, Instant};

use pacer_protocol::message::{Event, LeaseId};
use pacer_protocol::ratelimit::{RateLimitHeaders, limit_named_in};

use super::budget::Learned;
use super::budgets::BudgetIdx;
use super::{Broker, BrokerError, Costs, Output, PerKind, Settlement, later};

/// How long a 429 without `retry-after` pauses its budget.
const DEFAULT_RATE_LIMIT_PAUSE: Duration = Duration::from_secs(1);

impl Broker {
    /// Settles a lease with the outcome of its call.
    pub fn report(
        &mut self,
        now: Instant,
        lease: LeaseId,
        settlement: Settlement,
        headers: &RateLimitHeaders,
    ) -> Result<Vec<Output>, BrokerError> {
        let held = self.leases.take(lease)?;
        let b = held.budget;
        let reserved = held.reservation;
        let rate_limited = matches!(settlement, Settlement::RateLimited { .. });
        match settlement {
            Settlement::Success { usage } => {
                let budget = &mut self.budgets[b];
                budget.settle_usage(
                    &reserved,
                    usage.counted_input_tokens(),
                    usage.output_tokens,
                    now,
                );
                self.overloads.succeeded(budget.class());
            }
            Settlement::RateLimited {
                retry_after,
                message,
            } => {
                let retry_after = retry_after
                    .or(headers.retry_after)
                    .unwrap_or(DEFAULT_RATE_LIMIT_PAUSE);
                // Learn first: the 429's own headers may create the bucket it names.
                self.learn(b, headers, None, now);
                let named = message.as_deref().and_then(limit_named_in);
                self.budgets[b].rate_limited(&reserved, named, now);
                let reason = message.unwrap_or_else(|| "rate limited (429)".into());
                self.extend_pause(b, later(now, retry_after), reason);
            }
            Settlement::Overloaded { retry_after } => {
                self.budgets[b].refund_output(&reserved, now);
                self.overloaded(b, retry_after.or(headers.retry_after), now);
            }
            Settlement::Failed => self.budgets[b].refund_output(&reserved, now),
            Settlement::Unknown => {}
        }
        if !rate_limited {
            // After settling: the server's `remaining` already counts this call.
            self.learn(b, headers, None, now);
        }
        self.budgets[b].finish();
        self.serve(b, now);
        Ok(self.take_output())
    }

    /// Gives a lease back unused: everything it reserved is refunded.
    pub fn release(&mut self, now: Instant, lease: LeaseId) -> Result<Vec<Output>, BrokerError> {
        let held = self.leases.take(lease)?;
        let budget = &mut self.budgets[held.budget];
        budget.refund(&held.reservation, now);
        budget.finish();
        self.serve(held.budget, now);
        Ok(self.take_output())
    }

    /// Feeds the rate-limit headers of a response as soon as they arrive, before its body (and
    /// the settlement) has: the next acquire already knows the limits.
    pub fn observe(
        &mut self,
        now: Instant,
        lease: LeaseId,
        headers: &RateLimitHeaders,
    ) -> Vec<Output> {
        if let Some(held) = self.leases.get(lease) {
            let b = held.budget;
            self.learn(b, headers, Some(lease), now);
            self.serve(b, now);
        }
        self.take_output()
    }

    /// Applies the headers of an answer to budget `b`; `answering` is the lease of the call
    /// answered, if it is still held.
    fn learn(
        &mut self,
        b: BudgetIdx,
        headers: &RateLimitHeaders,
        answering: Option<LeaseId>,
        now: Instant,
    ) {
        // Only while a bucket calibrates (rare and brief): what else is in flight.
        let mut in_flight_elsewhere = Costs::default();
        let mut unmetered_left = PerKind::<bool>::default();
        if self.budgets[b].needs_in_flight_for(headers) {
            for (id, lease) in self.leases.of_budget(b) {
                if Some(id) != answering {
                    in_flight_elsewhere = in_flight_elsewhere.plus(&lease.reservation.cost);
                    for (kind, left) in unmetered_left.iter_mut() {
                        *left |= lease.unmetered[kind];
                    }
                }
            }
        }
        let learned = self.budgets[b].apply_headers(headers, &in_flight_elsewhere, now);
        for Learned {
            kind,
            limit,
            new_bucket,
        } in learned
        {
            if new_bucket {
                // The new bucket's level accounts for every call in flight (counted by the
                // server, or subtracted): they are now charged to it, and their settlement
                // refunds or charges it like any other.
                for lease in self.leases.of_budget_mut(b) {
                    lease.reservation.charged[kind] = true;
                }
            }
            self.out.push(Output::Event(Event::LimitLearned {
                budget: self.budgets[b].id(),
                kind,
                limit,
            }));
        }
        self.budgets[b].end_calibration(unmetered_left);
    }

    pub(super) fn extend_pause(&mut self, b: BudgetIdx, until: Instant, reason: String) {
        if self.budgets[b].extend_pause(until) {
            self.out.push(Output::Event(Event::PauseStarted {
                budget: self.budgets[b].id(),
                until: self.time_base.to_wall(until),
                reason,
            }));
        }
    }

    fn overloaded(&mut self, b: BudgetIdx, retry_after: Option<Duration>, now: Instant) {
        let class = self.budgets[b].class().clone();
        if let Some(until) = self.overloads.record(&class, retry_after, now) {
            self.out.push(Output::Event(Event::Overloaded {
                model_class: class.to_string(),
                until: self.time_base.to_wall(until),
            }));
        }
    }
}
