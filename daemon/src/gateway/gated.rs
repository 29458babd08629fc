//! A gated request's cycle: acquire a permit, forward once, and deal with what the API says.
//!
//! - 2xx: stream the answer through; settle the permit with the real usage when it ends.
//! - 429 ([`Cycle::on_429`]): report it (every peer pauses), then hold the request and go round
//!   again when the pause ends, for as long as the hold allows; past that, pass the 429 on with
//!   a `retry-after` that tells the truth about the remaining wait. A spend-cap 429 is passed on
//!   at once (see [`super::spend_cap`]).
//! - 529 ([`Cycle::on_529`]): the model class backs off together; up to three rounds, then
//!   pass it on.
//! - anything else: pass it on.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, Method, Response, StatusCode};
use pacer_client::api::policy::MAX_OVERLOAD_RETRIES;
use pacer_protocol::message::{Acquire, LeaseId, Outcome, Rejected, Response as Answer};
use pacer_protocol::{KeyFingerprint, Priority};
use tokio::time::Instant;

use super::Gateway;
use super::body::GatewayBody;
use super::forward::{buffered_response, header_list, stream_response};
use super::metered::Settle;
use super::reply;
use super::spend_cap;
use crate::hub::Session;
use futures_util::StreamExt;
use pacer_broker::{MAX_REJECTION_BODY, Origin, Rejection};

/// An unreachable upstream is said once a minute, with the count of requests it failed since.
static UNREACHABLE: crate::throttle::Throttle =
    crate::throttle::Throttle::new(Duration::from_secs(60));

/// What the gateway knows of a request it gates.
pub struct Gate {
    pub key: KeyFingerprint,
    /// The model (or, for `count_tokens`, the name of its own budget).
    pub model: String,
    pub client_id: String,
    pub priority: Priority,
    pub input_tokens: u64,
    pub max_tokens: Option<u64>,
    /// The request body's size, to calibrate estimates with (`None`: don't).
    pub calibrate_bytes: Option<usize>,
    /// Through a registered route: its upstream, whose answers count for its keys only.
    pub scope: Option<String>,
    /// Claude Code's session id, whole.
    pub session: Option<String>,
}

/// The request to forward.
pub struct Forward {
    pub method: Method,
    pub url: reqwest::Url,
    pub headers: HeaderMap,
    pub body: Bytes,
    /// The memory the body holds, given back when the request is done.
    pub _held: super::memory::Held,
    /// The upstream it goes to (the daemon's, or a registered route's), for messages.
    pub base: reqwest::Url,
}

/// An error answer from upstream, kept to pass on if retrying runs out of time.
struct Held {
    status: StatusCode,
    headers: HeaderMap,
    body: Bytes,
}

impl Held {
    /// Reads an error answer, at most [`MAX_REJECTION_BODY`] of its body: a longer one (an API
    /// error is a few hundred bytes) is replaced by the API's error shape saying so, rather than
    /// kept in memory and replayed.
    async fn read(upstream: reqwest::Response) -> Held {
        let status = upstream.status();
        let mut headers = upstream.headers().clone();
        let mut body = Vec::new();
        let mut stream = upstream.bytes_stream();
        let mut cut = false;
        while let Some(Ok(chunk)) = stream.next().await {
            if body.len() + chunk.len() > MAX_REJECTION_BODY {
                cut = true;
                break;
            }
            body.extend_from_slice(&chunk);
        }
        if cut {
            body = Rejection::bounded(status.as_u16(), Vec::new(), vec![0; MAX_REJECTION_BODY + 1])
                .body;
            headers.remove(http::header::CONTENT_ENCODING);
            headers.insert(
                http::header::CONTENT_TYPE,
                http::HeaderValue::from_static("application/json"),
            );
        }
        Held {
            status,
            headers,
            body: body.into(),
        }
    }

    fn into_response(self, retry_after: Option<Duration>) -> Response<GatewayBody> {
        let mut response = buffered_response(self.status, &self.headers, self.body);
        if let Some(wait) = retry_after {
            reply::set_retry_after(response.headers_mut(), wait);
        }
        response
    }
}

