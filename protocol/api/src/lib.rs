//! What pacer knows of the Anthropic API, in one place: the daemon (its gateway and its
//! report handling), the Rust client and the Python package all use this crate, and none of
//! them reaches into another for it.
//!
//! The crate is pure: no async runtime, HTTP stack, socket or Python binding. It reads bytes
//! and headers it is given and decides; the callers do the I/O.
//!
//! A tour, in the order a call meets them:
//!
//! - [`path`]: which endpoint a request is ([`Endpoint`]: Messages, `count_tokens`, anything
//!   else), read leniently so that no spelling of the Messages path goes around the budget.
//! - [`request`]: what is read of a request's headers: the key (`x-api-key`, or an
//!   `Authorization: Bearer` token), Claude Code's session id, and pacer's own `x-pacer-*`.
//! - [`fields`]: the model and `max_tokens` of a Messages body, read leniently.
//! - [`call`]: the gated call, acquire → send → the answer, as a sans-IO state machine
//!   ([`GatedCall`]): what to do with each kind of answer, held and sent again, passed on.
//! - [`answer`]: an answer kept whole ([`Answer`]) and its [`answer::Kind`] (success, a 429
//!   of some kind, an overload, the caller's mistake, a failure); the answers pacer gives in
//!   the API's shape.
//! - [`throttle`]: which kind a 429 is — per-minute, a spent window, the spend cap, or the bare,
//!   request-scoped one — and whether the API allows a retry at all.
//! - [`usage`]: the usage (and mid-stream errors) of an answer as it streams past, SSE or JSON,
//!   compressed or not.
//! - [`outcome`]: the report an answer makes ([`pacer_protocol::message::Outcome`]), the usage
//!   and error message of a body, the spend cap, the most input a body can have counted.
//! - [`ratelimit`]: the response headers on limits: `retry-after` in its three forms,
//!   `anthropic-ratelimit-*` (and OpenAI-style `x-ratelimit-*`), the organization and
//!   workspace; [`unified`]: a subscription's windows (`anthropic-ratelimit-unified-*`).
//!
//! What pacer's processes say to each other about these (a report's outcome, a budget's
//! name) is `pacer-protocol`'s, which this crate builds on.

pub mod answer;
pub mod call;
pub mod fields;
pub mod outcome;
pub mod path;
pub mod ratelimit;
pub mod request;
pub mod throttle;
pub mod unified;
pub mod usage;

pub use answer::Answer;
pub use call::{Action, GatedCall, Refusal};
pub use path::Endpoint;
