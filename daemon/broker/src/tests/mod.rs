//! The broker's rules, each on a fake clock.

use std::time::{Duration, Instant, SystemTime};

use pacer_protocol::message::{
    Acquire, BudgetStatus, ErrorKind, Event, LeaseId, Rejected, Response, Usage,
};
use pacer_protocol::ratelimit::RateLimitHeaders;
use pacer_protocol::{BudgetOwner, KeyFingerprint, LimitKind, Priority};

use super::*;

mod accounts;
mod hardening;
mod properties;
mod shared;
mod windows;

fn secs(s: f64) -> Duration {
    Duration::from_secs_f64(s)
}

fn key(name: &str) -> KeyFingerprint {
    KeyFingerprint::of(name)
}

const SONNET: &str = "claude-sonnet-4-5";

/// A broker and a fake clock.
struct Harness {
    broker: Broker,
    t0: Instant,
    now: Instant,
    next_request: u64,
    /// Every answer and event seen, with the time it came out.
    answers: Vec<(Duration, Ticket, Response)>,
    events: Vec<Event>,
    /// What went to the shared store (while sharing).
    claims: Vec<Claim>,
    shared: Vec<SharedOp>,
}

impl Harness {
    fn new(config: BrokerConfig) -> Self {
        let t0 = Instant::now();
        let time_base = TimeBase {
            instant: t0,
            wall: SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000),
        };
        let mut broker = Broker::new(config, time_base, 1);
        broker.set_events(true);
        Self {
            broker,
            t0,
            now: t0,
            next_request: 0,
            answers: Vec::new(),
            events: Vec::new(),
            claims: Vec::new(),
            shared: Vec::new(),
        }
    }

    /// A broker that lets calls of a budget it knows nothing of go out together (no first-contact
    /// hold), as happens once the hold has run out.
    fn without_cold_start() -> Self {
        Self::new(BrokerConfig {
            cold_start_hold: Duration::ZERO,
            ..BrokerConfig::default()
        })
    }

    /// A broker where `class` has the given limits for every key.
    fn with_limits(class: &str, limits: LimitSet) -> Self {
        let mut config = BrokerConfig::default();
        config.limits.per_class.insert(class.into(), limits);
        Self::new(config)
    }

    fn elapsed(&self) -> Duration {
        self.now - self.t0
    }

    fn collect(&mut self, outputs: Vec<Output>) {
        for output in outputs {
            match output {
                Output::Answer { ticket, response } => {
                    self.answers.push((self.elapsed(), ticket, response))
                }
                Output::Event(event) => self.events.push(event),
                Output::Claim(claim) => self.claims.push(claim),
                Output::Shared(op) => self.shared.push(op),
            }
        }
    }

    /// Sends an acquire on connection `conn`; returns its ticket.
    fn acquire(&mut self, conn: u64, edit: impl FnOnce(&mut Acquire)) -> Ticket {
        let mut req = Acquire {
            key: key("k"),
            model: SONNET.into(),
            priority: Priority::Normal,
            client_id: format!("client-{conn}"),
            input_tokens: None,
            output_tokens: None,
            max_tokens: None,
            deadline: None,
            detached_ttl: None,
        };
        edit(&mut req);
        let ticket = Ticket {
            conn: ConnId(conn),
            request: self.next_request,
        };
        self.next_request += 1;
        let out = self.broker.acquire(self.now, ticket, &req);
        self.collect(out);
        ticket
    }

    fn answer(&self, ticket: Ticket) -> Option<&(Duration, Ticket, Response)> {
        self.answers.iter().find(|(_, t, _)| *t == ticket)
    }

    /// The lease granted to `ticket`, if it has been granted.
    fn lease(&self, ticket: Ticket) -> Option<LeaseId> {
        match self.answer(ticket) {
            Some((_, _, Response::Granted(g))) => Some(g.lease),
            _ => None,
        }
    }

    fn granted_at(&self, ticket: Ticket) -> Option<Duration> {
        match self.answer(ticket) {
            Some((at, _, Response::Granted(_))) => Some(*at),
            _ => None,
        }
    }

    fn report(&mut self, lease: LeaseId, settlement: Settlement) {
        self.report_with(lease, settlement, RateLimitHeaders::default());
    }

    fn report_with(&mut self, lease: LeaseId, settlement: Settlement, headers: RateLimitHeaders) {
        let out = self
            .broker
            .report(self.now, lease, settlement, &headers)
            .expect("lease is held");
        self.collect(out);
    }

    fn success(&mut self, lease: LeaseId, input: u64, output: u64) {
        let usage = Usage {
            input_tokens: input,
            output_tokens: output,
            ..Default::default()
        };
        self.report(lease, Settlement::Success { usage });
    }

    /// Moves the clock to `at` (since t0), running every wakeup on the way as the server would.
    fn run_until(&mut self, at: Duration) {
        let target = self.t0 + at;
        while let Some(wake) = self.broker.next_wakeup(self.now) {
            if wake > target {
                break;
            }
            self.now = wake.max(self.now);
            let out = self.broker.tick(self.now);
            self.collect(out);
        }
        self.now = target;
        let out = self.broker.tick(self.now);
        self.collect(out);
    }

    fn status(&self) -> BudgetStatus {
        self.broker
            .status(self.now)
            .into_iter()
            .find(|s| {
                s.budget.model_class == "sonnet" && s.budget.owner == BudgetOwner::Key(key("k"))
            })
            .expect("the sonnet budget exists")
    }
}

fn rpm(n: u64) -> LimitSet {
    LimitSet {
        rpm: Some(n),
        ..Default::default()
    }
}

// --- Budgets and limits -------------------------------------------------------------------------

