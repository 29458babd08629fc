//! `pacer._native`: the Rust client crate for Python. The Python package (`python/pacer`) builds
//! its context managers and HTTP transports on these few types:
//!
//! - [`Client`]: a connection to pacerd (`pacer_client::blocking`), started if asked.
//! - [`Permit`]: one call's permit; report it, release it, or let it go (settled as unknown).
//! - [`UsageReader`]: the usage of an answer (SSE or JSON, compressed or not) as it streams past.
//! - functions for what pacer knows of the API: which endpoint, a body's model and
//!   `max_tokens`, whether a 429 is the spend cap, an API key's fingerprint.
//!
//! Every call that may wait lets go of the GIL.

use std::path::PathBuf;
use std::str::FromStr;
use std::sync::Mutex;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use pacer_client::api::usage::UsageTap;
use pacer_client::api::{fields::MessagesFields, path, policy};
use pacer_client::{AcquireRequest, FailMode, KeyFingerprint, Outcome, Priority, blocking};
use pyo3::create_exception;
use pyo3::exceptions::{PyException, PyValueError};
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
        pacer_client::Error::TimedOut { retry_after } => {
            let err = PermitTimeout::new_err(message);
            let _ = err
                .value(py)
                .setattr("retry_after", retry_after.as_secs_f64());
            err
        }
        pacer_client::Error::Rejected { until, .. } => {
            let err = PermitRejected::new_err(message);
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

/// A connection to pacerd.
#[pyclass(module = "pacer._native", frozen)]
struct Client {
    inner: blocking::Client,
    /// Why the daemon could not be started, when it was asked to be and the client fails open.
    start_error: Option<String>,
    /// The process id of a daemon this client started.
    started: Option<u32>,
}

#[pymethods]
impl Client {
    #[new]
    #[pyo3(signature = (socket=None, *, autostart=false, fail_closed=false, client_id=None, client_name=None))]
    fn new(
        py: Python<'_>,
        socket: Option<PathBuf>,
        autostart: bool,
        fail_closed: bool,
        client_id: Option<String>,
        client_name: Option<String>,
    ) -> PyResult<Client> {
        let mode = if fail_closed {
            FailMode::Closed
        } else {
            FailMode::Open
        };
        let mut builder = pacer_client::Client::builder()
            .fail_mode(mode)
            .client_name(client_name.unwrap_or_else(|| "python".to_owned()));
        if let Some(socket) = socket {
            builder = builder.endpoint(socket);
        }
        if let Some(id) = client_id {
            builder = builder.client_id(id);
        }
        py.detach(move || {
            if !autostart {
                let inner = blocking::Client::with(builder).map_err(py_error)?;
                return Ok(Client {
                    inner,
                    start_error: None,
                    started: None,
                });
            }
            match blocking::Client::connect_or_start(builder.clone()) {
                Ok((inner, started)) => Ok(Client {
                    inner,
                    start_error: None,
                    started: started.map(|s| s.pid),
                }),
                Err(pacer_client::autostart::StartError::Connect(e)) => Err(py_error(e)),
                Err(e) if !fail_closed => Ok(Client {
                    inner: blocking::Client::with(builder).map_err(py_error)?,
                    start_error: Some(e.to_string()),
                    started: None,
                }),
                Err(e) => Err(DaemonUnavailable::new_err(e.to_string())),
            }
        })
    }

    /// The daemon's socket.
    #[getter]
    fn socket(&self) -> PathBuf {
        self.inner.endpoint().to_owned()
    }

    #[getter]
    fn client_id(&self) -> String {
        self.inner.client_id().to_owned()
    }

    #[getter]
    fn fail_closed(&self) -> bool {
        self.inner.fail_mode() == FailMode::Closed
    }

    /// Why pacerd could not be started (`autostart=True` on a client that fails open).
    #[getter]
    fn start_error(&self) -> Option<String> {
        self.start_error.clone()
    }

    /// The process id of the pacerd this client started, if it started one.
    #[getter]
    fn started_pid(&self) -> Option<u32> {
        self.started
    }

    /// Waits for a permit; the key is fingerprinted here and never sent.
    #[pyo3(signature = (api_key, model, *, priority="normal", input_tokens=None, max_tokens=None, timeout=None, client_id=None))]
    #[allow(clippy::too_many_arguments)]
    fn acquire(
        &self,
        py: Python<'_>,
        api_key: &str,
        model: &str,
        priority: &str,
        input_tokens: Option<u64>,
        max_tokens: Option<u64>,
        timeout: Option<f64>,
        client_id: Option<String>,
    ) -> PyResult<Permit> {
        let priority =
            Priority::from_str(priority).map_err(|e| PyValueError::new_err(e.to_string()))?;
        let mut request = AcquireRequest::new(api_key, model).priority(priority);
        if let Some(n) = input_tokens {
            request = request.input_tokens(n);
        }
        if let Some(n) = max_tokens {
            request = request.max_tokens(n);
        }
        if let Some(id) = client_id {
            request = request.client_id(id);
        }
        if let Some(seconds) = timeout {
            let timeout = Duration::try_from_secs_f64(seconds).map_err(|_| {
                PyValueError::new_err(format!(
                    "timeout must be a number of seconds, 0 or more (got {seconds})"
                ))
            })?;
            request = request.timeout(timeout);
        }
        let permit = py
            .detach(|| self.inner.acquire(request))
            .map_err(py_error)?;
        Ok(Permit {
            lease: permit.lease().map(|l| l.0),
            brokered: permit.is_brokered(),
            waited: permit.waited().as_secs_f64(),
            inner: Mutex::new(Some(permit)),
        })
    }

    /// The input tokens to reserve for a Messages body of `body_bytes`, as the gateway would.
    fn estimate_input(&self, py: Python<'_>, body_bytes: usize) -> PyResult<u64> {
        py.detach(|| self.inner.estimate_input(body_bytes))
            .map_err(py_error)
    }

    /// Tells pacerd how many input tokens a body of `body_bytes` really counted.
    fn calibrate(&self, py: Python<'_>, body_bytes: usize, counted_input: u64) -> PyResult<()> {
        py.detach(|| self.inner.calibrate(body_bytes, counted_input))
            .map_err(py_error)
    }

    /// Pauses the budget of `api_key` × `model`'s class for `seconds` (an administrator's action).
    fn pause(&self, py: Python<'_>, api_key: &str, model: &str, seconds: f64) -> PyResult<()> {
        let wait = Duration::try_from_secs_f64(seconds)
            .map_err(|_| PyValueError::new_err(format!("cannot pause for {seconds} seconds")))?;
        let key = KeyFingerprint::of(api_key);
        py.detach(|| self.inner.pause(key, model, SystemTime::now() + wait))
            .map_err(py_error)
    }
}

/// One call's permit. Report how the call went, release it unused, or drop it (settled as
/// "outcome unknown").
#[pyclass(module = "pacer._native", frozen)]
struct Permit {
    inner: Mutex<Option<blocking::Permit>>,
    lease: Option<u64>,
    brokered: bool,
    waited: f64,
}

impl Permit {
    fn take(&self) -> Option<blocking::Permit> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner()).take()
    }

    fn settle(&self, py: Python<'_>, outcome: Outcome) -> PyResult<()> {
        match self.take() {
            Some(permit) => py.detach(|| permit.report(outcome)).map_err(py_error),
            None => Ok(()),
        }
    }
}

