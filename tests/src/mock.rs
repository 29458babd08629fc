//! A mock of the Anthropic Messages API, for tests and benchmarks.
//!
//! It enforces requests, input tokens and output tokens per minute as token buckets per API key ×
//! model class, as the real API does, and answers with the real headers: the
//! `anthropic-ratelimit-*` family on every response, and on a 429 a `retry-after` and an error
//! body naming the limit. Responses are JSON or SSE (`"stream": true`) with usage. Latency,
//! 529s, spend-cap 429s and mid-stream errors can be injected. `GET /stats` counts everything;
//! `GET /mock/requests` lists the last requests seen (method, path, query, headers).
//!
//! Input tokens are counted as a quarter of the request's bytes, except that `system` and `tools`
//! blocks marked with `cache_control` are cache writes the first time a key sends them and cache
//! reads after that (cache reads do not count toward ITPM), which is how Claude Code's large
//! prompts behave.

use std::collections::{HashMap, HashSet, VecDeque};
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_util::StreamExt;
use http::{HeaderMap, HeaderValue, Method, Request, Response, StatusCode};
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper_util::rt::TokioIo;
use serde::Serialize;
use serde_json::{Value, json};
use tokio::net::TcpListener;

type Body = UnsyncBoxBody<Bytes, Infallible>;

/// How the mock behaves.
#[derive(Debug, Clone)]
pub struct MockConfig {
    pub rpm: u64,
    pub itpm: u64,
    pub otpm: u64,
    /// Time before the first byte of each answer.
    pub latency: Duration,
    /// Output tokens of every answer (capped at the request's `max_tokens`).
    pub output_tokens: u64,
    /// Pause between streamed events.
    pub event_gap: Duration,
}

impl Default for MockConfig {
    fn default() -> Self {
        Self {
            rpm: 120,
            itpm: 100_000,
            otpm: 100_000,
            latency: Duration::ZERO,
            output_tokens: 16,
            event_gap: Duration::ZERO,
        }
    }
}

/// Counters served at `/stats`.
#[derive(Debug, Clone, Default, Serialize, PartialEq, Eq)]
pub struct Stats {
    /// Every request received, of any kind.
    pub requests: u64,
    /// `POST /v1/messages` answered 200.
    pub ok: u64,
    /// 429 answers for a rate limit.
    pub rate_limited: u64,
    /// 429 answers for the spend cap.
    pub spend_capped: u64,
    /// 529 answers.
    pub overloaded: u64,
    /// Streams cut by an injected mid-stream error.
    pub midstream_errors: u64,
    pub count_tokens: u64,
    /// The most `/v1/messages` requests in progress at once.
    pub max_concurrent: u64,
}

/// Faults to inject into the next requests to `/v1/messages`.
#[derive(Debug, Clone, Default, serde::Deserialize)]
#[serde(default)]
pub struct Inject {
    /// Answer this many with 529.
    pub overloaded: u64,
    /// Answer this many with the spend-cap 429.
    pub spend_cap: u64,
    /// Cut this many streams with an SSE `error` event after the first delta.
    pub midstream_error: u64,
}

/// A request as the mock saw it.
#[derive(Debug, Clone, Serialize)]
pub struct Seen {
    pub method: String,
    pub path: String,
    pub query: Option<String>,
    pub headers: Vec<(String, String)>,
    pub body_bytes: usize,
}

struct Bucket {
    capacity: f64,
    level: f64,
    at: Instant,
}

impl Bucket {
    fn new(limit: u64) -> Self {
        Self {
            capacity: limit as f64,
            level: limit as f64,
            at: Instant::now(),
        }
    }

    fn refill(&mut self) -> f64 {
        let now = Instant::now();
        let rate = self.capacity / 60.0;
        self.level = (self.level + rate * (now - self.at).as_secs_f64()).min(self.capacity);
        self.at = now;
        self.level
    }

    /// Seconds until the bucket holds `amount`.
    fn wait_for(&self, amount: f64) -> f64 {
        ((amount - self.level) / (self.capacity / 60.0)).max(0.0)
    }
}

struct Limits {
    requests: Bucket,
    input: Bucket,
    output: Bucket,
}

#[derive(Default)]
struct State {
    limits: HashMap<(String, String), Limits>,
    stats: Stats,
    inject: Inject,
    /// Prompt prefixes already cached, per key.
    cached: HashSet<(String, u64)>,
    seen: VecDeque<Seen>,
    in_progress: u64,
    /// Every `/v1/messages` answer: when (since the mock started) and its status.
    timeline: Vec<(Duration, u16)>,
}