#[test]
fn without_known_limits_everything_is_granted_at_once_after_a_first_contact() {
    let mut h = Harness::new(BrokerConfig::default());
    let tickets: Vec<_> = (0..1000).map(|i| h.acquire(i, |_| {})).collect();
    // One call goes out; the others wait for its answer's headers.
    assert_eq!(h.granted_at(tickets[0]), Some(Duration::ZERO));
    assert!(tickets[1..].iter().all(|&t| h.lease(t).is_none()));
    h.now += secs(0.5);
    h.success(h.lease(tickets[0]).unwrap(), 10, 10);
    // The answer told no limit: everyone goes at once.
    assert!(
        tickets[1..]
            .iter()
            .all(|&t| h.granted_at(t) == Some(secs(0.5)))
    );
    assert_eq!(h.status().in_flight, 999);
}

#[test]
fn the_first_contact_hold_is_bounded_and_a_failed_first_call_hands_over() {
    let mut h = Harness::new(BrokerConfig::default());
    let first = h.acquire(1, |_| {});
    let second = h.acquire(2, |_| {});
    let third = h.acquire(3, |_| {});
    assert!(h.lease(second).is_none());
    // The first call failed without a word from the API: the next goes out in its place.
    h.now += secs(1.0);
    h.report(h.lease(first).unwrap(), Settlement::Failed);
    assert_eq!(h.granted_at(second), Some(secs(1.0)));
    assert!(h.lease(third).is_none());
    // Its answer never comes: after the hold (5 s), the rest proceed.
    h.run_until(secs(6.0));
    assert_eq!(h.granted_at(third), Some(secs(6.0)));
}

#[test]
fn configured_limits_need_no_first_contact() {
    let mut h = Harness::with_limits("sonnet", rpm(100));
    let tickets: Vec<_> = (0..5).map(|i| h.acquire(i, |_| {})).collect();
    assert!(
        tickets
            .iter()
            .all(|&t| h.granted_at(t) == Some(Duration::ZERO))
    );
}

#[test]
fn a_budget_is_a_key_and_a_model_class() {
    let mut h = Harness::with_limits("sonnet", rpm(1));
    let first = h.acquire(1, |_| {});
    // Another sonnet model with the same key shares the budget: it waits.
    let same = h.acquire(2, |r| r.model = "claude-sonnet-4-20250514".into());
    // Another key, or another class, has a budget of its own.
    let other_key = h.acquire(3, |r| r.key = key("other"));
    let other_class = h.acquire(4, |r| r.model = "claude-opus-4-1".into());
    assert!(h.lease(first).is_some());
    assert!(h.lease(same).is_none());
    assert!(h.lease(other_key).is_some());
    assert!(h.lease(other_class).is_some());
}

#[test]
fn buckets_start_full_and_refill_continuously() {
    let mut h = Harness::with_limits("sonnet", rpm(10));
    let tickets: Vec<_> = (0..13).map(|i| h.acquire(i, |_| {})).collect();
    h.run_until(secs(60.0));
    let times: Vec<_> = tickets.iter().map(|&t| h.granted_at(t).unwrap()).collect();
    // Ten at once (a full bucket), then one every 6 s.
    assert!(times[..10].iter().all(|t| t.is_zero()));
    assert_eq!(times[10..], [secs(6.0), secs(12.0), secs(18.0)]);
}

#[test]
fn configured_limits_win_over_learned_ones() {
    let mut h = Harness::with_limits("sonnet", rpm(5));
    let t = h.acquire(1, |_| {});
    let mut headers = RateLimitHeaders::default();
    headers.requests.limit = Some(1000);
    headers.input_tokens.limit = Some(40_000);
    h.report_with(
        h.lease(t).unwrap(),
        Settlement::Success {
            usage: Usage::default(),
        },
        headers,
    );
    let limits = h.status().limits;
    assert_eq!(limits.rpm, Some(5), "configured");
    assert_eq!(limits.itpm, Some(40_000), "learned");
}

#[test]
fn limits_are_learned_from_headers_and_then_enforced() {
    let mut h = Harness::new(BrokerConfig::default());
    let t = h.acquire(1, |_| {});
    let headers = RateLimitHeaders::parse(
        [
            ("anthropic-ratelimit-requests-limit", "2"),
            ("anthropic-ratelimit-requests-remaining", "1"),
        ],
        SystemTime::now(),
    );
    h.report_with(
        h.lease(t).unwrap(),
        Settlement::Success {
            usage: Usage::default(),
        },
        headers,
    );
    assert_eq!(h.status().limits.rpm, Some(2));
    assert!(h.events.iter().any(|e| matches!(
        e,
        Event::LimitLearned {
            kind: LimitKind::Requests,
            limit: 2,
            ..
        }
    )));
    // The server said one request is left: one grant now, the next after 30 s (2 per minute).
    let a = h.acquire(2, |_| {});
    let b = h.acquire(3, |_| {});
    h.run_until(secs(60.0));
    assert_eq!(h.granted_at(a), Some(Duration::ZERO));
    assert_eq!(h.granted_at(b), Some(secs(30.0)));
}

#[test]
fn openai_style_headers_teach_limits_too() {
    let mut h = Harness::new(BrokerConfig::default());
    let headers = RateLimitHeaders::parse(
        [
            ("x-ratelimit-limit-requests", "500"),
            ("x-ratelimit-limit-tokens", "30000"),
        ],
        SystemTime::now(),
    );
    let t = h.acquire(1, |_| {});
    h.report_with(h.lease(t).unwrap(), Settlement::Failed, headers);
    let limits = h.status().limits;
    assert_eq!((limits.rpm, limits.itpm), (Some(500), Some(30_000)));
}

