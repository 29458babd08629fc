//! The body type of every gateway response, and a body held whole.

use bytes::Bytes;
use http_body_util::{BodyExt, Full};

use super::metered::BoxError;

/// The body type of every gateway response: streamed from upstream, or held whole.
pub type GatewayBody = http_body_util::combinators::UnsyncBoxBody<Bytes, BoxError>;

/// A body held whole.
pub fn full(bytes: impl Into<Bytes>) -> GatewayBody {
    Full::new(bytes.into())
        .map_err(|never| match never {})
        .boxed_unsync()
}
