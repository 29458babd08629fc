//! A gated call, from its first permit to the answer its caller gets, as a sans-IO state
//! machine: the daemon's gateway (with tokio) and the Python transports (sync and async,
//! through PyO3) drive this one type, so what an answer means is decided once.
//!
//! It does no I/O and reads no clock. The driver tells it what happened — the permit granted or
//! refused ([`GatedCall::granted`], [`GatedCall::refused`]), the answer's head
//! ([`GatedCall::answered`]) and, for an answer read whole, its body ([`GatedCall::read`]),
//! the end of a streamed answer ([`GatedCall::ended`]), a send that failed — with the time, and
//! asks [`GatedCall::poll`] what to do next until it says [`Action::Done`]:
//!
//! - 2xx: [`Action::Stream`] the answer through, reading its usage; when the body ends, the
//!   permit is reported with the real usage (held to what the body could have counted) and the
//!   estimate calibrated.
//! - 429, by its kind ([`crate::throttle`]):
//!   - a per-minute limit or a spent window: report it (every peer pauses, or the account is
//!     locked out), then go round — acquire again, which waits out the pause or is refused —
//!     for as long as the hold allows; past that, pass the 429 on with a `retry-after`
//!     telling the truth about the remaining wait;
//!   - the spend cap: report it (pacerd fails the account's calls fast for a while) and pass
//!     it on at once;
//!   - a bare 429: report it (it holds nobody else), then [`Action::Wait`] on this request's
//!     own spacing ([`bare_spacing`]: growing, spread at random) and go round, while the hold
//!     allows; past that, pass the API's 429 on unchanged.
//! - 529: the class backs off together; go round up to [`MAX_OVERLOAD_RETRIES`] times, then
//!   pass it on.
//! - `x-should-retry: false` on a 429 or a 529: report it and pass it on, never sent again.
//! - anything else: report it and pass it on as it is.

use std::collections::VecDeque;
use std::time::{Duration, Instant, SystemTime};

use pacer_protocol::Throttle;
use pacer_protocol::message::{Headers, Outcome};

use crate::answer::{Answer, Kind};
use crate::outcome::{bound_usage, from_response_at, message_of_body};
use crate::ratelimit::RateLimitHeaders;
use crate::throttle::may_retry;

/// How many times a request answered 529 (overloaded) is retried before the 529 is passed on.
pub const MAX_OVERLOAD_RETRIES: u32 = 3;
/// A request held after a bare 429 is first sent again after about this long: retries within
/// ~15 s are known to meet the same wall, tens of seconds later get through.
pub const BARE_FIRST_WAIT: Duration = Duration::from_secs(20);
/// Each next resend waits this many times longer than the one before…
const BARE_GROWTH: f64 = 1.5;
/// …up to this long.
pub const BARE_MAX_WAIT: Duration = Duration::from_secs(60);
/// Waits are spread by up to this fraction either way, so held requests do not come back
/// together.
const BARE_JITTER: f64 = 0.2;

/// How long a request waits before it is sent again after its `n`th bare 429 (counting from
/// 0), with `random` (0 to 1) spreading it: 20 s, 30 s, 45 s, then 60 s, each ±20 %.
pub fn bare_spacing(n: u32, random: f64) -> Duration {
    let base = BARE_FIRST_WAIT.as_secs_f64() * BARE_GROWTH.powi(n.min(16) as i32);
    let base = base.min(BARE_MAX_WAIT.as_secs_f64());
    let spread = 1.0 + BARE_JITTER * (2.0 * random.clamp(0.0, 1.0) - 1.0);
    Duration::from_secs_f64(base * spread)
}
/// How long a request may be held waiting for the budget, unless configured otherwise.
pub const DEFAULT_MAX_HOLD: Duration = Duration::from_secs(240);