#[test]
fn max_in_flight_holds_waiters_until_a_call_settles() {
    let mut h = Harness::with_limits(
        "sonnet",
        LimitSet {
            max_in_flight: Some(2),
            ..Default::default()
        },
    );
    let a = h.acquire(1, |_| {});
    let _b = h.acquire(2, |_| {});
    let c = h.acquire(3, |_| {});
    assert!(h.lease(c).is_none());
    // Time alone does not help.
    assert_eq!(h.broker.next_wakeup(h.now), None);
    h.run_until(secs(5.0));
    h.success(h.lease(a).unwrap(), 10, 10);
    assert_eq!(h.granted_at(c), Some(secs(5.0)));
}

#[test]
fn new_limits_apply_to_existing_budgets_and_waiters() {
    let mut h = Harness::with_limits("sonnet", rpm(1));
    h.acquire(1, |_| {});
    let waiting = h.acquire(2, |_| {});
    assert!(h.lease(waiting).is_none());
    let mut config = BrokerConfig::default();
    config.limits.per_class.insert("sonnet".into(), rpm(600));
    h.now += secs(1.0);
    let out = h.broker.reconfigure(config, h.now);
    h.collect(out);
    // At 600 rpm the bucket (level 1/60 after a second at the old rate, capacity now 600) refills
    // 10 per second: the waiter is served within 0.1 s.
    h.run_until(secs(1.1));
    let at = h.granted_at(waiting).expect("granted under the new limit");
    assert!(at <= secs(1.1), "{at:?}");
    assert_eq!(h.status().limits.rpm, Some(600));
}

// --- Costs and settlement -----------------------------------------------------------------------

fn tokens(itpm: u64, otpm: u64) -> LimitSet {
    LimitSet {
        itpm: Some(itpm),
        otpm: Some(otpm),
        ..Default::default()
    }
}

#[test]
fn a_cost_above_capacity_is_granted_when_the_bucket_is_full() {
    let mut h = Harness::with_limits("sonnet", tokens(1000, 1000));
    let half = h.acquire(1, |r| r.input_tokens = Some(500));
    let huge = h.acquire(2, |r| r.input_tokens = Some(5000));
    assert!(h.lease(half).is_some());
    // Waits until the bucket is full again (500 tokens at 1000/min = 30 s), then goes into debt
    // — no deeper than a whole bucket, so that one call cannot hold the budget for longer than
    // a minute of refill.
    h.run_until(secs(100.0));
    assert_eq!(h.granted_at(huge), Some(secs(30.0)));
    assert_eq!(
        h.status().available.input_tokens,
        Some(-1000 + 70 * 1000 / 60)
    );
}

#[test]
fn output_is_reserved_from_the_estimate_or_the_running_average_never_max_tokens() {
    let mut h = Harness::with_limits("sonnet", tokens(1_000_000, 10_000));
    // Nothing known yet and no estimate: nothing reserved for output, although max_tokens is huge.
    let a = h.acquire(1, |r| r.max_tokens = Some(32_000));
    assert_eq!(h.status().available.output_tokens, Some(10_000));
    h.success(h.lease(a).unwrap(), 10, 400);
    // Now the running average (400) is reserved...
    h.acquire(2, |r| r.max_tokens = Some(32_000));
    assert_eq!(h.status().available.output_tokens, Some(10_000 - 400 - 400));
    // ...capped at max_tokens...
    h.acquire(3, |r| r.max_tokens = Some(100));
    assert_eq!(h.status().available.output_tokens, Some(10_000 - 800 - 100));
    // ...and the caller's own estimate wins.
    h.acquire(4, |r| r.output_tokens = Some(50));
    assert_eq!(h.status().available.output_tokens, Some(10_000 - 900 - 50));
}

#[test]
fn settlement_refunds_or_charges_the_difference_and_ignores_cache_reads() {
    let mut h = Harness::with_limits("sonnet", tokens(10_000, 10_000));
    let a = h.acquire(1, |r| r.input_tokens = Some(3000));
    assert_eq!(h.status().available.input_tokens, Some(7000));
    let usage = Usage {
        input_tokens: 500,
        cache_creation_input_tokens: 500,
        cache_read_input_tokens: 90_000,
        output_tokens: 0,
    };
    h.report(h.lease(a).unwrap(), Settlement::Success { usage });
    // Reserved 3000, used 1000 counted: 2000 back. Cache reads cost nothing.
    assert_eq!(h.status().available.input_tokens, Some(9000));

    let b = h.acquire(2, |r| r.input_tokens = Some(100));
    h.success(h.lease(b).unwrap(), 12_000, 0);
    // Charged 11,900 more than reserved: the bucket is in debt.
    assert_eq!(h.status().available.input_tokens, Some(9000 - 12_000));
}

#[test]
fn debt_delays_later_grants() {
    let mut h = Harness::with_limits("sonnet", tokens(6000, 1_000_000));
    let a = h.acquire(1, |r| r.input_tokens = Some(100));
    h.success(h.lease(a).unwrap(), 6100, 0);
    // Level is -100 (6000 - 6100); a request for 100 needs 200 tokens of refill at 100/s: 2 s.
    let b = h.acquire(2, |r| r.input_tokens = Some(100));
    h.run_until(secs(10.0));
    assert_eq!(h.granted_at(b), Some(secs(2.0)));
}

#[test]
fn remaining_headers_lower_a_bucket_but_never_raise_it() {
    let mut h = Harness::with_limits("sonnet", tokens(10_000, 10_000));
    let a = h.acquire(1, |r| r.input_tokens = Some(1000));
    let mut headers = RateLimitHeaders::default();
    headers.input_tokens.remaining = Some(4000);
    headers.output_tokens.remaining = Some(1_000_000);
    h.report_with(
        h.lease(a).unwrap(),
        Settlement::Success {
            usage: Usage {
                input_tokens: 1000,
                ..Default::default()
            },
        },
        headers,
    );
    let available = h.status().available;
    assert_eq!(available.input_tokens, Some(4000));
    assert_eq!(available.output_tokens, Some(10_000));
}