#[pymethods]
impl Permit {
    /// The lease id pacerd gave (`None` for an unbrokered permit).
    #[getter]
    fn lease(&self) -> Option<u64> {
        self.lease
    }

    /// False when pacerd could not be reached and the client failed open.
    #[getter]
    fn brokered(&self) -> bool {
        self.brokered
    }

    /// Seconds spent waiting in pacerd's queue.
    #[getter]
    fn waited(&self) -> f64 {
        self.waited
    }

    /// Whether it is still to be settled.
    #[getter]
    fn open(&self) -> bool {
        self.inner
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .is_some()
    }

    /// Reports the call's HTTP status, response headers, and its JSON body or `usage` JSON.
    #[pyo3(signature = (status, headers, body=None, usage=None))]
    fn report(
        &self,
        py: Python<'_>,
        status: u16,
        headers: Vec<(String, String)>,
        body: Option<&[u8]>,
        usage: Option<&str>,
    ) -> PyResult<()> {
        let body = body.and_then(|b| serde_json::from_slice::<serde_json::Value>(b).ok());
        let mut outcome = pacer_client::outcome::from_response(status, headers, body.as_ref());
        if let (
            Some(usage),
            Outcome::Success {
                usage: reported, ..
            },
        ) = (usage, &mut outcome)
        {
            let value: serde_json::Value = serde_json::from_str(usage)
                .map_err(|e| PyValueError::new_err(format!("usage is not JSON: {e}")))?;
            *reported = pacer_client::outcome::usage_from_json(&value).ok_or_else(|| {
                PyValueError::new_err(
                    "usage must be a mapping with input_tokens and output_tokens (integers)",
                )
            })?;
        }
        self.settle(py, outcome)
    }

