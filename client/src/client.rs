//! The client: a connection to pacerd that reconnects by itself, and the policy for when it
//! cannot.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use pacer_protocol::KeyFingerprint;
use pacer_protocol::message::{
    ErrorKind, Event, GatewayInfo, LeaseId, Outcome, Pause, RegisterRoute, Release, Report,
    Reported, Request, Response, RouteInfo, SessionQuery, SessionView, StatusSnapshot,
};
use tokio::sync::mpsc;
use tokio::time::Instant;

use crate::connection::{Connection, expect_reported, unexpected};
use crate::error::Error;
use crate::fail_mode::FailMode;
use crate::permit::Permit;
use crate::request::AcquireRequest;

mod estimate;

/// How often a failing-open client tries to reach the daemon again.
const RECONNECT_INTERVAL: Duration = Duration::from_secs(1);
/// How long a request whose daemon went away keeps trying to reach it again, by default.
pub const DEFAULT_RECONNECT_WINDOW: Duration = Duration::from_secs(30);
const RECONNECT_BACKOFF_START: Duration = Duration::from_millis(25);
const RECONNECT_BACKOFF_MAX: Duration = Duration::from_secs(1);

/// What a client is made of: the builder's choices, settled.
pub(crate) struct Settings {
    pub endpoint: PathBuf,
    /// Whether the daemon must be this user's own (the default socket, not one named).
    pub verify_owner: bool,
    pub fail_mode: FailMode,
    pub reconnect_window: Duration,
    pub client_id: String,
    pub client_name: String,
}

/// A handle to pacerd, cheap to clone and share between tasks.
#[derive(Clone)]
pub struct Client {
    inner: Arc<Inner>,
}

struct Inner {
    endpoint: PathBuf,
    /// Whether the daemon must be this user's own (the default socket, not one named).
    verify_owner: bool,
    fail_mode: FailMode,
    reconnect_window: Duration,
    client_id: String,
    client_name: String,
    /// The live connection, if any.
    current: Mutex<Option<Arc<Connection>>>,
    /// Serialises reconnection; holds when the last attempt failed.
    reconnect: tokio::sync::Mutex<Option<(Instant, String)>>,
    /// Whether the "proceeding without pacing" warning was given for the current outage.
    warned: AtomicBool,
    outage: Mutex<Outage>,
}

/// What the client knows of the daemon's absence.
#[derive(Debug, Default)]
struct Outage {
    /// A daemon answered before (so its absence is probably a restart).
    known_daemon: bool,
    /// When it was first found missing.
    since: Option<Instant>,
}

impl Client {
    /// Connects with settled settings (`ClientBuilder::connect`).
    pub(crate) async fn start(settings: Settings) -> Result<Client, Error> {
        let client = Client {
            inner: Arc::new(Inner {
                endpoint: settings.endpoint,
                verify_owner: settings.verify_owner,
                fail_mode: settings.fail_mode,
                reconnect_window: settings.reconnect_window,
                client_id: settings.client_id,
                client_name: settings.client_name,
                current: Mutex::new(None),
                reconnect: tokio::sync::Mutex::new(None),
                warned: AtomicBool::new(false),
                outage: Mutex::default(),
            }),
        };
        match client.connection(false).await {
            Ok(_) => Ok(client),
            Err(e) if e.is_unreachable() && client.inner.fail_mode == FailMode::Open => {
                client.warn_once(&e);
                Ok(client)
            }
            Err(e) => Err(e),
        }
    }

    pub fn endpoint(&self) -> &Path {
        &self.inner.endpoint
    }

    pub fn fail_mode(&self) -> FailMode {
        self.inner.fail_mode
    }

    /// The identity this client's acquires are queued under (see
    /// [`crate::ClientBuilder::client_id`]).
    pub fn client_id(&self) -> &str {
        &self.inner.client_id
    }

    /// The live connection, connecting if there is none.
    /// The live connection, connecting if there is none. `retrying` skips the fail-open
    /// throttle: the caller is waiting for a daemon that was there a moment ago.
    async fn connection(&self, retrying: bool) -> Result<Arc<Connection>, Error> {
        if let Some(connection) = self.live() {
            return Ok(connection);
        }
        let mut last_failure = self.inner.reconnect.lock().await;
        if let Some(connection) = self.live() {
            return Ok(connection);
        }
        if self.inner.fail_mode == FailMode::Open
            && !retrying
            && let Some((at, reason)) = last_failure.as_ref()
            && at.elapsed() < RECONNECT_INTERVAL
        {
            return Err(Error::Unreachable {
                path: self.inner.endpoint.clone(),
                error: std::io::Error::other(reason.clone()),
            });
        }
        let (endpoint, name) = (&self.inner.endpoint, &self.inner.client_name);
        match Connection::open(endpoint, name, self.inner.verify_owner).await {
            Ok(connection) => {
                *last_failure = None;
                *self.inner.outage.lock().unwrap_or_else(|p| p.into_inner()) = Outage {
                    known_daemon: true,
                    since: None,
                };
                if self.inner.warned.swap(false, Ordering::Relaxed) {
                    tracing::warn!(
                        "pacerd is reachable again at {}: pacing resumes",
                        self.inner.endpoint.display()
                    );
                }
                *self.inner.current.lock().unwrap_or_else(|p| p.into_inner()) =
                    Some(connection.clone());
                Ok(connection)
            }
            Err(e) => {
                let reason = match &e {
                    Error::Unreachable { error, .. } => error.to_string(),
                    other => other.to_string(),
                };
                *last_failure = Some((Instant::now(), reason));
                Err(e)
            }
        }
    }

