//! Building a report from what the API answered, so a caller needs one line for it.
//!
//! ```
//! use pacer_client::outcome;
//! let body = serde_json::json!({"usage": {"input_tokens": 12, "output_tokens": 30}});
//! let headers = [("anthropic-ratelimit-requests-limit", "50")];
//! let report = outcome::from_response(200, headers, Some(&body));
//! assert!(matches!(report, pacer_client::Outcome::Success { .. }));
//! ```

use std::time::{Duration, SystemTime};

use pacer_protocol::message::{ApiUsage, Headers, Outcome, Usage};
use pacer_protocol::ratelimit::parse_retry_after;
use serde::Deserialize;
use serde_json::Value;

/// The outcome of a call from its HTTP status, its response headers and (if at hand) its JSON
/// body: 2xx is a success with the body's `usage`; 429 is rate limited, with the error message
/// that names the limit; 529 is overloaded; another 4xx is the caller's own mistake (nothing
/// counted but the request); anything else failed. Header names may be in any
/// case; values that are not text are skipped.
pub fn from_response<N, V>(
    status: u16,
    headers: impl IntoIterator<Item = (N, V)>,
    body: Option<&Value>,
) -> Outcome
where
    N: AsRef<str>,
    V: AsRef<[u8]>,
{
    let headers: Headers = headers
        .into_iter()
        .filter_map(|(name, value)| {
            let value = std::str::from_utf8(value.as_ref()).ok()?;
            Some((name.as_ref().to_ascii_lowercase(), value.to_owned()))
        })
        .collect();
    let header = |name: &str| {
        headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    };
    match status {
        200..=299 => Outcome::Success {
            usage: body.and_then(usage_from_json).unwrap_or_default(),
            headers,
        },
        429 => Outcome::RateLimited {
            retry_after: None,
            message: body.and_then(error_message),
            headers,
        },
        529 => Outcome::Overloaded {
            retry_after: header("retry-after-ms")
                .and_then(|ms| ms.trim().parse::<f64>().ok())
                .and_then(|ms| Duration::try_from_secs_f64(ms / 1000.0).ok())
                .or_else(|| {
                    header("retry-after").and_then(|v| parse_retry_after(v, SystemTime::now()))
                }),
        },
        400..=499 => Outcome::ClientError { status },
        _ => Outcome::Failed,
    }
}

/// Reads `usage` from a Messages API response body (or a `usage` object itself, or a streamed
/// `message_start` / `message_delta` event).
pub fn usage_from_json(body: &Value) -> Option<Usage> {
    let usage = body
        .get("usage")
        .or_else(|| body.get("message").and_then(|m| m.get("usage")))
        .unwrap_or(body);
    let parsed = ApiUsage::deserialize(usage)
        .ok()
        .filter(|u| !u.is_empty())?;
    let mut out = Usage::default();
    parsed.apply_to(&mut out);
    Some(out)
}

/// The message of an API error body: `{"type":"error","error":{"type":…,"message":…}}`.
pub fn error_message(body: &Value) -> Option<String> {
    body.get("error")?
        .get("message")?
        .as_str()
        .map(str::to_owned)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn success_reads_usage_and_keeps_headers() {
        let body = json!({
            "id": "msg_1",
            "usage": {"input_tokens": 10, "output_tokens": 20, "cache_creation_input_tokens": 5, "cache_read_input_tokens": 900}
        });
        let outcome = from_response(
            200,
            [("Anthropic-Ratelimit-Requests-Limit", "50")],
            Some(&body),
        );
        let Outcome::Success { usage, headers } = outcome else {
            panic!("{outcome:?}")
        };
        assert_eq!(usage.counted_input_tokens(), 15);
        assert_eq!(usage.output_tokens, 20);
        assert_eq!(usage.cache_read_input_tokens, 900);
        assert_eq!(
            headers,
            vec![(
                "anthropic-ratelimit-requests-limit".to_owned(),
                "50".to_owned()
            )]
        );
    }

    #[test]
    fn rate_limited_carries_the_message() {
        let body = json!({"type": "error", "error": {"type": "rate_limit_error", "message": "…50 requests per minute…"}});
        let outcome = from_response(429, [("retry-after", "7")], Some(&body));
        assert_eq!(
            outcome,
            Outcome::RateLimited {
                retry_after: None,
                headers: vec![("retry-after".into(), "7".into())],
                message: Some("…50 requests per minute…".into()),
            }
        );
    }

    #[test]
    fn overloaded_and_other_failures() {
        let outcome = from_response(529, [("retry-after", "3")], None);
        assert_eq!(
            outcome,
            Outcome::Overloaded {
                retry_after: Some(Duration::from_secs(3))
            }
        );
        let none: [(&str, &str); 0] = [];
        assert_eq!(from_response(500, none, None), Outcome::Failed);
        // The caller's own mistake: its tokens are given back.
        assert_eq!(
            from_response(400, none, None),
            Outcome::ClientError { status: 400 }
        );
    }

    #[test]
    fn usage_from_streamed_events() {
        let start = json!({"type": "message_start", "message": {"usage": {"input_tokens": 3, "output_tokens": 1}}});
        assert_eq!(usage_from_json(&start).unwrap().input_tokens, 3);
        let delta = json!({"type": "message_delta", "usage": {"output_tokens": 42}});
        assert_eq!(usage_from_json(&delta).unwrap().output_tokens, 42);
        assert_eq!(usage_from_json(&json!({"type": "ping"})), None);
        let nulls = json!({"usage": {"input_tokens": 5, "cache_creation_input_tokens": null}});
        assert_eq!(usage_from_json(&nulls).unwrap().input_tokens, 5);
    }
}
