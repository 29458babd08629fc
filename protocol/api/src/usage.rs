//! Reading usage (and any mid-stream error) from a Messages answer as its bytes go past: SSE
//! (`text/event-stream`, line by line) or JSON (copied whole and read at the end), through gzip
//! or deflate, whatever the chunks. The daemon's gateway reads every answer it streams to a
//! client this way, and so do clients that pace their own HTTP calls.

use std::io::Write;

use pacer_protocol::message::{ApiUsage, Headers, Outcome, Usage};
use serde::Deserialize;
use serde_json::Value;

/// The most of a JSON body kept to read its usage (a Messages response is far smaller).
const MAX_JSON_COPY: usize = 8 << 20;
/// The longest SSE line kept: data lines carrying usage are short; long text deltas are skipped.
const MAX_SSE_LINE: usize = 1 << 20;

/// Reads usage (and any mid-stream error) from a response body as it passes.
#[derive(Debug)]
pub struct UsageTap {
    /// Undoes the body's content encoding on the copy being read (the client gets the original).
    decoder: Decoder,
    format: Format,
    usage: Usage,
    seen_usage: bool,
    /// The `error.type` and message of a mid-stream SSE `error` event.
    error: Option<(String, Option<String>)>,
}

#[derive(Debug)]
enum Format {
    /// `text/event-stream`: read line by line.
    Sse { line: Vec<u8>, skipping: bool },
    /// A JSON body, copied whole and read at the end.
    Json { copy: Vec<u8> },
    /// Something whose usage cannot be read (an unsupported encoding, an oversized body).
    Opaque,
}

#[derive(Debug)]
enum Decoder {
    Identity,
    Gzip(flate2::write::MultiGzDecoder<Vec<u8>>),
    Deflate(flate2::write::ZlibDecoder<Vec<u8>>),
}

impl Decoder {
    fn for_encoding(encoding: Option<&str>) -> Option<Decoder> {
        match encoding.map(|e| e.trim().to_ascii_lowercase()).as_deref() {
            None | Some("" | "identity") => Some(Decoder::Identity),
            Some("gzip" | "x-gzip") => Some(Decoder::Gzip(flate2::write::MultiGzDecoder::new(
                Vec::new(),
            ))),
            Some("deflate") => Some(Decoder::Deflate(
                flate2::write::ZlibDecoder::new(Vec::new()),
            )),
            Some(_) => None,
        }
    }

    /// Decodes a chunk; `None` when the stream turns out not to be what it claimed.
    fn decode<'a>(&'a mut self, chunk: &'a [u8]) -> Option<std::borrow::Cow<'a, [u8]>> {
        let out = match self {
            Decoder::Identity => return Some(std::borrow::Cow::Borrowed(chunk)),
            Decoder::Gzip(d) => {
                d.write_all(chunk).ok()?;
                std::mem::take(d.get_mut())
            }
            Decoder::Deflate(d) => {
                d.write_all(chunk).ok()?;
                std::mem::take(d.get_mut())
            }
        };
        Some(std::borrow::Cow::Owned(out))
    }

    /// Whatever the decoder still holds at the end of the body.
    fn finish(&mut self) -> Vec<u8> {
        match self {
            Decoder::Identity => Vec::new(),
            Decoder::Gzip(d) => {
                let _ = d.try_finish();
                std::mem::take(d.get_mut())
            }
            Decoder::Deflate(d) => {
                let _ = d.try_finish();
                std::mem::take(d.get_mut())
            }
        }
    }
}

/// How the body ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ended {
    Complete,
    /// The upstream connection broke mid-body.
    Broken,
    /// The client went away before the end.
    Abandoned,
}

impl UsageTap {
    pub fn new(content_type: Option<&str>, content_encoding: Option<&str>) -> Self {
        let sse = content_type.is_some_and(|t| t.starts_with("text/event-stream"));
        let (decoder, format) = match Decoder::for_encoding(content_encoding) {
            Some(decoder) if sse => (
                decoder,
                Format::Sse {
                    line: Vec::new(),
                    skipping: false,
                },
            ),
            Some(decoder) => (decoder, Format::Json { copy: Vec::new() }),
            None => (Decoder::Identity, Format::Opaque),
        };
        Self {
            decoder,
            format,
            usage: Usage::default(),
            seen_usage: false,
            error: None,
        }
    }

