//! What `pacer status` shows of a budget, and what holds its waiters up, in words.

use std::time::Instant;

use pacer_protocol::message::{BudgetStatus, PauseCause};

use super::{Budget, Holdup};
use crate::lockouts::Lockout;
use crate::time::TimeBase;

impl Budget {
    /// The budget as `pacer status` shows it: `lockout` is one of its owner's covering its
    /// class, `overload` its class's backoff, if in force.
    pub fn status(
        &self,
        lockout: Option<&Lockout>,
        overload: Option<Instant>,
        clock: &TimeBase,
        now: Instant,
    ) -> BudgetStatus {
        let to_wall = |at: Option<Instant>| at.filter(|&at| at > now).map(|at| clock.to_wall(at));
        let (paused_until, cause, pause_reason) = self.shown_pause(lockout);
        let paused = paused_until.is_some_and(|at| at > now);
        let tally = self.tally();
        BudgetStatus {
            budget: self.id(),
            limits: self.limits_snapshot(),
            available: self.available(now),
            in_flight: self.in_flight(),
            waiting: self.waiting() as u32,
            paused_until: to_wall(paused_until),
            pause_reason: paused.then_some(pause_reason),
            pause_cause: paused.then_some(cause),
            overloaded_until: to_wall(overload),
            waiting_by_priority: self.waiting_by_priority(),
            drain_estimate: self.drain_estimate(overload, now),
            granted: tally.granted,
            rate_limited: tally.rate_limited,
            throttled: tally.throttled,
            overloaded: tally.overloaded,
            refused: tally.refused,
            input_tokens: tally.input_tokens,
            output_tokens: tally.output_tokens,
            waits: tally.waits.clone(),
        }
    }

    /// Until when, and why, the budget lets nothing through: its own pause, or `lockout`,
    /// whichever ends later.
    fn shown_pause(&self, lockout: Option<&Lockout>) -> (Option<Instant>, PauseCause, String) {
        let own = self
            .paused_until()
            .map(|until| (until, self.pause_cause(), self.pause_reason().to_owned()));
        let locked =
            lockout.map(|lockout| (lockout.until, PauseCause::Lockout, lockout.reason.clone()));
        match own
            .into_iter()
            .chain(locked)
            .max_by_key(|(until, _, _)| *until)
        {
            Some((until, cause, reason)) => (Some(until), cause, reason),
            None => (None, PauseCause::RateLimited, String::new()),
        }
    }

    /// What holds a waiter up, in words: `overloaded` when its class backs off after 529s,
    /// `shared` while its buckets live in the shared store (which decides what they allow).
    pub fn holdup_text(&self, holdup: Holdup, overloaded: bool, shared: bool) -> String {
        let store_decides = matches!(holdup, Holdup::Spent(_) | Holdup::InFlightCap);
        if shared && store_decides {
            return "the budget shared through Redis has no room yet (its limits, or its \
                    in-flight cap)"
                .into();
        }
        match holdup {
            Holdup::Paused => format!("the budget is paused: {}", self.pause_reason()),
            Holdup::Gate if overloaded => format!(
                "the {} models are overloaded (529): every key backs off",
                self.class()
            ),
            Holdup::Gate => "the organization's budget this workspace shares is spent".into(),
            Holdup::FirstContact => {
                "the first call to this budget is out; the others wait for its answer".into()
            }
            Holdup::InFlightCap => "max_in_flight calls are in flight".into(),
            Holdup::Spent(kind) => format!(
                "the {} limit ({kind} per minute) is spent for now",
                kind.short_name()
            ),
        }
    }
}
