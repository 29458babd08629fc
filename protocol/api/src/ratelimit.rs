//! Reading the API's rate-limit response headers.
//!
//! Anthropic sends `anthropic-ratelimit-{requests|input-tokens|output-tokens|tokens}-{limit|remaining|reset}`
//! (reset as RFC 3339) and, on 429, `retry-after` in seconds. OpenAI-style APIs send
//! `x-ratelimit-{limit|remaining|reset}-{requests|tokens}` with resets as Go durations (`6m0s`).
//! The official SDKs also honour `retry-after-ms` and an HTTP-date `retry-after`; so does this.
//!
//! Times are returned relative to the `now` the caller passes in, so parsing stays deterministic.

use std::time::{Duration, SystemTime};

use crate::unified::Unified;
use pacer_protocol::LimitKind;

/// What one response's headers say about the limits.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RateLimitHeaders {
    pub requests: Window,
    /// Anthropic's input-token window; for OpenAI-style APIs, the combined token window.
    pub input_tokens: Window,
    pub output_tokens: Window,
    /// Anthropic's `tokens-*` headers: whichever token limit is most restrictive.
    pub tokens: Window,
    /// How long to wait before retrying, from `retry-after-ms` or `retry-after`.
    pub retry_after: Option<Duration>,
    /// `x-should-retry`, which the SDKs obey over their own judgement.
    pub should_retry: Option<bool>,
    /// `anthropic-organization-id`: the organization whose limits these are.
    pub organization: Option<String>,
    /// `anthropic-workspace-id`: the workspace of the key, when the response names one.
    pub workspace: Option<String>,
    /// A subscription's windows (`anthropic-ratelimit-unified-*`).
    pub unified: Unified,
    /// Whether any header spoke of limits or windows at all — `retry-after` in either form,
    /// `anthropic-ratelimit-*`, `anthropic-priority-*`, `x-ratelimit-*` — known to this parser
    /// or not, readable or not. A 429 without one is the bare, request-scoped kind.
    pub speaks_of_limits: bool,
}

/// One limit's headers.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Window {
    pub limit: Option<u64>,
    /// What the server says is left (token counts are rounded to the nearest thousand).
    pub remaining: Option<u64>,
    /// How long until the bucket is full again.
    pub reset_in: Option<Duration>,
}

/// The furthest ahead a window's reset is believed: a week is the longest window, and a day
/// more for clocks that disagree.
pub const MAX_RESET_AHEAD: Duration = Duration::from_secs(8 * 24 * 3600);

