//! An answer of the API kept whole (its status, headers and body), what [`Kind`] of answer it
//! is, and the answers pacer gives in the API's own shape.
//!
//! A 429 or a 529 is read whole before anything is decided: its body says whether it is the
//! spend cap, and it may be passed on later (when holding the request runs out of time) or
//! replayed to every request a lockout refuses. Kept answers are bounded ([`Answer::bounded`]),
//! so that no upstream can make pacer hold megabytes per request.

use std::io::Read;
use std::time::Duration;

use pacer_protocol::message::Headers;

use pacer_protocol::Throttle;

use crate::outcome::is_spend_cap;
use crate::ratelimit::RateLimitHeaders;
use crate::throttle::classify;

/// The largest body kept of an answer (an API error is a few hundred bytes).
pub const MAX_KEPT_BODY: usize = 64 << 10;
/// The most headers kept of an answer, and the longest name or value.
const MAX_KEPT_HEADERS: usize = 64;
const MAX_HEADER_LEN: usize = 4096;

/// What kind of answer an HTTP status (and, for a 429, its headers and body) is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// 2xx: the call was served; its usage settles the permit.
    Success,
    /// 429, of the kind its headers and body say (see [`crate::throttle`]).
    Throttled(Throttle),
    /// 529 (overloaded): the API as a whole is busy; the model class backs off together.
    Overloaded,
    /// Another 4xx: the caller's own mistake (a malformed body, an unknown model, a bad key).
    ClientError(u16),
    /// Anything else (a 5xx, a status the API does not use).
    Failed,
}

impl Kind {
    /// The kind of an answer with `status`, its headers and, for a 429, its (decoded) body.
    pub fn of(status: u16, headers: &RateLimitHeaders, body: &[u8]) -> Kind {
        match status {
            200..=299 => Kind::Success,
            429 => Kind::Throttled(classify(headers, is_spend_cap(body))),
            529 => Kind::Overloaded,
            400..=499 => Kind::ClientError(status),
            _ => Kind::Failed,
        }
    }

    /// Whether an answer with `status` is read whole before deciding (a 429 or a 529).
    pub fn read_whole(status: u16) -> bool {
        matches!(status, 429 | 529)
    }
}

/// An answer, kept whole: the API's (a 429 held while its request waits, the answer that
/// caused a lockout) or one pacer gives itself in the API's shape.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Answer {
    pub status: u16,
    /// As they came, names in any case; the body is still in its `content-encoding`.
    pub headers: Headers,
    pub body: Vec<u8>,
}

impl Answer {
    /// An answer to keep, held to a size: at most [`MAX_KEPT_BODY`] of body (a longer one is
    /// replaced by the API's error shape saying so) and a bounded number of short headers.
    pub fn bounded(status: u16, headers: Headers, body: Vec<u8>) -> Answer {
        let headers = headers
            .into_iter()
            .filter(|(name, value)| name.len() <= MAX_HEADER_LEN && value.len() <= MAX_HEADER_LEN)
            .take(MAX_KEPT_HEADERS)
            .collect();
        if body.len() <= MAX_KEPT_BODY {
            return Answer {
                status,
                headers,
                body,
            };
        }
        Answer::too_large(status, headers, body.len())
    }

    /// An answer whose body of `len` bytes was too large to keep: the API's error shape saying
    /// so, its content encoding and length gone with it.
    pub fn too_large(status: u16, headers: Headers, len: usize) -> Answer {
        let mut answer = Answer {
            status,
            headers,
            body: error_body(
                "rate_limit_error",
                &format!("the API's {status} answer ({len} bytes) was too large for pacer to keep"),
            ),
        };
        answer.remove_header("content-encoding");
        answer.remove_header("content-length");
        answer.set_header("content-type", "application/json".into());
        answer
    }

