//! The contract between `pacerd` and the processes that ask it for permits.
//!
//! Everything two pacer processes must agree on lives here, and nothing else:
//!
//! - [`message`]: the [`Request`] and [`Response`] enums, wrapped in [`RequestFrame`] /
//!   [`ResponseFrame`] so one connection can carry many requests at once; [`status`]: what a
//!   status snapshot holds; [`event`]: what subscribers are streamed.
//! - [`budget`]: the names the daemon files its budgets under: [`KeyFingerprint`] (the API key
//!   never crosses the socket), [`Priority`], [`LimitKind`].
//! - [`codec`]: framing (a 4-byte length prefix, 1 MiB cap) and bincode encoding.
//! - [`endpoint`]: where the daemon listens on this machine.
//! - [`gateway`]: how `pacer run` names a wrapped process in the HTTP gateway's URL.
//! - `io` (feature `io`): frames over a local socket with tokio — the reading half and a
//!   non-blocking outbox — shared by the daemon and the client library.
//! - [`report`]: a report held to a size that always fits one frame.
//! - [`text`]: text from outside, held to a length where it enters.
//! - [`throttle`]: the kinds of 429 ([`Throttle`]), each with what pacer does about it.
//!
//! Without the `io` feature the crate is free of any async runtime, so that any client, blocking
//! or async, can speak the protocol. What pacer knows of the Anthropic API itself (its headers,
//! paths, bodies and answers) is not part of this contract: it is the `pacer-api` crate's.
//!
//! # Evolving the wire format
//! bincode encodes enum variants by index and struct fields by position. So: the handshake
//! ([`Request::Hello`] / [`Response::Welcome`] / [`Response::Error`]) is frozen; new variants are only
//! appended; a payload gains a field only with a new [`PROTOCOL_VERSION`] (peers of different
//! versions refuse each other at the handshake, so none misreads the other); and every
//! incompatible change bumps it, with golden fixtures for the new version.

pub mod budget;
pub mod codec;
pub mod endpoint;
pub mod event;
pub mod gateway;
#[cfg(feature = "io")]
pub mod io;
pub mod message;
pub mod report;
pub mod status;
pub mod text;
pub mod throttle;

pub use budget::{BudgetOwner, KeyFingerprint, LimitKind, Priority};
pub use codec::{FrameError, MAX_FRAME_LEN};
pub use message::{Request, RequestFrame, Response, ResponseFrame};
pub use throttle::Throttle;

/// The version of the wire format spoken by this build. Exchanged in the handshake; a daemon and a
/// client with different versions refuse to talk rather than misread each other.
pub const PROTOCOL_VERSION: u32 = 7;
