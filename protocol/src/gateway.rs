//! How `pacer run` names a wrapped process to the HTTP gateway.
//!
//! Each wrapped process gets a base URL with a path prefix, `http://HOST:PORT/s/<token>/`, where
//! the token is `<client>~<priority>`. The gateway strips the prefix before forwarding and
//! queues the process's requests under that client id and priority.

use crate::budget::Priority;

/// The path segment that introduces a client token.
pub const PREFIX: &str = "/s/";

/// The token for a client name and priority; the name is reduced to URL-safe characters.
pub fn client_token(client: &str, priority: Priority) -> String {
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
    format!("{client}~{priority}")
}

/// Reads a token: `<client>~<priority>`, or just `<client>`.
pub fn parse_client_token(token: &str) -> (Option<String>, Option<Priority>) {
    let (client, priority) = match token.rsplit_once('~') {
        Some((client, priority)) => (client, priority.parse().ok()),
        None => (token, None),
    };
    let client = (!client.is_empty()).then(|| client.to_owned());
    (client, priority)
}

/// The base URL to give a wrapped process, for a gateway listening at `listen` (`HOST:PORT`).
pub fn base_url(listen: &str, client: &str, priority: Priority) -> String {
    format!("http://{listen}{PREFIX}{}", client_token(client, priority))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_round_trip() {
        let token = client_token("my job/1", Priority::Batch);
        assert_eq!(token, "my_job_1~batch");
        assert_eq!(
            parse_client_token(&token),
            (Some("my_job_1".into()), Some(Priority::Batch))
        );
        assert_eq!(parse_client_token("plain"), (Some("plain".into()), None));
        assert_eq!(
            parse_client_token("a~b~interactive"),
            (Some("a~b".into()), Some(Priority::Interactive))
        );
    }

    #[test]
    fn base_urls() {
        assert_eq!(
            base_url("127.0.0.1:4141", "claude-7", Priority::Normal),
            "http://127.0.0.1:4141/s/claude-7~normal"
        );
    }
}
