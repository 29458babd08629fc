//! What a call's outcome changes: reports, releases and the response headers that teach the
//! broker the limits.

use std::sync::Arc;
use std::time::{Duration, Instant};

use pacer_api::ratelimit::{RateLimitHeaders, limit_named_in};
use pacer_api::unified::window_class;
use pacer_protocol::message::{Event, LeaseId, Reported, SettledAs};
use pacer_protocol::{LimitKind, Throttle};

use super::budget::{Learned, Reservation};
use super::budgets::BudgetIdx;
use super::lockouts::Lockout;
use super::{Broker, BrokerError, Costs, Output, PerKind, Settlement, later};
use pacer_api::Answer;

/// The longest wait a 429 is believed for: a subscription's weekly window resets within a
/// week; anything beyond 8 days is a broken header.
pub const MAX_RATE_LIMIT_WAIT: Duration = Duration::from_secs(8 * 24 * 3600);
/// How long every call of a key's account fails fast after a spend-cap 429.
pub const SPEND_CAP_BLOCK: Duration = Duration::from_secs(60);

/// The kind of 429 a settlement is, if it is one: the spend cap's, else as its headers say
/// ([`pacer_api::throttle::classify`]) — a wait given with the report makes it a per-minute
/// limit's.
fn throttle_of(settlement: &Settlement, headers: &RateLimitHeaders) -> Option<Throttle> {
    match settlement {
        Settlement::SpendCapped { .. } => Some(Throttle::SpendCap),
        Settlement::RateLimited { retry_after, .. } => {
            Some(match pacer_api::throttle::classify(headers, false) {
                Throttle::Bare if retry_after.is_some() => Throttle::PerMinute,
                kind => kind,
            })
        }
        _ => None,
    }
}

/// Whether a settled call was answered by the API.
enum Answered {
    Yes,
    No,
}

/// A 429, as [`Broker::rate_limited`] takes it.
struct Refused<'a> {
    reserved: &'a Reservation,
    /// The organization's budget of a workspace's call, and what was reserved there.
    parent: Option<&'a (BudgetIdx, Reservation)>,
    retry_after: Duration,
    message: Option<String>,
    rejection: Option<Arc<Answer>>,
}

