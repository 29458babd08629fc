//! Forwarding to the upstream API: which headers cross, and turning its answer into ours.

use bytes::Bytes;
use futures_util::TryStreamExt;
use http::{HeaderMap, HeaderName, HeaderValue, Method, Response, header};
use http_body_util::BodyExt;
use pacer_protocol::message::Headers;

use super::body::GatewayBody;
use super::metered::{MeteredBody, Settle};
use super::route::{CLIENT_HEADER, MAX_SHARE_HEADER, PRIORITY_HEADER};
use pacer_api::usage::UsageTap;

/// Headers that describe one hop, never forwarded (RFC 9110 §7.6.1), plus `host` (rewritten)
/// and `content-length` (recomputed).
const HOP_BY_HOP: [&str; 10] = [
    "connection",
    "keep-alive",
    "proxy-authenticate",
    "proxy-authorization",
    "proxy-connection",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
    "host",
];

/// Content encodings the gateway can read usage through.
const READABLE_ENCODINGS: [&str; 3] = ["gzip", "deflate", "identity"];

/// The upstream API and the HTTP client that reaches it.
pub struct Upstream {
    client: reqwest::Client,
    pub base: reqwest::Url,
}

impl Upstream {
    pub fn new(base: reqwest::Url) -> anyhow::Result<Self> {
        let client = reqwest::Client::builder()
            // Redirects are the client's to follow, not the gateway's.
            .redirect(reqwest::redirect::Policy::none())
            .connect_timeout(std::time::Duration::from_secs(10))
            // A stalled upstream must not hold a permit for ever (Claude Code gives up at 600 s).
            .read_timeout(std::time::Duration::from_secs(600))
            .tcp_nodelay(true)
            .pool_idle_timeout(std::time::Duration::from_secs(90))
            .build()?;
        Ok(Self { client, base })
    }

    /// The URL for a request path and query at `base` (the daemon's upstream, or a route's):
    /// the base's own path prefix is kept, and its own query (a route's `?key=…`) comes first.
    pub fn url(&self, base: &reqwest::Url, path: &str, query: Option<&str>) -> reqwest::Url {
        let mut url = base.clone();
        let joined = format!("{}{path}", base.path().trim_end_matches('/'));
        url.set_path(&joined);
        let query = match (base.query().filter(|q| !q.is_empty()), query) {
            (Some(own), Some(asked)) if !asked.is_empty() => Some(format!("{own}&{asked}")),
            (Some(own), _) => Some(own.to_owned()),
            (None, asked) => asked.map(str::to_owned),
        };
        url.set_query(query.as_deref());
        url
    }

    pub async fn send(
        &self,
        method: Method,
        url: reqwest::Url,
        headers: HeaderMap,
        body: impl Into<reqwest::Body>,
    ) -> Result<reqwest::Response, reqwest::Error> {
        self.client
            .request(method, url)
            .headers(headers)
            .body(body)
            .send()
            .await
    }
}

fn is_hop_by_hop(name: &HeaderName, connection: &HeaderMap) -> bool {
    let listed_in_connection = connection
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|token| token.trim().eq_ignore_ascii_case(name.as_str()));
    HOP_BY_HOP.contains(&name.as_str()) || listed_in_connection
}

/// The headers to send upstream: everything but hop-by-hop headers and the gateway's own
/// `x-pacer-*`. For gated requests (whose body is re-sent from memory), `content-length` is left
/// to the HTTP client, and `accept-encoding` is narrowed to encodings the gateway can read usage
/// through (the client still gets the upstream's bytes unchanged).
pub fn request_headers(incoming: &HeaderMap, gated: bool) -> HeaderMap {
    let mut out = HeaderMap::with_capacity(incoming.len());
    for (name, value) in incoming {
        if is_hop_by_hop(name, incoming)
            || (gated && name == header::CONTENT_LENGTH)
            || name == PRIORITY_HEADER
            || name == CLIENT_HEADER
            || name == MAX_SHARE_HEADER
        {
            continue;
        }
        out.append(name.clone(), value.clone());
    }
    if gated && let Some(accepted) = out.remove(header::ACCEPT_ENCODING) {
        let readable: Vec<&str> = accepted
            .to_str()
            .unwrap_or("")
            .split(',')
            .map(str::trim)
            .filter(|token| {
                let coding = token.split(';').next().unwrap_or("").trim();
                READABLE_ENCODINGS
                    .iter()
                    .any(|r| coding.eq_ignore_ascii_case(r))
            })
            .collect();
        if !readable.is_empty()
            && let Ok(value) = HeaderValue::from_str(&readable.join(", "))
        {
            out.insert(header::ACCEPT_ENCODING, value);
        }
    }
    out
}

