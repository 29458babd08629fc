//! The gated call for the Python transports: `pacer_api::GatedCall`, the state machine the
//! daemon's gateway drives too, with the pacerd side done here (acquire, report, calibrate,
//! through the blocking client) and the HTTP side left to Python, which asks [`GatedCall::next`]
//! what to do and only moves bytes and waits. No decision about an answer is made in Python.

use std::str::FromStr;
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime};

use pacer_api::call::{Action, CallRequest, Refusal};
use pacer_api::fields::{MessagesFields, UNKNOWN_MODEL};
use pacer_api::request::{MAX_SHARE_HEADER, PRIORITY_HEADER, api_key};
use pacer_api::usage::UsageTap;
use pacer_api::{Answer, GatedCall as Machine};
use pacer_client::{AcquireRequest, Outcome, Priority};
use pyo3::exceptions::{PyRuntimeError, PyValueError};
use pyo3::prelude::*;

use crate::client::{Client, Permit};
use crate::py_error;

type Pairs = Vec<(String, String)>;

/// One gated request: see the transports in `python/pacer/_transport.py`.
#[pyclass(module = "pacer._native", frozen)]
pub struct GatedCall {
    state: Mutex<State>,
}

struct State {
    machine: Machine,
    key: String,
    model: String,
    priority: Priority,
    /// The client's cap on each subscription window, in basis points.
    max_share_bp: Option<u16>,
    max_tokens: Option<u64>,
    body_bytes: usize,
    /// Estimated once, at the first acquire.
    input_tokens: Option<u64>,
    /// The step Python is to do, and what it needs for it.
    deadline: Duration,
    wait: Duration,
    read_limit: usize,
    report: Option<Outcome>,
    calibration: Option<(usize, u64)>,
    answer: Option<Answer>,
}

impl GatedCall {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }
}

#[pymethods]
impl GatedCall {
    /// A Messages request: its body, its headers (the key, `x-pacer-priority` and
    /// `x-pacer-max-share` are read from them), the priority, cap and key to use when they name
    /// none, and how long it may be held.
    #[new]
    #[pyo3(signature = (body, headers, *, priority="normal", api_key=None, max_hold=240.0, max_share=None))]
    fn new(
        body: &[u8],
        headers: Pairs,
        priority: &str,
        api_key: Option<String>,
        max_hold: f64,
        max_share: Option<f64>,
    ) -> PyResult<GatedCall> {
        let header = |name: &str| {
            headers
                .iter()
                .find(|(n, _)| n.eq_ignore_ascii_case(name))
                .map(|(_, v)| v.as_str())
        };
        let priority = header(PRIORITY_HEADER).unwrap_or(priority);
        let priority =
            Priority::from_str(priority).map_err(|e| PyValueError::new_err(e.to_string()))?;
        let max_share_bp = match (header(MAX_SHARE_HEADER), max_share) {
            (Some(text), _) => Some(pacer_protocol::gateway::parse_max_share(text)),
            (None, Some(share)) => {
                Some(pacer_protocol::gateway::parse_max_share(&share.to_string()))
            }
            (None, None) => None,
        }
        .transpose()
        .map_err(|e| PyValueError::new_err(format!("max_share: {e}")))?;
        let key = self::api_key(header("x-api-key"), header("authorization"))
            .map(str::to_owned)
            .or(api_key)
            .unwrap_or_default();
        let max_hold = Duration::try_from_secs_f64(max_hold).map_err(|_| {
            PyValueError::new_err(format!(
                "max_hold must be seconds, 0 or more (got {max_hold})"
            ))
        })?;
        let fields = MessagesFields::read(body);
        let model = fields.model.unwrap_or_else(|| UNKNOWN_MODEL.to_owned());
        let request = CallRequest {
            model: model.clone(),
            body_bytes: Some(body.len()),
            teaches: pacer_api::fields::counts_by_its_bytes(body),
            max_hold,
        };
        Ok(GatedCall {
            state: Mutex::new(State {
                machine: Machine::new(request, Instant::now()),
                key,
                model,
                priority,
                max_share_bp,
                max_tokens: fields.max_tokens,
                body_bytes: body.len(),
                input_tokens: None,
                deadline: Duration::ZERO,
                wait: Duration::ZERO,
                read_limit: 0,
                report: None,
                calibration: None,
                answer: None,
            }),
        })
    }

