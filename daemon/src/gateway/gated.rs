//! A gated request: wait for a permit, forward, and deal with what the API says.
//!
//! - 2xx: stream the answer through; settle the permit with the real usage when it ends.
//! - 429: report it (every peer pauses), then hold the request and retry it when the pause
//!   ends, for as long as the hold allows; past that, pass the 429 on with a `retry-after` that
//!   tells the truth about the remaining wait.
//! - 429 for a spend cap: retrying cannot help. Pass it on, and answer every request for that
//!   key with the same error for a minute.
//! - 529: the model class backs off together; up to three retries, then pass it on.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{HeaderMap, Method, Response, StatusCode};
use pacer_protocol::message::{Acquire, Outcome, Response as Answer};
use pacer_protocol::ratelimit::parse_retry_after;
use pacer_protocol::{KeyFingerprint, Priority};

use super::Gateway;
use super::forward::{buffered_response, header_list, stream_response};
use super::metered::Settle;
use super::reply::{self, GatewayBody};
use crate::server::Session;

/// How many 529 answers are retried before the last one is passed on.
const MAX_OVERLOAD_RETRIES: u32 = 3;
/// How long every request of a key fails fast after a spend-cap 429.
pub const SPEND_CAP_BLOCK: Duration = Duration::from_secs(60);

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
}

/// The request to forward.
pub struct Forward {
    pub method: Method,
    pub url: reqwest::Url,
    pub headers: HeaderMap,
    pub body: Bytes,
}

/// An error answer from upstream, kept to pass on if retrying runs out of time.
struct Held {
    status: StatusCode,
    headers: HeaderMap,
    body: Bytes,
}

impl Held {
    fn into_response(self, retry_after: Option<Duration>) -> Response<GatewayBody> {
        let mut response = buffered_response(self.status, &self.headers, self.body);
        if let Some(wait) = retry_after {
            reply::set_retry_after(response.headers_mut(), wait);
        }
        response
    }
}