/// The upstream's response headers minus hop-by-hop ones.
pub fn response_headers(upstream: &HeaderMap) -> HeaderMap {
    let mut out = HeaderMap::with_capacity(upstream.len());
    for (name, value) in upstream {
        if !is_hop_by_hop(name, upstream) {
            out.append(name.clone(), value.clone());
        }
    }
    out
}

/// Headers as the broker reads them.
pub fn header_list(headers: &HeaderMap) -> Headers {
    headers
        .iter()
        .filter_map(|(name, value)| {
            Some((name.as_str().to_owned(), value.to_str().ok()?.to_owned()))
        })
        .collect()
}

/// Streams the upstream response to the client as it arrives; `settle` settles the permit when
/// the body is done.
pub fn stream_response(
    upstream: reqwest::Response,
    settle: Option<Settle>,
) -> Response<GatewayBody> {
    let status = upstream.status();
    let headers = response_headers(upstream.headers());
    let header_text = |name: header::HeaderName| headers.get(name).and_then(|v| v.to_str().ok());
    let tap = UsageTap::new(
        header_text(header::CONTENT_TYPE),
        header_text(header::CONTENT_ENCODING),
    );
    let length = upstream.content_length();
    let body = MeteredBody::new(
        Box::pin(upstream.bytes_stream().map_err(Into::into)),
        tap,
        settle,
        length,
    );
    let mut response = Response::new(body.boxed_unsync());
    *response.status_mut() = status;
    *response.headers_mut() = headers;
    response
}

/// A response whose body was already read (a 429 or 529 being passed on).
pub fn buffered_response(
    status: http::StatusCode,
    headers: &HeaderMap,
    body: Bytes,
) -> Response<GatewayBody> {
    let mut headers = response_headers(headers);
    headers.remove(header::CONTENT_LENGTH);
    let mut response = Response::new(super::body::full(body));
    *response.status_mut() = status;
    *response.headers_mut() = headers;
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.append(
                HeaderName::from_bytes(name.as_bytes()).unwrap(),
                value.parse().unwrap(),
            );
        }
        map
    }

    #[test]
    fn hop_by_hop_and_pacer_headers_stay_behind() {
        let incoming = headers(&[
            ("host", "127.0.0.1:4141"),
            ("connection", "keep-alive, x-secret-hop"),
            ("x-secret-hop", "1"),
            ("transfer-encoding", "chunked"),
            ("content-length", "12"),
            ("x-pacer-priority", "batch"),
            ("x-pacer-client", "me"),
            ("x-api-key", "sk-ant"),
            ("anthropic-beta", "a"),
            ("anthropic-beta", "b"),
            ("x-claude-code-session-id", "s-1"),
        ]);
        let out = request_headers(&incoming, true);
        let names: Vec<&str> = out.keys().map(HeaderName::as_str).collect();
        assert_eq!(
            names,
            ["x-api-key", "anthropic-beta", "x-claude-code-session-id"]
        );
        assert_eq!(out.get_all("anthropic-beta").iter().count(), 2);
    }

    #[test]
    fn gated_requests_only_accept_encodings_the_gateway_can_read() {
        let incoming = headers(&[("accept-encoding", "gzip, deflate, br, zstd")]);
        assert_eq!(
            request_headers(&incoming, true)["accept-encoding"],
            "gzip, deflate"
        );
        assert_eq!(
            request_headers(&incoming, false)["accept-encoding"],
            "gzip, deflate, br, zstd"
        );
        let only_br = headers(&[("accept-encoding", "br")]);
        assert!(
            request_headers(&only_br, true)
                .get("accept-encoding")
                .is_none()
        );
    }

    #[test]
    fn urls_keep_the_upstream_path_and_the_query() {
        let upstream = Upstream::new("http://127.0.0.1:9/api/".parse().unwrap()).unwrap();
        assert_eq!(
            upstream
                .url(&upstream.base, "/v1/messages", Some("beta=true"))
                .as_str(),
            "http://127.0.0.1:9/api/v1/messages?beta=true"
        );
        let keyed = Upstream::new("http://127.0.0.1:9/api?team=a".parse().unwrap()).unwrap();
        assert_eq!(
            keyed
                .url(&keyed.base, "/v1/messages", Some("beta=true"))
                .as_str(),
            "http://127.0.0.1:9/api/v1/messages?team=a&beta=true"
        );
        assert_eq!(
            keyed.url(&keyed.base, "/v1/models", None).as_str(),
            "http://127.0.0.1:9/api/v1/models?team=a"
        );
        let plain = Upstream::new("https://api.anthropic.com".parse().unwrap()).unwrap();
        assert_eq!(
            plain.url(&plain.base, "/", None).as_str(),
            "https://api.anthropic.com/"
        );
    }
}