#[test]
fn a_new_bucket_calibrates_while_calls_granted_without_it_are_in_flight() {
    // Limits not known yet: ten calls go out at once (the first-contact hold ran out). The
    // first answer says 50 rpm, 49 left — counted when that call arrived, perhaps before the
    // nine others did.
    let mut h = Harness::without_cold_start();
    let tickets: Vec<_> = (0..10).map(|i| h.acquire(i, |_| {})).collect();
    let answer = |h: &mut Harness, i: usize, remaining: u64| {
        let mut headers = RateLimitHeaders::default();
        headers.requests.limit = Some(50);
        headers.requests.remaining = Some(remaining);
        h.report_with(
            h.lease(tickets[i]).unwrap(),
            Settlement::Success {
                usage: Usage::default(),
            },
            headers,
        );
    };
    answer(&mut h, 0, 49);
    // 49 less the 9 still in flight: 40, on the safe side.
    assert_eq!(h.status().available.requests, Some(40));
    // Had the server counted all ten, the next answer says 40 left, with 8 still in flight.
    answer(&mut h, 1, 40);
    assert_eq!(h.status().available.requests, Some(32));
    // A higher `remaining` (an answer to a call processed earlier) does not raise the floor;
    // one call fewer in flight does raise the estimate.
    answer(&mut h, 2, 45);
    assert_eq!(h.status().available.requests, Some(33));
    for i in 3..10 {
        answer(&mut h, i, 40);
    }
    // Everything is back: the server's lowest word stands.
    assert_eq!(h.status().available.requests, Some(40));
    // Calibration is over: from now on the bucket counts every grant itself and answers only
    // ever lower it.
    let t = h.acquire(20, |_| {});
    assert_eq!(h.status().available.requests, Some(39));
    let mut headers = RateLimitHeaders::default();
    headers.requests.remaining = Some(45);
    h.report_with(
        h.lease(t).unwrap(),
        Settlement::Success {
            usage: Usage::default(),
        },
        headers,
    );
    assert_eq!(h.status().available.requests, Some(39));
}

#[test]
fn release_refunds_everything() {
    let mut h = Harness::with_limits(
        "sonnet",
        LimitSet {
            rpm: Some(10),
            itpm: Some(10_000),
            ..Default::default()
        },
    );
    let a = h.acquire(1, |r| r.input_tokens = Some(2000));
    let out = h.broker.release(h.now, h.lease(a).unwrap()).unwrap();
    h.collect(out);
    let s = h.status();
    assert_eq!(s.available.requests, Some(10));
    assert_eq!(s.available.input_tokens, Some(10_000));
    assert_eq!(s.in_flight, 0);
}

#[test]
fn a_lease_settles_once() {
    let mut h = Harness::new(BrokerConfig::default());
    let a = h.acquire(1, |_| {});
    let lease = h.lease(a).unwrap();
    h.success(lease, 1, 1);
    let again = h.broker.report(
        h.now,
        lease,
        Settlement::Failed,
        &RateLimitHeaders::default(),
    );
    assert_eq!(again, Err(BrokerError::UnknownLease(lease)));
    assert_eq!(
        h.broker.release(h.now, lease),
        Err(BrokerError::UnknownLease(lease))
    );
}

// --- The shared pause ---------------------------------------------------------------------------

fn rate_limited(retry_after: f64, message: &str) -> Settlement {
    Settlement::RateLimited {
        retry_after: Some(secs(retry_after)),
        message: Some(message.into()),
        rejection: None,
    }
}

#[test]
fn a_429_pauses_every_peer_of_the_budget_and_no_other() {
    let mut h = Harness::new(BrokerConfig::default());
    let a = h.acquire(1, |_| {});
    h.report(h.lease(a).unwrap(), rate_limited(3.0, "Rate limited"));
    let same = h.acquire(2, |_| {});
    let other_key = h.acquire(3, |r| r.key = key("other"));
    let other_class = h.acquire(4, |r| r.model = "claude-haiku-4-5".into());
    assert!(h.lease(same).is_none());
    assert!(h.lease(other_key).is_some());
    assert!(h.lease(other_class).is_some());
    h.run_until(secs(10.0));
    assert_eq!(h.granted_at(same), Some(secs(3.0)));
    assert_eq!(h.status().rate_limited, 1);
    assert!(
        h.events
            .iter()
            .any(|e| matches!(e, Event::PauseStarted { .. }))
    );
    assert!(
        h.events
            .iter()
            .any(|e| matches!(e, Event::PauseEnded { .. }))
    );
}

#[test]
fn a_later_429_extends_the_pause_but_never_shortens_it() {
    let mut h = Harness::without_cold_start();
    let a = h.acquire(1, |_| {});
    let b = h.acquire(2, |_| {});
    let c = h.acquire(3, |_| {});
    h.report(h.lease(a).unwrap(), rate_limited(10.0, "x"));
    h.report(h.lease(b).unwrap(), rate_limited(2.0, "x"));
    let waiting = h.acquire(4, |_| {});
    h.run_until(secs(4.0));
    assert!(
        h.lease(waiting).is_none(),
        "the 2 s report did not shorten the 10 s pause"
    );
    h.report(h.lease(c).unwrap(), rate_limited(8.0, "x"));
    h.run_until(secs(20.0));
    assert_eq!(h.granted_at(waiting), Some(secs(12.0)));
}

#[test]
fn retry_after_comes_from_the_headers_when_not_given() {
    let mut h = Harness::new(BrokerConfig::default());
    let a = h.acquire(1, |_| {});
    let headers = RateLimitHeaders::parse([("retry-after-ms", "2500")], SystemTime::now());
    h.report_with(
        h.lease(a).unwrap(),
        Settlement::RateLimited {
            retry_after: None,
            message: None,
            rejection: None,
        },
        headers,
    );
    let b = h.acquire(2, |_| {});
    h.run_until(secs(5.0));
    assert_eq!(h.granted_at(b), Some(secs(2.5)));
}

