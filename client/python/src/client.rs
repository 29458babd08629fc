//! A connection to pacerd and the permits it gives, for Python.

use std::path::PathBuf;
use std::str::FromStr;
use std::sync::Mutex;
use std::time::{Duration, SystemTime};

use pacer_client::{
    AcquireRequest, FailMode, KeyFingerprint, Outcome, Priority, Throttle, blocking,
};
use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;

use crate::{DaemonUnavailable, py_error};

/// A connection to pacerd.
#[pyclass(module = "pacer._native", frozen)]
pub struct Client {
    pub(crate) inner: blocking::Client,
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
    #[pyo3(signature = (api_key, model, *, priority="normal", input_tokens=None, max_tokens=None, timeout=None, client_id=None, max_share=None))]
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
        max_share: Option<f64>,
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
        if let Some(share) = max_share {
            if !(share.is_finite() && share > 0.0 && share <= 1.0) {
                return Err(PyValueError::new_err(format!(
                    "max_share is a share of a window above 0 and at most 1 (0.1 is 10 %); got \
                     {share}"
                )));
            }
            request = request.max_share(share);
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
        Ok(Permit::new(permit))
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
pub struct Permit {
    inner: Mutex<Option<blocking::Permit>>,
    lease: Option<u64>,
    brokered: bool,
    waited: f64,
}

impl Permit {
    pub(crate) fn new(permit: blocking::Permit) -> Permit {
        Permit {
            lease: permit.lease().map(|l| l.0),
            brokered: permit.is_brokered(),
            waited: permit.waited().as_secs_f64(),
            inner: Mutex::new(Some(permit)),
        }
    }

    pub(crate) fn take(&self) -> Option<blocking::Permit> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner()).take()
    }

    /// Reports `outcome`; returns the kind of 429 pacerd took it for (`"bare"`,
    /// `"per-minute"`, …), if it was one.
    pub(crate) fn settle(
        &self,
        py: Python<'_>,
        outcome: Outcome,
    ) -> PyResult<Option<&'static str>> {
        let reported = match self.take() {
            Some(permit) => py.detach(|| permit.report(outcome)).map_err(py_error)?,
            None => None,
        };
        Ok(reported.and_then(|r| r.throttle).map(Throttle::as_str))
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

    /// Reports the call's HTTP status, response headers, and its JSON body or `usage` JSON;
    /// returns the kind of 429 pacerd took it for, if it was one.
    #[pyo3(signature = (status, headers, body=None, usage=None))]
    fn report(
        &self,
        py: Python<'_>,
        status: u16,
        headers: Vec<(String, String)>,
        body: Option<&[u8]>,
        usage: Option<&str>,
    ) -> PyResult<Option<&'static str>> {
        let body = body.and_then(|b| serde_json::from_slice::<serde_json::Value>(b).ok());
        let mut outcome = pacer_api::outcome::from_response(status, headers, body.as_ref());
        if let (
            Some(usage),
            Outcome::Success {
                usage: reported, ..
            },
        ) = (usage, &mut outcome)
        {
            let value: serde_json::Value = serde_json::from_str(usage)
                .map_err(|e| PyValueError::new_err(format!("usage is not JSON: {e}")))?;
            *reported = pacer_api::outcome::usage_from_json(&value).ok_or_else(|| {
                PyValueError::new_err(
                    "usage must be a mapping with input_tokens and output_tokens (integers)",
                )
            })?;
        }
        self.settle(py, outcome)
    }

    /// Settles it as "outcome unknown" (what dropping it does).
    fn unknown(&self, py: Python<'_>) -> PyResult<()> {
        self.settle(py, Outcome::Unknown).map(|_| ())
    }

    /// Gives it back unused: the call was never made; everything it reserved is refunded.
    fn release(&self, py: Python<'_>) -> PyResult<()> {
        match self.take() {
            Some(permit) => py.detach(|| permit.release()).map_err(py_error),
            None => Ok(()),
        }
    }
}