    /// Whether a daemon this client was connected to went away less than the reconnect window
    /// ago (worth waiting for); once the window has passed, the daemon counts as gone.
    fn in_outage_window(&self) -> bool {
        let mut outage = self.inner.outage.lock().unwrap_or_else(|p| p.into_inner());
        if !outage.known_daemon {
            return false;
        }
        let since = *outage.since.get_or_insert_with(Instant::now);
        if since.elapsed() < self.inner.reconnect_window {
            return true;
        }
        *outage = Outage::default();
        false
    }

    fn live(&self) -> Option<Arc<Connection>> {
        let current = self.inner.current.lock().unwrap_or_else(|p| p.into_inner());
        current.as_ref().filter(|c| !c.is_closed()).cloned()
    }

    fn warn_once(&self, e: &Error) {
        if !self.inner.warned.swap(true, Ordering::Relaxed) {
            tracing::warn!("{e}; proceeding without pacing until it is back");
        }
    }

    /// Sends a request, reconnecting once if the connection had been lost.
    ///
    /// If the daemon goes away while the request is under way (it stopped, crashed, or is
    /// restarting), the client reconnects with backoff and sends the request again — an acquire
    /// that was waiting takes its place in the new daemon's queue — for up to the reconnect
    /// window; after that the fail mode decides.
    async fn call(
        &self,
        request: impl Fn() -> Request,
    ) -> Result<(Response, Arc<Connection>), Error> {
        let mut retrying = false;
        let mut backoff = RECONNECT_BACKOFF_START;
        loop {
            let connected = self.connection(retrying).await;
            let error = match connected {
                Ok(connection) => match connection.call(request()).await {
                    Ok(Response::Error(e)) if e.kind == ErrorKind::Stopping => {
                        // The daemon closes every connection as it stops; reconnect after that.
                        let _ =
                            tokio::time::timeout(Duration::from_secs(2), connection.closed()).await;
                        Error::Disconnected {
                            path: self.inner.endpoint.clone(),
                        }
                    }
                    Ok(response) => {
                        if retrying {
                            // The daemon is back: any later outage is a new one.
                            self.inner
                                .outage
                                .lock()
                                .unwrap_or_else(|p| p.into_inner())
                                .since = None;
                        }
                        return Ok((response, connection));
                    }
                    Err(e) => e,
                },
                Err(e) => e,
            };
            if !error.is_unreachable() || !self.in_outage_window() {
                return Err(error);
            }
            retrying = true;
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(RECONNECT_BACKOFF_MAX);
        }
    }

    /// Waits for a permit to make one API call.
    ///
    /// If the daemon cannot be reached: with [`FailMode::Open`] an unbrokered permit is returned
    /// at once (after one warning per outage); with [`FailMode::Closed`], an error.
    pub async fn acquire(&self, request: AcquireRequest) -> Result<Permit, Error> {
        let client_id = &self.inner.client_id;
        let result = self
            .call(|| Request::Acquire(request.to_wire(client_id)))
            .await;
        match result {
            Ok((Response::Granted(granted), connection)) => Ok(Permit::brokered(
                granted.lease,
                connection,
                granted.waited,
                self.inner.fail_mode,
            )),
            Ok((Response::TimedOut(timed_out), _)) => Err(Error::TimedOut {
                retry_after: timed_out.retry_after,
                reason: timed_out.reason,
            }),
            Ok((Response::Rejected(rejected), _)) => Err(Error::Rejected {
                reason: rejected.reason,
                until: rejected.until,
            }),
            Ok((Response::Error(e), _)) if e.kind == ErrorKind::Stopping => {
                self.fail_open(Error::Disconnected {
                    path: self.inner.endpoint.clone(),
                })
            }
            Ok((other, _)) => Err(unexpected(other)),
            Err(e) => self.fail_open(e),
        }
    }

    fn fail_open(&self, e: Error) -> Result<Permit, Error> {
        if e.is_unreachable() && self.inner.fail_mode == FailMode::Open {
            self.warn_once(&e);
            return Ok(Permit::unbrokered());
        }
        Err(e)
    }

