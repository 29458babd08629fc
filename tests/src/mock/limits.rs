//! The mock's rate limits: token buckets per API key × model class, what a request counts, and
//! the `anthropic-ratelimit-*` headers that report them.

use std::time::Duration;

use tokio::time::Instant;

use http::{HeaderMap, HeaderValue};
use serde_json::Value;

use super::{MockConfig, State};

pub(super) struct Bucket {
    pub(super) capacity: f64,
    pub(super) level: f64,
    pub(super) at: Instant,
}

impl Bucket {
    pub(super) fn new(limit: u64) -> Self {
        Self {
            capacity: limit as f64,
            level: limit as f64,
            at: Instant::now(),
        }
    }

    pub(super) fn refill(&mut self) -> f64 {
        let now = Instant::now();
        let rate = self.capacity / 60.0;
        self.level = (self.level + rate * (now - self.at).as_secs_f64()).min(self.capacity);
        self.at = now;
        self.level
    }

    /// Seconds until the bucket holds `amount`.
    pub(super) fn wait_for(&self, amount: f64) -> f64 {
        ((amount - self.level) / (self.capacity / 60.0)).max(0.0)
    }
}

pub(super) struct Limits {
    pub(super) requests: Bucket,
    pub(super) input: Bucket,
    pub(super) output: Bucket,
}

pub(super) fn model_class(model: &str) -> String {
    ["opus", "sonnet", "haiku"]
        .into_iter()
        .find(|c| model.contains(c))
        .unwrap_or(model)
        .to_owned()
}

/// What a request counts against the input limit: `(input, cache_creation, cache_read)`.
/// Without a prompt cache (`cache`), everything is uncached input.
pub(super) fn count_input(
    state: &mut State,
    key: &str,
    request: &Value,
    cache: bool,
) -> (u64, u64, u64) {
    let len = |v: Option<&Value>| v.map_or(0, |v| v.to_string().len() as u64);
    let prefix = [request.get("system"), request.get("tools")];
    let prefix_tokens: u64 = prefix.iter().map(|v| len(*v)).sum::<u64>() / 4;
    let cacheable = cache
        && prefix
            .iter()
            .any(|v| v.is_some_and(|v| v.to_string().contains("cache_control")));
    let messages = len(request.get("messages")) / 4 + 1;
    if !cacheable {
        return (messages + prefix_tokens, 0, 0);
    }
    let hash = {
        use std::hash::{Hash, Hasher};
        let mut h = std::collections::hash_map::DefaultHasher::new();
        prefix.iter().for_each(|v| len(*v).hash(&mut h));
        h.finish()
    };
    if state.cached.insert((key.to_owned(), hash)) {
        (messages, prefix_tokens, 0)
    } else {
        (messages, 0, prefix_tokens)
    }
}

pub(super) fn ratelimit_headers(headers: &mut HeaderMap, config: &MockConfig, limits: &Limits) {
    let now = std::time::SystemTime::now();
    for (name, limit, bucket) in [
        ("requests", config.rpm, &limits.requests),
        ("input-tokens", config.itpm, &limits.input),
        ("output-tokens", config.otpm, &limits.output),
    ] {
        let remaining = bucket.level.max(0.0).floor() as u64;
        let reset = now + Duration::from_secs_f64(bucket.wait_for(bucket.capacity));
        let set = |headers: &mut HeaderMap, field: &str, value: String| {
            headers.insert(
                http::HeaderName::from_bytes(
                    format!("anthropic-ratelimit-{name}-{field}").as_bytes(),
                )
                .expect("header name"),
                HeaderValue::from_str(&value).expect("header value"),
            );
        };
        set(headers, "limit", limit.to_string());
        set(headers, "remaining", remaining.to_string());
        set(
            headers,
            "reset",
            humantime::format_rfc3339_seconds(reset).to_string(),
        );
    }
}