impl Broker {
    /// Settles a lease with the outcome of its call. Says what a 429 was taken for, and until
    /// when it holds the budget.
    pub fn report(
        &mut self,
        now: Instant,
        lease: LeaseId,
        settlement: Settlement,
        headers: &RateLimitHeaders,
    ) -> Result<(Vec<Output>, Reported), BrokerError> {
        let key = self
            .leases
            .get(lease)
            .ok_or(BrokerError::UnknownLease(lease))?
            .key;
        // First: the answer may tie the key to an account, moving the lease with it.
        self.link_if_named(key, headers, now);
        let mut held = self.leases.take(lease)?;
        // Its answer came: its cost is in the utilization the API reports from now on.
        self.end_window_call(held.window_call.take(), now);
        let throttle = throttle_of(&settlement, headers);
        let answered = matches!(settlement, Settlement::Success { .. });
        // Before the session is noted as at work: whether its start got through.
        self.note_start(&held, answered, throttle, now);
        self.note_session(&held, answered, now);
        let b = held.budget;
        let reserved = held.reservation;
        // A bare 429 says nothing of the budget: it is settled like the caller's mistake.
        let bare = throttle == Some(Throttle::Bare);
        // What a call reports is believed only up to what it could have cost: a broken or
        // hostile answer claiming 10¹⁸ tokens must not leave the budget in debt for ever.
        let counted = |usage: &pacer_protocol::message::Usage| {
            (
                usage
                    .counted_input_tokens()
                    .min(held.bound[LimitKind::InputTokens]),
                usage.output_tokens.min(held.bound[LimitKind::OutputTokens]),
            )
        };
        let (outcome, tokens) = match (&settlement, throttle) {
            (Settlement::Success { usage }, _) => (SettledAs::Success, counted(usage)),
            (_, Some(kind)) => (SettledAs::Throttled(kind), (0, 0)),
            (Settlement::Overloaded { .. }, _) => (SettledAs::Overloaded, (0, 0)),
            (Settlement::ClientError { .. }, _) => (SettledAs::ClientError, (0, 0)),
            (Settlement::Unknown, _) => (SettledAs::Unknown, (0, 0)),
            _ => (SettledAs::Failed, (0, 0)),
        };
        self.note_settled(&held, outcome, tokens, now);
        let cost = held.reservation.cost;
        let used = match &settlement {
            Settlement::Success { .. } => Costs::new(1, tokens.0, tokens.1),
            // The caller's mistake, or a throttle of the request alone: the API processed
            // nothing, only the request counts.
            Settlement::ClientError { .. } => Costs::new(1, 0, 0),
            Settlement::RateLimited { .. } if bare => Costs::new(1, 0, 0),
            // Rejected or failed: the request and its input count, no output was produced.
            Settlement::RateLimited { .. }
            | Settlement::SpendCapped { .. }
            | Settlement::Overloaded { .. }
            | Settlement::Failed => Costs::new(1, cost[LimitKind::InputTokens], 0),
            Settlement::Unknown => cost,
        };
        self.settle_shared(held.share(), Some(used));
        // Whether the API answered the call (for a budget's first contact): a bare 429 taught
        // nothing, so another call finds out.
        let settlement_kind = match settlement {
            Settlement::RateLimited { .. } if bare => Answered::No,
            Settlement::Success { .. }
            | Settlement::RateLimited { .. }
            | Settlement::SpendCapped { .. }
            | Settlement::Overloaded { .. }
            | Settlement::ClientError { .. } => Answered::Yes,
            Settlement::Failed | Settlement::Unknown => Answered::No,
        };
        let mut unknown_model = false;
        let mut until = None;
        match settlement {
            Settlement::Success { .. } => {
                let (input, output) = tokens;
                let budget = &mut self.budgets[b];
                budget.settle_usage(&reserved, input, output, now);
                self.overloads.succeeded(budget.class());
                if let Some((p, parent)) = &held.parent {
                    self.budgets[*p].settle_for_child(parent, input, output, now);
                }
            }
            Settlement::RateLimited { .. } if bare => {
                self.budgets[b].record_throttle(Throttle::Bare);
                self.budgets[b].refund_tokens(&reserved, now);
                if let Some((p, parent)) = &held.parent {
                    self.budgets[*p].refund_tokens(parent, now);
                }
            }
            Settlement::RateLimited {
                retry_after,
                message,
                rejection,
            } => {
                let retry_after = match retry_after.or(headers.retry_after) {
                    Some(wait) => wait.min(MAX_RATE_LIMIT_WAIT),
                    // No usable wait (negative, garbled): back off exponentially.
                    None => self.budgets[b].blind_pause(),
                };
                // Learn first: the 429's own headers may create the bucket it names.
                self.learn(b, headers, None, now);
                let refused = Refused {
                    reserved: &reserved,
                    parent: held.parent.as_ref(),
                    retry_after,
                    message,
                    rejection: rejection.map(Arc::new),
                };
                until = Some(self.rate_limited(b, refused, headers, now));
            }
            Settlement::SpendCapped { message, rejection } => {
                self.budgets[b].record_throttle(Throttle::SpendCap);
                self.budgets[b].refund_output(&reserved, now);
                self.refund_parent_output(held.parent.as_ref(), now);
                let owner = self.budgets[b].owner().clone();
                let end = later(now, SPEND_CAP_BLOCK);
                let reason = match message {
                    Some(message) => format!("the API key's spend cap is reached: {message}"),
                    None => "the API key's spend cap is reached (enforced_spend_limit_reached)"
                        .to_owned(),
                };
                let lockout = Lockout {
                    until: end,
                    reason,
                    rejection: rejection.map(Arc::new),
                };
                self.lock_out(&owner, None, lockout, now);
                until = Some(end);
            }
            Settlement::Overloaded { retry_after } => {
                self.budgets[b].record_overload();
                self.budgets[b].refund_output(&reserved, now);
                self.refund_parent_output(held.parent.as_ref(), now);
                self.overloaded(b, retry_after.or(headers.retry_after), now);
            }
            Settlement::Failed => {
                self.budgets[b].refund_output(&reserved, now);
                self.refund_parent_output(held.parent.as_ref(), now);
            }
            Settlement::ClientError { status } => {
                self.budgets[b].refund_tokens(&reserved, now);
                if let Some((p, parent)) = &held.parent {
                    self.budgets[*p].refund_tokens(parent, now);
                }
                unknown_model = status == 404;
            }
            Settlement::Unknown => {}
        }
        if until.is_none() {
            // After settling: the server's `remaining` already counts this call.
            self.learn(b, headers, None, now);
        }
        match settlement_kind {
            _ if !held.probe => {}
            Answered::Yes => self.budgets[b].probe_answered(),
            Answered::No => self.budgets[b].probe_unanswered(),
        }
        self.budgets[b].finish();
        self.serve(b, now);
        if unknown_model {
            // A model the API does not have: its budget is not worth a slot of the table.
            self.forget_if_unused(b);
        }
        let reported = Reported {
            throttle,
            until: until.map(|at| self.time_base.to_wall(at)),
        };
        Ok((self.take_output(), reported))
    }

