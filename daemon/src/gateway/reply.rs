//! Answers the gateway gives itself, in the Anthropic API's error shape so that every SDK and
//! Claude Code read them as they would the API's own.

use bytes::Bytes;
use http::{HeaderMap, HeaderName, HeaderValue, Response, StatusCode, header};

use super::body::{GatewayBody, full};
use super::forward::buffered_response;
use pacer_api::Answer;

/// `{"type":"error","error":{"type":KIND,"message":MESSAGE}}` with `status`.
pub fn error(status: StatusCode, kind: &str, message: String) -> Response<GatewayBody> {
    answer(Answer::error(status.as_u16(), kind, &message))
}

/// A 200 of the gateway's own with `content_type`.
pub fn ok(content_type: &'static str, body: String) -> Response<GatewayBody> {
    let mut response = Response::new(full(body));
    response
        .headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    response
}

/// An answer the gated call decided on (an upstream error held, passed on or replayed, or one
/// of pacer's own), as an HTTP response.
pub fn answer(answer: Answer) -> Response<GatewayBody> {
    let mut headers = HeaderMap::with_capacity(answer.headers.len());
    for (name, value) in &answer.headers {
        if let (Ok(name), Ok(value)) = (
            HeaderName::from_bytes(name.as_bytes()),
            HeaderValue::from_bytes(value.as_bytes()),
        ) {
            headers.append(name, value);
        }
    }
    let status = StatusCode::from_u16(answer.status).unwrap_or(StatusCode::BAD_GATEWAY);
    buffered_response(status, &headers, Bytes::from(answer.body))
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
