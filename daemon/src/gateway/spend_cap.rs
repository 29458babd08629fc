//! The spend cap: a 429 with `"error_code": "enforced_spend_limit_reached"` means the key may
//! not spend more until someone lifts the cap. Retrying cannot help, so the 429 is passed on,
//! every request of that key is answered with the same 429 for [`SPEND_CAP_BLOCK`] without
//! going upstream, and the broker fails the key's socket acquires fast for as long.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, Response, StatusCode};
use pacer_protocol::KeyFingerprint;
use tokio::time::Instant;

use super::forward::buffered_response;
use super::reply::GatewayBody;
use crate::hub::Session;

/// How long every request of a key fails fast after a spend-cap 429.
pub const SPEND_CAP_BLOCK: Duration = Duration::from_secs(60);

/// Keys whose spend cap was reached, with the 429 to replay to their requests.
#[derive(Default)]
pub struct SpendCaps {
    by_key: Mutex<HashMap<KeyFingerprint, Replay>>,
}

/// A spend-cap 429 being replayed.
struct Replay {
    until: Instant,
    status: StatusCode,
    headers: HeaderMap,
    body: Bytes,
}

impl SpendCaps {
    /// The 429 to answer a request of `key` with, while its cap holds.
    pub fn replay(&self, key: KeyFingerprint) -> Option<Response<GatewayBody>> {
        let mut caps = self.by_key.lock().unwrap_or_else(|p| p.into_inner());
        match caps.get(&key) {
            Some(cap) if cap.until > Instant::now() => Some(buffered_response(
                cap.status,
                &cap.headers,
                cap.body.clone(),
            )),
            Some(_) => {
                caps.remove(&key);
                None
            }
            None => None,
        }
    }

    /// A 429 came back for `key`: if it is the spend cap's, records it (the key's requests get
    /// it replayed; the broker blocks the key's acquires) and returns the response to pass on.
    pub fn check(
        &self,
        session: &Session,
        key: KeyFingerprint,
        headers: &HeaderMap,
        body: &Bytes,
    ) -> Option<Response<GatewayBody>> {
        if !is_spend_cap(body) {
            return None;
        }
        tracing::warn!(
            %key,
            "spend cap reached: failing this key's requests fast for {}s",
            SPEND_CAP_BLOCK.as_secs()
        );
        let status = StatusCode::TOO_MANY_REQUESTS;
        self.by_key
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(
                key,
                Replay {
                    until: Instant::now() + SPEND_CAP_BLOCK,
                    status,
                    headers: headers.clone(),
                    body: body.clone(),
                },
            );
        session.block_key(
            key,
            SPEND_CAP_BLOCK,
            "the API key's spend cap is reached (enforced_spend_limit_reached)".into(),
        );
        Some(buffered_response(status, headers, body.clone()))
    }
}

/// Whether a 429 body is the spend cap's: `"error_code": "enforced_spend_limit_reached"`.
fn is_spend_cap(body: &[u8]) -> bool {
    const MARK: &[u8] = b"enforced_spend_limit_reached";
    body.windows(MARK.len()).any(|w| w == MARK)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spend_cap_bodies_are_recognised() {
        let body = br#"{"type":"error","error":{"type":"rate_limit_error","message":"You have reached your specified API usage limits.","details":{"error_code":"enforced_spend_limit_reached"}}}"#;
        assert!(is_spend_cap(body));
        assert!(!is_spend_cap(br#"{"type":"error","error":{"type":"rate_limit_error","message":"50 requests per minute"}}"#));
    }
}