    /// An error of pacer's own in the API's shape:
    /// `{"type":"error","error":{"type":KIND,"message":MESSAGE}}`.
    pub fn error(status: u16, kind: &str, message: &str) -> Answer {
        Answer {
            status,
            headers: vec![("content-type".into(), "application/json".into())],
            body: error_body(kind, message),
        }
    }

    /// pacer's own 429: the request would wait longer than it may be held. Its `retry-after`
    /// tells the real wait.
    pub fn rate_limited(wait: Duration, message: &str) -> Answer {
        let mut answer = Answer::error(429, "rate_limit_error", message);
        answer.set_retry_after(wait);
        answer
    }

    /// The value of header `name` (any case), if it has one.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// Sets header `name` to `value`, replacing any value it had.
    pub fn set_header(&mut self, name: &str, value: String) {
        self.remove_header(name);
        self.headers.push((name.to_owned(), value));
    }

    pub fn remove_header(&mut self, name: &str) {
        self.headers.retain(|(n, _)| !n.eq_ignore_ascii_case(name));
    }

    /// Sets `retry-after` (whole seconds, at least 1) and `retry-after-ms` to `wait`, and
    /// `x-should-retry: true`: the answer of a request pacer held as long as it may.
    pub fn set_retry_after(&mut self, wait: Duration) {
        let secs = wait.as_secs_f64().ceil().max(1.0) as u64;
        self.set_header("retry-after", secs.to_string());
        self.set_header("retry-after-ms", wait.as_millis().max(1).to_string());
        self.set_header("x-should-retry", "true".into());
    }

    /// The answer replayed `left` before what it refuses ends: its `retry-after` (and
    /// `retry-after-ms`, if it had one) brought up to date, the server's `date` dropped, and
    /// nothing added — a spent window's 429 stays the one Claude Code and the SDKs know not to
    /// retry.
    pub fn replayed(&self, left: Option<Duration>) -> Answer {
        let mut answer = self.clone();
        answer.remove_header("date");
        if let Some(left) = left {
            if answer.header("retry-after").is_some() {
                let secs = left.as_secs_f64().ceil() as u64;
                answer.set_header("retry-after", secs.to_string());
            }
            if answer.header("retry-after-ms").is_some() {
                answer.set_header("retry-after-ms", left.as_millis().to_string());
            }
        }
        answer
    }

    /// The body undone of its `content-encoding` (gzip or deflate), to read what it says; the
    /// body as it is when it has no encoding, one this cannot undo, or does not decode.
    pub fn decoded_body(&self) -> std::borrow::Cow<'_, [u8]> {
        let encoding = self.header("content-encoding").map(str::trim);
        let mut out = Vec::new();
        let decoded = match encoding.map(str::to_ascii_lowercase).as_deref() {
            Some("gzip" | "x-gzip") => flate2::read::MultiGzDecoder::new(&self.body[..])
                .take(MAX_KEPT_BODY as u64 * 16)
                .read_to_end(&mut out)
                .is_ok(),
            Some("deflate") => {
                flate2::read::ZlibDecoder::new(&self.body[..])
                    .take(MAX_KEPT_BODY as u64 * 16)
                    .read_to_end(&mut out)
                    .is_ok()
                    || {
                        out.clear();
                        flate2::read::DeflateDecoder::new(&self.body[..])
                            .take(MAX_KEPT_BODY as u64 * 16)
                            .read_to_end(&mut out)
                            .is_ok()
                    }
            }
            _ => false,
        };
        if decoded {
            std::borrow::Cow::Owned(out)
        } else {
            std::borrow::Cow::Borrowed(&self.body)
        }
    }
}

