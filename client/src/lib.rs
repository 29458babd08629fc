//! Ask pacerd for a permit before each API call, and report how the call went.
//!
//! ```no_run
//! use pacer_client::{AcquireRequest, Client, outcome};
//!
//! # async fn call() -> Result<(), Box<dyn std::error::Error>> {
//! let client = Client::connect().await?;
//! let key = std::env::var("ANTHROPIC_API_KEY")?;
//! let permit = client
//!     .acquire(AcquireRequest::new(&key, "claude-sonnet-4-5").input_tokens(1200).max_tokens(1024))
//!     .await?;
//! // ... make the call, getting `status`, `headers` and the JSON `body` ...
//! # let (status, body) = (200u16, serde_json::json!({}));
//! # let headers: Vec<(String, String)> = Vec::new();
//! permit.report(outcome::from_response(status, headers, Some(&body))).await?;
//! # Ok(()) }
//! ```
//!
//! A tour of the crate:
//! - [`Client`] (in `client`): connects, reconnects, and applies the [`FailMode`] when the daemon
//!   is away.
//! - [`AcquireRequest`] (in `request`): what to ask for.
//! - [`Permit`] (in `permit`): what you get; report it, release it, or drop it (settled as
//!   "unknown outcome").
//! - [`outcome`]: builds the report from an HTTP status, headers and JSON body.
//! - [`blocking`]: the same for code without async.
//! - `connection`: one multiplexed connection (private).

pub mod blocking;
mod client;
mod connection;
mod error;
pub mod outcome;
mod permit;
mod request;

pub use client::{Client, ClientBuilder, FailMode, Subscription};
pub use error::Error;
pub use pacer_protocol::message::{Event, GatewayInfo, LeaseId, Outcome, StatusSnapshot, Usage};
pub use pacer_protocol::{KeyFingerprint, Priority};
pub use permit::Permit;
pub use request::AcquireRequest;
