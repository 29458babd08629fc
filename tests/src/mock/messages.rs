//! `POST /v1/messages`: the mock's decision for each request, and its answer.

use std::sync::Arc;

use tokio::time::Instant;

use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Response, StatusCode};
use serde_json::{Value, json};

use super::accounts::{self, Caller};
use super::body::{InProgress, message_json, sse};
use super::limits::{Bucket, Limits, count_input, model_class, ratelimit_headers};
use super::{Body, Mock, State, error_body, json_response};

/// The mock's decision for one Messages request.
pub(super) enum Verdict {
    Overloaded {
        retry_after: Option<String>,
        retry_after_ms: Option<String>,
    },
    /// A rate-limit 429 without a usable `retry-after`.
    Blind {
        retry_after: Option<String>,
    },
    SpendCap,
    /// The request-scoped throttle: a 429 with `x-should-retry: true` and nothing else.
    Bare,
    /// A rate-limit 429 whose message is `bytes` long.
    Huge {
        bytes: usize,
    },
    Limited {
        limit: &'static str,
        /// "organization" or "workspace".
        whose: &'static str,
        value: u64,
        retry_after: u64,
        headers: HeaderMap,
    },
    /// A subscription window is spent.
    WindowSpent {
        retry_after: u64,
        headers: HeaderMap,
    },
    Serve {
        usage: (u64, u64, u64),
        output: u64,
        headers: HeaderMap,
        midstream_error: bool,
    },
}

pub(super) async fn messages(
    mock: &Arc<Mock>,
    headers: &HeaderMap,
    body: &Bytes,
) -> Response<Body> {
    let Ok(request) = serde_json::from_slice::<Value>(body) else {
        mock.lock().stats.invalid += 1;
        return json_response(
            StatusCode::BAD_REQUEST,
            &error_body("invalid_request_error", "the body is not JSON"),
        );
    };
    let Some(model) = request
        .get("model")
        .and_then(Value::as_str)
        .map(str::to_owned)
    else {
        mock.lock().stats.invalid += 1;
        return json_response(
            StatusCode::BAD_REQUEST,
            &error_body("invalid_request_error", "model: Field required"),
        );
    };
    if let Some(models) = &mock.config.known_models
        && !models.contains(&model)
    {
        mock.lock().stats.not_found += 1;
        return json_response(
            StatusCode::NOT_FOUND,
            &error_body("not_found_error", &format!("model: {model}")),
        );
    }
    let (key, caller) = accounts::caller(&mock.config, headers);
    if let Some(known) = &mock.config.known_keys
        && !known.contains(&key)
    {
        mock.lock().stats.unauthorized += 1;
        return json_response(
            StatusCode::UNAUTHORIZED,
            &error_body("authentication_error", "invalid x-api-key"),
        );
    }
    let stream = request
        .get("stream")
        .and_then(Value::as_bool)
        .unwrap_or(false);
    let max_tokens = request
        .get("max_tokens")
        .and_then(Value::as_u64)
        .unwrap_or(4096);
    let config = &mock.config;
    let session = headers
        .get("x-claude-code-session-id")
        .and_then(|v| v.to_str().ok());
    let verdict = {
        let mut state = mock.lock();
        let state = &mut *state;
        let walled = match (&config.session_wall, session) {
            (Some(wall), Some(session)) => state.wall.meets(wall, session, Instant::now()),
            _ => false,
        };
        if walled || state.inject.bare_429 > 0 {
            if !walled {
                state.inject.bare_429 -= 1;
            }
            state.stats.bare += 1;
            Verdict::Bare
        } else if state.inject.overloaded > 0 {
            state.inject.overloaded -= 1;
            state.stats.overloaded += 1;
            Verdict::Overloaded {
                retry_after: state.inject.overloaded_retry_after.clone(),
                retry_after_ms: state.inject.overloaded_retry_after_ms.clone(),
            }
        } else if state.inject.blind_429 > 0 {
            state.inject.blind_429 -= 1;
            state.stats.rate_limited += 1;
            Verdict::Blind {
                retry_after: state.inject.blind_retry_after.clone(),
            }
        } else if state.inject.spend_cap > 0 {
            state.inject.spend_cap -= 1;
            state.stats.spend_capped += 1;
            Verdict::SpendCap
        } else if state.inject.huge_429 > 0 {
            state.inject.huge_429 -= 1;
            state.stats.rate_limited += 1;
            Verdict::Huge {
                bytes: state.inject.huge_429_bytes,
            }
        } else {
            decide(
                mock, state, &key, &caller, &request, &model, stream, max_tokens,
            )
        }
    };
    if !config.latency.is_zero() {
        tokio::time::sleep(config.latency).await;
    }
    let status = match &verdict {
        Verdict::Overloaded { .. } => 529,
        Verdict::Blind { .. }
        | Verdict::Bare
        | Verdict::Huge { .. }
        | Verdict::SpendCap
        | Verdict::Limited { .. }
        | Verdict::WindowSpent { .. } => 429,
        Verdict::Serve { .. } => 200,
    };
    let (answered, junk) = {
        let mut state = mock.lock();
        state.timeline.push((mock.started.elapsed(), status));
        (state.timeline.len(), state.inject.junk_windows)
    };
    let bare = matches!(verdict, Verdict::Bare);
    let mut response = answer(mock, verdict, &model, stream);
    for n in 0..junk {
        let name = format!("anthropic-ratelimit-unified-j{answered}x{n}-utilization");
        response.headers_mut().insert(
            http::HeaderName::from_bytes(name.as_bytes()).expect("a header name"),
            HeaderValue::from_static("0.5"),
        );
    }
    if bare {
        // Nothing about limits, windows or whose they are.
        return response;
    }
    response.headers_mut().insert(
        "anthropic-organization-id",
        HeaderValue::from_str(&caller.organization).expect("an organization id"),
    );
    if let Some(workspace) = &caller.workspace {
        response.headers_mut().insert(
            "anthropic-workspace-id",
            HeaderValue::from_str(&workspace.id).expect("a workspace id"),
        );
    }
    response
}

