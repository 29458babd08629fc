//! What goes in and out of the broker: who asked (a [`Ticket`]), what it says back (an
//! [`Output`]), and how a call went ([`Settlement`]).

use std::time::Duration;

use pacer_protocol::message::{Event, LeaseId, Response, Usage};

use super::shared::{Claim, SharedOp};
use pacer_api::Answer;

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
    /// [`Broker::set_events`] is on; the rest are rare and always produced.
    Event(Event),
    /// Ask the shared store for capacity (see `shared`); answered through
    /// [`Broker::claim_answered`].
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

/// Why a report or release was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BrokerError {
    #[error("lease {0} is not held: it was already settled, it expired, or it was never granted")]
    UnknownLease(LeaseId),
}
