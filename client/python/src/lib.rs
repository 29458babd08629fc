//! `pacer._native`: the Rust client crate for Python. The Python package (`python/pacer`) builds
//! its context managers and HTTP transports on these few types:
//!
//! - `client`: [`client::Client`], a connection to pacerd (`pacer_client::blocking`), started
//!   if asked; [`client::Permit`], one call's permit: report it, release it, or let it go
//!   (settled as unknown).
//! - `call`: [`call::GatedCall`], the gated call's state machine (`pacer_api::GatedCall`, the
//!   one the daemon's gateway drives) for the transports, which only move bytes and wait; and
//!   [`call::UsageReader`], the usage of an answer as it streams past.
//! - `api`: what pacer knows of the API that Python asks directly: which endpoint a request
//!   is, an API key's fingerprint, the default socket.
//!
//! Every call that may wait lets go of the GIL.

mod api;
mod call;
mod client;

use std::time::UNIX_EPOCH;

use pyo3::create_exception;
use pyo3::exceptions::PyException;
use pyo3::prelude::*;

create_exception!(
    pacer,
    PacerError,
    PyException,
    "Something went wrong talking to pacerd."
);
create_exception!(
    pacer,
    DaemonUnavailable,
    PacerError,
    "No pacerd answers (and the client fails closed, or none could be started)."
);
create_exception!(
    pacer,
    PermitTimeout,
    PacerError,
    "No permit within the timeout; `retry_after` (seconds) says how much longer it would take."
);
create_exception!(
    pacer,
    PermitRejected,
    PacerError,
    "pacerd refuses the permit: it cannot be granted, or not before `until` (epoch seconds)."
);

/// The Python exception for a client error, with `retry_after` / `until` set where they apply.
fn py_error(e: pacer_client::Error) -> PyErr {
    let message = e.to_string();
    Python::attach(|py| match e {
        pacer_client::Error::TimedOut { retry_after, .. } => {
            let err = PermitTimeout::new_err(message);
            let _ = err
                .value(py)
                .setattr("retry_after", retry_after.as_secs_f64());
            err
        }
        pacer_client::Error::Rejected { until, reason } => {
            let err = PermitRejected::new_err(message);
            let _ = err.value(py).setattr("reason", reason);
            let until = until.and_then(|t| t.duration_since(UNIX_EPOCH).ok());
            let _ = err
                .value(py)
                .setattr("until", until.map(|d| d.as_secs_f64()));
            err
        }
        e if e.is_unreachable() => DaemonUnavailable::new_err(message),
        _ => PacerError::new_err(message),
    })
}

#[pymodule]
fn _native(m: &Bound<'_, PyModule>) -> PyResult<()> {
    let py = m.py();
    m.add_class::<client::Client>()?;
    m.add_class::<client::Permit>()?;
    m.add_class::<call::GatedCall>()?;
    m.add_class::<call::UsageReader>()?;
    m.add_function(wrap_pyfunction!(api::endpoint, m)?)?;
    m.add_function(wrap_pyfunction!(api::key_id, m)?)?;
    m.add_function(wrap_pyfunction!(api::default_socket, m)?)?;
    m.add("PacerError", py.get_type::<PacerError>())?;
    m.add("DaemonUnavailable", py.get_type::<DaemonUnavailable>())?;
    m.add("PermitTimeout", py.get_type::<PermitTimeout>())?;
    m.add("PermitRejected", py.get_type::<PermitRejected>())?;
    m.add("PRIORITY_HEADER", pacer_api::request::PRIORITY_HEADER)?;
    m.add("MAX_SHARE_HEADER", pacer_api::request::MAX_SHARE_HEADER)?;
    m.add("VERSION", env!("CARGO_PKG_VERSION"))?;
    Ok(())
}
