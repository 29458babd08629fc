//! What an answer from the API means for the budget, decided in one place for the gateway and
//! for clients that make their own calls: the spend cap, how often an overload is retried, the
//! most input a request body can have cost, and the message an error body carries.

use pacer_protocol::text::{MAX_MESSAGE, bounded};

/// How many times a request answered 529 (overloaded) is retried before the 529 is passed on.
pub const MAX_OVERLOAD_RETRIES: u32 = 3;

/// Whether a 429 body is the spend cap's (`"error_code": "enforced_spend_limit_reached"`):
/// retrying cannot help until someone lifts the cap.
pub fn is_spend_cap(body: &[u8]) -> bool {
    const MARK: &[u8] = b"enforced_spend_limit_reached";
    body.windows(MARK.len()).any(|w| w == MARK)
}

/// The message of an API error body (`{"type":"error","error":{"message":…}}`), at most
/// [`MAX_MESSAGE`] bytes.
pub fn error_message(body: &[u8]) -> Option<String> {
    let value: serde_json::Value = serde_json::from_slice(body).ok()?;
    value
        .get("error")?
        .get("message")?
        .as_str()
        .map(|message| bounded(message, MAX_MESSAGE))
}

/// The most input tokens a request body of `bytes` is believed to have counted: four a byte
/// (text counts about one token for four bytes; a PDF's pages or an image can count more than
/// their bytes, but not four times more), and never less than a small request's.
pub fn input_bound(bytes: usize) -> u64 {
    (bytes as u64).saturating_mul(4).max(4096)
}

#[cfg(test)]
mod tests {
    use super::*;

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
        assert!(error_message(body.as_bytes()).unwrap().len() <= MAX_MESSAGE);
        assert_eq!(error_message(b"not json"), None);
        assert_eq!(
            error_message(br#"{"error":{"message":"slow down"}}"#).as_deref(),
            Some("slow down")
        );
    }

    #[test]
    fn the_input_bound_is_four_tokens_a_byte_and_at_least_a_small_request() {
        assert_eq!(input_bound(10), 4096);
        assert_eq!(input_bound(10_000), 40_000);
    }
}
