//! The same client for code that does not use async: each call blocks the calling thread.
//!
//! A small private runtime (one worker thread) carries the connection, so a permit dropped
//! between calls is still settled at once.
//!
//! ```no_run
//! use pacer_client::blocking::Client;
//! use pacer_client::{AcquireRequest, outcome};
//!
//! let client = Client::connect()?;
//! let permit = client.acquire(AcquireRequest::new("sk-ant-...", "claude-sonnet-4-5"))?;
//! // ... make the call ...
//! let none: [(&str, &str); 0] = [];
//! permit.report(outcome::from_response(200, none, None))?;
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use std::path::PathBuf;
use std::sync::Arc;
use std::time::SystemTime;

use pacer_protocol::KeyFingerprint;
use pacer_protocol::message::{GatewayInfo, LeaseId, Outcome, Reported, StatusSnapshot};
use tokio::runtime::Runtime;

use crate::builder::ClientBuilder;
use crate::error::Error;
use crate::fail_mode::FailMode;
use crate::request::AcquireRequest;

/// A blocking [`crate::Client`].
#[derive(Clone)]
pub struct Client {
    inner: crate::Client,
    runtime: Arc<Runtime>,
}

fn runtime() -> Arc<Runtime> {
    Arc::new(
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("pacer-client")
            .enable_all()
            .build()
            .expect("a one-thread tokio runtime can always be built"),
    )
}

impl Client {
    /// Connects to the daemon at the default endpoint, failing open.
    pub fn connect() -> Result<Client, Error> {
        Client::with(crate::Client::builder())
    }

    /// Connects to the daemon at `path`, failing open.
    pub fn connect_to(path: impl Into<PathBuf>) -> Result<Client, Error> {
        Client::with(crate::Client::builder().endpoint(path))
    }

    /// Connects with the given options ([`FailMode`], endpoint, client id).
    pub fn with(builder: ClientBuilder) -> Result<Client, Error> {
        let runtime = runtime();
        let inner = runtime.block_on(builder.connect())?;
        Ok(Client { inner, runtime })
    }

    /// Like [`crate::autostart::connect_or_start`]: connects, starting `pacerd` in the
    /// background when none answers.
    pub fn connect_or_start(
        builder: ClientBuilder,
    ) -> Result<(Client, Option<crate::autostart::Started>), crate::autostart::StartError> {
        let runtime = runtime();
        let (inner, started) = runtime.block_on(crate::autostart::connect_or_start(builder))?;
        Ok((Client { inner, runtime }, started))
    }

    pub fn fail_mode(&self) -> FailMode {
        self.inner.fail_mode()
    }

    /// The daemon's socket this client uses.
    pub fn endpoint(&self) -> &std::path::Path {
        self.inner.endpoint()
    }

    /// The identity this client's acquires are queued under.
    pub fn client_id(&self) -> &str {
        self.inner.client_id()
    }

    /// Waits for a permit; see [`crate::Client::acquire`].
    pub fn acquire(&self, request: AcquireRequest) -> Result<Permit, Error> {
        let inner = self.runtime.block_on(self.inner.acquire(request))?;
        Ok(Permit {
            inner: Some(inner),
            runtime: self.runtime.clone(),
        })
    }

    pub fn report(&self, lease: LeaseId, outcome: Outcome) -> Result<Reported, Error> {
        self.runtime.block_on(self.inner.report(lease, outcome))
    }

    /// See [`crate::Client::estimate_input`].
    pub fn estimate_input(&self, body_bytes: usize) -> Result<u64, Error> {
        self.runtime.block_on(self.inner.estimate_input(body_bytes))
    }

    /// See [`crate::Client::calibrate`].
    pub fn calibrate(&self, body_bytes: usize, counted_input: u64) -> Result<(), Error> {
        self.runtime
            .block_on(self.inner.calibrate(body_bytes, counted_input))
    }

    pub fn release(&self, lease: LeaseId) -> Result<(), Error> {
        self.runtime.block_on(self.inner.release(lease))
    }

    pub fn status(&self) -> Result<StatusSnapshot, Error> {
        self.runtime.block_on(self.inner.status())
    }

    pub fn pause(&self, key: KeyFingerprint, model: &str, until: SystemTime) -> Result<(), Error> {
        self.runtime.block_on(self.inner.pause(key, model, until))
    }

    /// Where the daemon's HTTP gateway listens; see [`crate::Client::gateway_info`].
    pub fn gateway_info(&self) -> Result<GatewayInfo, Error> {
        self.runtime.block_on(self.inner.gateway_info())
    }
}

/// A blocking [`crate::Permit`]; dropping it unreported settles it as unknown.
#[must_use = "make the call, then report the permit (dropping it settles it as unknown)"]
pub struct Permit {
    inner: Option<crate::Permit>,
    runtime: Arc<Runtime>,
}

impl Permit {
    pub fn lease(&self) -> Option<LeaseId> {
        self.inner.as_ref().and_then(crate::Permit::lease)
    }

    pub fn is_brokered(&self) -> bool {
        self.inner.as_ref().is_some_and(crate::Permit::is_brokered)
    }

    pub fn waited(&self) -> std::time::Duration {
        self.inner
            .as_ref()
            .map_or(std::time::Duration::ZERO, crate::Permit::waited)
    }

    /// See [`crate::Permit::report`].
    pub fn report(mut self, outcome: Outcome) -> Result<Option<Reported>, Error> {
        match self.inner.take() {
            Some(permit) => self.runtime.block_on(permit.report(outcome)),
            None => Ok(None),
        }
    }

    pub fn release(mut self) -> Result<(), Error> {
        match self.inner.take() {
            Some(permit) => self.runtime.block_on(permit.release()),
            None => Ok(()),
        }
    }
}

impl Drop for Permit {
    fn drop(&mut self) {
        // The async permit's own drop sends the "unknown outcome" report without blocking; the
        // connection's socket (and its flush task, if the socket is full) belong to the
        // private runtime, so enter it first.
        let _guard = self.runtime.enter();
        self.inner.take();
    }
}
