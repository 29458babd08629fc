//! One client connection: the handshake, then requests until it closes.

use std::sync::Arc;
use std::time::Duration;

use bytes::{Buf, BytesMut};
use pacer_protocol::message::{
    ErrorKind, Hello, Request, RequestFrame, Response, ResponseFrame, Welcome,
};
use pacer_protocol::{PROTOCOL_VERSION, codec};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::{broadcast, mpsc, watch};
use tokio::task::JoinSet;

use super::handlers::{self, DAEMON_VERSION};
use super::shared::{Shared, Writer};
use crate::broker::{ConnId, Ticket};
use crate::listener::Stream;
use crate::listener::StreamHalf;

/// Bytes of responses gathered into one write when several are ready at once.
const WRITE_BATCH: usize = 64 * 1024;

/// How long a write may block before the client is taken for gone (it stopped reading).
const WRITE_TIMEOUT: Duration = Duration::from_secs(10);

pub async fn serve(stream: Stream, conn: ConnId, shared: Arc<Shared>, stop: watch::Receiver<bool>) {
    let stream = Arc::new(stream);
    let (tx, rx) = mpsc::unbounded_channel();
    let mut writer = tokio::spawn(write_responses(StreamHalf(stream.clone()), rx));
    let registration = Registration::new(&shared, conn, tx.clone());
    let mut session = Session {
        conn,
        shared: shared.clone(),
        tx,
        greeted: false,
        subscriptions: JoinSet::new(),
    };
    let mut writer_done = false;
    tokio::select! {
        result = session.read_requests(StreamHalf(stream), stop) => {
            if let Err(reason) = result {
                tracing::debug!(conn = conn.0, "closing connection: {reason}");
            }
        }
        _ = &mut writer => {
            writer_done = true;
            tracing::debug!(conn = conn.0, "closing connection: the client stopped reading");
        }
    }
    session.subscriptions.abort_all();
    // Settle what the connection held and close the response channel, then let the writer
    // flush what is left.
    drop(session);
    drop(registration);
    if !writer_done {
        let _ = writer.await;
    }
}

/// A connection's place in the shared state; leaving it (even by a panic) settles its leases
/// and drops its waiters.
struct Registration<'a> {
    shared: &'a Shared,
    conn: ConnId,
}

impl<'a> Registration<'a> {
    fn new(shared: &'a Arc<Shared>, conn: ConnId, writer: Writer) -> Self {
        shared.register(conn, writer);
        Self { shared, conn }
    }
}

impl Drop for Registration<'_> {
    fn drop(&mut self) {
        self.shared.unregister(self.conn);
    }
}

struct Session {
    conn: ConnId,
    shared: Arc<Shared>,
    /// This connection's writer, for answers given at once.
    tx: Writer,
    greeted: bool,
    /// Tasks forwarding events to this connection.
    subscriptions: JoinSet<()>,
}

impl Session {
    /// Reads and handles requests until the client leaves, breaks the protocol or the daemon
    /// stops; returns why.
    async fn read_requests(
        &mut self,
        mut reader: impl AsyncRead + Unpin,
        mut stop: watch::Receiver<bool>,
    ) -> Result<(), String> {
        let mut buf = BytesMut::with_capacity(8 * 1024);
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
                        tracing::warn!(conn = self.conn.0, "refused a client: {e}");
                        return Err(e.to_string());
                    }
                }
            }
            buf.reserve(8 * 1024);
            tokio::select! {
                read = reader.read_buf(&mut buf) => match read {
                    Ok(0) => return Ok(()),
                    Ok(_) => {}
                    Err(e) => return Err(format!("read failed: {e}")),
                },
                _ = stop.changed() => return Ok(()),
            }
        }
    }

    fn send(&self, id: u64, response: Response) {
        let _ = self.tx.send(ResponseFrame { id, response });
    }

    fn handle(&mut self, frame: RequestFrame) -> Result<(), String> {
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
            Request::Acquire(acquire) => handlers::acquire(&self.shared, ticket, &acquire),
            Request::Report(report) => Some(handlers::report(&self.shared, report)),
            Request::Release(release) => Some(handlers::release(&self.shared, release)),
            Request::Status => Some(handlers::status(&self.shared)),
            Request::Pause(pause) => Some(handlers::pause(&self.shared, pause)),
            Request::GatewayInfo => Some(handlers::gateway_info(&self.shared)),
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

    fn greet(&mut self, id: u64, request: Request) -> Result<(), String> {
        let Request::Hello(hello) = request else {
            let message = "the first request on a connection must be Hello".to_owned();
            self.send(
                id,
                handlers::error(ErrorKind::HelloRequired, message.clone()),
            );
            return Err(message);
        };
        if hello.protocol_version != PROTOCOL_VERSION {
            let message = format!(
                "protocol version mismatch: {} speaks version {}, but pacerd {DAEMON_VERSION} speaks \
                 version {PROTOCOL_VERSION}; use a client and daemon from the same pacer release",
                hello.client_name, hello.protocol_version
            );
            tracing::warn!(
                client = %hello.client_name,
                pid = hello.pid,
                "refused a client: {message}"
            );
            self.send(
                id,
                handlers::error(ErrorKind::VersionMismatch, message.clone()),
            );
            return Err(message);
        }
        tracing::debug!(conn = self.conn.0, client = %hello.client_name, pid = hello.pid, "client connected");
        self.greeted = true;
        self.send(id, welcome(&hello));
        Ok(())
    }

    fn subscribe(&mut self, id: u64) {
        let shared = self.shared.clone();
        let tx = self.tx.clone();
        self.subscriptions.spawn(async move {
            let mut subscription = shared.subscribe();
            loop {
                match subscription.events.recv().await {
                    Ok(event) => {
                        let frame = ResponseFrame {
                            id,
                            response: Response::Event(event),
                        };
                        if tx.send(frame).is_err() {
                            return;
                        }
                    }
                    Err(broadcast::error::RecvError::Lagged(missed)) => {
                        tracing::warn!("a subscriber fell behind and missed {missed} events");
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

/// Sends responses as they come, gathering those already waiting into one write.
async fn write_responses(
    mut writer: impl AsyncWrite + Unpin,
    mut rx: mpsc::UnboundedReceiver<ResponseFrame>,
) {
    let mut buf = Vec::with_capacity(4 * 1024);
    while let Some(frame) = rx.recv().await {
        buf.clear();
        encode(&frame, &mut buf);
        while buf.len() < WRITE_BATCH {
            match rx.try_recv() {
                Ok(frame) => encode(&frame, &mut buf),
                Err(_) => break,
            }
        }
        match tokio::time::timeout(WRITE_TIMEOUT, writer.write_all(&buf)).await {
            Ok(Ok(())) => {}
            Ok(Err(_)) | Err(_) => return,
        }
    }
    let _ = tokio::time::timeout(WRITE_TIMEOUT, writer.shutdown()).await;
}

fn encode(frame: &ResponseFrame, buf: &mut Vec<u8>) {
    if let Err(e) = codec::encode(frame, buf) {
        tracing::error!("cannot encode a response: {e}");
        let fallback = ResponseFrame {
            id: frame.id,
            response: handlers::error(
                ErrorKind::InvalidRequest,
                format!("the response could not be sent: {e}"),
            ),
        };
        codec::encode(&fallback, buf).expect("a short error always encodes");
    }
}