#[test]
fn the_bucket_a_429_names_is_drained_so_grants_resume_at_the_refill_pace() {
    let mut h = Harness::with_limits(
        "sonnet",
        LimitSet {
            rpm: Some(60),
            itpm: Some(60_000),
            ..Default::default()
        },
    );
    let a = h.acquire(1, |r| r.input_tokens = Some(10));
    h.report(
        h.lease(a).unwrap(),
        rate_limited(
            5.0,
            "This request would exceed the rate limit of 60 requests per minute",
        ),
    );
    // Requests drained; input tokens untouched.
    let s = h.status();
    assert_eq!(s.available.requests, Some(0));
    assert_eq!(s.available.input_tokens, Some(59_990));
    let tickets: Vec<_> = (0..8).map(|i| h.acquire(10 + i, |_| {})).collect();
    // When the pause ends, one call goes first to find out whether the limit is back.
    h.run_until(secs(5.4));
    let granted: Vec<_> = tickets.iter().filter_map(|&t| h.lease(t)).collect();
    assert_eq!(granted.len(), 1, "only the probe goes when the pause ends");
    assert_eq!(h.granted_at(tickets[0]), Some(secs(5.0)));
    // Its answer comes: the others go at the refill pace. After 5.5 s the bucket has refilled
    // 5.5 requests, one taken by the probe: four go at once, the rest one per second.
    h.run_until(secs(5.5));
    h.success(granted[0], 10, 0);
    h.run_until(secs(20.0));
    let times: Vec<_> = tickets.iter().map(|&t| h.granted_at(t).unwrap()).collect();
    assert_eq!(&times[1..5], &[secs(5.5); 4]);
    assert_eq!(&times[5..], &[secs(6.0), secs(7.0), secs(8.0)]);
}

#[test]
fn after_a_pause_the_waiters_wait_for_the_probes_answer_and_a_429_to_it_holds_them() {
    let mut h = Harness::with_limits("sonnet", rpm(600));
    let a = h.acquire(1, |_| {});
    h.report(h.lease(a).unwrap(), rate_limited(10.0, "Rate limited"));
    let waiting: Vec<_> = (0..20).map(|i| h.acquire(10 + i, |_| {})).collect();
    h.run_until(secs(11.0));
    let probe: Vec<_> = waiting.iter().filter_map(|&t| h.lease(t)).collect();
    assert_eq!(probe.len(), 1, "20 clients are not released together");
    // The limit is not back: the probe's 429 pauses everyone again before anyone else went.
    h.report(probe[0], rate_limited(10.0, "Rate limited"));
    h.run_until(secs(20.9));
    assert_eq!(waiting.iter().filter_map(|&t| h.lease(t)).count(), 1);
    // The next pause ends: again one probe; this time it succeeds and the rest follow.
    h.run_until(secs(21.5));
    let granted: Vec<_> = waiting.iter().filter_map(|&t| h.lease(t)).collect();
    assert_eq!(granted.len(), 2);
    h.success(granted[1], 10, 10);
    h.run_until(secs(60.0));
    assert_eq!(waiting.iter().filter_map(|&t| h.lease(t)).count(), 20);
}

#[test]
fn a_429_naming_no_limit_drains_every_bucket() {
    let mut h = Harness::with_limits("sonnet", tokens(1000, 1000));
    let a = h.acquire(1, |r| r.input_tokens = Some(10));
    h.report(h.lease(a).unwrap(), rate_limited(1.0, "Rate limited"));
    let s = h.status();
    assert_eq!(s.available.input_tokens, Some(0));
    assert_eq!(s.available.output_tokens, Some(0));
}

#[test]
fn an_administrator_can_pause_and_lift() {
    let mut h = Harness::new(BrokerConfig::default());
    let out = h
        .broker
        .pause(h.now, key("k"), "sonnet", h.now + secs(30.0));
    h.collect(out);
    let a = h.acquire(1, |_| {});
    assert!(h.lease(a).is_none());
    h.now += secs(1.0);
    let out = h.broker.pause(h.now, key("k"), "sonnet", h.now);
    h.collect(out);
    assert_eq!(h.granted_at(a), Some(secs(1.0)));
}

// --- Overload backoff ---------------------------------------------------------------------------

#[test]
fn overloaded_answers_back_off_the_whole_class_doubling_up_to_32_s() {
    let mut h = Harness::new(BrokerConfig::default());
    let mut expected = Vec::new();
    for (i, backoff) in [1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 32.0]
        .into_iter()
        .enumerate()
    {
        let t = h.acquire(i as u64, |_| {});
        let lease = h
            .lease(t)
            .expect("granted once the previous backoff passed");
        h.report(lease, Settlement::Overloaded { retry_after: None });
        // Every key's budget of the class is held back.
        let probe = h.acquire(100 + i as u64, |r| r.key = key("another key"));
        assert!(h.lease(probe).is_none());
        let start = h.elapsed();
        h.run_until(start + secs(backoff));
        expected.push((h.granted_at(probe).unwrap() - start).as_secs_f64());
        let out = h.broker.release(h.now, h.lease(probe).unwrap()).unwrap();
        h.collect(out);
    }
    assert_eq!(expected, [1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 32.0]);
}

