//! Waiters, and the leases they become when granted.

use std::sync::Arc;
use std::time::{Duration, Instant};

use pacer_protocol::Priority;

use super::budget::Reservation;
use super::queue::Mark;
use super::{ConnId, Costs, Ticket};

/// An acquire waiting in a budget's queue.
#[derive(Debug)]
pub struct Waiter {
    pub ticket: Ticket,
    pub budget: usize,
    pub client: Arc<str>,
    pub priority: Priority,
    /// What it will reserve when granted.
    pub cost: Costs,
    /// Where it joined the queue, for estimating its remaining wait if it times out.
    pub mark: Mark,
    pub deadline: Option<Instant>,
    /// Carried over to the lease: the permit will outlive the connection.
    pub detached_ttl: Option<Duration>,
    pub enqueued_at: Instant,
}

/// A granted permit that has not been settled yet.
#[derive(Debug)]
pub struct Lease {
    pub budget: usize,
    /// The connection whose closing settles the lease; `None` for a detached lease.
    pub owner: Option<ConnId>,
    /// When a detached lease settles by itself.
    pub expires: Option<Instant>,
    /// What was reserved, to be refunded or charged when the real usage is reported.
    pub reservation: Reservation,
    /// Per kind: no bucket existed when this was granted (the limit was unknown), so the call
    /// went out unmetered. While such calls are in flight, a new bucket is still calibrating.
    pub unmetered: [bool; 3],
}