/// The answer for a verdict.
fn answer(mock: &Arc<Mock>, verdict: Verdict, model: &str, stream: bool) -> Response<Body> {
    let config = &mock.config;
    match verdict {
        Verdict::Overloaded {
            retry_after,
            retry_after_ms,
        } => {
            let mut response = json_response(
                StatusCode::from_u16(529).expect("529"),
                &error_body("overloaded_error", "Overloaded"),
            );
            if let Some(value) = retry_after.and_then(|v| HeaderValue::from_str(&v).ok()) {
                response.headers_mut().insert("retry-after", value);
            }
            if let Some(value) = retry_after_ms.and_then(|v| HeaderValue::from_str(&v).ok()) {
                response.headers_mut().insert("retry-after-ms", value);
            }
            response
        }
        Verdict::Blind { retry_after } => {
            let mut response = json_response(
                StatusCode::TOO_MANY_REQUESTS,
                &error_body("rate_limit_error", "Rate limited. Please try again later."),
            );
            if let Some(value) = retry_after.and_then(|v| HeaderValue::from_str(&v).ok()) {
                response.headers_mut().insert("retry-after", value);
            }
            response
        }
        Verdict::Huge { bytes } => {
            let mut response = json_response(
                StatusCode::TOO_MANY_REQUESTS,
                &error_body("rate_limit_error", &"x".repeat(bytes)),
            );
            response
                .headers_mut()
                .insert("retry-after", HeaderValue::from(1));
            response
        }
        Verdict::Bare => {
            let mut response = json_response(
                StatusCode::TOO_MANY_REQUESTS,
                &error_body("rate_limit_error", "Rate limited"),
            );
            let headers = response.headers_mut();
            headers.insert("x-should-retry", HeaderValue::from_static("true"));
            headers.insert("x-robots-tag", HeaderValue::from_static("none"));
            response
        }
        Verdict::SpendCap => json_response(
            StatusCode::TOO_MANY_REQUESTS,
            &json!({"type": "error", "error": {"type": "rate_limit_error",
                "message": "You have reached your specified API usage limits. You will regain access on 2026-12-01 at 00:00 UTC.",
                "details": {"error_code": "enforced_spend_limit_reached"}}, "request_id": "req_mock"}),
        ),
        Verdict::Limited {
            limit,
            whose,
            value,
            retry_after,
            headers,
        } => {
            let message = format!(
                "This request would exceed your {whose}'s rate limit of {value} {limit} per minute \
                 (org: mock, model: {model}). For details, refer to: https://docs.claude.com/en/api/rate-limits."
            );
            let mut response = json_response(
                StatusCode::TOO_MANY_REQUESTS,
                &error_body("rate_limit_error", &message),
            );
            response.headers_mut().extend(headers);
            response
                .headers_mut()
                .insert("retry-after", HeaderValue::from(retry_after));
            response
        }
        Verdict::WindowSpent {
            retry_after,
            headers,
        } => {
            let message =
                "This request would exceed your account's rate limit. Please try again later.";
            let mut response = json_response(
                StatusCode::TOO_MANY_REQUESTS,
                &error_body("rate_limit_error", message),
            );
            response.headers_mut().extend(headers);
            response
                .headers_mut()
                .insert("retry-after", HeaderValue::from(retry_after));
            response
        }
        Verdict::Serve {
            usage,
            output,
            headers,
            midstream_error,
        } => {
            let id = mock
                .next_id
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            let guard = InProgress::new(mock.clone());
            let mut response = if stream {
                sse(
                    id,
                    model,
                    usage,
                    output,
                    config.event_gap,
                    midstream_error,
                    guard,
                )
            } else {
                drop(guard);
                json_response(StatusCode::OK, &message_json(id, model, usage, output))
            };
            response.headers_mut().extend(headers);
            response.headers_mut().insert(
                "request-id",
                HeaderValue::from_str(&format!("req_mock_{id}")).expect("id"),
            );
            response
        }
    }
}

