//! Input estimates for clients that make their own HTTP calls: the daemon's calibration, asked
//! and taught over the socket, as the gateway uses it for its own requests.

use pacer_protocol::message::{Calibrate, EstimateInput, Request, Response};

use super::{Client, expect_ack, unexpected};
use crate::error::Error;
use crate::fail_mode::FailMode;

impl Client {
    /// The input tokens to reserve for a Messages request body of `body_bytes`, by the
    /// calibration the daemon's gateway keeps for this client (one token per four bytes before it
    /// knows better). When the daemon cannot be reached and the client fails open, that default.
    pub async fn estimate_input(&self, body_bytes: usize) -> Result<u64, Error> {
        let request = || {
            Request::Estimate(EstimateInput {
                client_id: self.inner.client_id.clone(),
                body_bytes: body_bytes as u64,
            })
        };
        match self.call(request).await {
            Ok((Response::Estimate(tokens), _)) => Ok(tokens),
            Ok((other, _)) => Err(unexpected(other)),
            Err(e) if e.is_unreachable() && self.inner.fail_mode == FailMode::Open => {
                Ok((body_bytes as u64).div_ceil(4))
            }
            Err(e) => Err(e),
        }
    }

    /// Tells the daemon how many input tokens (uncached input plus cache writes) a request body
    /// of `body_bytes` really counted, so that later estimates learn from it.
    pub async fn calibrate(&self, body_bytes: usize, counted_input: u64) -> Result<(), Error> {
        let request = || {
            Request::Calibrate(Calibrate {
                client_id: self.inner.client_id.clone(),
                body_bytes: body_bytes as u64,
                counted_input,
            })
        };
        match self.call(request).await {
            Ok((response, _)) => expect_ack(response),
            Err(e) if e.is_unreachable() && self.inner.fail_mode == FailMode::Open => Ok(()),
            Err(e) => Err(e),
        }
    }
}
