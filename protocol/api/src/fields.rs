//! What the gateway reads of a Messages request body: the model and `max_tokens`, the rest
//! skipped unread. It is lenient on purpose: a body the API may refuse still costs a request,
//! so an odd one (`max_tokens` of `5.0`, `"5"` or `-1`, a `model` key given twice, no model at
//! all, not JSON) is paced with defaults rather than waved through.

use std::fmt;

use serde::Deserialize;
use serde::de::{IgnoredAny, MapAccess, Visitor};

/// Whether what a body counts is about its bytes, so that it may teach the input estimate: not
/// when it sends content by reference — a document or image by file id (`"file_id"`) or by
/// URL (a `"type": "url"` source) — which the API counts in full from a few bytes of body.
pub fn counts_by_its_bytes(body: &[u8]) -> bool {
    if contains(body, b"\"file_id\"") {
        return false;
    }
    let mut rest = body;
    while let Some(at) = find(rest, b"\"type\"") {
        rest = &rest[at + 6..];
        let value = skip_blank(rest);
        if let Some(value) = value.strip_prefix(b":") {
            let value = skip_blank(value);
            if value.starts_with(b"\"url\"") || value.starts_with(b"\"file\"") {
                return false;
            }
        }
    }
    true
}

fn skip_blank(bytes: &[u8]) -> &[u8] {
    let start = bytes
        .iter()
        .position(|b| !b.is_ascii_whitespace())
        .unwrap_or(bytes.len());
    &bytes[start..]
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    find(haystack, needle).is_some()
}

/// The model a request without a usable one is paced as (a class of its own).
pub const UNKNOWN_MODEL: &str = "unknown-model";

/// The fields the gateway needs; `None` where the body has no usable value.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct MessagesFields {
    pub model: Option<String>,
    pub max_tokens: Option<u64>,
}

impl MessagesFields {
    /// Reads the fields from a body; anything unusable is left `None`.
    pub fn read(body: &[u8]) -> MessagesFields {
        serde_json::from_slice(body).unwrap_or_default()
    }
}

impl<'de> Deserialize<'de> for MessagesFields {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_map(FieldsVisitor)
    }
}

struct FieldsVisitor;

impl<'de> Visitor<'de> for FieldsVisitor {
    type Value = MessagesFields;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<MessagesFields, A::Error> {
        let mut fields = MessagesFields::default();
        // A key given twice: the last one counts, as in most JSON parsers.
        while let Some(key) = map.next_key::<std::borrow::Cow<'de, str>>()? {
            match key.as_ref() {
                "model" => {
                    fields.model = map
                        .next_value::<Loose>()?
                        .text()
                        .map(|m| m.trim().to_owned())
                        .filter(|m| !m.is_empty());
                }
                "max_tokens" => fields.max_tokens = map.next_value::<Loose>()?.count(),
                _ => {
                    map.next_value::<IgnoredAny>()?;
                }
            }
        }
        Ok(fields)
    }
}

/// A value of any JSON type, kept only if it is a string or a number.
enum Loose {
    Text(String),
    Number(f64),
    Other,
}

impl Loose {
    fn text(self) -> Option<String> {
        match self {
            Loose::Text(text) => Some(text),
            _ => None,
        }
    }

    /// A token count: a positive number, or a string holding one, rounded up.
    fn count(self) -> Option<u64> {
        let n = match self {
            Loose::Number(n) => n,
            Loose::Text(text) => text.trim().parse().ok()?,
            Loose::Other => return None,
        };
        (n.is_finite() && n >= 1.0).then(|| n.ceil().min(u64::MAX as f64) as u64)
    }
}

