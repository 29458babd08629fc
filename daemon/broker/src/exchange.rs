//! What goes in and out of the broker: who asked (a [`Ticket`]), what it says back (an
//! [`Output`]), and how a call went ([`Settlement`]).

use std::time::Duration;

use pacer_api::Answer;
use pacer_api::ratelimit::RateLimitHeaders;
use pacer_protocol::message::{
    ErrorKind, ErrorReply, Event, LeaseId, Rejected, Response, SettledAs, Usage,
};
use pacer_protocol::{LimitKind, Throttle};

use super::Costs;
use super::budget::Charge;
use super::shared::{Claim, SharedOp};

/// A connection, as the server numbers them. Leases and waiters belong to one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ConnId(pub u64);

/// Where to send the answer to an acquire: the connection and the request's id on it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Ticket {
    pub conn: ConnId,
    pub request: u64,
}

/// Something the caller must deliver.
#[derive(Debug, Clone, PartialEq)]
pub enum Output {
    /// The answer to an acquire: [`Response::Granted`], [`Response::TimedOut`],
    /// [`Response::Rejected`] or [`Response::Error`] (the daemon is stopping).
    Answer { ticket: Ticket, response: Response },
    /// An event for logs and subscribers. [`Event::Granted`] is only produced while
    /// [`Broker::set_events`](crate::Broker::set_events) is on; the rest are rare and always produced.
    Event(Event),
    /// Ask the shared store for capacity (see `shared`); answered through
    /// [`Broker::claim_answered`](crate::Broker::claim_answered).
    Claim(Claim),
    /// Work for the shared store.
    Shared(SharedOp),
}

/// How a permitted call went, as the broker needs it (response headers already parsed).
#[derive(Debug, Clone, PartialEq)]
pub enum Settlement {
    Success {
        usage: Usage,
    },
    RateLimited {
        retry_after: Option<Duration>,
        message: Option<String>,
        /// The answer itself, replayed to the requests a lockout it causes refuses.
        rejection: Option<Answer>,
    },
    Overloaded {
        retry_after: Option<Duration>,
    },
    Failed,
    Unknown,
    /// A 4xx other than 429: the caller's own mistake, which the API does not count.
    ClientError {
        status: u16,
    },
    /// A 429 for the spend cap: the key's account fails fast for a while.
    SpendCapped {
        message: Option<String>,
        /// The answer itself, replayed to the requests the lockout refuses.
        rejection: Option<Answer>,
    },
}

/// What a settlement comes to.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Verdict {
    /// The kind of 429 it is, if it is one.
    pub throttle: Option<Throttle>,
    /// How it is told (`pacer watch`, the client's tally).
    pub told: SettledAs,
    /// Input and output tokens counted, believed only up to what the call could have cost: a
    /// broken or hostile answer claiming 10¹⁸ tokens must not leave the budget in debt for ever.
    pub tokens: (u64, u64),
    /// What the call used of the budget (what the shared store is charged).
    pub used: Costs,
    /// What settling its reservation does (`None` for a per-minute or window 429, which
    /// drains what it names instead, and for an unknown outcome, which keeps it all spent).
    pub charge: Option<Charge>,
    /// Whether the API answered it (a budget's first contact is over).
    pub answered: bool,
}

impl Settlement {
    /// What this settlement of a call that reserved `reserved`, and may have used up to `bound`,
    /// comes to, with its answer's `headers`.
    pub fn verdict(&self, headers: &RateLimitHeaders, reserved: &Costs, bound: &Costs) -> Verdict {
        let throttle = self.throttle(headers);
        // A bare 429 says nothing of the budget: it is settled like the caller's mistake.
        let bare = throttle == Some(Throttle::Bare);
        let tokens = match self {
            Settlement::Success { usage } => (
                usage
                    .counted_input_tokens()
                    .min(bound[LimitKind::InputTokens]),
                usage.output_tokens.min(bound[LimitKind::OutputTokens]),
            ),
            _ => (0, 0),
        };
        let told = match (self, throttle) {
            (Settlement::Success { .. }, _) => SettledAs::Success,
            (_, Some(kind)) => SettledAs::Throttled(kind),
            (Settlement::Overloaded { .. }, _) => SettledAs::Overloaded,
            (Settlement::ClientError { .. }, _) => SettledAs::ClientError,
            (Settlement::Unknown, _) => SettledAs::Unknown,
            _ => SettledAs::Failed,
        };
        let used = match self {
            Settlement::Success { .. } => Costs::new(1, tokens.0, tokens.1),
            // The caller's mistake, or a throttle of the request alone: the API processed
            // nothing, only the request counts.
            Settlement::ClientError { .. } => Costs::new(1, 0, 0),
            Settlement::RateLimited { .. } if bare => Costs::new(1, 0, 0),
            // Rejected or failed: the request and its input count, no output was produced.
            Settlement::RateLimited { .. }
            | Settlement::SpendCapped { .. }
            | Settlement::Overloaded { .. }
            | Settlement::Failed => Costs::new(1, reserved[LimitKind::InputTokens], 0),
            Settlement::Unknown => *reserved,
        };
        let charge = match self {
            Settlement::Success { .. } => Some(Charge::Used {
                input: tokens.0,
                output: tokens.1,
            }),
            Settlement::ClientError { .. } => Some(Charge::Tokens),
            Settlement::RateLimited { .. } if bare => Some(Charge::Tokens),
            Settlement::SpendCapped { .. } | Settlement::Overloaded { .. } | Settlement::Failed => {
                Some(Charge::Output)
            }
            Settlement::RateLimited { .. } | Settlement::Unknown => None,
        };
        // A bare 429 taught nothing: another call finds out.
        let answered = match self {
            Settlement::RateLimited { .. } => !bare,
            Settlement::Failed | Settlement::Unknown => false,
            _ => true,
        };
        Verdict {
            throttle,
            told,
            tokens,
            used,
            charge,
            answered,
        }
    }

    /// The kind of 429 this is, if it is one: the spend cap's, else as its headers say
    /// ([`pacer_api::throttle::classify`]) — a wait given with the report makes it a per-minute
    /// limit's.
    fn throttle(&self, headers: &RateLimitHeaders) -> Option<Throttle> {
        match self {
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
}

/// Why a report or release was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BrokerError {
    #[error("lease {0} is not held: it was already settled, it expired, or it was never granted")]
    UnknownLease(LeaseId),
}

/// A refusal that no budget in particular made (bad arguments, too many budgets).
pub(crate) fn refusal(reason: String) -> Rejected {
    Rejected {
        reason,
        until: None,
        budget: None,
    }
}

pub(crate) fn stopping() -> Response {
    Response::Error(ErrorReply {
        kind: ErrorKind::Stopping,
        message: "pacerd is stopping; retry once it is back".to_owned(),
    })
}
