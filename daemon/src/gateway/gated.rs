//! A gated request, driven with tokio: the decisions are [`GatedCall`]'s (in `pacer-api`,
//! shared with the Python transports); this file does what it asks — acquire a permit from the
//! hub, send the request upstream, read or stream the answer, settle the permit — and turns its
//! answers into HTTP responses.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use http::{Method, Response, StatusCode};
use pacer_api::call::{Action, CallRequest, GatedCall, Refusal};
use pacer_protocol::message::{Acquire, LeaseId, Outcome, Response as Reply};
use pacer_protocol::{KeyFingerprint, Priority};
use tokio::time::Instant;

use super::Gateway;
use super::body::GatewayBody;
use super::forward::{header_list, stream_response};
use super::metered::Settle;
use super::reply;
use crate::hub::Session;
use futures_util::StreamExt;
use pacer_broker::Origin;

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
    /// Its cap on each subscription window, in basis points.
    pub max_share_bp: Option<u16>,
    pub input_tokens: u64,
    pub max_tokens: Option<u64>,
    /// The request body's size, to hold the usage to and calibrate estimates with (`None`:
    /// don't).
    pub body_bytes: Option<usize>,
    /// Whether its usage may teach the estimate (no content by file id or URL).
    pub teaches: bool,
    /// Through a registered route: its upstream, whose answers count for its keys only.
    pub scope: Option<String>,
    /// Claude Code's session id, whole.
    pub session: Option<String>,
}

/// The request to forward.
pub struct Forward {
    pub method: Method,
    pub url: reqwest::Url,
    pub headers: http::HeaderMap,
    pub body: bytes::Bytes,
    /// The memory the body holds, given back when the request is done.
    pub _held: super::memory::BodyBytes,
    /// The upstream it goes to (the daemon's, or a registered route's), for messages.
    pub base: reqwest::Url,
}

/// The machine's time: tokio's clock (paused in tests), as the standard type.
fn now() -> std::time::Instant {
    Instant::now().into_std()
}

/// A number from 0 to 1 that differs from call to call, to spread the resends of held
/// requests (std's hasher keys are random and change with each `RandomState`).
fn random_unit() -> f64 {
    use std::hash::BuildHasher;
    let bits = std::collections::hash_map::RandomState::new().hash_one(0u8);
    (bits >> 11) as f64 / (1u64 << 53) as f64
}

/// What the driver holds between the machine's steps.
struct Driver<'a> {
    gateway: &'a Arc<Gateway>,
    gate: Gate,
    session: Session,
    lease: Option<LeaseId>,
    /// The answer being read, streamed or passed on.
    upstream: Option<reqwest::Response>,
    /// Why the last send failed.
    failure: Option<reqwest::Error>,
}

pub async fn handle(gateway: &Arc<Gateway>, gate: Gate, forward: Forward) -> Response<GatewayBody> {
    let request = CallRequest {
        model: gate.model.clone(),
        body_bytes: gate.body_bytes,
        teaches: gate.teaches,
        max_hold: gateway.max_hold(),
    };
    let mut call = GatedCall::new(request, now());
    let mut driver = Driver {
        gateway,
        session: Session::open_scoped(&gateway.hub, gate.scope.clone()),
        gate,
        lease: None,
        upstream: None,
        failure: None,
    };
    loop {
        match call.poll(now()) {
            Action::Acquire { deadline } => driver.acquire(&mut call, deadline).await,
            Action::Send => driver.send(&mut call, &forward).await,
            Action::ReadBody { limit } => driver.read(&mut call, limit).await,
            Action::Report(outcome) => driver.report(&call, outcome),
            Action::Release => driver.release(),
            Action::Wait(wait) => tokio::time::sleep(wait).await,
            Action::Calibrate {
                body_bytes,
                counted_input,
            } => driver
                .session
                .calibrate(&driver.gate.client_id, body_bytes, counted_input),
            Action::Stream => return driver.stream(call),
            Action::PassOn => match driver.upstream.take() {
                Some(upstream) => return stream_response(upstream, None),
                None => return internal("an answer to pass on"),
            },
            Action::Answer(answer) => return reply::answer(answer),
            Action::Fail => match driver.failure.take() {
                Some(e) => return reply::bad_gateway(&forward.base, &e),
                None => return internal("why the request failed"),
            },
            Action::Done => return internal("an answer"),
        }
    }
}

/// A gated request the machine finished without an answer: a bug, said as one.
fn internal(missing: &str) -> Response<GatewayBody> {
    tracing::error!("the gated call ended without {missing}");
    reply::error(
        StatusCode::INTERNAL_SERVER_ERROR,
        "api_error",
        format!("pacer gateway: internal error (no {missing})"),
    )
}