    /// Settles a lease by id: how [`Permit::report`] works for a detached permit reported from
    /// another process. Says what a 429 was taken for.
    ///
    /// The outcome is bounded first ([`Outcome::bounded`]), so a report always fits one frame;
    /// if one still could not be sent, the lease is settled as unknown (nothing is left in
    /// flight) and the error says why.
    pub async fn report(&self, lease: LeaseId, outcome: Outcome) -> Result<Reported, Error> {
        let outcome = outcome.bounded();
        let result = self
            .call(|| {
                Request::Report(Report {
                    lease,
                    outcome: outcome.clone(),
                })
            })
            .await;
        let response = match result {
            Ok((response, _)) => response,
            Err(e @ Error::Unsendable { .. }) => {
                let unknown = Request::Report(Report {
                    lease,
                    outcome: Outcome::Unknown,
                });
                let _ = self.call(|| unknown.clone()).await;
                return Err(e);
            }
            Err(e) => return Err(e),
        };
        expect_reported(response)
    }

    /// Gives a lease back unused, by id.
    pub async fn release(&self, lease: LeaseId) -> Result<(), Error> {
        let (response, _) = self.call(|| Request::Release(Release { lease })).await?;
        expect_ack(response)
    }

    /// A snapshot of every budget and account. A large one comes in pages, gathered here
    /// (each page is consistent in itself; the whole is not one instant).
    pub async fn status(&self) -> Result<StatusSnapshot, Error> {
        let mut status = self.status_page(0).await?;
        while let Some(page) = status.next_page.take() {
            let next = self.status_page(page).await?;
            status.budgets.extend(next.budgets);
            status.accounts.extend(next.accounts);
            status.next_page = next.next_page.filter(|&n| n > page);
        }
        Ok(status)
    }

    async fn status_page(&self, page: u32) -> Result<StatusSnapshot, Error> {
        let request = || match page {
            0 => Request::Status,
            n => Request::StatusPage(n),
        };
        match self.call(request).await? {
            (Response::Status(status), _) => Ok(status),
            (other, _) => Err(unexpected(other)),
        }
    }

    /// Pauses the budget of `key` × the class of `model` until `until` (a time already past
    /// lifts the pause).
    pub async fn pause(
        &self,
        key: KeyFingerprint,
        model: &str,
        until: SystemTime,
    ) -> Result<(), Error> {
        let (response, _) = self
            .call(|| {
                Request::Pause(Pause {
                    key,
                    model: model.to_owned(),
                    until,
                })
            })
            .await?;
        expect_ack(response)
    }

    /// A stream of the daemon's events, for as long as the connection lasts.
    pub async fn subscribe(&self) -> Result<Subscription, Error> {
        let connection = self.connection(false).await?;
        let events = connection.stream(Request::Subscribe)?;
        Ok(Subscription {
            events,
            _connection: connection,
        })
    }

    /// Where the daemon's HTTP gateway listens (`None` when it runs without one).
    pub async fn gateway_info(&self) -> Result<GatewayInfo, Error> {
        match self.call(|| Request::GatewayInfo).await? {
            (Response::Gateway(info), _) => Ok(info),
            (other, _) => Err(unexpected(other)),
        }
    }

    /// A Claude Code session's account (with its windows) and its budget of the model's class
    /// (`pacer statusline`).
    pub async fn session(&self, query: SessionQuery) -> Result<SessionView, Error> {
        match self.call(|| Request::Session(query.clone())).await? {
            (Response::Session(view), _) => Ok(*view),
            (other, _) => Err(unexpected(other)),
        }
    }

    /// Registers an upstream API for a wrapped command that had an `ANTHROPIC_BASE_URL` of its
    /// own; gateway requests on the route it gets go there.
    pub async fn register_route(&self, upstream: &str, client: &str) -> Result<RouteInfo, Error> {
        let request = || {
            Request::RegisterRoute(RegisterRoute {
                upstream: upstream.to_owned(),
                client: client.to_owned(),
            })
        };
        match self.call(request).await? {
            (Response::Route(info), _) => Ok(info),
            (other, _) => Err(unexpected(other)),
        }
    }

    /// The daemon's version, as it said in the handshake.
    pub async fn daemon_version(&self) -> Result<String, Error> {
        Ok(self.connection(false).await?.daemon_version().to_owned())
    }
}

fn expect_ack(response: Response) -> Result<(), Error> {
    match response {
        Response::Ack => Ok(()),
        other => Err(unexpected(other)),
    }
}

/// Events from [`Client::subscribe`].
pub struct Subscription {
    events: mpsc::UnboundedReceiver<Response>,
    /// Keeps the connection open for as long as the subscription lives.
    _connection: Arc<Connection>,
}

impl Subscription {
    /// The next event; `None` once the connection has closed.
    pub async fn next(&mut self) -> Option<Event> {
        loop {
            match self.events.recv().await? {
                Response::Event(event) => return Some(event),
                _ => continue,
            }
        }
    }
}