impl<'de> Deserialize<'de> for Loose {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct LooseVisitor;
        impl<'de> Visitor<'de> for LooseVisitor {
            type Value = Loose;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("any JSON value")
            }
            fn visit_str<E>(self, v: &str) -> Result<Loose, E> {
                Ok(Loose::Text(v.to_owned()))
            }
            fn visit_u64<E>(self, v: u64) -> Result<Loose, E> {
                Ok(Loose::Number(v as f64))
            }
            fn visit_i64<E>(self, v: i64) -> Result<Loose, E> {
                Ok(Loose::Number(v as f64))
            }
            fn visit_f64<E>(self, v: f64) -> Result<Loose, E> {
                Ok(Loose::Number(v))
            }
            fn visit_bool<E>(self, _: bool) -> Result<Loose, E> {
                Ok(Loose::Other)
            }
            fn visit_unit<E>(self) -> Result<Loose, E> {
                Ok(Loose::Other)
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(
                self,
                mut seq: A,
            ) -> Result<Loose, A::Error> {
                while seq.next_element::<IgnoredAny>()?.is_some() {}
                Ok(Loose::Other)
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Loose, A::Error> {
                while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
                Ok(Loose::Other)
            }
        }
        d.deserialize_any(LooseVisitor)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn content_by_reference_does_not_teach_the_input_estimate() {
        for body in [
            r#"{"messages":[{"role":"user","content":[{"type":"document","source":{"type":"file","file_id":"file_011"}}]}]}"#,
            r#"{"messages":[{"role":"user","content":[{"type":"image","source":{"type": "url","url":"https://x/y.png"}}]}]}"#,
            r#"{"messages":[{"content":[{"type":"document","source":{"type" :
                "url","url":"https://x/a.pdf"}}]}]}"#,
        ] {
            assert!(!counts_by_its_bytes(body.as_bytes()), "{body}");
        }
        for body in [
            r#"{"model":"claude-sonnet-4-5","messages":[{"role":"user","content":"hi"}]}"#,
            r#"{"messages":[{"content":[{"type":"text","text":"the url is \"url\""}]}]}"#,
            r#"{"messages":[{"content":[{"type":"image","source":{"type":"base64","data":"AAAA"}}]}]}"#,
        ] {
            assert!(counts_by_its_bytes(body.as_bytes()), "{body}");
        }
    }

    fn read(body: &str) -> MessagesFields {
        MessagesFields::read(body.as_bytes())
    }

    fn fields(model: Option<&str>, max_tokens: Option<u64>) -> MessagesFields {
        MessagesFields {
            model: model.map(str::to_owned),
            max_tokens,
        }
    }

    #[test]
    fn a_plain_body() {
        let body = r#"{"model":"claude-sonnet-4-5","max_tokens":1024,"messages":[{"role":"user","content":"hi"}]}"#;
        assert_eq!(read(body), fields(Some("claude-sonnet-4-5"), Some(1024)));
    }

    #[test]
    fn odd_max_tokens_are_read_or_left_to_the_default() {
        let m = |v: &str| read(&format!(r#"{{"model":"m","max_tokens":{v}}}"#)).max_tokens;
        assert_eq!(m("5.0"), Some(5));
        assert_eq!(m("4.2"), Some(5));
        assert_eq!(m(r#""5""#), Some(5));
        assert_eq!(m("1e3"), Some(1000));
        assert_eq!(m("-5"), None);
        assert_eq!(m("0"), None);
        assert_eq!(m("null"), None);
        assert_eq!(m(r#""lots""#), None);
        assert_eq!(m("[1]"), None);
        assert_eq!(m("1e400"), None);
    }

    #[test]
    fn odd_models_and_bodies() {
        assert_eq!(
            read(r#"{"model":"a","model":"claude-opus-4-1"}"#)
                .model
                .as_deref(),
            Some("claude-opus-4-1")
        );
        assert_eq!(read(r#"{"model":"  "}"#).model, None);
        assert_eq!(read(r#"{"model":7}"#).model, None);
        assert_eq!(read(r#"{"messages":[]}"#), MessagesFields::default());
        assert_eq!(read("not json"), MessagesFields::default());
        assert_eq!(read("[1,2]"), MessagesFields::default());
        assert_eq!(
            read(r#"{"model":"m", "max_tokens": 5"#),
            MessagesFields::default()
        );
    }
}
