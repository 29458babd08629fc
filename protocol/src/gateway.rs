//! How `pacer run` names a wrapped process to the HTTP gateway.
//!
//! Each wrapped process gets a base URL with a path prefix, `http://HOST:PORT/s/<token>/`, where
//! the token is `<client>~<priority>`, or `<client>~<priority>~<route>` for a command whose own
//! `ANTHROPIC_BASE_URL` was registered as a route (its requests go there). The gateway strips
//! the prefix before forwarding and queues the process's requests under that client id and
//! priority.

use crate::budget::Priority;

/// The path segment that introduces a client token.
pub const PREFIX: &str = "/s/";
/// Route ids are this prefix and 12 lowercase hex characters.
pub const ROUTE_PREFIX: &str = "rt";

/// What a client token says.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ClientToken {
    pub client: Option<String>,
    pub priority: Option<Priority>,
    /// A registered route: the upstream to forward to.
    pub route: Option<String>,
}

/// Whether `text` has the shape of a route id.
pub fn is_route_id(text: &str) -> bool {
    text.strip_prefix(ROUTE_PREFIX).is_some_and(|hex| {
        hex.len() == 12
            && hex
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    })
}

/// The token for a client name, priority and route; the name is reduced to URL-safe
/// characters.
pub fn client_token(client: &str, priority: Priority, route: Option<&str>) -> String {
    let client: String = client
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.') {
                c
            } else {
                '_'
            }
        })
        .collect();
    match route {
        Some(route) => format!("{client}~{priority}~{route}"),
        None => format!("{client}~{priority}"),
    }
}

/// Reads a token: `<client>~<priority>~<route>`, `<client>~<priority>`, or just `<client>`.
pub fn parse_client_token(token: &str) -> ClientToken {
    let (rest, route) = match token.rsplit_once('~') {
        Some((rest, route)) if is_route_id(route) => (rest, Some(route.to_owned())),
        _ => (token, None),
    };
    let (client, priority) = match rest.rsplit_once('~') {
        Some((client, priority)) => (client, priority.parse().ok()),
        None => (rest, None),
    };
    ClientToken {
        client: (!client.is_empty()).then(|| client.to_owned()),
        priority,
        route,
    }
}

/// The base URL to give a wrapped process, for a gateway listening at `listen` (`HOST:PORT`).
pub fn base_url(listen: &str, client: &str, priority: Priority, route: Option<&str>) -> String {
    format!(
        "http://{listen}{PREFIX}{}",
        client_token(client, priority, route)
    )
}

/// Whether a base URL already points at the gateway listening at `listen`: a command wrapped
/// twice keeps the first wrapping (one hop).
pub fn points_at_gateway(base_url: &str, listen: &str) -> bool {
    let Some(rest) = base_url.trim().strip_prefix("http://") else {
        return false;
    };
    let authority = rest.split(['/', '?', '#']).next().unwrap_or("");
    let (host, port) = match authority.rsplit_once(':') {
        Some((host, port)) => (host, port),
        None => (authority, "80"),
    };
    let (listen_host, listen_port) = listen.rsplit_once(':').unwrap_or((listen, "80"));
    let loopback = |h: &str| matches!(h, "127.0.0.1" | "localhost" | "[::1]" | "::1");
    port == listen_port && (host == listen_host || (loopback(host) && loopback(listen_host)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_round_trip() {
        let token = client_token("my job/1", Priority::Batch, None);
        assert_eq!(token, "my_job_1~batch");
        let parsed = parse_client_token(&token);
        assert_eq!(parsed.client.as_deref(), Some("my_job_1"));
        assert_eq!(parsed.priority, Some(Priority::Batch));
        assert_eq!(parsed.route, None);
        assert_eq!(
            parse_client_token("plain"),
            ClientToken {
                client: Some("plain".into()),
                ..ClientToken::default()
            }
        );
        let odd = parse_client_token("a~b~interactive");
        assert_eq!(odd.client.as_deref(), Some("a~b"));
        assert_eq!(odd.priority, Some(Priority::Interactive));
    }

    #[test]
    fn routes_ride_in_the_token() {
        let token = client_token("claude-7", Priority::Normal, Some("rt0123456789ab"));
        assert_eq!(token, "claude-7~normal~rt0123456789ab");
        let parsed = parse_client_token(&token);
        assert_eq!(parsed.client.as_deref(), Some("claude-7"));
        assert_eq!(parsed.priority, Some(Priority::Normal));
        assert_eq!(parsed.route.as_deref(), Some("rt0123456789ab"));
        assert!(!is_route_id("rt0123"));
        assert!(!is_route_id("rt0123456789AB"));
    }

    #[test]
    fn base_urls() {
        assert_eq!(
            base_url("127.0.0.1:4141", "claude-7", Priority::Normal, None),
            "http://127.0.0.1:4141/s/claude-7~normal"
        );
    }

    #[test]
    fn urls_of_the_gateway_are_recognised() {
        let listen = "127.0.0.1:4141";
        assert!(points_at_gateway(
            "http://127.0.0.1:4141/s/x~normal",
            listen
        ));
        assert!(points_at_gateway("http://localhost:4141", listen));
        assert!(!points_at_gateway(
            "http://127.0.0.1:4142/s/x~normal",
            listen
        ));
        assert!(!points_at_gateway("https://api.anthropic.com", listen));
        assert!(!points_at_gateway("http://10.0.0.2:4141", listen));
    }
}