impl Driver<'_> {
    /// Waits for a permit, for at most `deadline`. A wait already known to outlast it is
    /// refused at once rather than after holding.
    async fn acquire(&mut self, call: &mut GatedCall, deadline: Duration) {
        let acquire = Acquire {
            key: self.gate.key,
            model: self.gate.model.clone(),
            priority: self.gate.priority,
            client_id: self.gate.client_id.clone(),
            input_tokens: Some(self.gate.input_tokens),
            output_tokens: None,
            max_tokens: self.gate.max_tokens,
            deadline: Some(deadline),
            detached_ttl: None,
            max_share_bp: self.gate.max_share_bp,
        };
        let origin = Origin {
            session: self.gate.session.as_deref().map(Arc::from),
        };
        if let Some((wait, holdup)) = self.session.estimate_wait(&acquire, &origin)
            && wait > deadline
        {
            let refusal = Refusal::WouldWait { wait, holdup };
            self.session
                .refused_locally(&acquire, &call.explain(&refusal, now()));
            call.refused(refusal, now());
            return;
        }
        match self.session.acquire_from(&acquire, &origin).await {
            Reply::Granted(granted) => {
                self.lease = Some(granted.lease);
                call.granted();
            }
            Reply::TimedOut(timed_out) => call.refused(
                Refusal::TimedOut {
                    retry_after: timed_out.retry_after,
                    reason: Some(timed_out.reason),
                },
                now(),
            ),
            Reply::Rejected(rejected) => {
                // The API's own answer that caused the lockout, replayed, when the broker kept
                // one.
                let replay = rejected
                    .budget
                    .as_ref()
                    .and_then(|budget| self.session.rejection(budget))
                    .map(|answer| answer.as_ref().clone());
                let left = rejected
                    .until
                    .map(|until| until.duration_since(SystemTime::now()).unwrap_or_default());
                let refusal = Refusal::Rejected {
                    reason: rejected.reason,
                    left,
                    replay,
                };
                call.refused(refusal, now());
            }
            other => {
                let message = match other {
                    Reply::Error(e) => e.message,
                    other => format!("unexpected answer {other:?}"),
                };
                call.refused(Refusal::Unavailable(message), now());
            }
        }
    }

    /// Sends the request upstream once, and feeds the rate-limit headers of the answer to the
    /// broker as soon as they arrive (the client may send its next request the moment it has
    /// read this one).
    async fn send(&mut self, call: &mut GatedCall, forward: &Forward) {
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
                let headers = header_list(response.headers());
                if let Some(lease) = self.lease {
                    self.session.observe(lease, &headers);
                }
                call.answered(response.status().as_u16(), headers, SystemTime::now());
                self.upstream = Some(response);
            }
            Err(e) => {
                crate::warn_throttled!(
                    UNREACHABLE,
                    "upstream {} unreachable: {}",
                    crate::config::shown_url(&forward.base),
                    reply::describe(&e)
                );
                // A call that never connected spent nothing; one that broke may have reached
                // the API.
                call.send_failed(!e.is_connect());
                self.failure = Some(e);
            }
        }
    }

    /// Reads the answer's body whole, at most `limit` bytes of it.
    async fn read(&mut self, call: &mut GatedCall, limit: usize) {
        let mut body = Vec::new();
        let mut cut = false;
        if let Some(upstream) = self.upstream.take() {
            let mut stream = upstream.bytes_stream();
            while let Some(Ok(chunk)) = stream.next().await {
                if body.len() + chunk.len() > limit {
                    cut = true;
                    break;
                }
                body.extend_from_slice(&chunk);
            }
        }
        call.read(body, cut, now(), SystemTime::now(), random_unit());
    }

    /// Settles the permit. A 429 is reported with the API's answer whole, so that a lockout it
    /// causes can replay it.
    fn report(&mut self, call: &GatedCall, outcome: Outcome) {
        let Some(lease) = self.lease.take() else {
            return;
        };
        match (outcome, call.held()) {
            (outcome @ (Outcome::RateLimited { .. } | Outcome::SpendCapped { .. }), Some(held)) => {
                self.session.report_answered(lease, outcome, held.clone())
            }
            (outcome, _) => self.session.report(lease, outcome),
        }
    }

    fn release(&mut self) {
        if let Some(lease) = self.lease.take() {
            self.session.release(lease);
        }
    }

    /// A success streams through; the permit settles when the body ends.
    fn stream(mut self, call: GatedCall) -> Response<GatewayBody> {
        let (Some(upstream), Some(lease)) = (self.upstream.take(), self.lease.take()) else {
            return internal("an answer to stream");
        };
        let settle = Settle {
            call,
            client: self.gate.client_id,
            session: self.session,
            lease,
        };
        stream_response(upstream, Some(settle))
    }
}
