//! What happens around the calls themselves: an administrator's pause, lockouts, connections
//! closing, time passing, the daemon stopping.

use std::time::Instant;

use pacer_protocol::KeyFingerprint;
use pacer_protocol::message::{Event, Response, SettledAs, TimedOut};

use super::budget::Readiness;
use super::queue::WaiterId;
use super::{Broker, Output, stopping};

impl Broker {
    /// An administrator's pause: sets the budget's pause to exactly `until`. A time not after
    /// `now` lifts it — and with it any lockout of the budget and its class's overload backoff.
    pub fn pause(
        &mut self,
        now: Instant,
        key: KeyFingerprint,
        model: &str,
        until: Instant,
    ) -> Vec<Output> {
        let Some(b) = self.budget_for(key, model, now) else {
            return Vec::new();
        };
        if until <= now {
            self.lift(b, now);
            let budget = self.budgets[b].id();
            self.publish(super::ClusterEvent::Lift { budget });
        } else {
            let reason = super::budget::ADMIN_PAUSE_REASON;
            self.budgets[b].set_pause(until, reason);
            self.out.push(Output::Event(Event::PauseStarted {
                budget: self.budgets[b].id(),
                until: self.time_base.to_wall(until),
                reason: reason.into(),
            }));
            self.publish_pause(b, until, reason, None, now);
        }
        self.serve(b, now);
        self.take_output()
    }

    /// Lifts budget `b`'s pause, its owner's lockouts of its class, and its class's backoff.
    pub(super) fn lift(&mut self, b: super::BudgetIdx, _now: Instant) {
        self.end_pause(b);
        let (owner, class) = (
            self.budgets[b].owner().clone(),
            self.budgets[b].class().clone(),
        );
        for scope in self.lockouts.lift(&owner, &class) {
            self.lockout_ended(&owner, scope);
        }
        self.overloads.lift(&class);
    }

    fn end_pause(&mut self, b: super::BudgetIdx) {
        if self.budgets[b].end_pause() {
            self.budgets[b].probe_again();
            self.out.push(Output::Event(Event::PauseEnded {
                budget: self.budgets[b].id(),
            }));
        }
    }

    /// A connection closed: its waiters leave the queues, and the leases it held settle as
    /// "unknown outcome" (the reservation stays spent; the in-flight slot is freed). Detached
    /// leases are not affected.
    pub fn disconnect(&mut self, now: Instant, conn: super::ConnId) -> Vec<Output> {
        let mut touched = Vec::new();
        for id in self.waiters.ids_of_conn(conn) {
            if let Some(waiter) = self.drop_waiter(id) {
                touched.push(waiter.budget);
            }
        }
        for mut lease in self.leases.take_conn(conn) {
            self.end_window_call(lease.window_call.take(), now);
            self.note_settled(&lease, SettledAs::Unknown, (0, 0), now);
            self.settle_shared(lease.share(), Some(lease.reservation.cost));
            self.budgets[lease.budget].finish();
            touched.push(lease.budget);
        }
        touched.sort_unstable();
        touched.dedup();
        for b in touched {
            self.serve(b, now);
        }
        self.take_output()
    }

    /// Applies everything that time alone changes: pauses and backoffs that ended, detached leases
    /// that expired, waiters that can now be granted, deadlines that passed.
    pub fn tick(&mut self, now: Instant) -> Vec<Output> {
        for b in self.budgets.indices() {
            if self.budgets[b]
                .paused_until()
                .is_some_and(|until| until <= now)
            {
                self.end_pause(b);
            }
        }
        self.overloads.expire(now);
        for (owner, scope) in self.lockouts.expire(now) {
            self.lockout_ended(&owner, scope);
        }
        while let Some(mut lease) = self.leases.take_expired(now) {
            self.end_window_call(lease.window_call.take(), now);
            self.note_settled(&lease, SettledAs::Unknown, (0, 0), now);
            self.settle_shared(lease.share(), Some(lease.reservation.cost));
            self.budgets[lease.budget].finish();
        }
        self.prune_clients(now);
        self.admit_starters(now);
        self.serve_all(now);
        while let Some(id) = self.waiters.first_expired(now) {
            self.time_out(id, now);
        }
        self.take_output()
    }