/// The decision for a request within the limits' reach (no fault injected).
#[allow(clippy::too_many_arguments)]
fn decide(
    mock: &Mock,
    state: &mut State,
    key: &str,
    caller: &Caller,
    request: &Value,
    model: &str,
    stream: bool,
    max_tokens: u64,
) -> Verdict {
    let config = &mock.config;
    let subscription = config.subscription.as_ref().filter(|_| caller.subscriber);
    if let Some(subscription) = subscription {
        let (headers, spent) =
            accounts::unified_headers(subscription, state.window_use, mock.started_wall, model);
        if spent {
            state.stats.window_rejected += 1;
            let retry_after =
                accounts::retry_after(subscription, state.window_use, mock.started_wall);
            return Verdict::WindowSpent {
                retry_after,
                headers,
            };
        }
    }
    let usage = count_input(state, key, request, config.prompt_cache);
    let class = model_class(model);
    let limits = state
        .limits
        .entry((caller.organization.clone(), class.clone()))
        .or_insert_with(|| Limits {
            requests: Bucket::new(config.rpm),
            input: Bucket::new(config.itpm),
            output: Bucket::new(config.otpm),
        });
    let counted = (usage.0 + usage.1) as f64;
    let requests = limits.requests.refill();
    let input = limits.input.refill();
    let output = limits.output.refill();
    let mut refusal = if requests < 1.0 {
        Some((
            "requests",
            "organization",
            config.rpm,
            limits.requests.wait_for(1.0),
        ))
    } else if input < counted.min(limits.input.capacity) {
        let wait = limits.input.wait_for(counted.min(limits.input.capacity));
        Some(("input tokens", "organization", config.itpm, wait))
    } else if output < 0.0 {
        Some((
            "output tokens",
            "organization",
            config.otpm,
            limits.output.wait_for(0.0),
        ))
    } else {
        None
    };
    let workspace = caller.workspace.as_ref().map(|w| {
        let bucket = state
            .workspace_limits
            .entry((w.id.clone(), class.clone()))
            .or_insert_with(|| Bucket::new(w.rpm));
        bucket.refill();
        (w.rpm, bucket)
    });
    if let Some((rpm, bucket)) = &workspace
        && refusal.is_none()
        && bucket.level < 1.0
    {
        refusal = Some(("requests", "workspace", *rpm, bucket.wait_for(1.0)));
    }
    let limits = state
        .limits
        .get_mut(&(caller.organization.clone(), class.clone()))
        .expect("just made");
    let mut response_headers = HeaderMap::new();
    if let Some((limit, whose, value, wait)) = refusal {
        ratelimit_headers(&mut response_headers, config, limits);
        state.stats.rate_limited += 1;
        return Verdict::Limited {
            limit,
            whose,
            value,
            retry_after: wait.ceil().max(1.0) as u64,
            headers: response_headers,
        };
    }
    let output_tokens = config.output_tokens.min(max_tokens).max(1);
    limits.requests.level -= 1.0;
    limits.input.level -= counted;
    // Output is counted as it is produced; charged up front here for simplicity.
    limits.output.level -= output_tokens as f64;
    ratelimit_headers(&mut response_headers, config, limits);
    if let Some(w) = &caller.workspace {
        let bucket = state
            .workspace_limits
            .get_mut(&(w.id.clone(), class))
            .expect("just made");
        bucket.level -= 1.0;
        // A workspace key sees its workspace's request limit, when lower.
        if w.rpm < config.rpm {
            response_headers.insert(
                "anthropic-ratelimit-requests-limit",
                HeaderValue::from(w.rpm),
            );
            response_headers.insert(
                "anthropic-ratelimit-requests-remaining",
                HeaderValue::from(bucket.level.max(0.0).floor() as u64),
            );
        }
    }
    if let Some(subscription) = subscription {
        state.window_use.five_hour += 1;
        state.window_use.seven_day += 1;
        if model.contains("opus") {
            state.window_use.seven_day_opus += 1;
        }
        let (headers, _) =
            accounts::unified_headers(subscription, state.window_use, mock.started_wall, model);
        response_headers.extend(headers);
    }
    let usage = if state.inject.absurd_usage > 0 {
        state.inject.absurd_usage -= 1;
        (state.inject.absurd_input_tokens, usage.1, usage.2)
    } else {
        usage
    };
    let midstream_error = stream && state.inject.midstream_error > 0;
    if midstream_error {
        state.inject.midstream_error -= 1;
        state.stats.midstream_errors += 1;
    } else {
        state.stats.ok += 1;
    }
    Verdict::Serve {
        usage,
        output: output_tokens,
        headers: response_headers,
        midstream_error,
    }
}
