//! Requests a client sends and the responses `pacerd` answers with.
//!
//! A connection opens with [`Request::Hello`]. After that a client may send any number of requests
//! without waiting for answers: each carries an id that its response echoes, so acquires that wait
//! in the queue do not hold up reports sent on the same connection.

use std::time::{Duration, SystemTime};

use serde::{Deserialize, Serialize};

pub use crate::budget::LeaseId;
use crate::budget::{KeyFingerprint, Priority};

pub use crate::event::{Event, SettledAs};
pub use crate::status::{
    AccountStatus, Available, BudgetId, BudgetStatus, ClientStatus, ClusterStatus, DaemonStatus,
    Limits, LockoutStatus, PauseCause, PriorityCeiling, RouteStatus, SessionQuery, SessionStatus,
    SessionView, StartStatus, StatusSnapshot, WaitHistogram, WindowStatus,
};
pub use crate::throttle::{Throttle, Throttles};

/// A request and the id its response will carry.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RequestFrame {
    /// Chosen by the client, unique among its requests still awaiting an answer.
    pub id: u64,
    pub request: Request,
}

/// A response and the id of the request it answers.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ResponseFrame {
    /// The id of the request being answered; 0 for an error about a frame that could not be read.
    pub id: u64,
    pub response: Response,
}

/// Everything a client can ask of the daemon.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Request {
    /// The first message on every connection. Frozen: never change this variant's position or
    /// payload. Answered by [`Response::Welcome`] or [`Response::Error`].
    Hello(Hello),
    /// Ask for a permit to make one API call. Answered by [`Response::Granted`] (possibly after a
    /// wait in the queue), [`Response::TimedOut`] or [`Response::Rejected`].
    Acquire(Acquire),
    /// Say how a permitted call went, settling its lease. Answered by [`Response::Reported`].
    Report(Report),
    /// Give a permit back unused (the call was never made): everything it reserved is refunded.
    /// Answered by [`Response::Ack`].
    Release(Release),
    /// Ask for a snapshot of every budget. Answered by [`Response::Status`].
    Status,
    /// Pause one budget until a given time (an administrator's action). Answered by
    /// [`Response::Ack`].
    Pause(Pause),
    /// Turn this request into a stream of [`Response::Event`]s that lasts as long as the connection.
    Subscribe,
    /// Ask where the daemon's HTTP gateway listens. Answered by [`Response::Gateway`].
    GatewayInfo,
    /// Ask for the part of the status snapshot from budget (and account) `from` on: a status
    /// too large for one frame comes in pages. Answered by [`Response::Status`], whose
    /// `next_page` says where the next page starts.
    StatusPage(u32),
    /// Register an upstream API for wrapped commands that had their own `ANTHROPIC_BASE_URL`:
    /// gateway requests on the route it gets are forwarded there. Answered by
    /// [`Response::Route`] (or [`Response::Error`] for a URL that is not http or https).
    RegisterRoute(RegisterRoute),
    /// Ask what a Claude Code session's account and budget look like (`pacer statusline`).
    /// Answered by [`Response::Session`].
    Session(SessionQuery),
    /// Ask how many input tokens a Messages request body of this size counts, by the
    /// calibration the gateway keeps (clients that make their own HTTP calls reserve what the
    /// gateway would). Answered by [`Response::Estimate`]. New in protocol 5.
    Estimate(EstimateInput),
    /// Say how many input tokens a request body of this size really counted, so later estimates
    /// learn from it (as the gateway does for its own requests). Answered by [`Response::Ack`].
    /// New in protocol 5.
    Calibrate(Calibrate),
}