    fn time_out(&mut self, id: WaiterId, now: Instant) {
        let Some(w) = self.waiters.get(id) else {
            return;
        };
        let b = w.budget;
        let priority = w.priority;
        let starting = self.starts.is_waiting(id);
        let holdup = match starting {
            true => Some(self.start_holdup(self.budgets[b].owner(), now)),
            false => self.window_holdup(b, priority, now),
        };
        let (retry_after, reason) = match holdup {
            Some(held) => held,
            None => {
                let gate = self.gate(b, &w.cost, now);
                let wait = self.budgets[b].waiter_wait(w.priority, w.mark, &w.cost, gate, now);
                (wait.duration, self.holdup_text(b, wait.holdup))
            }
        };
        let client = w.client.clone();
        if !starting {
            self.count_window_refusal(b, priority, now);
        }
        self.note_refusal(Some(b), None, &client, &reason, now);
        let timed_out = TimedOut {
            retry_after,
            reason,
        };
        self.answer_waiters(vec![id], |_| Response::TimedOut(timed_out.clone()));
        // The head may have left: whoever is next may be servable.
        self.serve(b, now);
    }

    /// The daemon is stopping: every waiting acquire, and every acquire from now on, is answered
    /// with a "stopping" error. Reports and releases are still taken.
    pub fn stop(&mut self) -> Vec<Output> {
        self.stopping = true;
        let ids = self.waiters.ids_where(|_| true);
        self.answer_waiters(ids, |_| stopping());
        self.take_output()
    }

    /// When time alone will next change something, if ever.
    pub fn next_wakeup(&self, now: Instant) -> Option<Instant> {
        let shared = self.shares.is_shared();
        let budgets = self.budgets.needing_attention().flat_map(|b| {
            let budget = &self.budgets[b];
            let head = budget.head().and_then(|(_, cost)| {
                let readiness = if shared {
                    // The store decides; ask it again when it said to (or when the pause,
                    // backoff or first contact holding the head ends).
                    if self.shares.is_claiming(b) {
                        return None;
                    }
                    let local = budget.local_readiness(self.overload_gate(b), now);
                    match (local, self.shares.retry_at(b)) {
                        (Readiness::At(at), retry) => {
                            Readiness::At(retry.map_or(at, |r| r.max(at)))
                        }
                        (_, Some(retry)) => Readiness::At(retry),
                        (other, None) => other,
                    }
                } else {
                    budget.readiness(&cost, self.gate(b, &cost, now), now)
                };
                match readiness {
                    // Ready, but for its account's windows: wake when their hold ends (the
                    // pace lets it in, the window resets), if that is known.
                    Readiness::Now => match self.head_window_hold(b, now) {
                        Some(hold) => hold.until,
                        None => Some(now),
                    },
                    Readiness::At(at) => Some(at),
                    Readiness::AfterSettlement => None,
                }
            });
            // A call that may go out of turn while the head waits, when it will fit.
            let out_of_turn = (!shared)
                .then(|| budget.backfill_candidate(now))
                .flatten()
                .and_then(|(_, cost)| {
                    match budget.readiness(&cost, self.gate(b, &cost, now), now) {
                        Readiness::At(at) => Some(at),
                        _ => None,
                    }
                });
            [budget.paused_until(), head, out_of_turn]
        });
        [
            self.waiters.next_deadline(),
            self.leases.next_expiry(),
            self.lockouts.next_expiry(),
            self.starts.next_wakeup(),
        ]
        .into_iter()
        .chain(budgets)
        .flatten()
        .min()
    }
}
