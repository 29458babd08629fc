//! Answers the gateway gives itself, in the Anthropic API's error shape so that every SDK and
//! Claude Code read them as they would the API's own.

use std::time::{Duration, SystemTime};

use bytes::Bytes;
use http::{HeaderMap, HeaderName, HeaderValue, Response, StatusCode, header};
use pacer_protocol::message::Rejected;
use serde_json::json;

use super::body::{GatewayBody, full};
use super::forward::buffered_response;
use pacer_broker::Rejection;

/// `{"type":"error","error":{"type":KIND,"message":MESSAGE}}` with `status`.
pub fn error(status: StatusCode, kind: &str, message: String) -> Response<GatewayBody> {
    let body = json!({
        "type": "error",
        "error": { "type": kind, "message": message },
    });
    let mut response = Response::new(full(body.to_string()));
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    response
}

/// A 200 of the gateway's own with `content_type`.
pub fn ok(content_type: &'static str, body: String) -> Response<GatewayBody> {
    let mut response = Response::new(full(body));
    response
        .headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    response
}

/// A 429 the gateway gives itself because the shared budget would keep the request waiting
/// longer than it may be held.
pub fn rate_limited(retry_after: Duration, message: String) -> Response<GatewayBody> {
    let mut response = error(StatusCode::TOO_MANY_REQUESTS, "rate_limit_error", message);
    set_retry_after(response.headers_mut(), retry_after);
    response
}

/// Sets `retry-after` (whole seconds, at least 1) and `retry-after-ms` to `wait`.
pub fn set_retry_after(headers: &mut http::HeaderMap, wait: Duration) {
    let secs = wait.as_secs_f64().ceil().max(1.0) as u64;
    headers.insert(header::RETRY_AFTER, HeaderValue::from(secs));
    headers.insert(
        "retry-after-ms",
        HeaderValue::from(wait.as_millis().max(1) as u64),
    );
    headers.insert("x-should-retry", HeaderValue::from_static("true"));
}

/// The API's own answer that locked a budget out, replayed: its status, headers and body, with
/// `retry-after` (and `retry-after-ms`, if it had one) brought up to date. Nothing is added: a
/// spent window's 429 stays the one Claude Code and the SDKs know not to retry.
pub fn replay(rejection: &Rejection, until: Option<SystemTime>) -> Response<GatewayBody> {
    let mut headers = HeaderMap::with_capacity(rejection.headers.len());
    for (name, value) in &rejection.headers {
        // The server stamps its own date on the answer.
        if name.eq_ignore_ascii_case("date") {
            continue;
        }
        if let (Ok(name), Ok(value)) = (
            HeaderName::from_bytes(name.as_bytes()),
            HeaderValue::from_str(value),
        ) {
            headers.append(name, value);
        }
    }
    if let Some(until) = until {
        let left = until.duration_since(SystemTime::now()).unwrap_or_default();
        if headers.contains_key(header::RETRY_AFTER) {
            let secs = left.as_secs_f64().ceil() as u64;
            headers.insert(header::RETRY_AFTER, HeaderValue::from(secs));
        }
        if headers.contains_key("retry-after-ms") {
            headers.insert("retry-after-ms", HeaderValue::from(left.as_millis() as u64));
        }
    }
    let status = StatusCode::from_u16(rejection.status).unwrap_or(StatusCode::TOO_MANY_REQUESTS);
    buffered_response(status, &headers, Bytes::from(rejection.body.clone()))
}

/// pacer's own 429 for an acquire the broker refuses at once, with the time it ends if known.
pub fn refused(rejected: &Rejected) -> Response<GatewayBody> {
    let mut response = error(
        StatusCode::TOO_MANY_REQUESTS,
        "rate_limit_error",
        format!("pacer: {}", rejected.reason),
    );
    if let Some(until) = rejected.until {
        let left = until.duration_since(SystemTime::now()).unwrap_or_default();
        let secs = left.as_secs_f64().ceil().max(1.0) as u64;
        response
            .headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from(secs));
    }
    response
}

/// A request naming a route nobody registered (or one forgotten after a day unused).
pub fn unknown_route(id: &str) -> Response<GatewayBody> {
    error(
        StatusCode::FORBIDDEN,
        "permission_error",
        format!(
            "pacer gateway: no route `{id}` is registered here (routes are registered by `pacer \
             run` and `pacer env`, and forgotten after a day unused): run the command with `pacer \
             run` again"
        ),
    )
}

pub fn bad_gateway(upstream: &reqwest::Url, error: &reqwest::Error) -> Response<GatewayBody> {
    self::error(
        StatusCode::BAD_GATEWAY,
        "api_error",
        format!(
            "pacer gateway: cannot reach the upstream API at {}: {}",
            crate::config::shown_url(upstream),
            describe(error)
        ),
    )
}

/// What went wrong with a call upstream, with its causes, but never its URL (which may carry
/// credentials or a token in its query).
pub fn describe(error: &reqwest::Error) -> String {
    let kind = if error.is_connect() {
        "cannot connect"
    } else if error.is_timeout() {
        "timed out"
    } else {
        "the request failed"
    };
    let mut cause = kind.to_owned();
    let mut source = std::error::Error::source(error);
    while let Some(inner) = source {
        cause.push_str(": ");
        cause.push_str(&inner.to_string());
        source = inner.source();
    }
    cause
}

/// A 503 of the gateway's own: it cannot take the request now (`retry-after: 1`).
pub fn busy(message: String) -> Response<GatewayBody> {
    let mut response = error(StatusCode::SERVICE_UNAVAILABLE, "overloaded_error", message);
    response
        .headers_mut()
        .insert(header::RETRY_AFTER, HeaderValue::from(1));
    response
}

pub fn too_large(limit: usize) -> Response<GatewayBody> {
    error(
        StatusCode::PAYLOAD_TOO_LARGE,
        "request_too_large",
        format!("pacer gateway: request body exceeds {} MiB", limit >> 20),
    )
}