impl RateLimitHeaders {
    /// Parses every header it recognises and ignores the rest; a malformed value is skipped, as if
    /// the header were absent.
    ///
    /// Times are read against the API's own clock where the answer gives it (its `Date`): a
    /// reset or an HTTP-date `retry-after` is that far ahead of the answer, whatever this
    /// machine's clock says, and the windows' resets come out on this machine's clock (`now`),
    /// moved by the difference. A clock an hour off (or set by hand) does not make a lockout an
    /// hour longer.
    pub fn parse<'a>(
        headers: impl IntoIterator<Item = (&'a str, &'a str)>,
        now: SystemTime,
    ) -> Self {
        let headers: Vec<(&str, &str)> = headers.into_iter().collect();
        let server_now = headers
            .iter()
            .find(|(name, _)| name.trim().eq_ignore_ascii_case("date"))
            .and_then(|(_, value)| httpdate::parse_http_date(value.trim()).ok())
            // Whole seconds: a difference under two is the Date's rounding, not a clock off.
            .filter(|&server| {
                let apart = server.duration_since(now).unwrap_or_else(|e| e.duration());
                apart >= Duration::from_secs(2)
            });
        let mut out = Self::parse_against(headers, server_now.unwrap_or(now));
        if let Some(server_now) = server_now {
            out.unified.shift(server_now, now);
        }
        if let Some(horizon) = now.checked_add(MAX_RESET_AHEAD) {
            out.unified.forget_resets_past(horizon);
        }
        out
    }

    /// [`RateLimitHeaders::parse`] with times read against `now`, as they stand.
    fn parse_against(headers: Vec<(&str, &str)>, now: SystemTime) -> Self {
        let mut out = Self::default();
        let mut retry_after_ms = None;
        let mut retry_after = None;
        for (name, value) in headers {
            let name = name.trim().to_ascii_lowercase();
            let value = value.trim();
            out.speaks_of_limits |= name.starts_with("retry-after")
                || name.starts_with("anthropic-ratelimit-")
                || name.starts_with("anthropic-priority-")
                || name.starts_with("x-ratelimit-");
            if let Some(rest) = name.strip_prefix("anthropic-ratelimit-unified-") {
                out.unified.parse_header(rest, value);
            } else if let Some(rest) = name.strip_prefix("anthropic-ratelimit-") {
                out.parse_anthropic(rest, value, now);
            } else if let Some(rest) = name.strip_prefix("x-ratelimit-") {
                out.parse_openai(rest, value);
            } else {
                match name.as_str() {
                    "retry-after-ms" => retry_after_ms = parse_millis(value),
                    "retry-after" => retry_after = parse_retry_after(value, now),
                    "x-should-retry" => out.should_retry = value.parse().ok(),
                    "anthropic-organization-id" => out.organization = non_empty(value),
                    "anthropic-workspace-id" => out.workspace = non_empty(value),
                    _ => {}
                }
            }
        }
        out.retry_after = retry_after_ms.or(retry_after);
        out
    }

    fn parse_anthropic(&mut self, rest: &str, value: &str, now: SystemTime) {
        let Some((window, field)) = rest.rsplit_once('-') else {
            return;
        };
        let window = match window {
            "requests" => &mut self.requests,
            "input-tokens" => &mut self.input_tokens,
            "output-tokens" => &mut self.output_tokens,
            "tokens" => &mut self.tokens,
            _ => return,
        };
        match field {
            "limit" => window.limit = value.parse().ok(),
            "remaining" => window.remaining = value.parse().ok(),
            "reset" => window.reset_in = parse_rfc3339(value).map(|at| until(at, now)),
            _ => {}
        }
    }

    fn parse_openai(&mut self, rest: &str, value: &str) {
        let Some((field, window)) = rest.split_once('-') else {
            return;
        };
        let window = match window {
            "requests" => &mut self.requests,
            "tokens" => &mut self.input_tokens,
            _ => return,
        };
        match field {
            "limit" => window.limit = value.parse().ok(),
            "remaining" => window.remaining = value.parse().ok(),
            "reset" => window.reset_in = parse_go_duration(value),
            _ => {}
        }
    }

    /// The window that governs one kind of limit.
    pub fn window(&self, kind: LimitKind) -> &Window {
        match kind {
            LimitKind::Requests => &self.requests,
            LimitKind::InputTokens => &self.input_tokens,
            LimitKind::OutputTokens => &self.output_tokens,
        }
    }

    /// Whether the response said anything about whose limits apply or how they stand: a limit,
    /// an organization, or a subscription window.
    pub fn is_informative(&self) -> bool {
        self.has_limits() || self.organization.is_some() || !self.unified.is_empty()
    }

    /// Whether any limit header was present at all.
    pub fn has_limits(&self) -> bool {
        [
            &self.requests,
            &self.input_tokens,
            &self.output_tokens,
            &self.tokens,
        ]
        .iter()
        .any(|w| **w != Window::default())
    }
}

fn non_empty(value: &str) -> Option<String> {
    (!value.is_empty() && value.len() <= 256).then(|| value.to_owned())
}

/// Parses a `retry-after` value: delay seconds (integer or decimal) or an HTTP date. A date in the
/// past gives zero.
pub fn parse_retry_after(value: &str, now: SystemTime) -> Option<Duration> {
    let value = value.trim();
    if let Ok(secs) = value.parse::<f64>() {
        return Duration::try_from_secs_f64(secs).ok();
    }
    httpdate::parse_http_date(value)
        .ok()
        .map(|at| until(at, now))
}

