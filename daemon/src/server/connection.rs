//! One client connection: the handshake, then requests until it closes.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use bytes::{Buf, BytesMut};
use pacer_protocol::message::{
    ErrorKind, Hello, Request, RequestFrame, Response, ResponseFrame, Welcome,
};
use pacer_protocol::{PROTOCOL_VERSION, codec};
use tokio::io::{AsyncRead, AsyncReadExt};
use tokio::sync::broadcast;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use super::listener::Stream;
use crate::hub::handlers::{self, DAEMON_VERSION};
use crate::hub::{self, Hub, Writer};
use crate::throttle::Throttle;
use crate::warn_throttled;
use pacer_broker::{ConnId, Ticket};
use pacer_protocol::io::{self, Outbox};

/// How long a new connection has to send its Hello before it is closed.
pub const HELLO_TIMEOUT: Duration = Duration::from_secs(10);
/// Past this many bytes of answers waiting for the client to read them, its requests are not
/// read (and no events are queued for it) until it catches up.
pub const SOFT_BACKLOG: usize = 1 << 20;

static MALFORMED: Throttle = Throttle::new(Duration::from_secs(10));
static REFUSED: Throttle = Throttle::new(Duration::from_secs(10));
static LAGGING: Throttle = Throttle::new(Duration::from_secs(10));

pub async fn serve(stream: Stream, conn: ConnId, hub: Arc<Hub>, stop: CancellationToken) {
    let (reader, outbox) = io::split(stream);
    let mut flush = tokio::spawn(outbox.clone().flush());
    let registration = Registration::new(&hub, conn, Writer::Socket(outbox.clone()));
    let mut session = Connection {
        conn,
        hub: hub.clone(),
        outbox: outbox.clone(),
        greeted: false,
        subscriptions: JoinSet::new(),
        acquired_for: HashSet::new(),
    };
    let mut flush_done = false;
    tokio::select! {
        result = session.read_requests(reader, stop) => {
            if let Err(reason) = result {
                tracing::debug!(conn = conn.0, "closing connection: {reason}");
            }
        }
        _ = &mut flush => {
            flush_done = true;
            tracing::debug!(conn = conn.0, "closing connection: the client stopped reading");
        }
    }
    session.subscriptions.abort_all();
    // Settle what the connection held, then let the flush task write what is left and close.
    drop(session);
    drop(registration);
    outbox.close();
    if !flush_done {
        let _ = flush.await;
    }
}

/// A connection's place in the shared state; leaving it (even by a panic) settles its leases
/// and drops its waiters.
struct Registration<'a> {
    hub: &'a Hub,
    conn: ConnId,
}

impl<'a> Registration<'a> {
    fn new(hub: &'a Arc<Hub>, conn: ConnId, writer: Writer) -> Self {
        hub.register(conn, writer);
        Self { hub, conn }
    }
}

impl Drop for Registration<'_> {
    fn drop(&mut self) {
        self.hub.unregister(self.conn);
    }
}

struct Connection {
    conn: ConnId,
    hub: Arc<Hub>,
    /// This connection's outbox, for answers given at once.
    outbox: Arc<Outbox>,
    greeted: bool,
    /// Tasks forwarding events to this connection.
    subscriptions: JoinSet<()>,
    /// The client ids this connection has acquired permits for (a few at most): the only ones
    /// it may teach the input estimate for.
    acquired_for: HashSet<String>,
}

/// The most client ids one connection is remembered to have acquired for.
const MAX_CLIENT_IDS_PER_CONNECTION: usize = 64;

/// Why pacerd closed a connection (the client leaving, or the daemon stopping, is no error).
#[derive(Debug, thiserror::Error)]
enum Closed {
    #[error("{0}")]
    Malformed(codec::FrameError),
    #[error("read failed: {0}")]
    Read(std::io::Error),
    #[error("no Hello within {HELLO_TIMEOUT:?}")]
    NoHello,
    #[error("the first request on a connection must be Hello")]
    HelloRequired,
    #[error(
        "protocol version mismatch: {client} speaks version {version}, but pacerd \
         {DAEMON_VERSION} speaks version {PROTOCOL_VERSION}; use a client and daemon from the \
         same pacer release"
    )]
    VersionMismatch { client: String, version: u32 },
}

impl Connection {
    /// Reads and handles requests until the client leaves, breaks the protocol or the daemon
    /// stops; returns why.
    async fn read_requests(
        &mut self,
        mut reader: impl AsyncRead + Unpin,
        stop: CancellationToken,
    ) -> Result<(), Closed> {
        let mut buf = BytesMut::with_capacity(8 * 1024);
        let hello_deadline = tokio::time::Instant::now() + HELLO_TIMEOUT;
        loop {
            loop {
                match codec::decode::<RequestFrame>(&buf) {
                    Ok(Some((frame, used))) => {
                        buf.advance(used);
                        self.handle(frame)?;
                    }
                    Ok(None) => break,
                    Err(e) => {
                        let message = format!("{e}; closing the connection");
                        self.send(0, handlers::error(ErrorKind::MalformedFrame, message));
                        self.hub.stats().count_refusal();
                        warn_throttled!(MALFORMED, "refused a client: {e}");
                        return Err(Closed::Malformed(e));
                    }
                }
            }
            if self.outbox.backlog() > SOFT_BACKLOG {
                // The client sends requests but does not read the answers: read no more of
                // them until it does (the outbox gives up on it if it never does).
                tokio::select! {
                    () = self.outbox.drained(SOFT_BACKLOG) => {}
                    () = stop.cancelled() => return Ok(()),
                }
                continue;
            }
            buf.reserve(8 * 1024);
            tokio::select! {
                read = reader.read_buf(&mut buf) => match read {
                    Ok(0) => return Ok(()),
                    Ok(_) => {}
                    Err(e) => return Err(Closed::Read(e)),
                },
                () = tokio::time::sleep_until(hello_deadline), if !self.greeted => {
                    self.hub.stats().count_refusal();
                    return Err(Closed::NoHello);
                }
                () = stop.cancelled() => return Ok(()),
            }
        }
    }

