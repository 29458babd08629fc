//! `pacerd`: one shared rate-limit budget per API key × model class, for every process on the
//! machine.
//!
//! A tour of the crate:
//!
//! - [`broker`]: the heart. A pure, synchronous state machine: budgets and their token buckets,
//!   the fair queue of waiters, leases, the shared pause and the overload backoff. Every method
//!   takes `now`; nothing in it does I/O.
//! - [`server`]: the socket server around the broker: a task per connection, a writer per
//!   connection, and one timer that ticks the broker. [`run`] is its entry point, used by `pacerd`
//!   and by the tests alike.
//! - [`gateway`]: the local HTTP gateway (`ANTHROPIC_BASE_URL`), an in-process client of the
//!   broker, so Claude Code and the SDKs share the budgets unchanged.
//! - [`listener`]: claiming the endpoint (socket permissions, stale sockets, a second daemon).
//! - [`config`]: the TOML configuration and its error messages.
//! - [`persist`]: the state file that carries pauses, limits and bucket levels across restarts.
//! - [`signals`]: SIGINT/SIGTERM as a future.

#[cfg(unix)]
pub mod activation;
pub mod broker;
pub mod config;
pub mod gateway;
pub mod listener;
pub mod logging;
pub mod persist;
pub mod server;
pub mod signals;

pub use config::Config;
pub use server::{Setup, run, serve};
