//! One herd client making calls its strategy's way: directly with the SDKs' retries, honouring
//! retry-after, with a permit, or through the gateway.

use std::time::{Duration, Instant};

use pacer_client::{AcquireRequest, Client, Priority, outcome};
use serde_json::{Value, json};

use super::{MODEL, Strategy};

/// Makes one logical call the way a strategy does; true if it succeeded in the end.
pub struct Caller {
    pub strategy: Strategy,
    /// The API key it calls with.
    pub key: String,
    pub http: reqwest::Client,
    pub url: String,
    pub client: Option<Client>,
    pub priority: Priority,
}

impl Caller {
    async fn send(&self) -> Option<(u16, reqwest::header::HeaderMap, Option<Value>)> {
        let body = json!({"model": MODEL, "max_tokens": 64, "messages": [{"role": "user", "content": "hi"}]});
        let response = self
            .http
            .post(&self.url)
            .header("x-api-key", &self.key)
            .header("anthropic-version", "2023-06-01")
            .json(&body)
            .send()
            .await
            .ok()?;
        let status = response.status().as_u16();
        let headers = response.headers().clone();
        let json = response.json::<Value>().await.ok();
        Some((status, headers, json))
    }

    pub async fn call(&self) -> bool {
        match self.strategy {
            Strategy::SdkRetry => {
                for attempt in 0..=2u32 {
                    let answer = self.send().await;
                    let (status, headers) = match &answer {
                        Some((status, headers, _)) => (*status, Some(headers)),
                        None => (0, None),
                    };
                    if (200..300).contains(&status) {
                        return true;
                    }
                    let retryable =
                        status == 0 || matches!(status, 408 | 409 | 429) || status >= 500;
                    if !retryable || attempt == 2 {
                        return false;
                    }
                    tokio::time::sleep(sdk_backoff(attempt, headers)).await;
                }
                false
            }
            Strategy::RetryAfter => loop {
                match self.send().await {
                    Some((status, _, _)) if (200..300).contains(&status) => return true,
                    Some((429, headers, _)) => {
                        tokio::time::sleep(retry_after(&headers).unwrap_or(Duration::from_secs(1)))
                            .await
                    }
                    _ => return false,
                }
            },
            Strategy::PacerIpc => {
                let client = self.client.as_ref().expect("a pacer client");
                loop {
                    let Ok(permit) = client
                        .acquire(
                            AcquireRequest::new(&self.key, MODEL)
                                .input_tokens(10)
                                .max_tokens(64)
                                .priority(self.priority),
                        )
                        .await
                    else {
                        return false;
                    };
                    let Some((status, headers, json)) = self.send().await else {
                        let _ = permit.release().await;
                        return false;
                    };
                    let _ = permit
                        .report(outcome::from_response(status, &headers, json.as_ref()))
                        .await;
                    match status {
                        200..=299 => return true,
                        // pacer has paused everyone; take a new permit and try again.
                        429 | 529 => continue,
                        _ => return false,
                    }
                }
            }
            Strategy::PacerGateway => matches!(self.send().await, Some((200..=299, _, _))),
        }
    }
}

fn retry_after(headers: &reqwest::header::HeaderMap) -> Option<Duration> {
    let text = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    if let Some(ms) = text("retry-after-ms").and_then(|v| v.parse::<f64>().ok()) {
        return Duration::try_from_secs_f64(ms / 1000.0).ok();
    }
    text("retry-after")
        .and_then(|v| v.parse::<f64>().ok())
        .and_then(|s| Duration::try_from_secs_f64(s).ok())
}

/// The official SDKs' wait before retry `attempt` (0-based).
fn sdk_backoff(attempt: u32, headers: Option<&reqwest::header::HeaderMap>) -> Duration {
    if let Some(wait) = headers.and_then(retry_after)
        && wait > Duration::ZERO
        && wait <= Duration::from_secs(60)
    {
        return wait;
    }
    let base = (0.5 * 2f64.powi(attempt as i32)).min(8.0);
    let jitter = 1.0 - 0.25 * fastrand_f64();
    Duration::from_secs_f64(base * jitter)
}

/// A cheap uniform sample in [0, 1) without another dependency.
fn fastrand_f64() -> f64 {
    use std::hash::{BuildHasher, Hasher};
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher.write_u64(Instant::now().elapsed().as_nanos() as u64);
    (hasher.finish() >> 11) as f64 / (1u64 << 53) as f64
}
