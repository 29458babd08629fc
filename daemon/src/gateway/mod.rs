//! The local HTTP gateway: Claude Code and every SDK through pacer, unchanged. It also answers
//! `GET /metrics` (Prometheus) and `GET /healthz` itself.
//!
//! They all honour `ANTHROPIC_BASE_URL`, so `pacer run` points it here. Every method and path is
//! forwarded to the upstream API; `POST /v1/messages` and `POST /v1/messages/count_tokens` are
//! first gated by the same budgets as socket permits (the gateway is an in-process client of the
//! broker), so gateway and library clients share one budget and pause together.
//!
//! What a request and its answer mean (which endpoint, the key, the body's model, each kind of
//! answer and what to do with it) is `pacer-api`'s, shared with the Python transports; the
//! gateway does the I/O:
//!
//! - this file: the HTTP server, and which requests are gated and how (the model, the client,
//!   the input estimate);
//! - [`route`]: the `/s/<client>~<priority>/` prefix, which endpoint a request is, and who asks;
//! - `gated`: drives a gated request's [`pacer_api::GatedCall`] with tokio: acquires, sends,
//!   reads, settles, and answers;
//! - `forward`: which headers cross, and streaming the answer back;
//! - `metered`: reading usage off the response as it streams, and settling the permit;
//! - `reply`: the gateway's own answers, in the API's error shape;
//! - `server`: accepting connections (up to a cap) and reading requests within time limits.

mod body;
mod forward;
mod gated;
mod memory;
mod metered;
mod reply;
pub mod route;
mod server;

pub use server::serve;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use http::{HeaderMap, Request, Response, StatusCode};
use hyper::body::Incoming;
use pacer_protocol::KeyFingerprint;

use crate::config::GatewayConfig;
use crate::hub::Hub;
use crate::warn_throttled;
use body::GatewayBody;
use forward::Upstream;
use gated::{Forward, Gate};
use pacer_api::Endpoint;
use pacer_api::fields::{self, MessagesFields};
use pacer_broker::{MAX_MODEL_LEN, MAX_NAME_LEN};
use route::RequestPath;
use server::{BodyError, discard, read_body};

static BUSY_BODIES: crate::throttle::Throttle =
    crate::throttle::Throttle::new(Duration::from_secs(10));

/// The largest request body accepted.
pub const MAX_BODY: usize = 32 << 20;
/// The budget `count_tokens` calls draw on (per key); only its request limit is enforced.
pub const COUNT_TOKENS_BUDGET: &str = "count_tokens";

pub struct Gateway {
    hub: Arc<Hub>,
    upstream: Upstream,
    /// Whether `GET /metrics` is answered (`[metrics] enabled`).
    metrics: bool,
    /// In milliseconds; a configuration reload may change it.
    max_hold_ms: AtomicU64,
    /// The memory gated request bodies hold together.
    bodies: Arc<memory::BodyMemory>,
}

impl Gateway {
    pub fn new(
        hub: Arc<Hub>,
        config: &GatewayConfig,
        metrics: bool,
    ) -> anyhow::Result<Arc<Gateway>> {
        Ok(Arc::new(Gateway {
            hub,
            upstream: Upstream::new(config.upstream.clone())?,
            metrics,
            max_hold_ms: AtomicU64::new(config.max_hold.as_millis() as u64),
            bodies: memory::BodyMemory::new(config.max_buffered),
        }))
    }

    /// How long a request may be held waiting for the budget.
    pub fn max_hold(&self) -> Duration {
        Duration::from_millis(self.max_hold_ms.load(Ordering::Relaxed))
    }

    pub fn set_max_hold(&self, max_hold: Duration) {
        self.max_hold_ms
            .store(max_hold.as_millis() as u64, Ordering::Relaxed);
    }

