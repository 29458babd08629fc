//! How a request's path is read: leniently, the way the most lenient server might, so that no
//! spelling of a Messages endpoint (`//v1/messages`, `/v1/%6dessages`, `/V1/messages`,
//! `/v1/messages;x`, `/v1/messages%3f`, `/v1/messages%20`, `/v1/messages.`) goes around the
//! budget.

/// The endpoints that are paced.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Endpoint {
    /// `POST /v1/messages`: gated by the account × model class budget.
    Messages,
    /// `POST /v1/messages/count_tokens`: gated by a requests-only budget of its own.
    CountTokens,
    /// Everything else passes straight through.
    Other,
}

/// The gated endpoints, as [`loose_segments`] joined and lowercased read them.
const MESSAGES: &str = "v1/messages";
const COUNT_TOKENS: &str = "v1/messages/count_tokens";

/// Which endpoint a request is, from whether it is a `POST` and its path's loose segments (any
/// prefix of the gateway's taken off).
pub fn endpoint(post: bool, segments: &[String]) -> Endpoint {
    match segments.join("/").to_ascii_lowercase().as_str() {
        MESSAGES if post => Endpoint::Messages,
        COUNT_TOKENS if post => Endpoint::CountTokens,
        _ => Endpoint::Other,
    }
}

/// Which endpoint a request to `path` is (a path without the gateway's prefix).
pub fn endpoint_of(method: &str, path: &str) -> Endpoint {
    endpoint(method.eq_ignore_ascii_case("POST"), &loose_segments(path))
}

/// The segments of a path as the most lenient server might read it: percent-escapes decoded
/// (and decoded again, up to three times, for double encodings), `\` taken for `/`, empty
/// segments dropped, each segment cut at a `;parameter`, an (encoded) `?` or `#` or a NUL, and
/// stripped of surrounding white space and trailing dots (`messages.` is `messages` to a server
/// that normalises as Windows file names do). Case is kept (the client prefix's name keeps its
/// case); callers compare endpoints without it.
pub fn loose_segments(path: &str) -> Vec<String> {
    let mut decoded = path.to_owned();
    for _ in 0..3 {
        let next = percent_decode(&decoded);
        if next == decoded {
            break;
        }
        decoded = next;
    }
    decoded
        .split(['/', '\\'])
        .map(|segment| {
            segment
                .split([';', '?', '#', '\0'])
                .next()
                .unwrap_or_default()
                .trim_start_matches(|c: char| c.is_ascii_whitespace())
                .trim_end_matches(|c: char| c == '.' || c.is_ascii_whitespace())
        })
        .filter(|segment| !segment.is_empty())
        .map(str::to_owned)
        .collect()
}

/// The first path segment that is `.` or `..` once percent-decoded (`%2e%2E`, `.%2e`), or
/// that decodes to a path of its own with such a segment (`..%2f`): forwarded, it would climb
/// out of the upstream's path prefix.
pub fn escaping_segment(path: &str) -> Option<&str> {
    path.split('/').find(|segment| {
        // Decoded again for double encodings (`%252e%252e`), as some servers would.
        let mut decoded = segment.to_string();
        for _ in 0..3 {
            let next = percent_decode(&decoded);
            let escapes = next
                .split(['/', '\\'])
                .any(|part| part == "." || part == "..");
            if escapes {
                return true;
            }
            if next == decoded {
                break;
            }
            decoded = next;
        }
        false
    })
}

/// Percent-decodes a path segment (invalid escapes are kept as they are).
fn percent_decode(segment: &str) -> String {
    let bytes = segment.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = |b: u8| (b as char).to_digit(16);
        match (bytes[i], bytes.get(i + 1), bytes.get(i + 2)) {
            (b'%', Some(&h), Some(&l)) if hex(h).is_some() && hex(l).is_some() => {
                out.push((hex(h).unwrap_or(0) * 16 + hex(l).unwrap_or(0)) as u8);
                i += 3;
            }
            (b, _, _) => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_spelling_of_messages_is_messages() {
        for path in [
            "/v1/messages",
            "//v1/messages",
            "/v1/%6dessages",
            "/V1/messages",
            "/v1/messages;x",
            "/v1//messages/",
            "/v1/messages%3f",
            "/v1/messages%3fbeta=true",
            "/v1/messages%23",
            "/v1/messages%00",
            "/v1/messages%00.json",
            "/v1/messages%20",
            "/v1/messages%09",
            "/v1/%20messages",
            "/v1/messages.",
            "/v1/messages%2e",
            "/v1/messages%2e%2e",
            "/v1./messages",
        ] {
            assert_eq!(endpoint_of("POST", path), Endpoint::Messages, "{path}");
        }
        assert_eq!(
            endpoint_of("post", "/v1/messages/count_tokens"),
            Endpoint::CountTokens
        );
        assert_eq!(endpoint_of("GET", "/v1/messages"), Endpoint::Other);
        assert_eq!(endpoint_of("POST", "/v1/models"), Endpoint::Other);
        assert_eq!(endpoint_of("POST", "/v1/messages/batches"), Endpoint::Other);
    }
}
