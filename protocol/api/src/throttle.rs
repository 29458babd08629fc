//! Which kind of 429 an answer is ([`Throttle`]), decided once for every client: the gateway,
//! the Rust client and the Python transport (through the gated call), and pacerd when it
//! settles a report.
//!
//! - The spend cap's (`"error_code": "enforced_spend_limit_reached"` in its body).
//! - A spent subscription window's (`anthropic-ratelimit-unified-*` says `rejected`).
//! - A per-minute limit's: it carries a `retry-after` (in any form, readable or not) or
//!   rate-limit headers of any name (`anthropic-ratelimit-*`, `anthropic-priority-*`,
//!   `x-ratelimit-*`). Whatever speaks of a bucket or a window is not bare.
//! - The bare 429: none of that — Anthropic's request-scoped throttle, which answers sessions
//!   starting together with nothing but `x-should-retry: true`.
//!
//! Credits run out (`out_of_credits`) are a 400, not a 429; only the spend cap is told apart.

use pacer_protocol::Throttle;

use crate::ratelimit::RateLimitHeaders;

/// The kind of a 429 with these headers, whose body is (`spend_cap`) or is not the spend
/// cap's.
pub fn classify(headers: &RateLimitHeaders, spend_cap: bool) -> Throttle {
    if spend_cap {
        Throttle::SpendCap
    } else if headers.unified.is_spent() {
        Throttle::Window
    } else if headers.speaks_of_limits {
        Throttle::PerMinute
    } else {
        Throttle::Bare
    }
}

/// Whether an answer may be retried at all: `x-should-retry: false` is the API saying no, and
/// such an answer is passed on, never sent again.
pub fn may_retry(headers: &RateLimitHeaders) -> bool {
    headers.should_retry != Some(false)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::SystemTime;

    fn kind(pairs: &[(&str, &str)]) -> Throttle {
        classify(
            &RateLimitHeaders::parse(pairs.iter().copied(), SystemTime::UNIX_EPOCH),
            false,
        )
    }

    #[test]
    fn a_429_with_nothing_but_should_retry_is_bare() {
        assert_eq!(
            kind(&[("x-should-retry", "true"), ("x-robots-tag", "none")]),
            Throttle::Bare
        );
        assert_eq!(kind(&[]), Throttle::Bare);
        // An organization alone says nothing about limits.
        assert_eq!(
            kind(&[("anthropic-organization-id", "org")]),
            Throttle::Bare
        );
    }

    #[test]
    fn whatever_speaks_of_a_limit_is_per_minute_known_name_or_not() {
        for header in [
            ("retry-after", "20"),
            ("retry-after", "abc"),
            ("Retry-After-Ms", "1500"),
            ("anthropic-ratelimit-requests-remaining", "0"),
            ("anthropic-ratelimit-tokens-of-the-future-limit", "7"),
            ("anthropic-priority-input-tokens-limit", "10000"),
            ("x-ratelimit-remaining-requests", "0"),
            ("anthropic-ratelimit-unified-5h-utilization", "0.4"),
        ] {
            assert_eq!(kind(&[header]), Throttle::PerMinute, "{header:?}");
        }
    }

    #[test]
    fn a_spent_window_and_the_spend_cap_are_their_own() {
        assert_eq!(
            kind(&[
                ("anthropic-ratelimit-unified-status", "rejected"),
                ("retry-after", "7999")
            ]),
            Throttle::Window
        );
        assert_eq!(
            kind(&[("anthropic-ratelimit-unified-5h-status", "rejected")]),
            Throttle::Window
        );
        let headers = RateLimitHeaders::default();
        assert_eq!(classify(&headers, true), Throttle::SpendCap);
    }

    #[test]
    fn should_retry_false_is_never_retried() {
        let parse = |v| RateLimitHeaders::parse([("x-should-retry", v)], SystemTime::UNIX_EPOCH);
        assert!(!may_retry(&parse("false")));
        assert!(may_retry(&parse("true")));
        assert!(may_retry(&RateLimitHeaders::default()));
    }
}