/// What a step decided.
enum Step<T> {
    /// Carry on with this.
    Next(T),
    /// Answer the client with this.
    Done(Response<GatewayBody>),
}

/// One gated request, from its first acquire to its answer.
struct Cycle<'a> {
    gateway: &'a Arc<Gateway>,
    gate: Gate,
    session: Session,
    started: Instant,
    /// The last 429 or 529, passed on if the hold runs out.
    held: Option<Held>,
    overloads: u32,
}

pub async fn handle(gateway: &Arc<Gateway>, gate: Gate, forward: Forward) -> Response<GatewayBody> {
    let mut cycle = Cycle {
        gateway,
        session: Session::open_scoped(&gateway.hub, gate.scope.clone()),
        gate,
        started: Instant::now(),
        held: None,
        overloads: 0,
    };
    loop {
        let lease = match cycle.acquire().await {
            Step::Next(lease) => lease,
            Step::Done(response) => return response,
        };
        let upstream = match cycle.forward_once(lease, &forward).await {
            Step::Next(upstream) => upstream,
            Step::Done(response) => return response,
        };
        let status = upstream.status();
        let step = if status.is_success() {
            return cycle.stream(lease, upstream);
        } else if status == StatusCode::TOO_MANY_REQUESTS {
            cycle.on_429(lease, upstream).await
        } else if status.as_u16() == 529 {
            cycle.on_529(lease, upstream).await
        } else {
            let outcome = if status.is_client_error() {
                // The caller's mistake (a malformed body, an unknown model): the API processed
                // nothing, and a 4 MB body's estimate must not stay charged.
                Outcome::ClientError {
                    status: status.as_u16(),
                }
            } else {
                Outcome::Failed
            };
            cycle.session.report(lease, outcome);
            return stream_response(upstream, None);
        };
        if let Step::Done(response) = step {
            return response;
        }
    }
}