    /// Reports what a [`UsageReader`] read of the answer; returns the input tokens it counted
    /// (uncached input plus cache writes), if the answer said.
    fn report_read(
        &self,
        py: Python<'_>,
        reader: &UsageReader,
        headers: Vec<(String, String)>,
    ) -> PyResult<Option<u64>> {
        let headers = headers
            .into_iter()
            .map(|(n, v)| (n.to_ascii_lowercase(), v))
            .collect();
        let outcome = reader.lock().outcome(headers);
        let counted = match &outcome {
            Outcome::Success { usage, .. } => {
                Some(usage.input_tokens + usage.cache_creation_input_tokens)
            }
            _ => None,
        };
        self.settle(py, outcome)?;
        Ok(counted)
    }

    /// Reports a call that failed in a way that says nothing of the budget (a spend cap, a
    /// broken connection after the request was sent).
    fn fail(&self, py: Python<'_>) -> PyResult<()> {
        self.settle(py, Outcome::Failed)
    }

    /// Settles it as "outcome unknown" (what dropping it does).
    fn unknown(&self, py: Python<'_>) -> PyResult<()> {
        self.settle(py, Outcome::Unknown)
    }

    /// Gives it back unused: the call was never made; everything it reserved is refunded.
    fn release(&self, py: Python<'_>) -> PyResult<()> {
        match self.take() {
            Some(permit) => py.detach(|| permit.release()).map_err(py_error),
            None => Ok(()),
        }
    }
}

/// Reads the usage (and any mid-stream error) of an answer as its bytes go past.
#[pyclass(module = "pacer._native", frozen)]
struct UsageReader {
    tap: Mutex<UsageTap>,
}

impl UsageReader {
    fn lock(&self) -> std::sync::MutexGuard<'_, UsageTap> {
        self.tap.lock().unwrap_or_else(|p| p.into_inner())
    }
}

#[pymethods]
impl UsageReader {
    #[new]
    #[pyo3(signature = (content_type=None, content_encoding=None))]
    fn new(content_type: Option<&str>, content_encoding: Option<&str>) -> UsageReader {
        UsageReader {
            tap: Mutex::new(UsageTap::new(content_type, content_encoding)),
        }
    }

    /// Reads the next chunk of the body, as it came over the wire (still compressed).
    fn feed(&self, chunk: &[u8]) {
        self.lock().feed(chunk);
    }
}

/// `"messages"`, `"count_tokens"` or `"other"`: which endpoint a request is, read as leniently
/// as the gateway reads it (no spelling of the Messages path goes around the budget).
#[pyfunction]
fn endpoint(method: &str, path: &str) -> &'static str {
    match path::endpoint_of(method, path) {
        path::Endpoint::Messages => "messages",
        path::Endpoint::CountTokens => "count_tokens",
        path::Endpoint::Other => "other",
    }
}

/// The model and `max_tokens` of a Messages request body (`None` where unusable; the model
/// is then paced as `unknown-model`, as the gateway does).
#[pyfunction]
fn request_fields(body: &[u8]) -> (String, Option<u64>) {
    let fields = MessagesFields::read(body);
    let model = fields
        .model
        .unwrap_or_else(|| pacer_client::api::fields::UNKNOWN_MODEL.to_owned());
    (model, fields.max_tokens)
}

/// Whether a 429 body is the spend cap's: retrying cannot help.
#[pyfunction]
fn is_spend_cap(body: &[u8]) -> bool {
    policy::is_spend_cap(body)
}

/// The fingerprint pacer knows an API key by (`pacer status` shows it).
#[pyfunction]
fn key_id(api_key: &str) -> String {
    KeyFingerprint::of(api_key).to_string()
}

/// The socket a client connects to by default (`PACER_SOCKET`, else the per-user default).
#[pyfunction]
fn default_socket() -> PathBuf {
    pacer_protocol::endpoint::resolve_default().0
}

#[pymodule]
fn _native(m: &Bound<'_, PyModule>) -> PyResult<()> {
    let py = m.py();
    m.add_class::<Client>()?;
    m.add_class::<Permit>()?;
    m.add_class::<UsageReader>()?;
    m.add_function(wrap_pyfunction!(endpoint, m)?)?;
    m.add_function(wrap_pyfunction!(request_fields, m)?)?;
    m.add_function(wrap_pyfunction!(is_spend_cap, m)?)?;
    m.add_function(wrap_pyfunction!(key_id, m)?)?;
    m.add_function(wrap_pyfunction!(default_socket, m)?)?;
    m.add("PacerError", py.get_type::<PacerError>())?;
    m.add("DaemonUnavailable", py.get_type::<DaemonUnavailable>())?;
    m.add("PermitTimeout", py.get_type::<PermitTimeout>())?;
    m.add("PermitRejected", py.get_type::<PermitRejected>())?;
    m.add("MAX_OVERLOAD_RETRIES", policy::MAX_OVERLOAD_RETRIES)?;
    m.add("PRIORITY_HEADER", pacer_client::api::PRIORITY_HEADER)?;
    m.add("VERSION", env!("CARGO_PKG_VERSION"))?;
    Ok(())
}
