//! What pacer knows of the API that Python asks directly.

use std::path::PathBuf;

use pacer_api::path::{self, Endpoint};
use pacer_client::KeyFingerprint;
use pyo3::prelude::*;

/// `"messages"`, `"count_tokens"` or `"other"`: which endpoint a request is, read as leniently
/// as the gateway reads it (no spelling of the Messages path goes around the budget).
#[pyfunction]
pub fn endpoint(method: &str, path: &str) -> &'static str {
    match path::endpoint_of(method, path) {
        Endpoint::Messages => "messages",
        Endpoint::CountTokens => "count_tokens",
        Endpoint::Other => "other",
    }
}

/// The fingerprint pacer knows an API key by (`pacer status` shows it).
#[pyfunction]
pub fn key_id(api_key: &str) -> String {
    KeyFingerprint::of(api_key).to_string()
}

/// The socket a client connects to by default (`PACER_SOCKET`, else the per-user default).
#[pyfunction]
pub fn default_socket() -> PathBuf {
    pacer_protocol::endpoint::resolve_default().0
}
