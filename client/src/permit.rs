//! A granted permit: make the call, then report how it went.

use std::sync::Arc;
use std::time::Duration;

use pacer_protocol::message::{LeaseId, Outcome, Release, Report, Reported, Request, Response};

use crate::connection::{Connection, expect_reported, unexpected};
use crate::error::Error;
use crate::fail_mode::FailMode;

/// Permission to make one API call.
///
/// Report the outcome with [`Permit::report`] (or hand it back unused with [`Permit::release`]).
/// **Dropping an unreported permit settles it as "unknown outcome"**: the reservation stays
/// spent and the in-flight slot is freed; the daemon learns nothing about real usage.
///
/// When the daemon could not be reached and the client fails open, the permit is *unbrokered*:
/// the call proceeds without pacing, and reporting it does nothing.
#[must_use = "make the call, then report the permit (dropping it settles it as unknown)"]
pub struct Permit {
    /// `None` for an unbrokered permit.
    held: Option<Brokered>,
    waited: Duration,
    fail_mode: FailMode,
}

struct Brokered {
    lease: LeaseId,
    connection: Arc<Connection>,
}

impl Permit {
    pub(crate) fn brokered(
        lease: LeaseId,
        connection: Arc<Connection>,
        waited: Duration,
        fail_mode: FailMode,
    ) -> Self {
        Self {
            held: Some(Brokered { lease, connection }),
            waited,
            fail_mode,
        }
    }

    pub(crate) fn unbrokered() -> Self {
        Self {
            held: None,
            waited: Duration::ZERO,
            fail_mode: FailMode::Open,
        }
    }

    /// The lease id, `None` if unbrokered.
    pub fn lease(&self) -> Option<LeaseId> {
        self.held.as_ref().map(|h| h.lease)
    }

    /// Whether the daemon granted this permit (rather than the client failing open).
    pub fn is_brokered(&self) -> bool {
        self.held.is_some()
    }

    /// How long the acquire waited in the daemon's queue.
    pub fn waited(&self) -> Duration {
        self.waited
    }

    /// Hands the lease over to be settled elsewhere (by id, from another process): this permit
    /// will not settle it when dropped. Meant for detached permits
    /// ([`crate::AcquireRequest::detached`]), which settle by themselves after their TTL.
    pub fn detach(mut self) -> Option<LeaseId> {
        self.held.take().map(|held| held.lease)
    }

    /// Reports how the call went (see [`crate::outcome::from_response`] to build the outcome).
    /// Says what pacerd took a 429 for, and until when it holds the budget; `None` when no
    /// daemon took the report (the permit was not brokered, or the daemon went away).
    pub async fn report(mut self, outcome: Outcome) -> Result<Option<Reported>, Error> {
        let Some(held) = self.held.take() else {
            return Ok(None);
        };
        let lease = held.lease;
        let request = Request::Report(Report {
            lease,
            // Held to a size that always fits one frame, however large the answer was.
            outcome: outcome.bounded(),
        });
        match self.settle(&held, request).await {
            Ok(Some(response)) => expect_reported(response).map(Some),
            Ok(None) => Ok(None),
            Err(e @ Error::Unsendable { .. }) => {
                // Never left in flight: settled as unknown, and the caller hears why.
                held.connection.send_and_forget(Request::Report(Report {
                    lease,
                    outcome: Outcome::Unknown,
                }));
                Err(e)
            }
            Err(e) => Err(e),
        }
    }

    /// Gives the permit back unused (the call was not made): everything it reserved is
    /// refunded.
    pub async fn release(mut self) -> Result<(), Error> {
        let Some(held) = self.held.take() else {
            return Ok(());
        };
        let request = Request::Release(Release { lease: held.lease });
        match self.settle(&held, request).await? {
            None | Some(Response::Ack) => Ok(()),
            Some(other) => Err(unexpected(other)),
        }
    }

    /// Sends a report or release; `None` when the daemon went away (and settled the lease as
    /// unknown when the connection closed) and the client fails open.
    async fn settle(&self, held: &Brokered, request: Request) -> Result<Option<Response>, Error> {
        match held.connection.call(request).await {
            Ok(response) => Ok(Some(response)),
            Err(e) if e.is_unreachable() && self.fail_mode == FailMode::Open => {
                tracing::debug!("could not report lease {}: {e}", held.lease);
                Ok(None)
            }
            Err(e) => Err(e),
        }
    }
}

impl Drop for Permit {
    fn drop(&mut self) {
        if let Some(held) = self.held.take() {
            held.connection.send_and_forget(Request::Report(Report {
                lease: held.lease,
                outcome: Outcome::Unknown,
            }));
        }
    }
}

impl std::fmt::Debug for Permit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Permit")
            .field("lease", &self.lease())
            .field("waited", &self.waited)
            .finish()
    }
}
