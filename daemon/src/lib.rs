//! `pacerd`: one shared rate-limit budget per account × model class, for every process on the
//! machine.
//!
//! A tour of the crate, bottom up; each layer imports only the ones above it in this list:
//!
//! - the broker: the heart, a crate of its own (`pacer-broker`, in `daemon/broker/`, which may
//!   depend on no I/O crate). A pure, synchronous state machine: budgets and their token
//!   buckets, the fair queue of waiters, leases, the shared pause and the overload backoff.
//!   Every method takes `now`; nothing in it does I/O.
//! - [`config`]: the TOML configuration and its error messages.
//! - [`throttle`]: warnings that could repeat without end, logged at most once per interval.
//! - [`persist`]: the state file that carries pauses, limits and bucket levels across restarts.
//! - [`hub`]: the broker shared by every front end: one mutex, the timer that ticks it, the
//!   request handlers, in-process sessions, and delivery of answers and events.
//! - [`metrics`]: Prometheus metrics read from the hub at each scrape (served by the gateway).
//! - [`cluster`]: budgets shared with other daemons through Redis — the I/O half of the
//!   broker's `shared` module (claims, settlements, events, heartbeat, Redis going away).
//! - [`alerts`]: alerts (`[alerts]`) — what to tell, from what the hub shows, once per
//!   crossing; and telling it (a command, a webhook, the desktop), throttled.
//! - [`accept`]: the one accept loop (caps, refusals, a task per connection) and the two-step
//!   shutdown, shared by both servers.
//! - [`server`]: the socket server (pacer's protocol, one task per connection), and claiming
//!   the socket.
//! - [`gateway`]: the local HTTP gateway (`ANTHROPIC_BASE_URL`), a sibling of the socket
//!   server: Claude Code and the SDKs share the budgets unchanged.
//! - [`service`]: the composition root. [`service::run`] claims the listeners, starts the hub,
//!   both servers, the state saver and the systemd notifier, and takes them down in order when
//!   told to stop. `pacerd` and the tests call it alike.
//! - [`cli`]: `pacerd`'s flags.

pub mod accept;
pub mod alerts;
pub mod cli;
pub mod cluster;
pub mod config;
pub mod gateway;
pub mod hub;
pub mod metrics;
pub mod persist;
pub mod server;
pub mod service;
pub mod throttle;

pub use config::Config;
pub use service::{Setup, run};
