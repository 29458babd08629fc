//! A report held to a size that always fits one frame, however large the answer it reports
//! (see [`Outcome::bounded`]): every client bounds its outcomes where it builds them.

use crate::message::{Headers, Outcome};

/// The most headers a report carries, and the longest name and value of one: an answer's
/// rate-limit headers are a few dozen short ones, and whatever an upstream adds must not make a
/// report too large for one frame.
pub const MAX_REPORT_HEADERS: usize = 128;
pub const MAX_REPORT_HEADER_NAME: usize = 256;
pub const MAX_REPORT_HEADER_VALUE: usize = 2048;

impl Outcome {
    /// The outcome held to a size that always fits one frame, as every client builds it: an
    /// error message of at most [`crate::text::MAX_MESSAGE`] bytes, at most
    /// [`MAX_REPORT_HEADERS`] headers, the ones pacer reads (`retry-after`, `anthropic-*`,
    /// `x-ratelimit-*`, `x-should-retry`) kept first, none with an overlong name or value.
    pub fn bounded(self) -> Outcome {
        let message =
            |m: Option<String>| m.map(|m| crate::text::bounded(&m, crate::text::MAX_MESSAGE));
        match self {
            Outcome::Success { usage, headers } => Outcome::Success {
                usage,
                headers: bounded_headers(headers),
            },
            Outcome::RateLimited {
                retry_after,
                headers,
                message: m,
            } => Outcome::RateLimited {
                retry_after,
                headers: bounded_headers(headers),
                message: message(m),
            },
            Outcome::SpendCapped {
                headers,
                message: m,
            } => Outcome::SpendCapped {
                headers: bounded_headers(headers),
                message: message(m),
            },
            other => other,
        }
    }
}

fn bounded_headers(headers: Headers) -> Headers {
    let read_by_pacer = |name: &str| {
        let name = name.to_ascii_lowercase();
        name.starts_with("retry-after")
            || name.starts_with("anthropic-")
            || name.starts_with("x-ratelimit-")
            || name == "x-should-retry"
    };
    let (mut kept, others): (Headers, Headers) = headers
        .into_iter()
        .filter(|(name, value)| {
            name.len() <= MAX_REPORT_HEADER_NAME && value.len() <= MAX_REPORT_HEADER_VALUE
        })
        .partition(|(name, _)| read_by_pacer(name));
    kept.extend(others);
    kept.truncate(MAX_REPORT_HEADERS);
    kept
}