/// What the driver does next.
#[derive(Debug, Clone, PartialEq)]
pub enum Action {
    /// Ask pacerd for a permit, waiting at most `deadline`; then [`GatedCall::granted`] or
    /// [`GatedCall::refused`].
    Acquire { deadline: Duration },
    /// Send the request upstream once; then [`GatedCall::answered`], or
    /// [`GatedCall::send_failed`].
    Send,
    /// Read the answer's body whole, at most `limit` bytes of it (and say whether there was
    /// more); then [`GatedCall::read`].
    ReadBody { limit: usize },
    /// Pass the answer to the caller as it streams, reading its usage on the way; when its body
    /// ends (or the caller goes away), [`GatedCall::ended`].
    Stream,
    /// Pass the upstream answer to the caller as it is; nothing more is to be done with it.
    PassOn,
    /// Settle the permit with this outcome.
    Report(Outcome),
    /// Give the permit back unused: the request never reached the API.
    Release,
    /// Wait this long, then poll again (a request held after a bare 429).
    Wait(Duration),
    /// Teach the input estimate what a body of `body_bytes` really counted.
    Calibrate {
        body_bytes: usize,
        counted_input: u64,
    },
    /// Answer the caller with this, and stop.
    Answer(Answer),
    /// The request could not be sent: the driver answers with its own error, and stops.
    Fail,
    /// Nothing more to do.
    Done,
}

/// Why no permit came.
#[derive(Debug, Clone, PartialEq)]
pub enum Refusal {
    /// The driver knows before asking that the wait would outlast the hold: about `wait`,
    /// because of `holdup`.
    WouldWait { wait: Duration, holdup: String },
    /// The deadline passed; the wait would have been about `retry_after` more.
    TimedOut {
        retry_after: Duration,
        /// What held it up, when the daemon said.
        reason: Option<String>,
    },
    /// Refused outright (a lockout: a spent window, a spend cap, a wait longer than the hold),
    /// until then if known. `replay` is the API's own answer that caused it, when the driver
    /// has it.
    Rejected {
        reason: String,
        /// How long until it ends, if known.
        left: Option<Duration>,
        replay: Option<Answer>,
    },
    /// The daemon could not serve the acquire at all (it is stopping).
    Unavailable(String),
}

/// What the caller asked for, as far as the decisions need it.
#[derive(Debug, Clone)]
pub struct CallRequest {
    /// The model, for messages.
    pub model: String,
    /// The request body's size: a Messages call's usage is held to what it could have counted,
    /// and teaches the estimate. `None` for calls that do neither (`count_tokens`).
    pub body_bytes: Option<usize>,
    /// Whether what the body counts is about its bytes (see
    /// [`crate::fields::counts_by_its_bytes`]): only then does its usage teach the estimate.
    pub teaches: bool,
    /// How long the request may be held waiting for the budget, in all.
    pub max_hold: Duration,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// About to ask for a permit.
    Acquire,
    Acquiring,
    /// A permit is held: about to send.
    Send,
    Sending,
    /// An answer is being read whole.
    Reading,
    /// An answer streams to the caller.
    Streaming,
    Finished,
}

/// One gated call. See the module's documentation.
#[derive(Debug)]
pub struct GatedCall {
    request: CallRequest,
    started: Instant,
    state: State,
    /// Decided, not yet handed to the driver.
    queue: VecDeque<Action>,
    /// The head of the answer being read whole.
    head: Option<(u16, Headers)>,
    /// The last 429 or 529, passed on if the hold runs out.
    held: Option<Answer>,
    /// Whether `held` is a bare 429 (passed on unchanged, not with pacer's wait).
    held_bare: bool,
    overloads: u32,
    /// Bare 429s this request has met.
    bare: u32,
}

impl GatedCall {
    pub fn new(request: CallRequest, now: Instant) -> GatedCall {
        GatedCall {
            request,
            started: now,
            state: State::Acquire,
            queue: VecDeque::new(),
            head: None,
            held: None,
            held_bare: false,
            overloads: 0,
            bare: 0,
        }
    }

    /// What to do next.
    pub fn poll(&mut self, now: Instant) -> Action {
        if let Some(action) = self.queue.pop_front() {
            return action;
        }
        match self.state {
            State::Acquire => {
                self.state = State::Acquiring;
                Action::Acquire {
                    deadline: self.hold_left(now),
                }
            }
            State::Send => {
                self.state = State::Sending;
                Action::Send
            }
            State::Acquiring | State::Sending | State::Reading | State::Streaming => {
                debug_assert!(
                    false,
                    "polled while waiting for the driver ({:?})",
                    self.state
                );
                Action::Done
            }
            State::Finished => Action::Done,
        }
    }