    /// Gives a lease back unused: everything it reserved is refunded.
    pub fn release(&mut self, now: Instant, lease: LeaseId) -> Result<Vec<Output>, BrokerError> {
        let mut held = self.leases.take(lease)?;
        self.end_window_call(held.window_call.take(), now);
        self.note_settled(&held, SettledAs::Released, (0, 0), now);
        self.settle_shared(held.share(), None);
        if let Some((p, parent)) = &held.parent {
            self.budgets[*p].refund(parent, now);
        }
        let budget = &mut self.budgets[held.budget];
        budget.refund(&held.reservation, now);
        if held.probe {
            budget.probe_unanswered();
        }
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
        if let Some(key) = self.leases.get(lease).map(|held| held.key) {
            self.link_if_named(key, headers, now);
            let call = self
                .leases
                .get_mut(lease)
                .and_then(|held| held.window_call.take());
            self.end_window_call(call, now);
            let b = self.leases.get(lease).expect("still held").budget;
            // The API answered: a budget's first contact is over.
            self.budgets[b].probe_answered();
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
        let (learned, lowered) = self.budgets[b].apply_headers(headers, &in_flight_elsewhere, now);
        // The server counts a call's input when the request starts: a `remaining` that lowered
        // the bucket as the answer arrived holds the answered call's real input already.
        if let Some(lease) = answering.and_then(|id| self.leases.get_mut(id)) {
            for kind in [LimitKind::Requests, LimitKind::InputTokens] {
                lease.reservation.counted[kind] |= lowered[kind];
            }
        }
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
            self.publish(super::ClusterEvent::Limit {
                budget: self.budgets[b].id(),
                kind,
                limit,
            });
        }
        self.budgets[b].end_calibration(unmetered_left);
        self.teach_parent(b, now);
        let owner = self.budgets[b].owner().clone();
        let class = self.budgets[b].class().clone();
        let (crossed, moved) =
            self.accounts
                .observe_subscription(&owner, &headers.unified, Some(&class), now);
        if !headers.unified.is_empty() {
            // What the windows hold may have changed for the account's other budgets too.
            self.serve_owner(&owner, now);
        }
        for window in crossed {
            self.out.push(Output::Event(Event::Window {
                owner: owner.to_wire(),
                window,
            }));
        }
        if moved {
            self.publish(super::ClusterEvent::Windows {
                owner: owner.to_wire(),
                windows: super::shared::WindowsReport::of(&headers.unified),
            });
        }
    }

