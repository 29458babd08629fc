//! The broker's rules, each on a fake clock.

use std::time::{Duration, Instant, SystemTime};

use pacer_api::ratelimit::RateLimitHeaders;
use pacer_protocol::message::{
    Acquire, BudgetStatus, ErrorKind, Event, LeaseId, Rejected, Reported, Response, Usage,
};
use pacer_protocol::{BudgetOwner, KeyFingerprint, LimitKind, Priority};

use super::*;

mod accounts;
mod caps;
mod costs;
mod fairness;
mod hardening;
mod limits;
mod pauses;
mod properties;
mod queues;
mod restarts;
mod shared;
mod starts;
mod throttles;
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
        self.acquire_from(conn, None, edit)
    }

    /// Sends an acquire on connection `conn` for Claude Code session `session`, as the gateway
    /// does; returns its ticket.
    fn acquire_from(
        &mut self,
        conn: u64,
        session: Option<&str>,
        edit: impl FnOnce(&mut Acquire),
    ) -> Ticket {
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
            max_share_bp: None,
        };
        edit(&mut req);
        let ticket = Ticket {
            conn: ConnId(conn),
            request: self.next_request,
        };
        self.next_request += 1;
        let origin = Origin {
            session: session.map(Arc::from),
        };
        let out = self.broker.acquire_from(self.now, ticket, &req, &origin);
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

    fn report(&mut self, lease: LeaseId, settlement: Settlement) -> Reported {
        self.report_with(lease, settlement, RateLimitHeaders::default())
    }

    fn report_with(
        &mut self,
        lease: LeaseId,
        settlement: Settlement,
        headers: RateLimitHeaders,
    ) -> Reported {
        let (out, reported) = self
            .broker
            .report(self.now, lease, settlement, &headers)
            .expect("lease is held");
        self.collect(out);
        reported
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

fn tokens(itpm: u64, otpm: u64) -> LimitSet {
    LimitSet {
        itpm: Some(itpm),
        otpm: Some(otpm),
        ..Default::default()
    }
}

fn rate_limited(retry_after: f64, message: &str) -> Settlement {
    Settlement::RateLimited {
        retry_after: Some(secs(retry_after)),
        message: Some(message.into()),
        rejection: None,
    }
}