impl Request {
    /// What the request is, in a few words (for messages about it).
    pub fn name(&self) -> &'static str {
        match self {
            Request::Hello(_) => "the handshake",
            Request::Acquire(_) => "an acquire",
            Request::Report(_) => "a report",
            Request::Release(_) => "a release",
            Request::Status | Request::StatusPage(_) => "a status request",
            Request::Pause(_) => "a pause",
            Request::Subscribe => "a subscription",
            Request::GatewayInfo => "a gateway request",
            Request::RegisterRoute(_) => "a route",
            Request::Session(_) => "a session query",
            Request::Estimate(_) => "an estimate",
            Request::Calibrate(_) => "a calibration",
        }
    }
}

/// Payload of [`Request::Estimate`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EstimateInput {
    /// Whose calibration to use (each client's bodies differ: Claude Code's are mostly cached).
    pub client_id: String,
    /// The request body's size.
    pub body_bytes: u64,
}

/// Payload of [`Request::Calibrate`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Calibrate {
    pub client_id: String,
    pub body_bytes: u64,
    /// The input tokens that counted: uncached input plus cache writes.
    pub counted_input: u64,
}

/// Payload of [`Request::RegisterRoute`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RegisterRoute {
    /// The base URL the command would have used (`https://gateway.example.com/anthropic`).
    pub upstream: String,
    /// The client that will use it, for `pacer status`.
    pub client: String,
}

/// Payload of [`Request::Hello`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Hello {
    /// The client's [`crate::PROTOCOL_VERSION`].
    pub protocol_version: u32,
    /// A short name for logs (`pacer`, `pacer-client`, a script's name).
    pub client_name: String,
    /// The client's process id, for logs.
    pub pid: u32,
}

/// Payload of [`Request::Acquire`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Acquire {
    /// The API key the call will use, as a fingerprint.
    pub key: KeyFingerprint,
    /// The model named in the call; the daemon maps it to a model class.
    pub model: String,
    pub priority: Priority,
    /// Who is asking, for fairness: clients of one priority take turns. Defaults to one identity per
    /// process in the client library.
    pub client_id: String,
    /// Estimated input tokens (uncached input plus cache writes). `None`: the budget's running
    /// average of real input is used.
    pub input_tokens: Option<u64>,
    /// Estimated output tokens. `None`: the budget's running average of real output, capped at
    /// `max_tokens`.
    pub output_tokens: Option<u64>,
    /// The call's `max_tokens`, which caps the output estimate (and is never reserved itself).
    pub max_tokens: Option<u64>,
    /// How long the caller is willing to wait, counted from when the daemon reads the request.
    /// `None` waits as long as it takes; a zero deadline only takes a permit that is free now.
    pub deadline: Option<Duration>,
    /// `Some(ttl)`: the permit outlives this connection (for shell scripts, which acquire and report
    /// from different processes) and settles as "unknown outcome" if not reported within `ttl`.
    pub detached_ttl: Option<Duration>,
    /// The most this client may use of each subscription window it touches, per window, in
    /// basis points (1000 is 10 %): `pacer run --max-share 10%`. Past it, its calls are held
    /// like batch work past its ceiling until the window resets. `None`: no cap of its own (the
    /// daemon's `[windows.max_share]` may still name one). New in protocol 7.
    pub max_share_bp: Option<u16>,
}

/// Basis points in a whole: a `max_share_bp` of 10,000 is all of a window.
pub const BASIS_POINTS: u16 = 10_000;

/// Payload of [`Request::Report`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Report {
    pub lease: LeaseId,
    pub outcome: Outcome,
}

