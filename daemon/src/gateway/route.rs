//! What a gateway request is: which endpoint, and on whose behalf.
//!
//! `pacer run` gives each wrapped process a base URL with a path prefix,
//! `http://127.0.0.1:4141/s/<client>~<priority>/` (or `…~<route>/` for a command that keeps
//! its own endpoint), so that the gateway can tell processes apart without any cooperation from
//! them. The prefix is stripped before forwarding.

use http::HeaderMap;
pub use pacer_api::path::escaping_segment;
use pacer_api::path::{self, Endpoint, loose_segments};
pub use pacer_api::request::{CLIENT_HEADER, MAX_SHARE_HEADER, PRIORITY_HEADER, SESSION_HEADER};
use pacer_protocol::{Priority, gateway};

/// A request's path after the client prefix is taken off.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestPath {
    /// The path to forward (always starting with `/`).
    pub path: String,
    pub endpoint: Endpoint,
    /// From the `/s/<token>/` prefix, if any.
    pub client_id: Option<String>,
    pub priority: Option<Priority>,
    /// A registered route (`/s/<client>~<priority>~<route>/`): where to forward.
    pub route: Option<String>,
    /// A cap on each subscription window (`~cap<bp>`), in basis points.
    pub max_share_bp: Option<u16>,
}

impl RequestPath {
    /// Reads a request's method and path. Whether it is gated is decided on a loose reading of
    /// the path (see [`loose_segments`]): any spelling the upstream might take for a Messages
    /// endpoint (`//v1/messages`, `/v1/%6dessages`, `/V1/messages`, `/v1/messages;x`) is gated,
    /// and forwarded in its canonical form, so that none goes around the budget. Everything else
    /// is forwarded as it came, the prefix taken off.
    pub fn parse(method: &http::Method, path: &str) -> RequestPath {
        let loose = loose_segments(path);
        let (loose_token, rest) = match loose.as_slice() {
            [s, token, rest @ ..] if s == PREFIX_SEGMENT => (Some(token.as_str()), rest),
            rest => (None, rest),
        };
        let post = method.as_str().eq_ignore_ascii_case("POST");
        let endpoint = path::endpoint(post, rest);
        let (token, path) = match endpoint {
            Endpoint::Messages | Endpoint::CountTokens => (
                loose_token.map(str::to_owned),
                format!("/{}", rest.join("/").to_ascii_lowercase()),
            ),
            Endpoint::Other => match path.strip_prefix(gateway::PREFIX) {
                Some(rest) => match rest.split_once('/') {
                    Some((token, rest)) => (Some(token.to_owned()), format!("/{rest}")),
                    None => (Some(rest.to_owned()), "/".to_owned()),
                },
                None => (None, path.to_owned()),
            },
        };
        let token = token
            .as_deref()
            .map(gateway::parse_client_token)
            .unwrap_or_default();
        RequestPath {
            path,
            endpoint,
            client_id: token.client,
            priority: token.priority,
            route: token.route,
            max_share_bp: token.max_share_bp,
        }
    }
}

/// The first segment of the client prefix (`/s/<token>/`).
const PREFIX_SEGMENT: &str = "s";

/// Claude Code's session id, whole, if the request carries one: the account its calls go to,
/// and its share of them, are kept per session.
pub fn session_id(headers: &HeaderMap) -> Option<String> {
    let header = headers.get(SESSION_HEADER)?.to_str().ok();
    pacer_api::request::session_id(header).map(str::to_owned)
}

/// Who is asking and how urgently: headers win over the path prefix; Claude Code's session id
/// (its first 8 characters) tells its sessions apart, after the prefix's name if there is one.
pub fn identity(route: &RequestPath, headers: &HeaderMap) -> (String, Priority) {
    let header = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::trim)
            .filter(|v| !v.is_empty())
    };
    // A session of a named `pacer run` keeps the name: `review/3f2a9c1d`, one client (and one
    // fair turn) per session.
    let session = header(SESSION_HEADER).map(|s| s.chars().take(8).collect::<String>());
    let client = match (header(CLIENT_HEADER), route.client_id.as_deref(), session) {
        (Some(named), _, _) => named.to_owned(),
        (None, Some(name), Some(session)) => format!("{name}/{session}"),
        (None, Some(name), None) => name.to_owned(),
        (None, None, Some(session)) => session,
        (None, None, None) => "gateway".to_owned(),
    };
    let priority = header(PRIORITY_HEADER)
        .and_then(|p| p.parse().ok())
        .or(route.priority)
        .unwrap_or_default();
    (client, priority)
}