impl Cycle<'_> {
    /// Waits for a permit, for what is left of the hold. A wait already known to outlast the
    /// hold is answered at once rather than after holding.
    async fn acquire(&mut self) -> Step<LeaseId> {
        let gateway = self.gateway;
        let hold_left = gateway.max_hold().saturating_sub(self.started.elapsed());
        let acquire = Acquire {
            key: self.gate.key,
            model: self.gate.model.clone(),
            priority: self.gate.priority,
            client_id: self.gate.client_id.clone(),
            input_tokens: Some(self.gate.input_tokens),
            output_tokens: None,
            max_tokens: self.gate.max_tokens,
            deadline: Some(hold_left),
            detached_ttl: None,
        };
        let expected = self.session.estimate_wait(&acquire);
        if let Some((expected, holdup)) = expected
            && expected > hold_left
        {
            let message = format!(
                "pacer: {} ({}); the wait (about {}s) would exceed the gateway's max_hold ({}s)",
                holdup,
                self.gate.model,
                expected.as_secs_f64().ceil(),
                gateway.max_hold().as_secs()
            );
            self.session.refused_locally(&acquire, &message);
            return Step::Done(self.give_up(expected, message));
        }
        let origin = Origin {
            session: self.gate.session.as_deref().map(Arc::from),
        };
        match self.session.acquire_from(&acquire, &origin).await {
            Answer::Granted(granted) => Step::Next(granted.lease),
            Answer::TimedOut(timed_out) => {
                let message = format!(
                    "pacer: {} ({}); this request waited {}s (the gateway's max_hold) and \
                     would wait about {}s more",
                    timed_out.reason,
                    self.gate.model,
                    self.started.elapsed().as_secs(),
                    timed_out.retry_after.as_secs_f64().ceil()
                );
                Step::Done(self.give_up(timed_out.retry_after, message))
            }
            Answer::Rejected(rejected) => Step::Done(self.refused(rejected)),
            other => {
                let message = match other {
                    Answer::Error(e) => e.message,
                    other => format!("unexpected answer {other:?}"),
                };
                Step::Done(reply::error(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "api_error",
                    format!("pacer gateway: {message}"),
                ))
            }
        }
    }

    /// The answer to a request the broker refuses at once: the API's own 429 that caused the
    /// lockout, replayed (its `retry-after` brought up to date), else a 429 of pacer's own.
    fn refused(&self, rejected: Rejected) -> Response<GatewayBody> {
        let replay = rejected
            .budget
            .as_ref()
            .and_then(|budget| self.session.rejection(budget));
        match replay {
            Some(rejection) => reply::replay(&rejection, rejected.until),
            None => reply::refused(&rejected),
        }
    }

    /// The answer when the hold runs out: the last upstream error if there was one (with the
    /// real wait), else a 429 of the gateway's own.
    fn give_up(&mut self, wait: Duration, message: String) -> Response<GatewayBody> {
        match self.held.take() {
            Some(held) => held.into_response(Some(wait)),
            None => reply::rate_limited(wait, message),
        }
    }

    /// Sends the request upstream once, and feeds the rate-limit headers of the answer to the
    /// broker as soon as they arrive (the client may send its next request the moment it has
    /// read this one).
    async fn forward_once(&mut self, lease: LeaseId, forward: &Forward) -> Step<reqwest::Response> {
        let sent = self
            .gateway
            .upstream
            .send(
                forward.method.clone(),
                forward.url.clone(),
                forward.headers.clone(),
                forward.body.clone(),
            )
            .await;
        match sent {
            Ok(response) => {
                self.session
                    .observe(lease, &header_list(response.headers()));
                Step::Next(response)
            }
            Err(e) => {
                if e.is_connect() {
                    // The call never reached the API: nothing was spent.
                    self.session.release(lease);
                } else {
                    // It may have reached the API before the connection broke.
                    self.session.report(lease, Outcome::Unknown);
                }
                let base = &forward.base;
                crate::warn_throttled!(
                    UNREACHABLE,
                    "upstream {} unreachable: {}",
                    crate::config::shown_url(base),
                    reply::describe(&e)
                );
                Step::Done(reply::bad_gateway(base, &e))
            }
        }
    }

    /// A success streams through; the permit settles when the body ends.
    fn stream(self, lease: LeaseId, upstream: reqwest::Response) -> Response<GatewayBody> {
        let settle = Settle {
            // Already applied by `forward_once`.
            headers: Vec::new(),
            calibrate: self
                .gate
                .calibrate_bytes
                .map(|bytes| (self.gate.client_id.clone(), bytes)),
            session: self.session,
            lease,
        };
        stream_response(upstream, Some(settle))
    }

    /// A 429: a spend cap is passed on at once; a rate limit pauses every peer, and the request
    /// goes round again.
    async fn on_429(&mut self, lease: LeaseId, upstream: reqwest::Response) -> Step<()> {
        let held = Held::read(upstream).await;
        let key = self.gate.key;
        if let Some(response) = spend_cap::check(&self.session, key, &held.headers, &held.body) {
            self.session.report(lease, Outcome::Failed);
            return Step::Done(response);
        }
        self.session.report_rate_limited(
            lease,
            Rejection::bounded(
                held.status.as_u16(),
                header_list(&held.headers),
                held.body.to_vec(),
            ),
        );
        self.held = Some(held);
        Step::Next(())
    }

    /// A 529: the class backs off together; after [`MAX_OVERLOAD_RETRIES`] it is passed on.
    async fn on_529(&mut self, lease: LeaseId, upstream: reqwest::Response) -> Step<()> {
        let held = Held::read(upstream).await;
        // What a 529 says (its wait from `retry-after-ms`, else `retry-after`) is read as every
        // client reads it.
        let outcome = pacer_client::outcome::from_response(529, header_list(&held.headers), None);
        self.session.report(lease, outcome);
        self.overloads += 1;
        if self.overloads > MAX_OVERLOAD_RETRIES {
            return Step::Done(held.into_response(None));
        }
        self.held = Some(held);
        Step::Next(())
    }
}