struct Mock {
    config: MockConfig,
    started: Instant,
    state: Mutex<State>,
    next_id: std::sync::atomic::AtomicU64,
}

/// A running mock; stops when dropped.
pub struct MockUpstream {
    addr: SocketAddr,
    mock: Arc<Mock>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for MockUpstream {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl MockUpstream {
    /// Starts a mock on an ephemeral port of 127.0.0.1.
    pub async fn start(config: MockConfig) -> MockUpstream {
        Self::start_on("127.0.0.1:0".parse().expect("address"), config)
            .await
            .expect("bind the mock upstream")
    }

    pub async fn start_on(addr: SocketAddr, config: MockConfig) -> std::io::Result<MockUpstream> {
        let listener = TcpListener::bind(addr).await?;
        let addr = listener.local_addr()?;
        let mock = Arc::new(Mock {
            config,
            started: Instant::now(),
            state: Mutex::default(),
            next_id: Default::default(),
        });
        let task = tokio::spawn(serve(listener, mock.clone()));
        Ok(MockUpstream { addr, mock, task })
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    pub fn stats(&self) -> Stats {
        self.mock.lock().stats.clone()
    }

    pub fn inject(&self, inject: Inject) {
        self.mock.lock().inject = inject;
    }

    /// `/v1/messages` requests being answered right now.
    pub fn in_progress(&self) -> u64 {
        self.mock.lock().in_progress
    }

    /// Every `/v1/messages` answer so far: time since the mock started, and status.
    pub fn timeline(&self) -> Vec<(Duration, u16)> {
        self.mock.lock().timeline.clone()
    }

    /// The requests seen most recently (up to 100), oldest first.
    pub fn seen(&self) -> Vec<Seen> {
        self.mock.lock().seen.iter().cloned().collect()
    }
}

impl Mock {
    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }
}

async fn serve(listener: TcpListener, mock: Arc<Mock>) {
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        let _ = stream.set_nodelay(true);
        let mock = mock.clone();
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |request| {
                let mock = mock.clone();
                async move { Ok::<_, Infallible>(handle(mock, request).await) }
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}

fn full(status: StatusCode, body: impl Into<Bytes>) -> Response<Body> {
    let mut response = Response::new(Full::new(body.into()).boxed_unsync());
    *response.status_mut() = status;
    response
}

fn json_response(status: StatusCode, value: &Value) -> Response<Body> {
    let mut response = full(status, value.to_string());
    response
        .headers_mut()
        .insert("content-type", HeaderValue::from_static("application/json"));
    response
}

fn error_body(kind: &str, message: &str) -> Value {
    json!({"type": "error", "error": {"type": kind, "message": message}, "request_id": "req_mock"})
}

async fn handle(mock: Arc<Mock>, request: Request<Incoming>) -> Response<Body> {
    let (parts, body) = request.into_parts();
    let body = body
        .collect()
        .await
        .map(|b| b.to_bytes())
        .unwrap_or_default();
    {
        let mut state = mock.lock();
        state.stats.requests += 1;
        if state.seen.len() >= 100 {
            state.seen.pop_front();
        }
        state.seen.push_back(Seen {
            method: parts.method.to_string(),
            path: parts.uri.path().to_owned(),
            query: parts.uri.query().map(str::to_owned),
            headers: parts
                .headers
                .iter()
                .map(|(n, v)| {
                    (
                        n.to_string(),
                        String::from_utf8_lossy(v.as_bytes()).into_owned(),
                    )
                })
                .collect(),
            body_bytes: body.len(),
        });
    }
    match (&parts.method, parts.uri.path()) {
        (&Method::GET, "/stats") => json_response(StatusCode::OK, &json!(mock.lock().stats)),
        (&Method::GET, "/mock/requests") => json_response(StatusCode::OK, &json!(mock.lock().seen)),
        (&Method::POST, "/mock/inject") => match serde_json::from_slice::<Inject>(&body) {
            Ok(inject) => {
                mock.lock().inject = inject;
                json_response(StatusCode::OK, &json!({"ok": true}))
            }
            Err(e) => json_response(
                StatusCode::BAD_REQUEST,
                &error_body("invalid_request_error", &e.to_string()),
            ),
        },
        (&Method::POST, "/v1/messages") => messages(&mock, &parts.headers, &body).await,
        (&Method::POST, "/v1/messages/count_tokens") => {
            mock.lock().stats.count_tokens += 1;
            json_response(StatusCode::OK, &json!({"input_tokens": body.len() / 4}))
        }
        (&Method::GET, "/v1/models") => json_response(
            StatusCode::OK,
            &json!({"data": [{"type": "model", "id": "claude-sonnet-4-5", "display_name": "Claude Sonnet 4.5"}], "has_more": false}),
        ),
        (&Method::HEAD, _) => full(StatusCode::OK, Bytes::new()),
        _ => json_response(
            StatusCode::NOT_FOUND,
            &error_body("not_found_error", &format!("no route {}", parts.uri.path())),
        ),
    }
}

fn model_class(model: &str) -> String {
    ["opus", "sonnet", "haiku"]
        .into_iter()
        .find(|c| model.contains(c))
        .unwrap_or(model)
        .to_owned()
}

/// What a request counts against the input limit: `(input, cache_creation, cache_read)`.
fn count_input(state: &mut State, key: &str, request: &Value) -> (u64, u64, u64) {
    let len = |v: Option<&Value>| v.map_or(0, |v| v.to_string().len() as u64);
    let prefix = [request.get("system"), request.get("tools")];
    let prefix_tokens: u64 = prefix.iter().map(|v| len(*v)).sum::<u64>() / 4;
    let cacheable = prefix
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

fn ratelimit_headers(headers: &mut HeaderMap, config: &MockConfig, limits: &Limits) {
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

/// The mock's decision for one Messages request.
enum Verdict {
    Overloaded,
    SpendCap,
    Limited {
        limit: &'static str,
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

async fn messages(mock: &Arc<Mock>, headers: &HeaderMap, body: &Bytes) -> Response<Body> {
    let Ok(request) = serde_json::from_slice::<Value>(body) else {
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
        return json_response(
            StatusCode::BAD_REQUEST,
            &error_body("invalid_request_error", "model: Field required"),
        );
    };
    let key = headers
        .get("x-api-key")
        .or_else(|| headers.get("authorization"))
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_owned();
    let stream = request
        .get("stream")
        .and_then(Value::as_bool)
        .unwrap_or(false);
    let max_tokens = request
        .get("max_tokens")
        .and_then(Value::as_u64)
        .unwrap_or(4096);
    let config = &mock.config;
    let verdict = {
        let mut state = mock.lock();
        let state = &mut *state;
        if state.inject.overloaded > 0 {
            state.inject.overloaded -= 1;
            state.stats.overloaded += 1;
            Verdict::Overloaded
        } else if state.inject.spend_cap > 0 {
            state.inject.spend_cap -= 1;
            state.stats.spend_capped += 1;
            Verdict::SpendCap
        } else {
            let usage = count_input(state, &key, &request);
            let limits = state
                .limits
                .entry((key.clone(), model_class(&model)))
                .or_insert_with(|| Limits {
                    requests: Bucket::new(config.rpm),
                    input: Bucket::new(config.itpm),
                    output: Bucket::new(config.otpm),
                });
            let counted = (usage.0 + usage.1) as f64;
            let requests = limits.requests.refill();
            let input = limits.input.refill();
            let output = limits.output.refill();
            let refusal = if requests < 1.0 {
                Some(("requests", limits.requests.wait_for(1.0)))
            } else if input < counted.min(limits.input.capacity) {
                Some((
                    "input tokens",
                    limits.input.wait_for(counted.min(limits.input.capacity)),
                ))
            } else if output < 0.0 {
                Some(("output tokens", limits.output.wait_for(0.0)))
            } else {
                None
            };
            let mut response_headers = HeaderMap::new();
            match refusal {
                Some((limit, wait)) => {
                    ratelimit_headers(&mut response_headers, config, limits);
                    state.stats.rate_limited += 1;
                    Verdict::Limited {
                        limit,
                        retry_after: wait.ceil().max(1.0) as u64,
                        headers: response_headers,
                    }
                }
                None => {
                    let output_tokens = config.output_tokens.min(max_tokens).max(1);
                    limits.requests.level -= 1.0;
                    limits.input.level -= counted;
                    // Output is counted as it is produced; charged up front here for simplicity.
                    limits.output.level -= output_tokens as f64;
                    ratelimit_headers(&mut response_headers, config, limits);
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
            }
        }
    };
    if !config.latency.is_zero() {
        tokio::time::sleep(config.latency).await;
    }
    let status = match &verdict {
        Verdict::Overloaded => 529,
        Verdict::SpendCap | Verdict::Limited { .. } => 429,
        Verdict::Serve { .. } => 200,
    };
    mock.lock().timeline.push((mock.started.elapsed(), status));
    match verdict {
        Verdict::Overloaded => json_response(
            StatusCode::from_u16(529).expect("529"),
            &error_body("overloaded_error", "Overloaded"),
        ),
        Verdict::SpendCap => json_response(
            StatusCode::TOO_MANY_REQUESTS,
            &json!({"type": "error", "error": {"type": "rate_limit_error",
                "message": "You have reached your specified API usage limits. You will regain access on 2026-12-01 at 00:00 UTC.",
                "details": {"error_code": "enforced_spend_limit_reached"}}, "request_id": "req_mock"}),
        ),
        Verdict::Limited {
            limit,
            retry_after,
            headers,
        } => {
            let value = match limit {
                "requests" => config.rpm,
                "input tokens" => config.itpm,
                _ => config.otpm,
            };
            let message = format!(
                "This request would exceed your organization's rate limit of {value} {limit} per minute \
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
                    &model,
                    usage,
                    output,
                    config.event_gap,
                    midstream_error,
                    guard,
                )
            } else {
                drop(guard);
                json_response(StatusCode::OK, &message_json(id, &model, usage, output))
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

/// Counts a request in progress for `max_concurrent`, until dropped.
struct InProgress(Arc<Mock>);

impl InProgress {
    fn new(mock: Arc<Mock>) -> Self {
        {
            let mut state = mock.lock();
            state.in_progress += 1;
            state.stats.max_concurrent = state.stats.max_concurrent.max(state.in_progress);
        }
        Self(mock)
    }
}

impl Drop for InProgress {
    fn drop(&mut self) {
        self.0.lock().in_progress -= 1;
    }
}

/// The answer's text: one word per output token, "Hello from the mock API." repeated.
fn text_for(output: u64) -> String {
    const WORDS: [&str; 5] = ["Hello", " from", " the", " mock", " API."];
    (0..output as usize)
        .map(|i| match (i, WORDS[i % WORDS.len()]) {
            (i, word) if i > 0 && i % WORDS.len() == 0 => format!(" {word}"),
            (_, word) => word.to_owned(),
        })
        .collect()
}

fn usage_json(usage: (u64, u64, u64), output: u64) -> Value {
    json!({"input_tokens": usage.0, "cache_creation_input_tokens": usage.1,
           "cache_read_input_tokens": usage.2, "output_tokens": output})
}

fn message_json(id: u64, model: &str, usage: (u64, u64, u64), output: u64) -> Value {
    json!({
        "id": format!("msg_mock_{id}"), "type": "message", "role": "assistant", "model": model,
        "content": [{"type": "text", "text": text_for(output)}],
        "stop_reason": "end_turn", "stop_sequence": null,
        "usage": usage_json(usage, output),
    })
}

fn sse(
    id: u64,
    model: &str,
    usage: (u64, u64, u64),
    output: u64,
    gap: Duration,
    midstream_error: bool,
    guard: InProgress,
) -> Response<Body> {
    let event = |name: &str, data: Value| Bytes::from(format!("event: {name}\ndata: {data}\n\n"));
    let mut start = message_json(id, model, usage, 1);
    start["content"] = json!([]);
    start["stop_reason"] = Value::Null;
    let mut events = vec![
        event(
            "message_start",
            json!({"type": "message_start", "message": start}),
        ),
        event(
            "content_block_start",
            json!({"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}}),
        ),
        event("ping", json!({"type": "ping"})),
    ];
    let text = text_for(output);
    let words: Vec<&str> = text.split_inclusive(' ').collect();
    for (i, word) in words.iter().enumerate() {
        events.push(event(
            "content_block_delta",
            json!({"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": word}}),
        ));
        if midstream_error && i == 0 {
            events.push(event(
                "error",
                json!({"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}}),
            ));
            break;
        }
    }
    if !midstream_error {
        events.push(event(
            "content_block_stop",
            json!({"type": "content_block_stop", "index": 0}),
        ));
        events.push(event(
            "message_delta",
            json!({"type": "message_delta", "delta": {"stop_reason": "end_turn", "stop_sequence": null},
                   "usage": {"output_tokens": output}}),
        ));
        events.push(event("message_stop", json!({"type": "message_stop"})));
    }
    let stream = futures_util::stream::iter(events.into_iter().enumerate()).then(
        move |(i, bytes)| async move {
            if !gap.is_zero() && i > 0 {
                tokio::time::sleep(gap).await;
            }
            Ok::<_, Infallible>(Frame::data(bytes))
        },
    );
    // The request counts as in progress for as long as its body is being sent.
    let stream = stream.chain(futures_util::stream::once(async move {
        drop(guard);
        Ok(Frame::data(Bytes::new()))
    }));
    let mut response = Response::new(StreamBody::new(stream).boxed_unsync());
    response.headers_mut().insert(
        "content-type",
        HeaderValue::from_static("text/event-stream; charset=utf-8"),
    );
    response
        .headers_mut()
        .insert("cache-control", HeaderValue::from_static("no-cache"));
    response
}