/// How a permitted call went.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Outcome {
    /// The API answered (2xx). The real usage settles the reservation; the headers teach the
    /// daemon the limits and what remains of them.
    Success { usage: Usage, headers: Headers },
    /// The API answered 429. Every peer on the budget pauses until `retry_after` has passed (taken
    /// from the headers when `None`); the limit named in `message` (the error body's message) is
    /// drained so that grants resume at the refill pace.
    RateLimited {
        retry_after: Option<Duration>,
        headers: Headers,
        message: Option<String>,
    },
    /// The API answered 529 (overloaded): every budget of the model class backs off together.
    Overloaded { retry_after: Option<Duration> },
    /// The call failed for another reason (a 4xx or 5xx, a network error). Its output-token
    /// reservation is refunded; the request and input reservations stay spent.
    Failed,
    /// The caller does not know what happened (it dropped the permit, or its process died): the
    /// reservation stays spent and only the in-flight slot is freed.
    Unknown,
    /// The API refused the call as the caller's own mistake: a 4xx other than 429 (a malformed
    /// body, an unknown model, a bad key). Its token reservations are refunded (nothing was
    /// processed); the request stays counted. A 404 of a budget that never saw a success lets
    /// pacerd forget that budget (a model the API does not have).
    ClientError { status: u16 },
    /// The API answered 429 for the account's spend cap (`enforced_spend_limit_reached`):
    /// nothing helps until someone lifts it, so every call of the key's account fails fast for
    /// a while. New in protocol 6 (before, it was reported as `RateLimited`).
    SpendCapped {
        headers: Headers,
        message: Option<String>,
    },
}

/// Token usage as the Messages API reports it in `usage`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Usage {
    pub input_tokens: u64,
    pub output_tokens: u64,
    /// Counts toward the input-token limit.
    pub cache_creation_input_tokens: u64,
    /// Does not count toward the input-token limit (for current models).
    pub cache_read_input_tokens: u64,
}

impl Usage {
    /// The input tokens that count toward ITPM: uncached input plus cache writes.
    pub fn counted_input_tokens(&self) -> u64 {
        self.input_tokens
            .saturating_add(self.cache_creation_input_tokens)
    }
}

/// `usage` as the Messages API writes it in a response body or a streamed event, where any field
/// may be missing or null. Read it from JSON with serde, then convert.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(default)]
pub struct ApiUsage {
    pub input_tokens: Option<u64>,
    pub output_tokens: Option<u64>,
    pub cache_creation_input_tokens: Option<u64>,
    pub cache_read_input_tokens: Option<u64>,
}

impl ApiUsage {
    /// Whether no usage field was present.
    pub fn is_empty(&self) -> bool {
        *self == ApiUsage::default()
    }

    /// Overwrites `usage` with every field present here (a streamed `message_delta` carries
    /// cumulative counts for some fields).
    pub fn apply_to(&self, usage: &mut Usage) {
        let fields = [
            (self.input_tokens, &mut usage.input_tokens),
            (self.output_tokens, &mut usage.output_tokens),
            (
                self.cache_creation_input_tokens,
                &mut usage.cache_creation_input_tokens,
            ),
            (
                self.cache_read_input_tokens,
                &mut usage.cache_read_input_tokens,
            ),
        ];
        for (value, field) in fields {
            if let Some(value) = value {
                *field = value;
            }
        }
    }
}

/// Response headers as `(name, value)` pairs; names in any case.
pub type Headers = Vec<(String, String)>;

/// Payload of [`Request::Release`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Release {
    pub lease: LeaseId,
}

/// Payload of [`Request::Pause`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Pause {
    pub key: KeyFingerprint,
    /// A model name or a model class name; either selects the model class's budget.
    pub model: String,
    /// The pause lasts until then; a time in the past lifts the budget's pause.
    pub until: SystemTime,
}

