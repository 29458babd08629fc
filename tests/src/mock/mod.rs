//! A mock of the Anthropic Messages API, for tests and benchmarks.
//!
//! It enforces requests, input tokens and output tokens per minute as token buckets per
//! organization × model class, as the real API does (several keys may share an organization;
//! see `accounts` for workspaces and subscriptions), and answers with the real headers:
//! `anthropic-organization-id` and the `anthropic-ratelimit-*` family on every response, and on
//! a 429 a `retry-after` and an error body naming the limit. Responses are JSON or SSE (`"stream": true`) with usage. Latency,
//! 529s, spend-cap 429s and mid-stream errors can be injected. `GET /stats` counts everything;
//! `GET /mock/requests` lists the last requests seen (method, path, query, headers).
//!
//! Input tokens are counted as a quarter of the request's bytes, except that `system` and `tools`
//! blocks marked with `cache_control` are cache writes the first time a key sends them and cache
//! reads after that (cache reads do not count toward ITPM), which is how Claude Code's large
//! prompts behave.

mod accounts;
mod body;
mod limits;
mod messages;
mod wall;

pub use accounts::{Plan, Workspace};
pub use wall::SessionWall;

use std::collections::{HashMap, HashSet, VecDeque};
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::time::Instant;

use bytes::Bytes;
use http::{HeaderValue, Method, Request, Response, StatusCode};
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use serde::Serialize;
use serde_json::{Value, json};
use tokio::net::TcpListener;

use limits::Limits;
use messages::messages;

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
    /// Keys of one organization, `(key, organization id)`: they share its limits. Any other
    /// key is an organization of its own.
    pub organizations: Vec<(String, String)>,
    /// Workspaces with lower request limits of their own.
    pub workspaces: Vec<Workspace>,
    /// The subscription every OAuth token (`Bearer sk-ant-oat…`) belongs to.
    pub subscription: Option<Plan>,
    /// A path prefix every request must carry (`/anthropic`), as behind a company gateway;
    /// empty for none.
    pub base_path: String,
    /// When set, only these keys are valid: any other gets the API's 401, before any limit.
    pub known_keys: Option<Vec<String>>,
    /// When set, only these models exist: any other gets the API's 404 (`not_found_error`).
    pub known_models: Option<Vec<String>>,
    /// When set, Claude Code sessions starting together meet the API's bare 429 (see
    /// [`SessionWall`]).
    pub session_wall: Option<SessionWall>,
    /// Whether `system` and `tools` marked with `cache_control` are cached (counted as cache
    /// reads after the first time); without it, every byte counts as input.
    pub prompt_cache: bool,
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
            organizations: Vec::new(),
            workspaces: Vec::new(),
            subscription: None,
            base_path: String::new(),
            known_keys: None,
            known_models: None,
            session_wall: None,
            prompt_cache: true,
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
    /// 429 answers for a spent subscription window.
    pub window_rejected: u64,
    /// Streams cut by an injected mid-stream error.
    pub midstream_errors: u64,
    pub count_tokens: u64,
    /// The most `/v1/messages` requests in progress at once.
    pub max_concurrent: u64,
    /// 401 answers for a key the mock does not know.
    pub unauthorized: u64,
    /// 404 answers for a model the mock does not have.
    pub not_found: u64,
    /// 400 answers for a body that is not JSON or names no model.
    pub invalid: u64,
    /// Bare 429s: only `x-should-retry: true`, no `retry-after`, no rate-limit header, no
    /// organization (the session wall's, or injected).
    pub bare: u64,
}

/// Faults to inject into the next requests to `/v1/messages`.
#[derive(Debug, Clone, Default, serde::Deserialize)]
#[serde(default)]
pub struct Inject {
    /// Answer this many with 529.
    pub overloaded: u64,
    /// The `retry-after` header of those 529s, verbatim (none if unset).
    pub overloaded_retry_after: Option<String>,
    /// Their `retry-after-ms` header, verbatim (none if unset).
    pub overloaded_retry_after_ms: Option<String>,
    /// Answer this many with a rate-limit 429 carrying no usable wait: `retry-after` as
    /// [`Inject::blind_retry_after`] says (left out when unset).
    pub blind_429: u64,
    pub blind_retry_after: Option<String>,
    /// Answer this many with the spend-cap 429.
    pub spend_cap: u64,
    /// Cut this many streams with an SSE `error` event after the first delta.
    pub midstream_error: u64,
    /// Report this many input tokens (whatever the request held) in the next
    /// [`Inject::absurd_usage`] answers: a broken or hostile upstream.
    pub absurd_input_tokens: u64,
    pub absurd_usage: u64,
    /// Answer this many with a rate-limit 429 whose body carries a message of
    /// [`Inject::huge_429_bytes`] bytes (and `retry-after: 1`).
    pub huge_429: u64,
    pub huge_429_bytes: usize,
    /// Answer this many with a bare 429 (`x-should-retry: true` and nothing else).
    pub bare_429: u64,
    /// Name this many windows never named before in every answer (a broken upstream), each
    /// `anthropic-ratelimit-unified-jN-utilization: 0.5`.
    pub junk_windows: usize,
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
#[derive(Default)]
struct State {
    /// Per organization × model class.
    limits: HashMap<(String, String), Limits>,
    /// Per workspace × model class: its own request limit.
    workspace_limits: HashMap<(String, String), limits::Bucket>,
    /// What the subscription's windows have used.
    window_use: accounts::WindowUse,
    stats: Stats,
    inject: Inject,
    /// Prompt prefixes already cached, per key.
    cached: HashSet<(String, u64)>,
    seen: VecDeque<Seen>,
    in_progress: u64,
    /// Every `/v1/messages` answer: when (since the mock started) and its status.
    timeline: Vec<(Duration, u16)>,
    /// Sessions started, and those held at the session wall.
    wall: wall::Wall,
}

struct Mock {
    config: MockConfig,
    started: Instant,
    /// The same moment on the wall clock, for the windows' resets.
    started_wall: std::time::SystemTime,
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
            started_wall: std::time::SystemTime::now(),
            state: Mutex::default(),
            next_id: Default::default(),
        });
        let task = tokio::spawn(serve(listener, mock.clone()));
        Ok(MockUpstream { addr, mock, task })
    }

    /// Its base URL, with its path prefix.
    pub fn url(&self) -> String {
        format!("http://{}{}", self.addr, self.mock.config.base_path)
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
    // Behind a path prefix (a company gateway's `/anthropic`), the API's paths follow it.
    let path = match parts
        .uri
        .path()
        .strip_prefix(mock.config.base_path.as_str())
    {
        Some(rest) if rest.starts_with('/') || mock.config.base_path.is_empty() => rest,
        _ => {
            return json_response(
                StatusCode::NOT_FOUND,
                &error_body("not_found_error", &format!("no route {}", parts.uri.path())),
            );
        }
    };
    match (&parts.method, path) {
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