    pub fn feed(&mut self, chunk: &[u8]) {
        if matches!(self.format, Format::Opaque) {
            return;
        }
        let Some(decoded) = self.decoder.decode(chunk) else {
            self.format = Format::Opaque;
            return;
        };
        let decoded = decoded.into_owned();
        match &mut self.format {
            Format::Sse { line, skipping } => {
                let mut lines = Vec::new();
                for &byte in &decoded {
                    if byte == b'\n' {
                        if !*skipping {
                            lines.push(std::mem::take(line));
                        }
                        line.clear();
                        *skipping = false;
                    } else if !*skipping {
                        line.push(byte);
                        if line.len() > MAX_SSE_LINE {
                            line.clear();
                            *skipping = true;
                        }
                    }
                }
                for line in lines {
                    self.sse_line(&line);
                }
            }
            Format::Json { copy } => {
                if copy.len() + decoded.len() <= MAX_JSON_COPY {
                    copy.extend_from_slice(&decoded);
                } else {
                    self.format = Format::Opaque;
                }
            }
            Format::Opaque => {}
        }
    }

    fn sse_line(&mut self, line: &[u8]) {
        let Some(data) = line.strip_prefix(b"data:") else {
            return;
        };
        let data = data.strip_suffix(b"\r").unwrap_or(data);
        // Only message_start, message_delta and error events matter; skip the rest unparsed.
        let interesting = contains(data, b"\"usage\"") || contains(data, b"\"error\"");
        if !interesting {
            return;
        }
        let Ok(event) = serde_json::from_slice::<Value>(data) else {
            return;
        };
        match event.get("type").and_then(Value::as_str) {
            Some("message_start") => {
                self.take_usage(event.get("message").and_then(|m| m.get("usage")))
            }
            Some("message_delta") => self.take_usage(event.get("usage")),
            Some("error") => {
                let error = event.get("error");
                let kind = error
                    .and_then(|e| e.get("type"))
                    .and_then(Value::as_str)
                    .unwrap_or("error");
                let message = error
                    .and_then(|e| e.get("message"))
                    .and_then(Value::as_str)
                    .map(str::to_owned);
                self.error = Some((kind.to_owned(), message));
            }
            _ => {}
        }
    }

    fn take_usage(&mut self, usage: Option<&Value>) {
        if let Some(parsed) = usage.and_then(|u| ApiUsage::deserialize(u).ok())
            && !parsed.is_empty()
        {
            parsed.apply_to(&mut self.usage);
            self.seen_usage = true;
        }
    }

    /// Reads the usage of a JSON body once it is complete.
    fn finish_json(&mut self) {
        let rest = self.decoder.finish();
        if let Format::Json { copy } = &mut self.format {
            copy.extend_from_slice(&rest);
        }
        if let Format::Json { copy } = std::mem::replace(&mut self.format, Format::Opaque)
            && let Ok(body) = serde_json::from_slice::<Value>(&copy)
        {
            self.take_usage(body.get("usage"));
        }
    }

    /// What to report for a body that ended this way, bounded to fit one frame.
    pub fn outcome(&mut self, headers: Headers) -> Outcome {
        self.unbounded_outcome(headers).bounded()
    }

    fn unbounded_outcome(&mut self, headers: Headers) -> Outcome {
        // A JSON body cut short does not parse: trying costs nothing.
        self.finish_json();
        match &self.error {
            Some((kind, _)) if kind == "overloaded_error" => {
                return Outcome::Overloaded { retry_after: None };
            }
            Some((kind, message)) if kind == "rate_limit_error" => {
                return Outcome::RateLimited {
                    retry_after: None,
                    headers,
                    message: message.clone(),
                };
            }
            _ => {}
        }
        if self.seen_usage {
            Outcome::Success {
                usage: self.usage,
                headers,
            }
        } else {
            Outcome::Unknown
        }
    }
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

#[cfg(test)]
mod tests {
    use super::*;