    /// A 429: the limit it names is drained so that grants resume at the refill pace, and every
    /// peer pauses — or, for a spent window or a wait longer than `max_hold`, is locked out.
    /// The organization's budget is the one refused when the message names it.
    fn rate_limited(
        &mut self,
        b: BudgetIdx,
        refused: Refused<'_>,
        headers: &RateLimitHeaders,
        now: Instant,
    ) -> Instant {
        let named = refused.message.as_deref().and_then(limit_named_in);
        let target = match refused.parent {
            Some((p, parent)) if Self::names_the_organization(refused.message.as_deref()) => {
                self.budgets[b].refund_output(refused.reserved, now);
                self.budgets[*p].rate_limited(parent, named, now);
                *p
            }
            parent => {
                self.budgets[b].rate_limited(refused.reserved, named, now);
                self.refund_parent_output(parent, now);
                b
            }
        };
        let reason = refused
            .message
            .unwrap_or_else(|| "rate limited (429)".into());
        let (retry_after, rejection) = (refused.retry_after, refused.rejection);
        if let Some(until) =
            self.lock_out_spent_windows(target, headers, retry_after, &rejection, now)
        {
            self.budgets[target].record_throttle(Throttle::Window);
            return until;
        }
        self.budgets[target].record_throttle(Throttle::PerMinute);
        let until = later(now, retry_after);
        if retry_after > self.config.max_hold {
            let class = Some(self.budgets[target].class().clone());
            let owner = self.budgets[target].owner().clone();
            let lockout = Lockout {
                until,
                reason: format!("{reason} (the API asks to wait longer than max_hold)"),
                rejection,
            };
            self.lock_out(&owner, class, lockout, now);
        } else {
            self.publish_pause(
                target,
                until,
                &reason,
                Some(named.into_iter().collect()),
                now,
            );
            self.extend_pause(target, until, reason);
        }
        until
    }

    fn refund_parent_output(&mut self, parent: Option<&(BudgetIdx, Reservation)>, now: Instant) {
        if let Some((p, reservation)) = parent {
            self.budgets[*p].refund_output(reservation, now);
        }
    }

    /// A 429 of a spent subscription window: locks out what the window covers (every class, or
    /// one for a model-specific window) until its reset. Returns the latest reset, if it was
    /// one.
    fn lock_out_spent_windows(
        &mut self,
        b: BudgetIdx,
        headers: &RateLimitHeaders,
        retry_after: Duration,
        rejection: &Option<Arc<Answer>>,
        now: Instant,
    ) -> Option<Instant> {
        let unified = &headers.unified;
        if !unified.is_spent() {
            return None;
        }
        let spent = unified.rejected_windows();
        let owner = self.budgets[b].owner().clone();
        let fallback = later(now, retry_after);
        let until = |reset: Option<std::time::SystemTime>| {
            reset
                .map(|at| self.time_base.to_instant(at))
                .filter(|&at| at > now)
                .map_or(fallback, |at| at.min(later(now, MAX_RATE_LIMIT_WAIT)))
        };
        let mut lockouts = Vec::new();
        for window in &spent {
            let scope = window_class(&window.name).map(Arc::from);
            let reason = format!("the {} subscription window is spent", window.name);
            lockouts.push((scope, until(window.reset.or(unified.reset)), reason));
        }
        if lockouts.is_empty() {
            let reason = "the subscription's limit is spent".to_owned();
            lockouts.push((None, until(unified.reset), reason));
        }
        let latest = lockouts.iter().map(|(_, until, _)| *until).max();
        for (scope, until, reason) in lockouts {
            let lockout = Lockout {
                until,
                reason,
                rejection: rejection.clone(),
            };
            self.lock_out(&owner, scope, lockout, now);
        }
        latest
    }

    pub(super) fn extend_pause(&mut self, b: BudgetIdx, until: Instant, reason: String) {
        if self.budgets[b].extend_pause(until, &reason) {
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
            let for_ms = until.saturating_duration_since(now).as_millis() as u64;
            self.publish(super::ClusterEvent::Overload {
                class: class.to_string(),
                for_ms,
            });
            self.out.push(Output::Event(Event::Overloaded {
                model_class: class.to_string(),
                until: self.time_base.to_wall(until),
            }));
        }
    }
}
