//! One client connection: the handshake, then requests until it closes.

use std::sync::Arc;

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

pub async fn serve(stream: Stream, conn: ConnId, shared: Arc<Shared>, stop: watch::Receiver<bool>) {
    let stream = Arc::new(stream);
    let (reader, writer) = (StreamHalf(stream.clone()), StreamHalf(stream));
    let (tx, rx) = mpsc::unbounded_channel();
    let writer_task = tokio::spawn(write_responses(writer, rx));
    shared.register(conn, tx.clone());

    let mut session = Session {
        conn,
        shared: shared.clone(),
        tx,
        greeted: false,
        subscriptions: JoinSet::new(),
    };
    if let Err(reason) = session.read_requests(reader, stop).await {
        tracing::debug!(conn = conn.0, "closing connection: {reason}");
    }
    session.subscriptions.abort_all();
    shared.unregister(conn);
    drop(session);
    let _ = writer_task.await;
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
        if writer.write_all(&buf).await.is_err() {
            return;
        }
    }
    let _ = writer.shutdown().await;
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
