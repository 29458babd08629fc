//! What pacer knows about the Anthropic API, shared by the daemon's gateway and by clients that
//! pace their own HTTP calls (the Python transport): one implementation of each.
//!
//! - [`path`]: which endpoint a request is, read leniently so no spelling goes around the gate.
//! - [`fields`]: the model and `max_tokens` of a Messages body, and the size the estimate uses.
//! - [`usage`]: the usage (and mid-stream errors) of an answer, SSE or JSON, as it streams past.
//! - [`policy`]: what an answer means (spend cap, overload retries, input bounds, messages).

pub mod fields;
pub mod path;
pub mod policy;
pub mod usage;

/// The header a client may set to choose its priority (taken off before the request goes on).
pub const PRIORITY_HEADER: &str = "x-pacer-priority";