#[test]
fn a_success_resets_the_overload_backoff() {
    let mut h = Harness::new(BrokerConfig::default());
    for _ in 0..3 {
        let t = h.acquire(1, |_| {});
        h.run_until(h.elapsed() + secs(10.0));
        h.report(
            h.lease(t).unwrap(),
            Settlement::Overloaded { retry_after: None },
        );
    }
    h.run_until(h.elapsed() + secs(10.0));
    let t = h.acquire(1, |_| {});
    h.success(h.lease(t).unwrap(), 1, 1);
    let t = h.acquire(1, |_| {});
    h.report(
        h.lease(t).unwrap(),
        Settlement::Overloaded { retry_after: None },
    );
    let start = h.elapsed();
    let probe = h.acquire(2, |_| {});
    h.run_until(start + secs(5.0));
    assert_eq!(
        h.granted_at(probe),
        Some(start + secs(1.0)),
        "back to the 1 s step"
    );
}

// --- The queue ----------------------------------------------------------------------------------

#[test]
fn interactive_waiters_are_served_before_batch_ones() {
    let mut h = Harness::with_limits("sonnet", rpm(1));
    h.acquire(0, |_| {});
    let batch: Vec<_> = (1..=3)
        .map(|i| h.acquire(i, |r| r.priority = Priority::Batch))
        .collect();
    let interactive = h.acquire(9, |r| r.priority = Priority::Interactive);
    h.run_until(secs(60.0 * 4.0));
    assert_eq!(h.granted_at(interactive), Some(secs(60.0)));
    assert_eq!(h.granted_at(batch[0]), Some(secs(120.0)));
}

#[test]
fn clients_of_one_priority_take_turns() {
    let mut h = Harness::with_limits("sonnet", rpm(60));
    // Spend the bucket, then client 1 queues ten requests before client 2 queues one.
    for _ in 0..60 {
        h.acquire(0, |_| {});
    }
    let flood: Vec<_> = (0..10).map(|_| h.acquire(1, |_| {})).collect();
    let polite = h.acquire(2, |_| {});
    h.run_until(secs(30.0));
    assert_eq!(h.granted_at(flood[0]), Some(secs(1.0)));
    assert_eq!(h.granted_at(polite), Some(secs(2.0)), "not behind all ten");
    assert_eq!(h.granted_at(flood[1]), Some(secs(3.0)));
}

#[test]
fn a_large_head_is_not_starved_by_smaller_requests_behind_it() {
    let mut h = Harness::with_limits("sonnet", tokens(6000, 1_000_000));
    h.acquire(0, |r| r.input_tokens = Some(6000));
    let big = h.acquire(1, |r| r.input_tokens = Some(3000));
    let small = h.acquire(2, |r| r.input_tokens = Some(10));
    h.run_until(secs(1.0));
    // After 1 s there are 100 tokens: enough for the small one, but it waits its turn.
    assert!(h.lease(small).is_none());
    h.run_until(secs(60.0));
    assert_eq!(h.granted_at(big), Some(secs(30.0)));
    assert_eq!(h.granted_at(small), Some(secs(30.1)));
}

#[test]
fn ten_thousand_waiters_are_all_served_in_fair_order() {
    let mut h = Harness::with_limits("sonnet", rpm(600));
    for _ in 0..600 {
        h.acquire(0, |_| {});
    }
    let tickets: Vec<_> = (0..10_000)
        .map(|i| h.acquire(1 + i % 100, |_| {}))
        .collect();
    assert_eq!(h.status().waiting, 10_000);
    h.run_until(secs(1001.0));
    let mut times: Vec<_> = tickets.iter().map(|&t| h.granted_at(t).unwrap()).collect();
    // Pushed round by round across 100 clients: served in arrival order, 10 per second.
    assert!(times.windows(2).all(|w| w[0] <= w[1]));
    times.dedup();
    assert_eq!(times.len(), 10_000);
    assert_eq!(h.status().waiting, 0);
}

// --- Deadlines ----------------------------------------------------------------------------------

#[test]
fn a_deadline_ends_the_wait_with_an_estimate_of_the_rest() {
    let mut h = Harness::with_limits("sonnet", rpm(6)); // one every 10 s
    for _ in 0..6 {
        h.acquire(0, |_| {});
    }
    let first = h.acquire(1, |_| {});
    let second = h.acquire(2, |r| r.deadline = Some(secs(5.0)));
    h.run_until(secs(30.0));
    let (at, _, response) = h.answer(second).unwrap().clone();
    assert_eq!(at, secs(5.0));
    // Behind `first` (granted at 10 s) it would have been served at 20 s: 15 s more.
    assert_eq!(
        response,
        Response::TimedOut(TimedOut {
            retry_after: secs(15.0),
            reason: "the rpm limit (requests per minute) is spent for now".into(),
        })
    );
    assert_eq!(h.granted_at(first), Some(secs(10.0)));
}

#[test]
fn a_zero_deadline_takes_only_a_free_permit() {
    let mut h = Harness::with_limits("sonnet", rpm(1));
    let free = h.acquire(1, |r| r.deadline = Some(Duration::ZERO));
    let busy = h.acquire(2, |r| r.deadline = Some(Duration::ZERO));
    assert!(h.lease(free).is_some());
    assert_eq!(
        h.answer(busy).unwrap().2,
        Response::TimedOut(TimedOut {
            retry_after: secs(60.0),
            reason: "the rpm limit (requests per minute) is spent for now".into(),
        })
    );
    assert_eq!(h.status().waiting, 0);
}

#[test]
fn a_timed_out_head_lets_the_next_waiter_through() {
    let mut h = Harness::with_limits("sonnet", tokens(6000, 1_000_000));
    h.acquire(0, |r| r.input_tokens = Some(6000));
    h.acquire(1, |r| {
        r.input_tokens = Some(6000);
        r.deadline = Some(secs(2.0));
    });
    let small = h.acquire(2, |r| r.input_tokens = Some(100));
    h.run_until(secs(10.0));
    assert_eq!(h.granted_at(small), Some(secs(2.0)));
}

// --- Leases -------------------------------------------------------------------------------------