    /// Answers one HTTP request.
    pub async fn handle(self: Arc<Self>, request: Request<Incoming>) -> Response<GatewayBody> {
        let (parts, body) = request.into_parts();
        if let Some(segment) = route::escaping_segment(parts.uri.path()) {
            // `..` would climb out of an upstream's path prefix (or a route's).
            discard(body).await;
            self.hub.stats().count_refusal();
            return reply::error(
                StatusCode::BAD_REQUEST,
                "invalid_request_error",
                format!("pacer gateway: the path segment `{segment}` is not allowed"),
            );
        }
        if let Some(answer) = self.own_answer(&parts.method, parts.uri.path()) {
            discard(body).await;
            return answer;
        }
        let route = RequestPath::parse(&parts.method, parts.uri.path());
        // A registered route forwards to its own upstream; a route nobody registered is
        // refused (the gateway is no open proxy).
        let base = match &route.route {
            Some(id) => {
                let (client, _) = route::identity(&route, &parts.headers);
                match self.hub.resolve_route(id, &client) {
                    Some(base) => base,
                    None => {
                        discard(body).await;
                        return reply::unknown_route(id);
                    }
                }
            }
            None => self.upstream.base.clone(),
        };
        let url = self.upstream.url(&base, &route.path, parts.uri.query());
        if route.endpoint == Endpoint::Other {
            // Not gated: the body streams through unread, whatever its size (batches, files).
            let headers = forward::request_headers(&parts.headers, false);
            let body = server::streaming_body(body);
            return self
                .pass_through(parts.method, url, headers, body, &base)
                .await;
        }
        // Gated: the body is read whole (to find the model, and to retry it after a 429), up to
        // the API's own request limit.
        let declared = parts
            .headers
            .get(http::header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<usize>().ok());
        if declared.is_some_and(|len| len > MAX_BODY) {
            discard(body).await;
            return reply::too_large(MAX_BODY);
        }
        let mut body = body;
        let (body, held) = match read_body(&mut body, &self.bodies, declared).await {
            Ok(read) => read,
            Err(BodyError::TooLarge) => {
                discard(body).await;
                return reply::too_large(MAX_BODY);
            }
            Err(e @ BodyError::Busy(_)) => {
                self.hub.stats().count_refusal();
                warn_throttled!(BUSY_BODIES, "refused a request: {e}");
                return reply::busy(format!("pacer gateway: {e}; try again shortly"));
            }
            Err(e) => {
                return reply::error(
                    StatusCode::BAD_REQUEST,
                    "invalid_request_error",
                    format!("pacer gateway: {e}"),
                );
            }
        };
        let forward = Forward {
            method: http::Method::POST,
            url,
            headers: forward::request_headers(&parts.headers, true),
            body,
            _held: held,
            base,
        };
        match self.gate(&route, &parts.headers, &forward) {
            Ok(Some(gate)) => gated::handle(&self, gate, forward).await,
            Err(refusal) => {
                self.hub.stats().count_refusal();
                *refusal
            }
            Ok(None) => {
                let Forward {
                    method,
                    url,
                    headers,
                    body,
                    base,
                    ..
                } = forward;
                self.pass_through(method, url, headers, body.into(), &base)
                    .await
            }
        }
    }

    /// `GET /metrics` and `GET /healthz`, answered by pacerd itself (the API has neither path).
    fn own_answer(&self, method: &http::Method, path: &str) -> Option<Response<GatewayBody>> {
        if method != http::Method::GET && method != http::Method::HEAD {
            return None;
        }
        match path {
            "/metrics" if self.metrics => Some(reply::ok(
                crate::metrics::CONTENT_TYPE,
                crate::metrics::render(&self.hub, self.bodies.used()),
            )),
            "/metrics" => Some(reply::error(
                StatusCode::NOT_FOUND,
                "not_found_error",
                "pacer gateway: metrics are turned off ([metrics] enabled = false)".into(),
            )),
            "/healthz" => {
                let daemon = self.hub.daemon_status();
                let up = daemon
                    .started_at
                    .and_then(|at| at.elapsed().ok())
                    .map_or(0, |up| up.as_secs());
                let body = serde_json::json!({
                    "status": "ok",
                    "version": env!("CARGO_PKG_VERSION"),
                    "uptime_seconds": up,
                    "upstream": crate::config::shown_url(&self.upstream.base),
                });
                Some(reply::ok("application/json", body.to_string()))
            }
            _ => None,
        }
    }