    /// The permit was granted.
    pub fn granted(&mut self) {
        self.state = State::Send;
    }

    /// No permit came.
    pub fn refused(&mut self, refusal: Refusal, now: Instant) {
        let message = self.explain(&refusal, now);
        let answer = match refusal {
            Refusal::WouldWait { wait, .. } => self.give_up(wait, message),
            Refusal::TimedOut { retry_after, .. } => self.give_up(retry_after, message),
            Refusal::Rejected {
                left,
                replay: Some(answer),
                ..
            } => answer.replayed(left),
            Refusal::Rejected {
                left, replay: None, ..
            } => {
                let mut own = Answer::error(429, "rate_limit_error", &message);
                if let Some(left) = left {
                    own.set_header("retry-after", whole_seconds(left).max(1).to_string());
                }
                own
            }
            Refusal::Unavailable(_) => Answer::error(503, "api_error", &message),
        };
        self.finish_with(answer);
    }

    /// What the caller is told of a refusal (when the answer is pacer's own).
    pub fn explain(&self, refusal: &Refusal, now: Instant) -> String {
        let model = &self.request.model;
        match refusal {
            Refusal::WouldWait { wait, holdup } => format!(
                "pacer: {holdup} ({model}); the wait (about {}s) would exceed max_hold ({}s)",
                whole_seconds(*wait),
                self.request.max_hold.as_secs()
            ),
            Refusal::TimedOut {
                retry_after,
                reason,
            } => format!(
                "pacer: {} ({model}); this request waited {}s (max_hold) and would wait about \
                 {}s more",
                reason.as_deref().unwrap_or("no permit came in time"),
                now.saturating_duration_since(self.started).as_secs(),
                whole_seconds(*retry_after)
            ),
            Refusal::Rejected { reason, .. } => format!("pacer: {reason}"),
            Refusal::Unavailable(message) => format!("pacer gateway: {message}"),
        }
    }

    /// The answer's status and headers arrived.
    pub fn answered(&mut self, status: u16, headers: Headers, wall: SystemTime) {
        if (200..300).contains(&status) {
            self.state = State::Streaming;
            self.queue.push_back(Action::Stream);
        } else if Kind::read_whole(status) {
            self.state = State::Reading;
            self.head = Some((status, headers));
            self.queue.push_back(Action::ReadBody {
                limit: crate::answer::MAX_KEPT_BODY,
            });
        } else {
            // The caller's own mistake (a 4xx: nothing was processed, its tokens are given
            // back), or a failure: reported by its status, passed on as it is.
            let outcome = from_response_at(status, headers, None, wall);
            self.queue.push_back(Action::Report(outcome));
            self.queue.push_back(Action::PassOn);
            self.state = State::Finished;
        }
    }

    /// The body of an answer read whole: at most the limit [`Action::ReadBody`] gave, and
    /// whether there was more. `random` (0 to 1) spreads the resends of held requests.
    pub fn read(&mut self, body: Vec<u8>, cut: bool, now: Instant, wall: SystemTime, random: f64) {
        let Some((status, headers)) = self.head.take() else {
            debug_assert!(false, "a body without a head");
            return;
        };
        let answer = if cut {
            Answer::too_large(status, headers, body.len())
        } else {
            Answer::bounded(status, headers, body)
        };
        let decoded = answer.decoded_body().into_owned();
        let parsed = RateLimitHeaders::parse(pairs(&answer.headers), wall);
        let message = message_of_body(&decoded);
        match Kind::of(status, &parsed, &decoded) {
            Kind::Throttled(Throttle::SpendCap) => {
                self.queue.push_back(Action::Report(Outcome::SpendCapped {
                    headers: answer.headers.clone(),
                    message,
                }));
                self.held = Some(answer.clone());
                self.finish_with(answer);
            }
            Kind::Throttled(kind) => {
                self.queue.push_back(Action::Report(Outcome::RateLimited {
                    retry_after: None,
                    headers: answer.headers.clone(),
                    message,
                }));
                if !may_retry(&parsed) {
                    self.finish_with(answer);
                } else if kind == Throttle::Bare {
                    self.hold_bare(answer, now, random);
                } else {
                    // The broker pauses the budget (or locks it out): the next acquire waits
                    // it out, or is refused.
                    self.held = Some(answer);
                    self.held_bare = false;
                    self.state = State::Acquire;
                }
            }
            Kind::Overloaded => {
                let outcome = from_response_at(status, pairs(&answer.headers), None, wall);
                self.queue.push_back(Action::Report(outcome));
                self.overloads += 1;
                if self.overloads > MAX_OVERLOAD_RETRIES || !may_retry(&parsed) {
                    self.finish_with(answer);
                } else {
                    self.held = Some(answer);
                    self.held_bare = false;
                    self.state = State::Acquire;
                }
            }
            Kind::Success | Kind::ClientError(_) | Kind::Failed => {
                let outcome = from_response_at(status, pairs(&answer.headers), None, wall);
                self.queue.push_back(Action::Report(outcome));
                self.finish_with(answer);
            }
        }
    }

