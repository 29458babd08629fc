//! Answers the gateway gives itself, in the Anthropic API's error shape so that every SDK and
//! Claude Code read them as they would the API's own.

use std::time::Duration;

use bytes::Bytes;
use http::{HeaderValue, Response, StatusCode, header};
use http_body_util::{BodyExt, Full};
use serde_json::json;

use super::metered::BoxError;

/// The body type of every gateway response.
pub type GatewayBody = http_body_util::combinators::UnsyncBoxBody<Bytes, BoxError>;

pub fn full(bytes: impl Into<Bytes>) -> GatewayBody {
    Full::new(bytes.into())
        .map_err(|never| match never {})
        .boxed_unsync()
}

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

pub fn bad_gateway(upstream: &reqwest::Url, error: &reqwest::Error) -> Response<GatewayBody> {
    let mut cause = error.to_string();
    let mut source = std::error::Error::source(error);
    while let Some(inner) = source {
        cause.push_str(": ");
        cause.push_str(&inner.to_string());
        source = inner.source();
    }
    self::error(
        StatusCode::BAD_GATEWAY,
        "api_error",
        format!("pacer gateway: cannot reach the upstream API at {upstream}: {cause}"),
    )
}

pub fn too_large(limit: usize) -> Response<GatewayBody> {
    error(
        StatusCode::PAYLOAD_TOO_LARGE,
        "request_too_large",
        format!("pacer gateway: request body exceeds {} MiB", limit >> 20),
    )
}