fn parse_millis(value: &str) -> Option<Duration> {
    let ms = value.trim().parse::<f64>().ok()?;
    Duration::try_from_secs_f64(ms / 1000.0).ok()
}

fn until(at: SystemTime, now: SystemTime) -> Duration {
    at.duration_since(now).unwrap_or_default()
}

fn parse_rfc3339(value: &str) -> Option<SystemTime> {
    let value = value.trim();
    let normalized;
    let value = match value.strip_suffix("+00:00") {
        Some(base) => {
            normalized = format!("{base}Z");
            normalized.as_str()
        }
        None => value,
    };
    humantime::parse_rfc3339_weak(value).ok()
}

/// Parses a Go duration as OpenAI sends it: `1s`, `6m0s`, `12ms`, `1h2m3.5s`.
pub fn parse_go_duration(value: &str) -> Option<Duration> {
    let mut rest = value.trim();
    if rest.is_empty() {
        return None;
    }
    let mut total = 0.0f64;
    while !rest.is_empty() {
        let digits = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        let number: f64 = rest[..digits].parse().ok()?;
        rest = &rest[digits..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let scale = match &rest[..unit_len] {
            "h" => 3600.0,
            "m" => 60.0,
            "s" => 1.0,
            "ms" => 1e-3,
            "us" | "µs" => 1e-6,
            "ns" => 1e-9,
            _ => return None,
        };
        total += number * scale;
        rest = &rest[unit_len..];
    }
    Duration::try_from_secs_f64(total).ok()
}

/// Which limit a 429's error message says was exceeded, if it names one.
///
/// Anthropic's messages read "…rate limit of 50 requests per minute…", "…30,000 input tokens per
/// minute…", "…8,000 output tokens per minute…"; older ones "Number of request tokens has
/// exceeded your per-minute rate limit" (input tokens).
pub fn limit_named_in(message: &str) -> Option<LimitKind> {
    let message = message.to_ascii_lowercase();
    if message.contains("output token") {
        Some(LimitKind::OutputTokens)
    } else if message.contains("input token") || message.contains("request token") {
        Some(LimitKind::InputTokens)
    } else if message.contains("requests per") || message.contains("request rate") {
        Some(LimitKind::Requests)
    } else {
        None
    }
}

/// Whether a 429's message says an organization's limit was hit (rather than a workspace's):
/// "…your organization's rate limit…".
pub fn names_the_organization(message: &str) -> bool {
    let message = message.to_ascii_lowercase();
    message.contains("organization") && !message.contains("workspace")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_reset_further_off_than_any_window_is_not_believed() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000);
        let far = (1_800_000_000u64 + (1 << 40)).to_string();
        let week = (1_800_000_000u64 + 7 * 24 * 3600).to_string();
        let h = RateLimitHeaders::parse(
            [
                ("anthropic-ratelimit-unified-status", "rejected"),
                ("anthropic-ratelimit-unified-reset", far.as_str()),
                ("anthropic-ratelimit-unified-7d-reset", week.as_str()),
            ],
            now,
        );
        assert_eq!(h.unified.reset, None);
        assert_eq!(
            h.unified.windows[0].reset,
            Some(now + Duration::from_secs(7 * 24 * 3600))
        );
    }

    #[test]
    fn times_are_read_against_the_apis_clock_when_this_ones_is_off() {
        let server = SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000);
        let date = httpdate::fmt_http_date(server);
        let in_20 = httpdate::fmt_http_date(server + Duration::from_secs(20));
        let reset_31 = (1_800_000_000u64 + 31).to_string();
        for skew in [Duration::from_secs(3600), Duration::from_secs(5)] {
            for local in [server + skew, server - skew] {
                let h = RateLimitHeaders::parse(
                    [
                        ("date", date.as_str()),
                        ("retry-after", in_20.as_str()),
                        ("anthropic-ratelimit-unified-5h-reset", reset_31.as_str()),
                        ("anthropic-ratelimit-unified-5h-status", "rejected"),
                    ],
                    local,
                );
                assert_eq!(h.retry_after, Some(Duration::from_secs(20)), "{skew:?}");
                let reset = h.unified.windows[0].reset.unwrap();
                assert_eq!(reset, local + Duration::from_secs(31), "{skew:?}");
            }
        }
        // Without a Date, this machine's clock is all there is.
        let h = RateLimitHeaders::parse(
            [("anthropic-ratelimit-unified-5h-reset", reset_31.as_str())],
            server + Duration::from_secs(3600),
        );
        assert_eq!(
            h.unified.windows[0].reset,
            Some(server + Duration::from_secs(31))
        );
    }

    fn at(rfc3339: &str) -> SystemTime {
        humantime::parse_rfc3339(rfc3339).unwrap()
    }

    #[test]
    fn anthropic_headers() {
        let now = at("2026-04-21T15:30:00Z");
        let h = RateLimitHeaders::parse(
            [
                ("anthropic-ratelimit-requests-limit", "50"),
                ("anthropic-ratelimit-requests-remaining", "49"),
                ("anthropic-ratelimit-requests-reset", "2026-04-21T15:30:01Z"),
                ("Anthropic-RateLimit-Input-Tokens-Limit", "30000"),
                ("anthropic-ratelimit-input-tokens-remaining", "27000"),
                ("anthropic-ratelimit-output-tokens-limit", "8000"),
                ("anthropic-ratelimit-tokens-limit", "38000"),
                ("content-type", "application/json"),
            ],
            now,
        );
        assert_eq!(h.requests.limit, Some(50));
        assert_eq!(h.requests.remaining, Some(49));
        assert_eq!(h.requests.reset_in, Some(Duration::from_secs(1)));
        assert_eq!(h.input_tokens.limit, Some(30_000));
        assert_eq!(h.input_tokens.remaining, Some(27_000));
        assert_eq!(h.output_tokens.limit, Some(8_000));
        assert_eq!(h.tokens.limit, Some(38_000));
        assert_eq!(h.retry_after, None);
        assert!(h.has_limits());
    }

    #[test]
    fn openai_headers_map_tokens_to_the_input_window() {
        let h = RateLimitHeaders::parse(
            [
                ("x-ratelimit-limit-requests", "1000"),
                ("x-ratelimit-remaining-requests", "999"),
                ("x-ratelimit-reset-requests", "60ms"),
                ("x-ratelimit-limit-tokens", "150000"),
                ("x-ratelimit-reset-tokens", "6m0s"),
            ],
            SystemTime::UNIX_EPOCH,
        );
        assert_eq!(h.requests.limit, Some(1000));
        assert_eq!(h.requests.remaining, Some(999));
        assert_eq!(h.requests.reset_in, Some(Duration::from_millis(60)));
        assert_eq!(h.input_tokens.limit, Some(150_000));
        assert_eq!(h.input_tokens.reset_in, Some(Duration::from_secs(360)));
    }

    #[test]
    fn retry_after_in_seconds_milliseconds_and_dates() {
        let now = at("2026-04-21T15:30:00Z");
        let parse = |pairs: &[(&str, &str)]| {
            RateLimitHeaders::parse(pairs.iter().copied(), now).retry_after
        };
        assert_eq!(
            parse(&[("retry-after", "34")]),
            Some(Duration::from_secs(34))
        );
        assert_eq!(
            parse(&[("retry-after", "1.5")]),
            Some(Duration::from_millis(1500))
        );
        assert_eq!(
            parse(&[("retry-after", "Tue, 21 Apr 2026 15:30:30 GMT")]),
            Some(Duration::from_secs(30))
        );
        // A date already past means "now".
        assert_eq!(
            parse(&[("retry-after", "Tue, 21 Apr 2026 15:00:00 GMT")]),
            Some(Duration::ZERO)
        );
        // retry-after-ms is the more precise of the two, as in the SDKs.
        assert_eq!(
            parse(&[("retry-after", "2"), ("retry-after-ms", "1250")]),
            Some(Duration::from_millis(1250))
        );
        assert_eq!(parse(&[("retry-after", "soon")]), None);
        assert_eq!(parse(&[("retry-after", "-3")]), None);
        // Absurd values are not durations (and must not panic).
        assert_eq!(parse(&[("retry-after", "1e20")]), None);
        assert_eq!(parse(&[("retry-after", "NaN")]), None);
        assert_eq!(parse(&[("retry-after-ms", "inf")]), None);
    }

    #[test]
    fn organization_and_workspace() {
        let h = RateLimitHeaders::parse(
            [
                ("Anthropic-Organization-Id", " 0f1e2d3c-org "),
                ("anthropic-workspace-id", "wrkspc_01"),
            ],
            SystemTime::UNIX_EPOCH,
        );
        assert_eq!(h.organization.as_deref(), Some("0f1e2d3c-org"));
        assert_eq!(h.workspace.as_deref(), Some("wrkspc_01"));
        assert!(h.is_informative() && !h.has_limits());
        let empty =
            RateLimitHeaders::parse([("anthropic-organization-id", "")], SystemTime::UNIX_EPOCH);
        assert_eq!(empty.organization, None);
    }

    #[test]
    fn should_retry_header() {
        let h = RateLimitHeaders::parse([("x-should-retry", "false")], SystemTime::UNIX_EPOCH);
        assert_eq!(h.should_retry, Some(false));
        assert!(!h.has_limits());
    }

    #[test]
    fn malformed_values_are_ignored() {
        let h = RateLimitHeaders::parse(
            [
                ("anthropic-ratelimit-requests-limit", "fifty"),
                ("anthropic-ratelimit-requests-reset", "tomorrow"),
                ("anthropic-ratelimit-bogus-limit", "5"),
            ],
            SystemTime::UNIX_EPOCH,
        );
        // Nothing readable, but they speak of limits all the same.
        assert_eq!(
            h,
            RateLimitHeaders {
                speaks_of_limits: true,
                ..RateLimitHeaders::default()
            }
        );
    }

    #[test]
    fn go_durations() {
        assert_eq!(parse_go_duration("1s"), Some(Duration::from_secs(1)));
        assert_eq!(
            parse_go_duration("1h2m3.5s"),
            Some(Duration::from_millis(3_723_500))
        );
        assert_eq!(parse_go_duration("12ms"), Some(Duration::from_millis(12)));
        assert_eq!(parse_go_duration("5x"), None);
        assert_eq!(parse_go_duration(""), None);
    }

    #[test]
    fn rfc3339_with_offset_zero() {
        let now = at("2026-04-21T15:30:00Z");
        let h = RateLimitHeaders::parse(
            [(
                "anthropic-ratelimit-output-tokens-reset",
                "2026-04-21T15:30:10+00:00",
            )],
            now,
        );
        assert_eq!(h.output_tokens.reset_in, Some(Duration::from_secs(10)));
    }

    #[test]
    fn the_limit_a_message_names() {
        use LimitKind::*;
        let cases = [
            (
                "This request would exceed your organization's rate limit of 30,000 input tokens per minute",
                Some(InputTokens),
            ),
            (
                "…rate limit of 8,000 output tokens per minute",
                Some(OutputTokens),
            ),
            ("…rate limit of 50 requests per minute", Some(Requests)),
            (
                "Number of request tokens has exceeded your per-minute rate limit",
                Some(InputTokens),
            ),
            ("Rate limited", None),
        ];
        for (message, expected) in cases {
            assert_eq!(limit_named_in(message), expected, "{message}");
        }
    }
}