    /// A bare 429 holds this request alone: it is sent again on its own spacing (see
    /// [`bare_spacing`]) while the hold allows; past that, the API's 429 goes back unchanged.
    fn hold_bare(&mut self, answer: Answer, now: Instant, random: f64) {
        let wait = bare_spacing(self.bare, random);
        self.bare += 1;
        if wait >= self.hold_left(now) {
            self.finish_with(answer);
            return;
        }
        self.held = Some(answer);
        self.held_bare = true;
        self.queue.push_back(Action::Wait(wait));
        self.state = State::Acquire;
    }

    /// A streamed answer's body is done: `outcome` is what its usage tap read of it, `complete`
    /// whether it ended (rather than broke off, or the caller went away).
    pub fn ended(&mut self, mut outcome: Outcome, complete: bool) {
        if let (Outcome::Success { usage, .. }, Some(bytes)) =
            (&mut outcome, self.request.body_bytes)
        {
            bound_usage(usage, bytes);
            if complete && self.request.teaches {
                self.queue.push_back(Action::Calibrate {
                    body_bytes: bytes,
                    counted_input: usage.counted_input_tokens(),
                });
            }
        }
        self.queue.push_back(Action::Report(outcome));
        self.state = State::Finished;
    }

    /// Sending failed; `reached` says whether the request may have reached the API (a
    /// connection that broke after it was sent) or surely did not (no connection was made).
    pub fn send_failed(&mut self, reached: bool) {
        self.queue.push_back(if reached {
            Action::Report(Outcome::Unknown)
        } else {
            Action::Release
        });
        self.queue.push_back(Action::Fail);
        self.state = State::Finished;
    }

    /// The last 429 or 529 read whole, if any (the gateway reports it with the answer whole, so
    /// that a lockout it causes can replay it).
    pub fn held(&self) -> Option<&Answer> {
        self.held.as_ref()
    }

    /// How long the request may still be held.
    pub fn hold_left(&self, now: Instant) -> Duration {
        self.request
            .max_hold
            .saturating_sub(now.saturating_duration_since(self.started))
    }

    /// The answer when no permit comes in time: the last upstream error if there was one (with
    /// the real wait), else a 429 of pacer's own.
    fn give_up(&mut self, wait: Duration, message: String) -> Answer {
        match self.held.take() {
            // A bare 429 goes back as the API gave it: the wait pacer knows of is not its.
            Some(held) if self.held_bare => held,
            Some(mut held) => {
                held.set_retry_after(wait);
                held
            }
            None => Answer::rate_limited(wait, &message),
        }
    }

    fn finish_with(&mut self, answer: Answer) {
        self.held_bare = false;
        self.queue.push_back(Action::Answer(answer));
        self.state = State::Finished;
    }
}

fn pairs(headers: &Headers) -> impl Iterator<Item = (&str, &str)> {
    headers.iter().map(|(n, v)| (n.as_str(), v.as_str()))
}

fn whole_seconds(wait: Duration) -> u64 {
    wait.as_secs_f64().ceil() as u64
}

#[cfg(test)]
mod tests;