#[test]
fn a_closed_connection_settles_its_leases_as_unknown_and_drops_its_waiters() {
    let mut h = Harness::with_limits(
        "sonnet",
        LimitSet {
            max_in_flight: Some(1),
            itpm: Some(1000),
            ..Default::default()
        },
    );
    let held = h.acquire(1, |r| r.input_tokens = Some(300));
    let waiting_same_conn = h.acquire(1, |_| {});
    let waiting_other = h.acquire(2, |r| r.input_tokens = Some(1));
    assert!(h.lease(held).is_some());
    let out = h.broker.disconnect(h.now, ConnId(1));
    h.collect(out);
    // The slot is free and the next connection's waiter is served; the reservation stays spent.
    assert!(h.answer(waiting_same_conn).is_none(), "nobody to answer");
    assert!(h.lease(waiting_other).is_some());
    let s = h.status();
    assert_eq!(s.in_flight, 1);
    assert_eq!(s.available.input_tokens, Some(1000 - 300 - 1));
    assert_eq!(h.broker.counts(), (0, 1));
}

#[test]
fn a_detached_lease_outlives_its_connection_and_expires_after_its_ttl() {
    let mut h = Harness::new(BrokerConfig::default());
    let t = h.acquire(1, |r| r.detached_ttl = Some(secs(60.0)));
    let lease = h.lease(t).unwrap();
    let out = h.broker.disconnect(h.now, ConnId(1));
    h.collect(out);
    assert_eq!(
        h.status().in_flight,
        1,
        "still held after the connection closed"
    );
    h.run_until(secs(59.0));
    assert_eq!(h.status().in_flight, 1);
    h.run_until(secs(60.0));
    assert_eq!(h.status().in_flight, 0);
    assert!(h.broker.release(h.now, lease).is_err());
}

#[test]
fn a_detached_lease_can_be_reported_from_another_connection() {
    let mut h = Harness::new(BrokerConfig::default());
    let t = h.acquire(1, |r| r.detached_ttl = Some(secs(60.0)));
    h.success(h.lease(t).unwrap(), 1, 1);
    assert_eq!(h.status().in_flight, 0);
    assert_eq!(h.broker.next_wakeup(h.now), None, "its expiry is forgotten");
}

#[test]
fn invalid_acquires_are_rejected_with_a_reason() {
    let mut h = Harness::new(BrokerConfig::default());
    let t = h.acquire(1, |r| r.model = " ".into());
    assert!(matches!(
        &h.answer(t).unwrap().2,
        Response::Rejected(r) if r.reason.contains("model")
    ));
    let t = h.acquire(1, |r| r.detached_ttl = Some(Duration::ZERO));
    assert!(matches!(
        &h.answer(t).unwrap().2,
        Response::Rejected(r) if r.reason.contains("TTL")
    ));
}

#[test]
fn a_blocked_key_fails_fast_until_the_block_ends() {
    let mut h = Harness::with_limits("sonnet", rpm(1));
    h.acquire(1, |_| {});
    let waiting = h.acquire(2, |_| {});
    let other_key = h.acquire(3, |r| r.key = key("other"));
    let out = h.broker.lock_out_key(
        h.now,
        key("k"),
        h.now + secs(60.0),
        "spend cap reached".into(),
        None,
    );
    h.collect(out);
    assert!(matches!(
        &h.answer(waiting).unwrap().2,
        Response::Rejected(r) if r.reason == "spend cap reached"
    ));
    assert!(h.lease(other_key).is_some());
    let again = h.acquire(4, |r| r.model = "claude-opus-4-1".into());
    assert!(matches!(&h.answer(again).unwrap().2, Response::Rejected(_)));
    h.run_until(secs(60.0));
    let after = h.acquire(5, |r| r.model = "claude-opus-4-1".into());
    assert!(h.lease(after).is_some());
}

#[test]
fn absurd_durations_are_clamped_not_fatal() {
    let mut h = Harness::with_limits("sonnet", rpm(1));
    h.acquire(1, |_| {});
    let waiting = h.acquire(2, |r| r.deadline = Some(Duration::MAX));
    let detached = h.acquire(3, |r| {
        r.key = key("other");
        r.detached_ttl = Some(Duration::MAX);
    });
    assert!(h.lease(waiting).is_none());
    let lease = h.lease(detached).unwrap();
    h.report(lease, rate_limited(f64::MAX / 1e300, "x"));
    let t = h.acquire(4, |r| r.model = "claude-opus-4-1".into());
    h.report(
        h.lease(t).unwrap(),
        Settlement::Overloaded {
            retry_after: Some(Duration::MAX),
        },
    );
    let far = h
        .broker
        .time_base()
        .to_instant(SystemTime::UNIX_EPOCH + Duration::from_secs(1 << 40));
    let out = h.broker.pause(h.now, key("k"), "opus", far);
    h.collect(out);
    assert!(h.broker.next_wakeup(h.now).is_some());
    h.run_until(secs(120.0));
    assert!(
        h.lease(waiting).is_some(),
        "still served at the refill pace"
    );
}

#[test]
fn a_limit_learned_mid_flight_accounts_for_the_calls_in_flight() {
    let mut h = Harness::new(BrokerConfig::default());
    let t = h.acquire(1, |r| r.input_tokens = Some(10_000));
    let other = h.acquire(2, |r| r.input_tokens = Some(10_000));
    // A response teaches itpm = 30,000 with 29,000 left when call 1 arrived. Call 2 was
    // granted after it: its 10,000 come off too.
    let mut headers = RateLimitHeaders::default();
    headers.input_tokens.limit = Some(30_000);
    headers.input_tokens.remaining = Some(29_000);
    h.report_with(
        h.lease(t).unwrap(),
        Settlement::Success {
            usage: Usage {
                input_tokens: 1000,
                ..Default::default()
            },
        },
        headers,
    );
    assert_eq!(h.status().available.input_tokens, Some(19_000));
    // Call 2 is given back unused: its reservation returns, and no more.
    let out = h.broker.release(h.now, h.lease(other).unwrap()).unwrap();
    h.collect(out);
    assert_eq!(h.status().available.input_tokens, Some(29_000));
}

