//! The bodies of successful answers: JSON, or an SSE stream with usage.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures_util::StreamExt;
use http::{HeaderValue, Response};
use http_body_util::{BodyExt, StreamBody};
use hyper::body::Frame;
use serde_json::{Value, json};

use super::{Body, Mock};

/// Counts a request in progress for `max_concurrent`, until dropped.
pub(super) struct InProgress(Arc<Mock>);

impl InProgress {
    pub(super) fn new(mock: Arc<Mock>) -> Self {
        {
            let mut state = mock.lock();
            state.in_progress += 1;
            state.stats.max_concurrent = state.stats.max_concurrent.max(state.in_progress);
        }
        Self(mock)
    }
}

impl Drop for InProgress {
    fn drop(&mut self) {
        self.0.lock().in_progress -= 1;
    }
}

/// The answer's text: one word per output token, "Hello from the mock API." repeated.
pub(super) fn text_for(output: u64) -> String {
    const WORDS: [&str; 5] = ["Hello", " from", " the", " mock", " API."];
    (0..output as usize)
        .map(|i| match (i, WORDS[i % WORDS.len()]) {
            (i, word) if i > 0 && i % WORDS.len() == 0 => format!(" {word}"),
            (_, word) => word.to_owned(),
        })
        .collect()
}

pub(super) fn usage_json(usage: (u64, u64, u64), output: u64) -> Value {
    json!({"input_tokens": usage.0, "cache_creation_input_tokens": usage.1,
           "cache_read_input_tokens": usage.2, "output_tokens": output})
}

pub(super) fn message_json(id: u64, model: &str, usage: (u64, u64, u64), output: u64) -> Value {
    json!({
        "id": format!("msg_mock_{id}"), "type": "message", "role": "assistant", "model": model,
        "content": [{"type": "text", "text": text_for(output)}],
        "stop_reason": "end_turn", "stop_sequence": null,
        "usage": usage_json(usage, output),
    })
}

pub(super) fn sse(
    id: u64,
    model: &str,
    usage: (u64, u64, u64),
    output: u64,
    gap: Duration,
    midstream_error: bool,
    guard: InProgress,
) -> Response<Body> {
    let event = |name: &str, data: Value| Bytes::from(format!("event: {name}\ndata: {data}\n\n"));
    let mut start = message_json(id, model, usage, 1);
    start["content"] = json!([]);
    start["stop_reason"] = Value::Null;
    let mut events = vec![
        event(
            "message_start",
            json!({"type": "message_start", "message": start}),
        ),
        event(
            "content_block_start",
            json!({"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}}),
        ),
        event("ping", json!({"type": "ping"})),
    ];
    let text = text_for(output);
    let words: Vec<&str> = text.split_inclusive(' ').collect();
    for (i, word) in words.iter().enumerate() {
        events.push(event(
            "content_block_delta",
            json!({"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": word}}),
        ));
        if midstream_error && i == 0 {
            events.push(event(
                "error",
                json!({"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}}),
            ));
            break;
        }
    }
    if !midstream_error {
        events.push(event(
            "content_block_stop",
            json!({"type": "content_block_stop", "index": 0}),
        ));
        events.push(event(
            "message_delta",
            json!({"type": "message_delta", "delta": {"stop_reason": "end_turn", "stop_sequence": null},
                   "usage": {"output_tokens": output}}),
        ));
        events.push(event("message_stop", json!({"type": "message_stop"})));
    }
    let stream = futures_util::stream::iter(events.into_iter().enumerate()).then(
        move |(i, bytes)| async move {
            if !gap.is_zero() && i > 0 {
                tokio::time::sleep(gap).await;
            }
            Ok::<_, Infallible>(Frame::data(bytes))
        },
    );
    // The request counts as in progress for as long as its body is being sent.
    let stream = stream.chain(futures_util::stream::once(async move {
        drop(guard);
        Ok(Frame::data(Bytes::new()))
    }));
    let mut response = Response::new(StreamBody::new(stream).boxed_unsync());
    response.headers_mut().insert(
        "content-type",
        HeaderValue::from_static("text/event-stream; charset=utf-8"),
    );
    response
        .headers_mut()
        .insert("cache-control", HeaderValue::from_static("no-cache"));
    response
}