    const STREAM: &str = "event: message_start\n\
data: {\"type\":\"message_start\",\"message\":{\"id\":\"msg_1\",\"usage\":{\"input_tokens\":25,\"cache_creation_input_tokens\":5,\"cache_read_input_tokens\":9000,\"output_tokens\":1}}}\n\n\
event: content_block_delta\n\
data: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"text_delta\",\"text\":\"Hello\"}}\n\n\
event: message_delta\n\
data: {\"type\":\"message_delta\",\"delta\":{\"stop_reason\":\"end_turn\"},\"usage\":{\"output_tokens\":15}}\n\n\
event: message_stop\n\
data: {\"type\":\"message_stop\"}\n\n";

    fn success_usage(outcome: Outcome) -> Usage {
        match outcome {
            Outcome::Success { usage, .. } => usage,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn sse_usage_is_read_across_arbitrary_chunk_boundaries() {
        for chunk_size in [1, 3, 7, 64, 4096] {
            let mut tap = UsageTap::new(Some("text/event-stream; charset=utf-8"), None);
            for chunk in STREAM.as_bytes().chunks(chunk_size) {
                tap.feed(chunk);
            }
            let usage = success_usage(tap.outcome(Vec::new()));
            assert_eq!(usage.input_tokens, 25);
            assert_eq!(usage.cache_creation_input_tokens, 5);
            assert_eq!(usage.cache_read_input_tokens, 9000);
            assert_eq!(usage.output_tokens, 15, "chunks of {chunk_size}");
        }
    }

    #[test]
    fn crlf_lines_work_too() {
        let mut tap = UsageTap::new(Some("text/event-stream"), None);
        tap.feed(STREAM.replace('\n', "\r\n").as_bytes());
        assert_eq!(success_usage(tap.outcome(Vec::new())).output_tokens, 15);
    }

    #[test]
    fn an_abandoned_stream_reports_what_was_seen() {
        let mut tap = UsageTap::new(Some("text/event-stream"), None);
        tap.feed(&STREAM.as_bytes()[..STREAM.find("event: content_block_delta").unwrap()]);
        let usage = success_usage(tap.outcome(Vec::new()));
        assert_eq!((usage.input_tokens, usage.output_tokens), (25, 1));
        let mut nothing = UsageTap::new(Some("text/event-stream"), None);
        assert_eq!(nothing.outcome(Vec::new()), Outcome::Unknown);
    }

    #[test]
    fn a_mid_stream_overload_is_reported_as_such() {
        let mut tap = UsageTap::new(Some("text/event-stream"), None);
        tap.feed(b"event: error\ndata: {\"type\":\"error\",\"error\":{\"type\":\"overloaded_error\",\"message\":\"Overloaded\"}}\n\n");
        assert_eq!(
            tap.outcome(Vec::new()),
            Outcome::Overloaded { retry_after: None }
        );
    }

    #[test]
    fn json_bodies_plain_and_gzipped() {
        let body = br#"{"id":"msg_1","content":[],"usage":{"input_tokens":12,"output_tokens":34}}"#;
        let mut tap = UsageTap::new(Some("application/json"), None);
        for chunk in body.chunks(5) {
            tap.feed(chunk);
        }
        assert_eq!(success_usage(tap.outcome(Vec::new())).output_tokens, 34);

        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        std::io::Write::write_all(&mut gz, body).unwrap();
        let compressed = gz.finish().unwrap();
        let mut tap = UsageTap::new(Some("application/json"), Some("gzip"));
        tap.feed(&compressed);
        assert_eq!(success_usage(tap.outcome(Vec::new())).input_tokens, 12);
    }

    #[test]
    fn a_gzipped_event_stream_is_read_too() {
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        std::io::Write::write_all(&mut gz, STREAM.as_bytes()).unwrap();
        let compressed = gz.finish().unwrap();
        let mut tap = UsageTap::new(Some("text/event-stream"), Some("gzip"));
        for chunk in compressed.chunks(10) {
            tap.feed(chunk);
        }
        assert_eq!(success_usage(tap.outcome(Vec::new())).output_tokens, 15);
    }

    #[test]
    fn unknown_encodings_settle_as_unknown() {
        let mut tap = UsageTap::new(Some("application/json"), Some("br"));
        tap.feed(b"\x0b\x02\x80");
        assert_eq!(tap.outcome(Vec::new()), Outcome::Unknown);
    }
}