/// The client's cap on each subscription window, in basis points: the `x-pacer-max-share`
/// header (`10%`, `0.1`) wins over the prefix's `~cap<bp>`. A header that is not a share is
/// the client's mistake, said back.
pub fn max_share(route: &RequestPath, headers: &HeaderMap) -> Result<Option<u16>, String> {
    let Some(value) = headers.get(MAX_SHARE_HEADER) else {
        return Ok(route.max_share_bp);
    };
    let text = value
        .to_str()
        .map_err(|_| format!("`{MAX_SHARE_HEADER}` is not text"))?;
    gateway::parse_max_share(text)
        .map(Some)
        .map_err(|e| format!("`{MAX_SHARE_HEADER}`: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::Method;

    #[test]
    fn the_prefix_is_stripped_and_names_the_client() {
        let route = RequestPath::parse(&Method::POST, "/s/claude-42~interactive/v1/messages");
        assert_eq!(route.path, "/v1/messages");
        assert_eq!(route.endpoint, Endpoint::Messages);
        assert_eq!(route.client_id.as_deref(), Some("claude-42"));
        assert_eq!(route.priority, Some(Priority::Interactive));
    }

    #[test]
    fn dot_segments_raw_or_encoded_are_found() {
        for path in [
            "/v1/../admin",
            "/s/x~y/../v1/messages",
            "/v1/%2e%2e/admin",
            "/v1/.%2E/admin",
            "/v1/%2E/x",
            "/v1/..%2fadmin",
            "/v1/..%5cadmin",
            "/v1/%252e%252e/admin",
            "/..",
        ] {
            assert!(escaping_segment(path).is_some(), "{path}");
        }
        for path in [
            "/v1/messages",
            "/v1/files/file_..x",
            "/v1/a.b/c",
            "/",
            "/v1/%zz",
        ] {
            assert_eq!(escaping_segment(path), None, "{path}");
        }
    }

    #[test]
    fn every_spelling_of_a_messages_path_is_gated_and_forwarded_canonically() {
        for path in [
            "/v1/messages",
            "//v1/messages",
            "/v1//messages",
            "/v1/%6dessages",
            "/v1/%256dessages",
            "/V1/Messages",
            "/v1/messages;x",
            "/v1;a/messages/",
            "/v1%2Fmessages",
            "/v1\\messages",
        ] {
            let route = RequestPath::parse(&Method::POST, path);
            assert_eq!(route.endpoint, Endpoint::Messages, "{path}");
            assert_eq!(route.path, "/v1/messages", "{path}");
        }
        let route = RequestPath::parse(&Method::POST, "//s/job~batch//v1/MESSAGES/count_tokens");
        assert_eq!(route.endpoint, Endpoint::CountTokens);
        assert_eq!(route.path, "/v1/messages/count_tokens");
        assert_eq!(route.client_id.as_deref(), Some("job"));
        let lower = RequestPath::parse(&"post".parse().unwrap(), "/v1/messages");
        assert_eq!(lower.endpoint, Endpoint::Messages);
        // Anything else goes as it came.
        let other = RequestPath::parse(&Method::GET, "/v1//models;x");
        assert_eq!(
            (other.endpoint, other.path.as_str()),
            (Endpoint::Other, "/v1//models;x")
        );
    }

    #[test]
    fn paths_without_a_prefix_pass_as_they_are() {
        let route = RequestPath::parse(&Method::POST, "/v1/messages/count_tokens");
        assert_eq!(route.endpoint, Endpoint::CountTokens);
        assert_eq!(route.client_id, None);
        let route = RequestPath::parse(&Method::GET, "/v1/models");
        assert_eq!(
            (route.path.as_str(), route.endpoint),
            ("/v1/models", Endpoint::Other)
        );
        let route = RequestPath::parse(&Method::HEAD, "/");
        assert_eq!(route.endpoint, Endpoint::Other);
    }

    #[test]
    fn a_bare_prefix_and_odd_tokens() {
        let route = RequestPath::parse(&Method::HEAD, "/s/abc");
        assert_eq!(route.path, "/");
        assert_eq!(route.client_id.as_deref(), Some("abc"));
        assert_eq!(route.priority, None);
        let route = RequestPath::parse(&Method::POST, "/s/a~b~batch/v1/messages/");
        assert_eq!(route.client_id.as_deref(), Some("a~b"));
        assert_eq!(route.priority, Some(Priority::Batch));
        assert_eq!(route.endpoint, Endpoint::Messages);
        // Only POST is gated.
        assert_eq!(
            RequestPath::parse(&Method::GET, "/v1/messages").endpoint,
            Endpoint::Other
        );
    }

    #[test]
    fn tokens_from_pacer_run_are_understood() {
        let token = gateway::client_token("my job/1", Priority::Batch, None, None);
        let route = RequestPath::parse(&Method::POST, &format!("/s/{token}/v1/messages"));
        assert_eq!(route.client_id.as_deref(), Some("my_job_1"));
        assert_eq!(route.priority, Some(Priority::Batch));
    }

    #[test]
    fn headers_win_over_the_prefix() {
        let route = RequestPath::parse(&Method::POST, "/s/job~batch/v1/messages");
        let mut headers = HeaderMap::new();
        assert_eq!(identity(&route, &headers), ("job".into(), Priority::Batch));
        headers.insert(SESSION_HEADER, "3f2a9c1d-0000-4000".parse().unwrap());
        assert_eq!(
            identity(&route, &headers),
            ("job/3f2a9c1d".into(), Priority::Batch)
        );
        let bare = RequestPath::parse(&Method::POST, "/v1/messages");
        assert_eq!(identity(&bare, &headers).0, "3f2a9c1d");
        headers.insert(CLIENT_HEADER, "named".parse().unwrap());
        headers.insert(PRIORITY_HEADER, "interactive".parse().unwrap());
        assert_eq!(
            identity(&route, &headers),
            ("named".into(), Priority::Interactive)
        );
        let bare = RequestPath::parse(&Method::POST, "/v1/messages");
        assert_eq!(
            identity(&bare, &HeaderMap::new()),
            ("gateway".into(), Priority::Normal)
        );
    }
}