pub async fn handle(gateway: &Arc<Gateway>, gate: Gate, forward: Forward) -> Response<GatewayBody> {
    if let Some(replay) = gateway.spend_cap_reply(gate.key) {
        return replay;
    }
    let started = Instant::now();
    let mut session = Session::open(&gateway.shared);
    let mut held: Option<Held> = None;
    let mut overloads = 0;
    loop {
        let hold_left = gateway.max_hold().saturating_sub(started.elapsed());
        let acquire = Acquire {
            key: gate.key,
            model: gate.model.clone(),
            priority: gate.priority,
            client_id: gate.client_id.clone(),
            input_tokens: Some(gate.input_tokens),
            output_tokens: None,
            max_tokens: gate.max_tokens,
            deadline: Some(hold_left),
            detached_ttl: None,
        };
        // A wait already known to outlast the hold is answered now, not after holding.
        let expected = session.estimate_wait(&acquire);
        if expected > hold_left {
            return match held {
                Some(held) => held.into_response(Some(expected)),
                None => reply::rate_limited(
                    expected,
                    format!(
                        "pacer: the shared rate limit for {} is spent; the wait (about {}s) would \
                         exceed the gateway's max_hold ({}s)",
                        gate.model,
                        expected.as_secs_f64().ceil(),
                        gateway.max_hold().as_secs()
                    ),
                ),
            };
        }
        let lease = match session.acquire(&acquire).await {
            Answer::Granted(granted) => granted.lease,
            Answer::TimedOut(timed_out) => {
                return match held {
                    Some(held) => held.into_response(Some(timed_out.retry_after)),
                    None => reply::rate_limited(
                        timed_out.retry_after,
                        format!(
                            "pacer: the shared rate limit for {} is spent; this request waited {}s \
                             (the gateway's max_hold) and would wait about {}s more",
                            gate.model,
                            started.elapsed().as_secs(),
                            timed_out.retry_after.as_secs_f64().ceil()
                        ),
                    ),
                };
            }
            Answer::Rejected(rejected) => {
                return gateway.spend_cap_reply(gate.key).unwrap_or_else(|| {
                    reply::error(
                        StatusCode::TOO_MANY_REQUESTS,
                        "rate_limit_error",
                        format!("pacer: {}", rejected.reason),
                    )
                });
            }
            other => {
                let message = match other {
                    Answer::Error(e) => e.message,
                    other => format!("unexpected answer {other:?}"),
                };
                return reply::error(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "api_error",
                    format!("pacer gateway: {message}"),
                );
            }
        };

        let sent = gateway
            .upstream
            .send(
                forward.method.clone(),
                forward.url.clone(),
                forward.headers.clone(),
                forward.body.clone(),
            )
            .await;
        let upstream = match sent {
            Ok(upstream) => upstream,
            Err(e) => {
                if e.is_connect() {
                    // The call never reached the API: nothing was spent.
                    session.release(lease);
                } else {
                    // It may have reached the API before the connection broke.
                    session.report(lease, Outcome::Unknown);
                }
                tracing::warn!(upstream = %gateway.upstream.base, "upstream unreachable: {e}");
                return reply::bad_gateway(&gateway.upstream.base, &e);
            }
        };
        let status = upstream.status();
        // Learn from the headers now, not when the body ends: the client may send its next
        // request the moment it has read this one.
        session.observe(lease, &header_list(upstream.headers()));
        if status.is_success() {
            let settle = Settle {
                // Already applied above.
                headers: Vec::new(),
                session,
                lease,
                calibration: gate
                    .calibrate_bytes
                    .map(|bytes| (gateway.calibration.clone(), gate.client_id.clone(), bytes)),
            };
            return stream_response(upstream, Some(settle));
        }
        match status {
            StatusCode::TOO_MANY_REQUESTS => {
                let headers = upstream.headers().clone();
                let body = upstream.bytes().await.unwrap_or_default();
                if is_spend_cap(&body) {
                    session.report(lease, Outcome::Failed);
                    gateway.record_spend_cap(&session, gate.key, status, &headers, body.clone());
                    return buffered_response(status, &headers, body);
                }
                session.report(
                    lease,
                    Outcome::RateLimited {
                        retry_after: None,
                        headers: header_list(&headers),
                        message: error_message(&body),
                    },
                );
                held = Some(Held {
                    status,
                    headers,
                    body,
                });
            }
            _ if status.as_u16() == 529 => {
                let headers = upstream.headers().clone();
                let body = upstream.bytes().await.unwrap_or_default();
                let retry_after = headers
                    .get(http::header::RETRY_AFTER)
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| parse_retry_after(v, std::time::SystemTime::now()));
                session.report(lease, Outcome::Overloaded { retry_after });
                overloads += 1;
                if overloads > MAX_OVERLOAD_RETRIES {
                    return buffered_response(status, &headers, body);
                }
                held = Some(Held {
                    status,
                    headers,
                    body,
                });
            }
            _ => {
                session.report(lease, Outcome::Failed);
                return stream_response(upstream, None);
            }
        }
    }
}

/// Whether a 429 body is the spend cap's: `"error_code": "enforced_spend_limit_reached"`.
fn is_spend_cap(body: &[u8]) -> bool {
    const MARK: &[u8] = b"enforced_spend_limit_reached";
    body.windows(MARK.len()).any(|w| w == MARK)
}

fn error_message(body: &[u8]) -> Option<String> {
    let value: serde_json::Value = serde_json::from_slice(body).ok()?;
    value
        .get("error")?
        .get("message")?
        .as_str()
        .map(str::to_owned)
}

/// A spend-cap 429 being replayed to every request of its key.
pub struct SpendCap {
    pub until: Instant,
    status: StatusCode,
    headers: HeaderMap,
    body: Bytes,
}

impl SpendCap {
    pub fn new(status: StatusCode, headers: &HeaderMap, body: Bytes) -> Self {
        Self {
            until: Instant::now() + SPEND_CAP_BLOCK,
            status,
            headers: headers.clone(),
            body,
        }
    }

    pub fn reply(&self) -> Response<GatewayBody> {
        buffered_response(self.status, &self.headers, self.body.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spend_cap_bodies_are_recognised() {
        let body = br#"{"type":"error","error":{"type":"rate_limit_error","message":"You have reached your specified API usage limits.","details":{"error_code":"enforced_spend_limit_reached"}}}"#;
        assert!(is_spend_cap(body));
        assert!(!is_spend_cap(br#"{"type":"error","error":{"type":"rate_limit_error","message":"50 requests per minute"}}"#));
        assert_eq!(
            error_message(br#"{"error":{"message":"50 requests per minute"}}"#).as_deref(),
            Some("50 requests per minute")
        );
    }
}
