//! What pacer reads of a request's headers: the key it is made with, Claude Code's session, and
//! the `x-pacer-*` headers a client may name itself and its priority with (taken off before the
//! request goes on).

/// The header a client may set to choose its priority.
pub const PRIORITY_HEADER: &str = "x-pacer-priority";
/// The header a client may set to name itself.
pub const CLIENT_HEADER: &str = "x-pacer-client";
/// The header a client may set to cap its use of each subscription window (`10%`, `0.1`).
pub const MAX_SHARE_HEADER: &str = "x-pacer-max-share";
/// Claude Code's per-session header (`X-Claude-Code-Session-Id`), sent "so proxies can
/// aggregate requests by session".
pub const SESSION_HEADER: &str = "x-claude-code-session-id";
/// The longest session id kept (Claude Code's are UUIDs).
pub const MAX_SESSION_ID: usize = 128;

/// The API key or OAuth token a request is made with: `x-api-key`, else the token of an
/// `Authorization: Bearer` header.
pub fn api_key<'a>(x_api_key: Option<&'a str>, authorization: Option<&'a str>) -> Option<&'a str> {
    if let Some(key) = x_api_key.filter(|k| !k.is_empty()) {
        return Some(key);
    }
    let auth = authorization?.trim_start();
    let (scheme, token) = auth.split_at_checked(7)?;
    scheme
        .eq_ignore_ascii_case("bearer ")
        .then(|| token.trim())
        .filter(|t| !t.is_empty())
}

/// A session id as kept: trimmed, not empty, at most [`MAX_SESSION_ID`] bytes.
pub fn session_id(header: Option<&str>) -> Option<&str> {
    let id = header?.trim();
    (!id.is_empty() && id.len() <= MAX_SESSION_ID).then_some(id)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_key_comes_from_x_api_key_else_a_bearer_token() {
        assert_eq!(
            api_key(Some("sk-ant-1"), Some("Bearer t")),
            Some("sk-ant-1")
        );
        assert_eq!(
            api_key(None, Some("Bearer sk-ant-oat-1")),
            Some("sk-ant-oat-1")
        );
        assert_eq!(api_key(Some(""), Some("bearer  t ")), Some("t"));
        assert_eq!(api_key(None, Some("Basic abc")), None);
        assert_eq!(api_key(None, Some("Bearer")), None);
        assert_eq!(api_key(None, Some("Bé")), None);
        assert_eq!(api_key(None, None), None);
    }

    #[test]
    fn session_ids_are_kept_whole_within_a_length() {
        assert_eq!(session_id(Some(" 3f2a9c1d-0000 ")), Some("3f2a9c1d-0000"));
        assert_eq!(session_id(Some("  ")), None);
        assert_eq!(session_id(Some(&"x".repeat(129))), None);
        assert_eq!(session_id(None), None);
    }
}