    fn send(&self, id: u64, response: Response) {
        hub::send(&self.outbox, &ResponseFrame { id, response });
    }

    fn handle(&mut self, frame: RequestFrame) -> Result<(), Closed> {
        let id = frame.id;
        if !self.greeted {
            return self.greet(id, frame.request);
        }
        let ticket = Ticket {
            conn: self.conn,
            request: id,
        };
        let response = match frame.request {
            Request::Hello(hello) => Some(welcome(&hello)),
            Request::Acquire(acquire) => {
                if self.acquired_for.len() < MAX_CLIENT_IDS_PER_CONNECTION {
                    self.acquired_for.insert(acquire.client_id.clone());
                }
                handlers::acquire(&self.hub, ticket, &acquire)
            }
            Request::Report(report) => Some(handlers::report(&self.hub, report)),
            Request::Release(release) => Some(handlers::release(&self.hub, release)),
            Request::Status => Some(handlers::status(&self.hub, 0)),
            Request::StatusPage(page) => Some(handlers::status(&self.hub, page)),
            Request::Pause(pause) => Some(handlers::pause(&self.hub, pause)),
            Request::GatewayInfo => Some(handlers::gateway_info(&self.hub)),
            Request::RegisterRoute(route) => Some(handlers::register_route(&self.hub, route)),
            Request::Session(query) => Some(handlers::session(&self.hub, query)),
            Request::Estimate(estimate) => Some(handlers::estimate(&self.hub, &estimate)),
            Request::Calibrate(calibrate) if !self.acquired_for.contains(&calibrate.client_id) => {
                Some(handlers::error(
                    ErrorKind::PermissionDenied,
                    format!(
                        "a connection teaches the input estimate only for a client id it has \
                         acquired a permit with, not `{}`",
                        pacer_protocol::text::bounded(&calibrate.client_id, 64)
                    ),
                ))
            }
            Request::Calibrate(calibrate) => Some(handlers::calibrate(&self.hub, &calibrate)),
            Request::Subscribe => {
                self.subscribe(id);
                None
            }
        };
        if let Some(response) = response {
            self.send(id, response);
        }
        Ok(())
    }

    fn greet(&mut self, id: u64, request: Request) -> Result<(), Closed> {
        let Request::Hello(hello) = request else {
            let message = Closed::HelloRequired.to_string();
            self.send(id, handlers::error(ErrorKind::HelloRequired, message));
            return Err(Closed::HelloRequired);
        };
        if hello.protocol_version != PROTOCOL_VERSION {
            let closed = Closed::VersionMismatch {
                client: hello.client_name.clone(),
                version: hello.protocol_version,
            };
            let message = closed.to_string();
            warn_throttled!(
                REFUSED,
                "refused a client ({}, pid {}): {message}",
                hello.client_name,
                hello.pid
            );
            self.send(
                id,
                handlers::error(ErrorKind::VersionMismatch, message.clone()),
            );
            return Err(closed);
        }
        tracing::debug!(conn = self.conn.0, client = %hello.client_name, pid = hello.pid, "client connected");
        self.greeted = true;
        self.send(id, welcome(&hello));
        Ok(())
    }

    fn subscribe(&mut self, id: u64) {
        let hub = self.hub.clone();
        let outbox = self.outbox.clone();
        self.subscriptions.spawn(async move {
            let mut subscription = hub.subscribe();
            loop {
                match subscription.events.recv().await {
                    Ok(_) if outbox.backlog() > SOFT_BACKLOG => {
                        // A subscriber that does not read misses events rather than have them
                        // pile up here.
                        warn_throttled!(LAGGING, "a subscriber does not read: dropping events");
                    }
                    Ok(event) => {
                        let frame = ResponseFrame {
                            id,
                            response: Response::Event(event),
                        };
                        hub::send(&outbox, &frame);
                    }
                    Err(broadcast::error::RecvError::Lagged(missed)) => {
                        warn_throttled!(
                            LAGGING,
                            "a subscriber fell behind and missed {missed} events"
                        );
                    }
                    Err(broadcast::error::RecvError::Closed) => return,
                }
            }
        });
    }
}

fn welcome(_hello: &Hello) -> Response {
    Response::Welcome(Welcome {
        protocol_version: PROTOCOL_VERSION,
        daemon_version: DAEMON_VERSION.to_owned(),
    })
}
