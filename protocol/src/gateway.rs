//! How `pacer run` names a wrapped process to the HTTP gateway.
//!
//! Each wrapped process gets a base URL with a path prefix, `http://HOST:PORT/s/<token>/`, where
//! the token is `<client>~<priority>`, then `~cap<basis points>` for a process capped at a share
//! of each subscription window (`pacer run --max-share 10%` is `~cap1000`), then `~<route>` for
//! a command whose own `ANTHROPIC_BASE_URL` was registered as a route (its requests go there). The gateway strips
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
    /// Its cap on each subscription window, in basis points (1000 is 10 %).
    pub max_share_bp: Option<u16>,
}

/// The token segment that introduces a cap (`cap1000`: 10 %).
pub const CAP_PREFIX: &str = "cap";

/// Reads a share of a window as people write it — `10%`, `2.5 %`, `0.1` — in basis points
/// (1000 is 10 %): above 0, at most the whole window.
pub fn parse_max_share(text: &str) -> Result<u16, String> {
    let trimmed = text.trim();
    let fraction = match trimmed.strip_suffix('%') {
        Some(percent) => percent.trim().parse::<f64>().map(|p| p / 100.0),
        None => trimmed.parse::<f64>(),
    };
    match fraction {
        Ok(f) if f.is_finite() && f > 0.0 && f <= 1.0 => Ok(((f * 10_000.0).round() as u16).max(1)),
        Ok(_) => Err(format!(
            "`{text}` is not a share of a window: give more than 0 % and at most 100 %"
        )),
        Err(_) => Err(format!(
            "`{text}` is not a share of a window: write a percentage (10%) or a fraction (0.1)"
        )),
    }
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

/// The token for a client name, priority, cap and route; the name is reduced to URL-safe
/// characters.
pub fn client_token(
    client: &str,
    priority: Priority,
    max_share_bp: Option<u16>,
    route: Option<&str>,
) -> String {
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
    let cap = max_share_bp.map_or(String::new(), |bp| format!("~{CAP_PREFIX}{bp}"));
    match route {
        Some(route) => format!("{client}~{priority}{cap}~{route}"),
        None => format!("{client}~{priority}{cap}"),
    }
}

/// A `cap<basis points>` segment's cap.
fn cap_of(segment: &str) -> Option<u16> {
    let digits = segment.strip_prefix(CAP_PREFIX)?;
    let bp: u16 = digits.parse().ok()?;
    (1..=10_000).contains(&bp).then_some(bp)
}

/// Reads a token: `<client>~<priority>[~cap<bp>][~<route>]`, `<client>~<priority>`, or just
/// `<client>`.
pub fn parse_client_token(token: &str) -> ClientToken {
    let (rest, route) = match token.rsplit_once('~') {
        Some((rest, route)) if is_route_id(route) => (rest, Some(route.to_owned())),
        _ => (token, None),
    };
    let (rest, max_share_bp) = match rest.rsplit_once('~') {
        Some((head, cap)) if cap_of(cap).is_some() => (head, cap_of(cap)),
        _ => (rest, None),
    };
    let (client, priority) = match rest.rsplit_once('~') {
        Some((client, priority)) => (client, priority.parse().ok()),
        None => (rest, None),
    };
    ClientToken {
        client: (!client.is_empty()).then(|| client.to_owned()),
        priority,
        route,
        max_share_bp,
    }
}

/// The base URL to give a wrapped process, for a gateway listening at `listen` (`HOST:PORT`).
pub fn base_url(
    listen: &str,
    client: &str,
    (priority, max_share_bp): (Priority, Option<u16>),
    route: Option<&str>,
) -> String {
    format!(
        "http://{listen}{PREFIX}{}",
        client_token(client, priority, max_share_bp, route)
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
        let token = client_token("my job/1", Priority::Batch, None, None);
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
        let token = client_token("claude-7", Priority::Normal, None, Some("rt0123456789ab"));
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
            base_url("127.0.0.1:4141", "claude-7", (Priority::Normal, None), None),
            "http://127.0.0.1:4141/s/claude-7~normal"
        );
    }

    #[test]
    fn caps_ride_in_the_token_before_the_route() {
        let token = client_token("loop", Priority::Batch, Some(1000), Some("rt0123456789ab"));
        assert_eq!(token, "loop~batch~cap1000~rt0123456789ab");
        let parsed = parse_client_token(&token);
        assert_eq!(parsed.client.as_deref(), Some("loop"));
        assert_eq!(parsed.priority, Some(Priority::Batch));
        assert_eq!(parsed.max_share_bp, Some(1000));
        assert_eq!(parsed.route.as_deref(), Some("rt0123456789ab"));
        let plain = parse_client_token("loop~normal~cap250");
        assert_eq!(
            (plain.priority, plain.max_share_bp),
            (Some(Priority::Normal), Some(250))
        );
        // Not a cap: out of range, or not a number.
        assert_eq!(parse_client_token("loop~normal~cap0").max_share_bp, None);
        assert_eq!(
            parse_client_token("loop~normal~cap10001").max_share_bp,
            None
        );
        assert_eq!(parse_client_token("loop~normal~capx").max_share_bp, None);
    }

    #[test]
    fn shares_are_read_as_people_write_them() {
        assert_eq!(parse_max_share("10%"), Ok(1000));
        assert_eq!(parse_max_share(" 2.5 % "), Ok(250));
        assert_eq!(parse_max_share("0.1"), Ok(1000));
        assert_eq!(parse_max_share("100%"), Ok(10_000));
        for bad in ["0%", "0", "101%", "1.5", "-3%", "ten", "NaN", ""] {
            let error = parse_max_share(bad).unwrap_err();
            assert!(error.contains(&format!("`{bad}`")), "{error}");
        }
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