fn error_body(kind: &str, message: &str) -> Vec<u8> {
    serde_json::json!({
        "type": "error",
        "error": { "type": kind, "message": message },
    })
    .to_string()
    .into_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_by_status_and_body() {
        let cap = br#"{"type":"error","error":{"type":"rate_limit_error","message":"You have reached your specified API usage limits.","details":{"error_code":"enforced_spend_limit_reached"}}}"#;
        let limit = br#"{"type":"error","error":{"type":"rate_limit_error","message":"50 requests per minute"}}"#;
        let none = RateLimitHeaders::default();
        let retry = RateLimitHeaders::parse([("retry-after", "3")], std::time::SystemTime::now());
        assert_eq!(Kind::of(200, &none, b""), Kind::Success);
        assert_eq!(
            Kind::of(429, &retry, cap),
            Kind::Throttled(Throttle::SpendCap)
        );
        assert_eq!(
            Kind::of(429, &retry, limit),
            Kind::Throttled(Throttle::PerMinute)
        );
        assert_eq!(Kind::of(429, &none, limit), Kind::Throttled(Throttle::Bare));
        assert_eq!(Kind::of(529, &none, b""), Kind::Overloaded);
        assert_eq!(Kind::of(404, &none, b""), Kind::ClientError(404));
        assert_eq!(Kind::of(500, &none, b""), Kind::Failed);
        assert!(Kind::read_whole(429) && Kind::read_whole(529) && !Kind::read_whole(400));
    }

    #[test]
    fn a_body_too_large_to_keep_is_replaced_by_one_saying_so() {
        let headers = vec![
            ("content-encoding".into(), "gzip".into()),
            ("retry-after".into(), "3".into()),
        ];
        let kept = Answer::bounded(429, headers, vec![b'x'; MAX_KEPT_BODY + 1]);
        let text = String::from_utf8(kept.body.clone()).unwrap();
        assert!(text.contains("too large for pacer to keep"), "{text}");
        assert_eq!(kept.header("content-encoding"), None);
        assert_eq!(kept.header("retry-after"), Some("3"));
        let many = (0..100).map(|i| (format!("h{i}"), "v".into())).collect();
        assert_eq!(Answer::bounded(429, many, Vec::new()).headers.len(), 64);
    }

    #[test]
    fn retry_after_is_set_in_both_forms_and_replays_update_only_what_was_there() {
        let mut own = Answer::rate_limited(Duration::from_millis(1500), "pacer: wait");
        assert_eq!(own.header("retry-after"), Some("2"));
        assert_eq!(own.header("retry-after-ms"), Some("1500"));
        assert_eq!(own.header("x-should-retry"), Some("true"));
        own.set_retry_after(Duration::ZERO);
        assert_eq!(own.header("retry-after"), Some("1"), "at least a second");

        let api = Answer {
            status: 429,
            headers: vec![
                ("Retry-After".into(), "7999".into()),
                ("date".into(), "then".into()),
            ],
            body: b"{}".to_vec(),
        };
        let replay = api.replayed(Some(Duration::from_millis(30_400)));
        assert_eq!(replay.header("retry-after"), Some("31"));
        assert_eq!(replay.header("retry-after-ms"), None, "nothing added");
        assert_eq!(replay.header("x-should-retry"), None, "nothing added");
        assert_eq!(replay.header("date"), None);
    }

    #[test]
    fn encoded_bodies_are_read_decoded() {
        let text = br#"{"error":{"details":{"error_code":"enforced_spend_limit_reached"}}}"#;
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        std::io::Write::write_all(&mut gz, text).unwrap();
        let answer = Answer {
            status: 429,
            headers: vec![("Content-Encoding".into(), "gzip".into())],
            body: gz.finish().unwrap(),
        };
        assert_eq!(&answer.decoded_body()[..], &text[..]);
        assert_eq!(
            Kind::of(429, &RateLimitHeaders::default(), &answer.decoded_body()),
            Kind::Throttled(Throttle::SpendCap)
        );
        let plain = Answer::error(429, "rate_limit_error", "hi");
        assert_eq!(plain.decoded_body(), plain.body.as_slice());
        let broken = Answer {
            headers: vec![("content-encoding".into(), "gzip".into())],
            ..plain.clone()
        };
        assert_eq!(
            broken.decoded_body(),
            plain.body.as_slice(),
            "read as it is"
        );
    }
}