    /// What to do next: `"acquire"` ([`GatedCall::acquire`]), `"send"` (send the request,
    /// then [`GatedCall::answered`] or [`GatedCall::send_failed`]), `"read"` (read the body
    /// whole, up to `read_limit` bytes, then [`GatedCall::read`]), `"stream"` (pass the answer
    /// on as it streams; [`GatedCall::ended`] when its body ends), `"pass"` (pass the answer on
    /// as it is), `"report"` ([`GatedCall::report`]), `"release"` (give the permit back),
    /// `"calibrate"` ([`GatedCall::calibrate`]), `"wait"` (sleep `wait_seconds`, then ask
    /// again), `"answer"` (answer with [`GatedCall::answer`]), `"fail"` (raise what the send
    /// raised), `"done"`.
    fn next(&self) -> &'static str {
        let mut state = self.lock();
        match state.machine.poll(Instant::now()) {
            Action::Acquire { deadline } => {
                state.deadline = deadline;
                "acquire"
            }
            Action::Send => "send",
            Action::ReadBody { limit } => {
                state.read_limit = limit;
                "read"
            }
            Action::Stream => "stream",
            Action::PassOn => "pass",
            Action::Report(outcome) => {
                state.report = Some(outcome);
                "report"
            }
            Action::Release => "release",
            Action::Calibrate {
                body_bytes,
                counted_input,
            } => {
                state.calibration = Some((body_bytes, counted_input));
                "calibrate"
            }
            Action::Wait(wait) => {
                state.wait = wait;
                "wait"
            }
            Action::Answer(answer) => {
                state.answer = Some(answer);
                "answer"
            }
            Action::Fail => "fail",
            Action::Done => "done",
        }
    }

    /// How long to sleep for `"wait"`, in seconds.
    #[getter]
    fn wait_seconds(&self) -> f64 {
        self.lock().wait.as_secs_f64()
    }

    /// How many bytes of the body to read for `"read"`.
    #[getter]
    fn read_limit(&self) -> usize {
        self.lock().read_limit
    }

    /// Waits for a permit from pacerd (the GIL let go); `None` when none came, and the call has
    /// its answer.
    fn acquire(&self, py: Python<'_>, client: &Client) -> PyResult<Option<Permit>> {
        let mut state = self.lock();
        let state = &mut *state;
        let input = match state.input_tokens {
            Some(input) => input,
            None => {
                let bytes = state.body_bytes;
                let input = py
                    .detach(|| client.inner.estimate_input(bytes))
                    .map_err(py_error)?;
                *state.input_tokens.insert(input)
            }
        };
        let mut request = AcquireRequest::new(&state.key, &state.model)
            .priority(state.priority)
            .input_tokens(input)
            .timeout(state.deadline);
        if let Some(max) = state.max_tokens {
            request = request.max_tokens(max);
        }
        if let Some(bp) = state.max_share_bp {
            request = request.max_share(f64::from(bp) / 10_000.0);
        }
        let refusal = match py.detach(|| client.inner.acquire(request)) {
            Ok(permit) => {
                state.machine.granted();
                return Ok(Some(Permit::new(permit)));
            }
            Err(pacer_client::Error::TimedOut {
                retry_after,
                reason,
            }) => Refusal::TimedOut {
                retry_after,
                reason: Some(reason).filter(|r| !r.is_empty()),
            },
            Err(pacer_client::Error::Rejected { reason, until }) => Refusal::Rejected {
                reason,
                left: until.map(|at| at.duration_since(SystemTime::now()).unwrap_or_default()),
                replay: None,
            },
            Err(e) => return Err(py_error(e)),
        };
        state.machine.refused(refusal, Instant::now());
        Ok(None)
    }

    /// The answer's status and headers arrived.
    fn answered(&self, status: u16, headers: Pairs) {
        self.lock()
            .machine
            .answered(status, headers, SystemTime::now());
    }

    /// The body of an answer read whole, and whether there was more than `read_limit`.
    fn read(&self, body: Vec<u8>, cut: bool) {
        let random = random_unit();
        self.lock()
            .machine
            .read(body, cut, Instant::now(), SystemTime::now(), random);
    }

    /// Sending raised: `reached` is False when no connection was made (nothing was spent).
    fn send_failed(&self, reached: bool) {
        self.lock().machine.send_failed(reached);
    }

    /// A streamed answer's body is done (`complete`: it ended, rather than broke off or was
    /// closed early): what `reader` read of it, with the answer's `headers`.
    fn ended(&self, reader: &UsageReader, headers: Pairs, complete: bool) {
        let headers = headers
            .into_iter()
            .map(|(n, v)| (n.to_ascii_lowercase(), v))
            .collect();
        let outcome = reader.lock().outcome(headers);
        self.lock().machine.ended(outcome, complete);
    }

    /// Settles `permit` as the call decided (for `"report"`).
    fn report(&self, py: Python<'_>, permit: &Permit) -> PyResult<()> {
        match self.lock().report.take() {
            Some(outcome) => permit.settle(py, outcome).map(|_| ()),
            None => Err(PyRuntimeError::new_err("nothing to report")),
        }
    }

    /// Teaches pacerd's input estimate what the body counted (for `"calibrate"`).
    fn calibrate(&self, py: Python<'_>, client: &Client) -> PyResult<()> {
        let Some((bytes, counted)) = self.lock().calibration.take() else {
            return Err(PyRuntimeError::new_err("nothing to calibrate"));
        };
        // Learning is best-effort: a call that succeeded never fails for it (the daemon may
        // have restarted since this connection's acquire, and not know it).
        let _ = py.detach(|| client.inner.calibrate(bytes, counted));
        Ok(())
    }

    /// The answer to give (for `"answer"`): status, headers, body.
    fn answer(&self) -> PyResult<(u16, Pairs, Vec<u8>)> {
        match self.lock().answer.take() {
            Some(answer) => Ok((answer.status, answer.headers, answer.body)),
            None => Err(PyRuntimeError::new_err("no answer")),
        }
    }
}

/// A number from 0 to 1 that differs from call to call, to spread the resends of held
/// requests (std's hasher keys are random and change with each `RandomState`).
fn random_unit() -> f64 {
    use std::hash::BuildHasher;
    let bits = std::collections::hash_map::RandomState::new().hash_one(0u8);
    (bits >> 11) as f64 / (1u64 << 53) as f64
}

/// Reads the usage (and any mid-stream error) of an answer as its bytes go past.
#[pyclass(module = "pacer._native", frozen)]
pub struct UsageReader {
    tap: Mutex<UsageTap>,
}

impl UsageReader {
    fn lock(&self) -> MutexGuard<'_, UsageTap> {
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
