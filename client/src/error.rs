//! What can go wrong when talking to pacerd.

use std::path::PathBuf;
use std::time::{Duration, SystemTime};

use pacer_protocol::message::ErrorKind;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Nothing answers at the socket (the daemon is not running, or runs elsewhere).
    #[error(
        "no pacerd answers at {} ({error}). Start one: `pacerd` in a terminal, `pacer service \
         install` to run it as a service, or `pacer run -- COMMAND`, which starts one; \
         PACER_SOCKET (or --socket) names another socket",
        path.display()
    )]
    Unreachable {
        path: PathBuf,
        /// Why (shown in the message; not a separate cause, so it is said once).
        error: std::io::Error,
    },
    /// The daemon closed the connection (it stopped or restarted).
    #[error("the connection to pacerd at {} was lost", path.display())]
    Disconnected { path: PathBuf },
    /// The daemon does not let this user in (its `[access]` settings).
    #[error("pacerd at {} refused the connection: {message}", path.display())]
    Denied { path: PathBuf, message: String },
    /// What answers at the default socket is not this user's own pacerd: the socket's
    /// directory belongs to, or is writable by, someone else, or the daemon runs as another
    /// user. Its gateway could see the API key, so it is not used.
    #[error(
        "refusing the pacerd at {}: {reason}. Remove it, or name a socket you trust with \
         PACER_SOCKET or --socket",
        path.display()
    )]
    Untrusted { path: PathBuf, reason: Distrust },
    /// pacerd's answer could not be read. Asking again would get the same answer, so it is not
    /// retried.
    #[error(
        "cannot read pacerd's answer at {}: {reason} (is pacer from the same release as pacerd?)",
        path.display()
    )]
    Unreadable { path: PathBuf, reason: String },
    /// A message could not be sent to pacerd: even bounded, it does not fit one frame.
    #[error("cannot send {what} to pacerd: {reason}")]
    Unsendable { what: &'static str, reason: String },
    /// Client and daemon come from incompatible releases.
    #[error("{message}")]
    VersionMismatch { message: String },
    /// The acquire's deadline passed before a permit was free: how much longer it would have
    /// waited, and what held it (`batch work is held at 80 % of the 5-hour window until 16:40`;
    /// empty when the daemon said nothing).
    #[error("no permit within the deadline{}; the wait would have been about {} more", reason_text(reason), humantime::format_duration(round(*retry_after)))]
    TimedOut {
        retry_after: Duration,
        reason: String,
    },
    /// The daemon refuses this acquire: it can never be granted, or not before `until` (a spent
    /// subscription window's reset, the end of a spend-cap block).
    #[error("pacerd rejected the acquire: {reason}{}", until_text(*until))]
    Rejected {
        reason: String,
        until: Option<SystemTime>,
    },
    /// The daemon refused a request (an unknown lease, invalid arguments).
    #[error("pacerd refused the request: {message}")]
    Daemon { kind: ErrorKind, message: String },
    /// The daemon answered something this client does not expect: a bug on one side.
    #[error("unexpected answer from pacerd: {0}")]
    Unexpected(String),
}

fn reason_text(reason: &str) -> String {
    match reason.trim() {
        "" => String::new(),
        reason => format!(" ({reason})"),
    }
}

fn until_text(until: Option<SystemTime>) -> String {
    match until {
        Some(at) => format!(" (until {})", humantime::format_rfc3339_seconds(at)),
        None => String::new(),
    }
}

/// Whole seconds (rounded up) for waits of a second or more; milliseconds below.
fn round(d: Duration) -> Duration {
    if d >= Duration::from_secs(1) {
        Duration::from_secs(d.as_secs_f64().ceil() as u64)
    } else {
        Duration::from_millis(d.as_millis() as u64)
    }
}

impl Error {
    /// Whether the daemon could not be reached at all (as opposed to refusing something).
    pub fn is_unreachable(&self) -> bool {
        matches!(self, Error::Unreachable { .. } | Error::Disconnected { .. })
    }
}

/// Why the daemon at the default socket is not trusted.
#[derive(Debug, thiserror::Error)]
pub enum Distrust {
    #[error(transparent)]
    Directory(#[from] pacer_protocol::endpoint::UnsafeDir),
    #[error("cannot tell who runs it ({0})")]
    Unknown(std::io::Error),
    #[error(
        "it runs as uid {uid}, not as you (uid {me}) or root{}",
        pid.map_or(String::new(), |pid| format!(" (pid {pid})"))
    )]
    Stranger { uid: u32, me: u32, pid: Option<i32> },
    #[error("the kernel does not say who runs it")]
    Unsaid,
}
