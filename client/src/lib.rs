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
//! This crate is the library only (the `pacer` command is the `pacer-cli` crate): it needs no
//! CLI parser, HTTP client or logger of its own.
//!
//! A tour of the crate, each module importing only those below it:
//! - [`ClientBuilder`] (in `builder`): where the daemon is, the fail mode, who is asking.
//! - [`Client`] (in `client`): connects, reconnects, and applies the [`FailMode`] when the daemon
//!   is away.
//! - [`blocking`]: the same for code without async.
//! - [`autostart`]: starting `pacerd` in the background when none answers.
//! - [`Permit`] (in `permit`): what you get; report it, release it, or drop it (settled as
//!   "unknown outcome").
//! - `connection`: one multiplexed connection (private).
//! - [`AcquireRequest`] (in `request`): what to ask for.
//! - [`outcome`]: builds the report from an HTTP status, headers and JSON body (from
//!   `pacer-api`, which holds everything pacer knows of the Anthropic API).
//! - [`FailMode`] (in `fail_mode`) and [`Error`] (in `error`).

pub mod autostart;
pub mod blocking;
mod builder;
mod client;
mod connection;
mod error;
mod fail_mode;
mod permit;
mod request;

pub use builder::ClientBuilder;
pub use client::{Client, Subscription};
pub use error::Error;
pub use fail_mode::FailMode;
pub use pacer_api::outcome;
pub use pacer_protocol::Throttle;
pub use pacer_protocol::message::{
    Event, GatewayInfo, LeaseId, Outcome, Reported, RouteInfo, StatusSnapshot, Usage,
};
pub use pacer_protocol::{KeyFingerprint, Priority};
pub use permit::Permit;
pub use request::AcquireRequest;