    /// What gates a request, `None` to pass it straight through, or the gateway's own answer
    /// to a request it refuses.
    fn gate(
        &self,
        route: &RequestPath,
        headers: &HeaderMap,
        forward: &Forward,
    ) -> Result<Option<Gate>, Box<Response<GatewayBody>>> {
        let body = &forward.body;
        let (client_id, priority) = route::identity(route, headers);
        let max_share_bp = route::max_share(route, headers).map_err(|e| {
            Box::new(reply::error(
                StatusCode::BAD_REQUEST,
                "invalid_request_error",
                format!("pacer gateway: {e}"),
            ))
        })?;
        if client_id.len() > MAX_NAME_LEN {
            // The client's own mistake, not a limit: a 429 would have it retry for ever.
            return Err(Box::new(reply::error(
                StatusCode::BAD_REQUEST,
                "invalid_request_error",
                format!(
                    "pacer gateway: the client name is {} bytes long; at most {MAX_NAME_LEN} are \
                     taken (`{}` or the `/s/<name>/` prefix)",
                    client_id.len(),
                    route::CLIENT_HEADER
                ),
            )));
        }
        let key = api_key(headers).unwrap_or_default();
        let key = match &route.route {
            // Behind a registered route, a key is filed under the route's upstream too: an
            // endpoint whose answers name no organization gets budgets of its own (one that
            // names one joins the organization's account like any other key).
            Some(_) => KeyFingerprint::of(&format!("{}\n{key}", forward.base)),
            None if key.is_empty() => KeyFingerprint::ANONYMOUS,
            None => KeyFingerprint::of(key),
        };
        let scope = route
            .route
            .as_ref()
            .map(|_| crate::config::shown_url(&forward.base));
        Ok(match route.endpoint {
            Endpoint::Other => None,
            Endpoint::CountTokens => Some(Gate {
                key,
                model: COUNT_TOKENS_BUDGET.into(),
                client_id,
                priority,
                max_share_bp,
                input_tokens: 0,
                max_tokens: Some(0),
                body_bytes: None,
                teaches: false,
                scope,
                session: route::session_id(headers),
            }),
            Endpoint::Messages => {
                // Whatever the body holds, the call counts against the limits: an odd body is
                // paced with defaults (and is the API's to refuse), never waved through.
                let fields = MessagesFields::read(body);
                let model = fields
                    .model
                    .unwrap_or_else(|| fields::UNKNOWN_MODEL.to_owned());
                if model.len() > MAX_MODEL_LEN {
                    return Err(Box::new(reply::error(
                        StatusCode::BAD_REQUEST,
                        "invalid_request_error",
                        format!(
                            "pacer gateway: the model name is {} bytes long; no model has a \
                             name longer than {MAX_MODEL_LEN}",
                            model.len()
                        ),
                    )));
                }
                let input_tokens = self.hub.estimate_input(&client_id, body.len());
                Some(Gate {
                    key,
                    model,
                    client_id,
                    priority,
                    max_share_bp,
                    input_tokens,
                    max_tokens: fields.max_tokens,
                    body_bytes: Some(body.len()),
                    teaches: fields::counts_by_its_bytes(body),
                    scope,
                    session: route::session_id(headers),
                })
            }
        })
    }

    async fn pass_through(
        &self,
        method: http::Method,
        url: reqwest::Url,
        headers: HeaderMap,
        body: reqwest::Body,
        base: &reqwest::Url,
    ) -> Response<GatewayBody> {
        match self.upstream.send(method, url, headers, body).await {
            Ok(upstream) => forward::stream_response(upstream, None),
            Err(e) => reply::bad_gateway(base, &e),
        }
    }
}

/// The API key or OAuth token a request carries.
fn api_key(headers: &HeaderMap) -> Option<&str> {
    let text = |name| headers.get(name).and_then(|v| v.to_str().ok());
    pacer_api::request::api_key(
        text("x-api-key"),
        text(http::header::AUTHORIZATION.as_str()),
    )
}