#[test]
fn a_429_refunds_the_output_reservation() {
    let mut h = Harness::with_limits("sonnet", tokens(100_000, 10_000));
    let t = h.acquire(1, |r| r.output_tokens = Some(500));
    h.report(
        h.lease(t).unwrap(),
        rate_limited(1.0, "50 requests per minute"),
    );
    assert_eq!(h.status().available.output_tokens, Some(10_000));
}

// --- Restarts -------------------------------------------------------------------------------

#[test]
fn a_snapshot_restores_pauses_limits_levels_and_averages() {
    let mut h = Harness::with_limits("sonnet", tokens(60_000, 60_000));
    let a = h.acquire(1, |r| r.input_tokens = Some(30_000));
    let mut headers = RateLimitHeaders::default();
    headers.requests.limit = Some(50);
    h.report_with(
        h.lease(a).unwrap(),
        Settlement::Success {
            usage: Usage {
                input_tokens: 30_000,
                output_tokens: 700,
                ..Default::default()
            },
        },
        headers,
    );
    let b = h.acquire(2, |_| {});
    h.report(
        h.lease(b).unwrap(),
        rate_limited(120.0, "50 requests per minute"),
    );
    let saved = h.broker.snapshot(h.now);
    let saved_at = h.broker.time_base().to_wall(h.now);

    // A new daemon starts 30 s later (on both clocks).
    let t1 = h.now + secs(30.0);
    let wall1 = saved_at + secs(30.0);
    let mut config = BrokerConfig::default();
    config
        .limits
        .per_class
        .insert("sonnet".into(), tokens(60_000, 60_000));
    let mut restored = Broker::new(
        config,
        TimeBase {
            instant: t1,
            wall: wall1,
        },
        1,
    );
    restored.restore(saved, saved_at, t1, wall1);
    let status = restored
        .status(t1)
        .into_iter()
        .find(|s| s.budget.model_class == "sonnet")
        .unwrap();
    assert_eq!(status.limits.rpm, Some(50), "learned limit kept");
    // The pause had 120 s to go when saved: 90 s are left.
    assert_eq!(status.paused_until, Some(wall1 + secs(90.0)));
    // The second call reserved the running average (30,000), leaving 0; 30 s of refill at
    // 1,000/s while the daemon was down brings 30,000 back.
    assert_eq!(status.available.input_tokens, Some(30_000));
    // The requests bucket was drained by the 429: 30 s of refill at 50/min = 25.
    assert_eq!(status.available.requests, Some(25));
    // The output average carried over: the next acquire reserves ~700 (capped by max_tokens).
    let out = restored.acquire(
        t1 + secs(90.0),
        Ticket {
            conn: ConnId(9),
            request: 1,
        },
        &Acquire {
            key: key("k"),
            model: SONNET.into(),
            priority: Priority::Normal,
            client_id: "c".into(),
            input_tokens: Some(0),
            output_tokens: None,
            max_tokens: None,
            deadline: None,
            detached_ttl: None,
        },
    );
    assert!(
        matches!(&out[0], Output::Answer { response: Response::Granted(g), .. } if g.lease.0 >= 3)
    );
    let after = restored
        .status(t1 + secs(90.0))
        .into_iter()
        .find(|s| s.budget.model_class == "sonnet")
        .unwrap();
    assert_eq!(after.available.output_tokens, Some(60_000 - 700));
}

#[test]
fn a_stopping_broker_answers_waiters_and_refuses_new_acquires_but_takes_reports() {
    let mut h = Harness::with_limits("sonnet", rpm(1));
    let held = h.acquire(1, |_| {});
    let waiting = h.acquire(2, |_| {});
    let out = h.broker.stop();
    h.collect(out);
    assert!(
        matches!(&h.answer(waiting).unwrap().2, Response::Error(e) if e.kind == ErrorKind::Stopping)
    );
    let late = h.acquire(3, |r| r.key = key("other"));
    assert!(
        matches!(&h.answer(late).unwrap().2, Response::Error(e) if e.kind == ErrorKind::Stopping)
    );
    assert_eq!(h.broker.leases_in_flight(), 1);
    h.success(h.lease(held).unwrap(), 1, 1);
    assert_eq!(h.broker.leases_in_flight(), 0);
}

// --- Time -----------------------------------------------------------------------------------------

#[test]
fn next_wakeup_is_the_earliest_of_refill_deadline_pause_and_expiry() {
    let mut h = Harness::with_limits("sonnet", rpm(1));
    assert_eq!(h.broker.next_wakeup(h.now), None);
    h.acquire(1, |_| {});
    h.acquire(2, |_| {}); // refill: 60 s
    assert_eq!(h.broker.next_wakeup(h.now), Some(h.t0 + secs(60.0)));
    h.acquire(3, |r| r.deadline = Some(secs(20.0)));
    assert_eq!(h.broker.next_wakeup(h.now), Some(h.t0 + secs(20.0)));
    h.acquire(4, |r| {
        r.key = key("other");
        r.detached_ttl = Some(secs(5.0));
    });
    assert_eq!(h.broker.next_wakeup(h.now), Some(h.t0 + secs(5.0)));
}

#[test]
fn status_shows_pause_times_on_the_wall_clock() {
    let mut h = Harness::new(BrokerConfig::default());
    let a = h.acquire(1, |_| {});
    h.report(h.lease(a).unwrap(), rate_limited(30.0, "x"));
    let wall = h.broker.time_base().wall;
    assert_eq!(h.status().paused_until, Some(wall + secs(30.0)));
    h.run_until(secs(31.0));
    assert_eq!(h.status().paused_until, None);
}
