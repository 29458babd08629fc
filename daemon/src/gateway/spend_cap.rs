//! The spend cap: a 429 with `"error_code": "enforced_spend_limit_reached"` means the account
//! may not spend more until someone lifts the cap. Retrying cannot help, so the 429 is passed on
//! and the key's owner is locked out for [`SPEND_CAP_BLOCK`]: every request is answered with the
//! same 429 without going upstream, and socket acquires are refused.

use std::time::Duration;

use http::{HeaderMap, Response, StatusCode};
use pacer_client::api::policy::is_spend_cap;
use pacer_protocol::KeyFingerprint;

use super::body::GatewayBody;
use super::forward::{buffered_response, header_list};
use crate::hub::Session;
use pacer_broker::Rejection;

/// How long every request of a key fails fast after a spend-cap 429.
pub const SPEND_CAP_BLOCK: Duration = Duration::from_secs(60);

/// A 429 came back for `key`: if it is the spend cap's, locks the key's owner out (its
/// requests get this 429 replayed, its socket acquires are refused) and returns the response to
/// pass on.
pub fn check(
    session: &Session,
    key: KeyFingerprint,
    headers: &HeaderMap,
    body: &bytes::Bytes,
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
    let rejection = Rejection::bounded(status.as_u16(), header_list(headers), body.to_vec());
    session.lock_out(
        key,
        SPEND_CAP_BLOCK,
        "the API key's spend cap is reached (enforced_spend_limit_reached)".into(),
        rejection,
    );
    Some(buffered_response(status, headers, body.clone()))
}