/// Everything the daemon can answer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Response {
    /// Response for [`Request::Hello`]: the versions match. Frozen.
    Welcome(Welcome),
    /// The request could not be served: a version mismatch, an unknown lease, an unreadable frame.
    /// Frozen, so that clients of any version can read why they were refused.
    Error(ErrorReply),
    /// Response for [`Request::Acquire`]: go ahead and make the call.
    Granted(Granted),
    /// Response for [`Request::Acquire`]: the deadline passed before a permit was free.
    TimedOut(TimedOut),
    /// Response for [`Request::Acquire`]: this acquire can never be granted (bad arguments, too
    /// many budgets, the key is blocked). A stopping daemon answers [`Response::Error`] with
    /// [`ErrorKind::Stopping`] instead.
    Rejected(Rejected),
    /// Response for [`Request::Release`], [`Request::Pause`] and [`Request::Calibrate`]
    /// (and for [`Request::Report`] before protocol 6).
    Ack,
    /// Response for [`Request::Status`].
    Status(StatusSnapshot),
    /// One of the stream of responses to [`Request::Subscribe`].
    Event(Event),
    /// Response for [`Request::GatewayInfo`].
    Gateway(GatewayInfo),
    /// Response for [`Request::RegisterRoute`].
    Route(RouteInfo),
    /// Response for [`Request::Session`].
    Session(Box<SessionView>),
    /// Response for [`Request::Estimate`]: the input tokens to reserve.
    Estimate(u64),
    /// Response for [`Request::Report`]: the report is taken, and, for a 429, what kind it was
    /// taken for and what it holds. New in protocol 6 (before, a report was answered `Ack`).
    Reported(Reported),
}

/// Payload of [`Response::Reported`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Reported {
    /// The kind of 429 the report was taken for; `None` for any other outcome.
    pub throttle: Option<Throttle>,
    /// Until when it holds the budget: the pause of a per-minute limit, the lockout of a spent
    /// window or a spend cap. `None` for a bare 429 (it holds nobody else).
    pub until: Option<SystemTime>,
}

/// Payload of [`Response::Route`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RouteInfo {
    /// Goes into the client's base URL (see [`crate::gateway::base_url`]).
    pub id: String,
    /// The upstream, as the daemon will show it (without credentials).
    pub upstream: String,
}

/// Payload of [`Response::Gateway`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GatewayInfo {
    /// The address the gateway listens on (`127.0.0.1:4141`); `None` when it is disabled.
    pub listen: Option<String>,
    /// Where it forwards to.
    pub upstream: String,
}

/// Payload of [`Response::Welcome`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Welcome {
    pub protocol_version: u32,
    /// The daemon's crate version, for error messages and `pacer status`.
    pub daemon_version: String,
}

/// Payload of [`Response::Error`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorReply {
    pub kind: ErrorKind,
    /// A sentence for the user, naming what was wrong.
    pub message: String,
}

/// What kind of error an [`ErrorReply`] is, for callers that react to some of them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum ErrorKind {
    /// Client and daemon speak different protocol versions; the connection is closed.
    VersionMismatch,
    /// A request other than `Hello` arrived first; the connection is closed.
    HelloRequired,
    /// The frame could not be read (oversized, or not a request); the connection is closed.
    MalformedFrame,
    /// The lease named by a report or release is not held: already settled, expired, or never
    /// granted.
    UnknownLease,
    /// The request's arguments are invalid.
    InvalidRequest,
    /// The daemon is stopping: an acquire that was waiting will not be granted by this daemon.
    /// Clients retry once a daemon is back.
    Stopping,
    /// The peer's user may not use this daemon (see `[access]`); the connection is closed.
    PermissionDenied,
    /// The daemon serves as many connections as it takes; the connection is closed. Retry later.
    Busy,
}

/// Payload of [`Response::Granted`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Granted {
    pub lease: LeaseId,
    /// How long the acquire waited in the queue.
    pub waited: Duration,
}

/// Payload of [`Response::TimedOut`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TimedOut {
    /// How much longer the wait would have been, as far as the daemon can tell: retrying after
    /// this long has a fair chance of being served at once.
    pub retry_after: Duration,
    /// What holds it up: "the budget is paused: …", "the requests-per-minute limit is spent", …
    pub reason: String,
}

/// Payload of [`Response::Rejected`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Rejected {
    pub reason: String,
    /// When an acquire could be granted again, if that is known (a spent subscription window's
    /// reset, the end of a spend-cap block).
    pub until: Option<SystemTime>,
    /// The budget that refused, if one did.
    pub budget: Option<BudgetId>,
}
