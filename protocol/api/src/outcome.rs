//! What an answer from the API means for the budget: the report ([`Outcome`]) it makes, the
//! usage and error message in its body, the spend cap, and the most input a request body can
//! have cost.
//!
//! ```
//! use pacer_api::outcome;
//! let body = serde_json::json!({"usage": {"input_tokens": 12, "output_tokens": 30}});
//! let headers = [("anthropic-ratelimit-requests-limit", "50")];
//! let report = outcome::from_response(200, headers, Some(&body));
//! assert!(matches!(report, pacer_protocol::message::Outcome::Success { .. }));
//! ```

use std::time::SystemTime;

use pacer_protocol::message::{ApiUsage, Headers, Outcome, Usage};
use pacer_protocol::text::{MAX_MESSAGE, bounded};
use serde::Deserialize;
use serde_json::Value;

use crate::ratelimit::RateLimitHeaders;

/// The outcome of a call from its HTTP status, its response headers and (if at hand) its JSON
/// body: 2xx is a success with the body's `usage`; 429 is rate limited, with the error message
/// that names the limit (or, when the body says so, the spend cap); 529 is overloaded; another 4xx is the caller's own mistake (nothing
/// counted but the request); anything else failed. Header names may be in any case; values
/// that are not text are skipped. The outcome is bounded ([`Outcome::bounded`]): it always fits
/// one frame, however large the answer.
pub fn from_response<N, V>(
    status: u16,
    headers: impl IntoIterator<Item = (N, V)>,
    body: Option<&Value>,
) -> Outcome
where
    N: AsRef<str>,
    V: AsRef<[u8]>,
{
    from_response_at(status, headers, body, SystemTime::now())
}

/// [`from_response`] at a given time (an HTTP-date `retry-after` is read against it).
pub fn from_response_at<N, V>(
    status: u16,
    headers: impl IntoIterator<Item = (N, V)>,
    body: Option<&Value>,
    now: SystemTime,
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
    let outcome = match status {
        200..=299 => Outcome::Success {
            usage: body.and_then(usage_from_json).unwrap_or_default(),
            headers,
        },
        429 if body.is_some_and(json_is_spend_cap) => Outcome::SpendCapped {
            message: body.and_then(error_message),
            headers,
        },
        429 => Outcome::RateLimited {
            retry_after: None,
            message: body.and_then(error_message),
            headers,
        },
        529 => Outcome::Overloaded {
            retry_after: RateLimitHeaders::parse(
                headers.iter().map(|(n, v)| (n.as_str(), v.as_str())),
                now,
            )
            .retry_after,
        },
        400..=499 => Outcome::ClientError { status },
        _ => Outcome::Failed,
    };
    outcome.bounded()
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

/// The message of an API error body, read from its bytes and held to at most [`MAX_MESSAGE`] bytes.
pub fn message_of_body(body: &[u8]) -> Option<String> {
    let value: Value = serde_json::from_slice(body).ok()?;
    error_message(&value).map(|message| bounded(&message, MAX_MESSAGE))
}

/// Whether a JSON error body is the spend cap's.
fn json_is_spend_cap(body: &Value) -> bool {
    body.pointer("/error/details/error_code")
        .and_then(Value::as_str)
        == Some(SPEND_CAP_CODE)
}

const SPEND_CAP_CODE: &str = "enforced_spend_limit_reached";

/// Whether a 429 body is the spend cap's (`"error_code": "enforced_spend_limit_reached"`):
/// retrying cannot help until someone lifts the cap.
pub fn is_spend_cap(body: &[u8]) -> bool {
    let mark = SPEND_CAP_CODE.as_bytes();
    body.windows(mark.len()).any(|w| w == mark)
}

/// The most input tokens a request body of `bytes` is believed to have counted: four a byte
/// (text counts about one token for four bytes; a PDF's pages or an image can count more than
/// their bytes, but not four times more), and never less than a small request's.
pub fn input_bound(bytes: usize) -> u64 {
    (bytes as u64).saturating_mul(4).max(4096)
}

/// `usage` held to what a request body of `bytes` could have counted ([`input_bound`]): an
/// answer claiming more is not believed.
pub fn bound_usage(usage: &mut Usage, bytes: usize) {
    let bound = input_bound(bytes);
    usage.input_tokens = usage.input_tokens.min(bound);
    usage.cache_creation_input_tokens = usage
        .cache_creation_input_tokens
        .min(bound - usage.input_tokens);
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use std::time::Duration;

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
    fn a_spend_cap_body_is_its_own_outcome() {
        let body = json!({"type": "error", "error": {"type": "rate_limit_error",
            "message": "You have reached your specified API usage limits.",
            "details": {"error_code": "enforced_spend_limit_reached"}}});
        let none: [(&str, &str); 0] = [];
        assert_eq!(
            from_response(429, none, Some(&body)),
            Outcome::SpendCapped {
                headers: Vec::new(),
                message: Some("You have reached your specified API usage limits.".into()),
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
        // retry-after-ms wins over retry-after, as in the SDKs.
        let outcome = from_response(529, [("retry-after", "3"), ("retry-after-ms", "250")], None);
        assert_eq!(
            outcome,
            Outcome::Overloaded {
                retry_after: Some(Duration::from_millis(250))
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

    #[test]
    fn spend_cap_bodies_are_recognised() {
        let body = br#"{"type":"error","error":{"type":"rate_limit_error","message":"You have reached your specified API usage limits.","details":{"error_code":"enforced_spend_limit_reached"}}}"#;
        assert!(is_spend_cap(body));
        assert!(!is_spend_cap(
            br#"{"type":"error","error":{"type":"rate_limit_error","message":"50 requests per minute"}}"#
        ));
    }

    #[test]
    fn error_messages_are_read_and_bounded() {
        let long = "x".repeat(5000);
        let body = format!(r#"{{"type":"error","error":{{"message":"{long}"}}}}"#);
        assert!(message_of_body(body.as_bytes()).unwrap().len() <= MAX_MESSAGE);
        assert_eq!(message_of_body(b"not json"), None);
        assert_eq!(
            message_of_body(br#"{"error":{"message":"slow down"}}"#).as_deref(),
            Some("slow down")
        );
    }

    #[test]
    fn the_input_bound_is_four_tokens_a_byte_and_at_least_a_small_request() {
        assert_eq!(input_bound(10), 4096);
        assert_eq!(input_bound(10_000), 40_000);
        let mut usage = Usage {
            input_tokens: 10_000,
            cache_creation_input_tokens: 10_000,
            ..Usage::default()
        };
        bound_usage(&mut usage, 1000);
        assert_eq!(usage.counted_input_tokens(), 4096);
    }
}
