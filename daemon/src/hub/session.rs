//! An in-process client of the broker, for the HTTP gateway: the same tickets, answers and
//! lease bookkeeping as a socket connection, without the socket. Dropping a session is a
//! connection closing: its waiter leaves the queue and its lease settles as "unknown outcome".

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use pacer_api::ratelimit::RateLimitHeaders;

use pacer_protocol::message::{
    Acquire, BudgetId, ErrorKind, LeaseId, Outcome, Release, Report, Response, ResponseFrame,
};
use tokio::sync::mpsc;

use super::handlers;
use super::{Hub, Writer};
use pacer_api::Answer;
use pacer_broker::{ConnId, Origin, Ticket};

pub struct Session {
    hub: Arc<Hub>,
    conn: ConnId,
    answers: mpsc::UnboundedReceiver<ResponseFrame>,
    next_request: u64,
    /// For calls through a registered route: the route's upstream. The organization its answers
    /// name is taken as that upstream's own (see [`Session::open_scoped`]).
    scope: Option<String>,
}

impl Session {
    pub fn open(hub: &Arc<Hub>) -> Session {
        Self::open_scoped(hub, None)
    }

    /// A session whose answers come from `scope`, an upstream registered by a local client:
    /// the organization (and workspace) they name counts only for that upstream's keys. Any
    /// local client can register a route to a server of its own that names someone else's
    /// organization; its 429s and spent windows must not pause or lock out that organization's
    /// real keys.
    pub fn open_scoped(hub: &Arc<Hub>, scope: Option<String>) -> Session {
        let conn = hub.new_conn_id();
        let (tx, answers) = mpsc::unbounded_channel();
        hub.register(conn, Writer::Session(tx));
        Session {
            hub: hub.clone(),
            conn,
            answers,
            next_request: 1,
            scope,
        }
    }

    /// Parses an answer's headers, the organization and workspace scoped to the route.
    fn parse(&self, headers: &[(String, String)]) -> RateLimitHeaders {
        let mut parsed = RateLimitHeaders::parse(
            headers.iter().map(|(n, v)| (n.as_str(), v.as_str())),
            SystemTime::now(),
        );
        if let Some(scope) = &self.scope {
            let scoped = |id: String| format!("{scope}\n{id}");
            parsed.organization = parsed.organization.map(scoped);
            parsed.workspace = parsed.workspace.map(scoped);
        }
        parsed
    }

    /// Waits for the answer to an acquire: granted, timed out, rejected, or the daemon stopping.
    pub async fn acquire(&mut self, acquire: &Acquire) -> Response {
        self.acquire_from(acquire, &Origin::default()).await
    }

    /// Like [`Session::acquire`], for a request from `origin` (its Claude Code session).
    pub async fn acquire_from(&mut self, acquire: &Acquire, origin: &Origin) -> Response {
        let request = self.next_request;
        self.next_request += 1;
        let ticket = Ticket {
            conn: self.conn,
            request,
        };
        self.hub
            .update(|broker, now| (broker.acquire_from(now, ticket, acquire, origin), ()));
        while let Some(frame) = self.answers.recv().await {
            if frame.id == request {
                return frame.response;
            }
        }
        handlers::error(ErrorKind::Stopping, "pacerd is stopping".into())
    }

    /// How long an acquire made now would wait (zero: granted at once; `None`: refused at
    /// once), and what holds it up.
    pub fn estimate_wait(&self, acquire: &Acquire, origin: &Origin) -> Option<(Duration, String)> {
        self.hub
            .update(|broker, now| (Vec::new(), broker.estimate_wait(now, acquire, origin)))
    }

    /// The gateway answers a request itself rather than wait for a permit: counted and told
    /// like any refusal by pacer.
    pub fn refused_locally(&self, acquire: &Acquire, reason: &str) {
        self.hub
            .update(|broker, now| (broker.refused_locally(now, acquire, reason), ()));
    }

    pub fn report(&self, lease: LeaseId, outcome: Outcome) {
        handlers::report(&self.hub, Report { lease, outcome });
    }

    pub fn release(&self, lease: LeaseId) {
        handlers::release(&self.hub, Release { lease });
    }

    /// Feeds the rate-limit headers of the response to the call under `lease` as soon as they
    /// arrive.
    pub fn observe(&self, lease: LeaseId, headers: &[(String, String)]) {
        let headers = self.parse(headers);
        self.hub
            .update(|broker, now| (broker.observe(now, lease, &headers), ()));
    }

    /// Learns from a settled call: its body size and the input tokens that counted, so later
    /// estimates for this client reserve what its calls really use.
    pub fn calibrate(&self, client: &str, bytes: usize, counted_input: u64) {
        self.hub.calibrate(client, bytes, counted_input);
    }

    /// Settles the call under `lease` with a 429's outcome and the API's answer kept whole
    /// (status, headers, body), so that a lockout it causes can replay it. Its organization is
    /// read as this session's scope allows.
    pub fn report_answered(&self, lease: LeaseId, outcome: Outcome, answer: Answer) {
        let headers = self.parse(&answer.headers);
        let (settlement, _) = handlers::settlement(outcome, Some(answer), SystemTime::now());
        handlers::settle(&self.hub, lease, settlement, &headers);
    }

    /// The API's answer that locked out `budget`, to replay.
    pub fn rejection(&self, budget: &BudgetId) -> Option<Arc<Answer>> {
        self.hub.read(|broker, now| broker.rejection(budget, now))
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        self.hub.unregister(self.conn);
    }
}
