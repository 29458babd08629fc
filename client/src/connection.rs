//! One multiplexed connection to pacerd.
//!
//! Requests get an id and are written straight to the socket by the caller (through the
//! connection's outbox, see `pacer_protocol::io`); a reader task routes each response to
//! whoever waits for that id. So any number of acquires can wait on one connection while
//! reports flow past them.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use bytes::{Buf, BytesMut};
use interprocess::local_socket::GenericFilePath;
use interprocess::local_socket::tokio::Stream;
use interprocess::local_socket::tokio::prelude::*;
use pacer_protocol::message::{
    ErrorKind, Hello, Release, Reported, Request, RequestFrame, Response, ResponseFrame,
};
use pacer_protocol::{PROTOCOL_VERSION, codec};
use tokio::io::{AsyncRead, AsyncReadExt};
use tokio::sync::{mpsc, oneshot, watch};

use pacer_protocol::io::{self, Outbox, SendError};

/// How long a daemon may take to answer the handshake before it is taken for unreachable.
const HANDSHAKE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);

use crate::error::{Distrust, Error};

/// Who waits for the response to a request.
enum Pending {
    Once(oneshot::Sender<Response>),
    Stream(mpsc::UnboundedSender<Response>),
    /// The caller stopped waiting (its future was dropped). If the answer is a granted permit,
    /// it is released at once so it does not hold a slot nobody will use.
    Abandoned,
}

#[derive(Default)]
struct PendingTable {
    /// Set by the reader when the connection ends; no request may wait after that.
    closed: bool,
    /// Set when it ended because an answer could not be read: why.
    unreadable: Option<String>,
    waiting: HashMap<u64, Pending>,
}

pub struct Connection {
    path: PathBuf,
    /// Becomes true when the reader sees the connection end.
    closed: watch::Receiver<bool>,
    outbox: Arc<Outbox>,
    pending: Arc<Mutex<PendingTable>>,
    next_id: AtomicU64,
    daemon_version: String,
}

impl Connection {
    /// Connects and shakes hands. With `verify`, the daemon must be this user's own (see
    /// [`verify_owner`]).
    pub async fn open(
        path: &Path,
        client_name: &str,
        verify: bool,
    ) -> Result<Arc<Connection>, Error> {
        let unreachable = |error| Error::Unreachable {
            path: path.to_owned(),
            error,
        };
        let name = path
            .to_owned()
            .to_fs_name::<GenericFilePath>()
            .map_err(unreachable)?;
        let stream = Stream::connect(name).await.map_err(unreachable)?;
        if verify {
            verify_owner(path, &stream).map_err(|reason| Error::Untrusted {
                path: path.to_owned(),
                reason,
            })?;
        }
        let (reader, outbox) = io::split(stream);
        let pending = Arc::new(Mutex::new(PendingTable::default()));
        let (closed_tx, closed) = watch::channel(false);
        let pending_for_reader = pending.clone();
        let outbox_for_reader = Arc::downgrade(&outbox);
        {
            let (outbox, pending) = (outbox.clone(), pending.clone());
            tokio::spawn(async move {
                outbox.clone().flush().await;
                if outbox.is_broken() {
                    // The daemon stopped reading (or the socket failed): whoever waits for an
                    // answer is told now, and the next call reconnects.
                    close(&pending);
                }
            });
        }
        tokio::spawn(async move {
            read_responses(reader, pending_for_reader, outbox_for_reader).await;
            let _ = closed_tx.send(true);
        });
        let mut connection = Connection {
            path: path.to_owned(),
            closed,
            outbox,
            pending,
            next_id: AtomicU64::new(1),
            daemon_version: String::new(),
        };
        let hello = Request::Hello(Hello {
            protocol_version: PROTOCOL_VERSION,
            client_name: client_name.to_owned(),
            pid: std::process::id(),
        });
        let welcome = tokio::time::timeout(HANDSHAKE_TIMEOUT, connection.call(hello))
            .await
            .map_err(|_| Error::Unreachable {
                path: path.to_owned(),
                error: std::io::Error::new(
                    std::io::ErrorKind::TimedOut,
                    "the daemon accepted the connection but did not answer the handshake",
                ),
            })??;
        match welcome {
            Response::Welcome(welcome) => connection.daemon_version = welcome.daemon_version,
            Response::Error(e) if e.kind == ErrorKind::VersionMismatch => {
                return Err(Error::VersionMismatch { message: e.message });
            }
            Response::Error(e) if e.kind == ErrorKind::PermissionDenied => {
                return Err(Error::Denied {
                    path: path.to_owned(),
                    message: e.message,
                });
            }
            Response::Error(e) if e.kind == ErrorKind::Busy => {
                return Err(Error::Unreachable {
                    path: path.to_owned(),
                    error: std::io::Error::other(e.message),
                });
            }
            other => return Err(unexpected(other)),
        }
        Ok(Arc::new(connection))
    }

    pub fn daemon_version(&self) -> &str {
        &self.daemon_version
    }

    /// Whether the daemon has closed the connection.
    pub fn is_closed(&self) -> bool {
        self.table().closed
    }

    fn table(&self) -> std::sync::MutexGuard<'_, PendingTable> {
        self.pending.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn send(&self, request: Request, pending: Option<Pending>) -> Result<u64, Error> {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        if let Some(pending) = pending {
            let mut table = self.table();
            if table.closed {
                drop(table);
                return Err(self.disconnected());
            }
            table.waiting.insert(id, pending);
        }
        let what = request.name();
        if let Err(e) = self.outbox.send(&RequestFrame { id, request }) {
            self.table().waiting.remove(&id);
            return Err(match e {
                SendError::Closed => self.disconnected(),
                SendError::Encode(e) => Error::Unsendable {
                    what,
                    reason: e.to_string(),
                },
            });
        }
        Ok(id)
    }

    /// The connection is gone: why, as the caller should hear it.
    fn disconnected(&self) -> Error {
        match self.table().unreadable.clone() {
            Some(reason) => Error::Unreadable {
                path: self.path.clone(),
                reason,
            },
            None => Error::Disconnected {
                path: self.path.clone(),
            },
        }
    }

    /// Sends a request and waits for its response.
    pub async fn call(&self, request: Request) -> Result<Response, Error> {
        let (tx, rx) = oneshot::channel();
        let id = self.send(request, Some(Pending::Once(tx)))?;
        let mut waiting = Waiting {
            conn: self,
            id,
            rx: Some(rx),
        };
        let rx = waiting.rx.as_mut().expect("just set");
        let result = rx.await.map_err(|_| self.disconnected());
        waiting.rx = None;
        result
    }

    /// Completes once the daemon has closed the connection.
    pub async fn closed(&self) {
        let mut closed = self.closed.clone();
        let _ = closed.wait_for(|closed| *closed).await;
    }

    /// Sends a request whose responses form a stream (a subscription).
    pub fn stream(&self, request: Request) -> Result<mpsc::UnboundedReceiver<Response>, Error> {
        let (tx, rx) = mpsc::unbounded_channel();
        self.send(request, Some(Pending::Stream(tx)))?;
        Ok(rx)
    }

    /// Sends a request without waiting for its answer (used where awaiting is impossible, such
    /// as when a permit is dropped).
    pub fn send_and_forget(&self, request: Request) {
        let _ = self.send(request, None);
    }
}

/// Checks that the daemon at the default socket is this user's own: its directory belongs to
/// this user and nobody else can write into it (or another user could have planted a socket
/// there first), and the process listening runs as this user or root.
#[cfg(unix)]
fn verify_owner(path: &Path, stream: &Stream) -> Result<(), Distrust> {
    use interprocess::local_socket::traits::StreamCommon as _;
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        pacer_protocol::endpoint::check_private_dir(dir)?;
    }
    let me = pacer_protocol::endpoint::effective_uid();
    let creds = stream.peer_creds().map_err(Distrust::Unknown)?;
    match creds.euid() {
        Some(uid) if uid == me || uid == 0 => Ok(()),
        Some(uid) => Err(Distrust::Stranger {
            uid,
            me,
            pid: creds.pid(),
        }),
        None => Err(Distrust::Unsaid),
    }
}

#[cfg(not(unix))]
fn verify_owner(_path: &Path, _stream: &Stream) -> Result<(), Distrust> {
    // The per-user pipe name is created by its owner with a private security descriptor.
    Ok(())
}

/// A call in progress. If the caller stops waiting (its future is dropped), the call is marked
/// abandoned, and a permit granted meanwhile is released rather than left holding a slot.
struct Waiting<'a> {
    conn: &'a Connection,
    id: u64,
    /// `None` once the answer has been received.
    rx: Option<oneshot::Receiver<Response>>,
}

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        let Some(mut rx) = self.rx.take() else {
            return;
        };
        if let Some(entry) = self.conn.table().waiting.get_mut(&self.id) {
            *entry = Pending::Abandoned;
        }
        // The answer may have arrived between the caller's last poll and now.
        rx.close();
        if let Ok(Response::Granted(granted)) = rx.try_recv() {
            self.conn.send_and_forget(Request::Release(Release {
                lease: granted.lease,
            }));
        }
    }
}

pub fn unexpected(response: Response) -> Error {
    match response {
        Response::Error(e) => Error::Daemon {
            kind: e.kind,
            message: e.message,
        },
        other => Error::Unexpected(format!("{other:?}")),
    }
}

impl Drop for Connection {
    fn drop(&mut self) {
        // Closing the writing side tells the daemon this client is gone: it settles whatever
        // the connection still held.
        self.outbox.close();
    }
}

async fn read_responses(
    mut reader: impl AsyncRead + Unpin,
    pending: Arc<Mutex<PendingTable>>,
    outbox: std::sync::Weak<Outbox>,
) {
    let mut buf = BytesMut::with_capacity(8 * 1024);
    'read: loop {
        loop {
            match codec::decode::<ResponseFrame>(&buf) {
                Ok(Some((frame, used))) => {
                    buf.advance(used);
                    if let Some(release) = dispatch(&pending, frame)
                        && let Some(outbox) = outbox.upgrade()
                    {
                        let _ = outbox.send(&release);
                    }
                }
                Ok(None) => break,
                Err(e) => {
                    // Said once, to whoever waits (see `Connection::disconnected`).
                    let mut table = pending.lock().unwrap_or_else(|p| p.into_inner());
                    table.unreadable = Some(e.to_string());
                    break 'read;
                }
            }
        }
        buf.reserve(8 * 1024);
        match reader.read_buf(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(_) => {}
        }
    }
    close(&pending);
}

/// Marks the connection closed: no request may wait on it any more.
fn close(pending: &Mutex<PendingTable>) {
    let mut table = pending.lock().unwrap_or_else(|p| p.into_inner());
    table.closed = true;
    // Dropping the senders tells every waiting caller the connection is gone.
    table.waiting.clear();
}

/// Hands a response to whoever waits for it; returns a request to send in reply (the release of
/// a permit nobody waits for any more).
fn dispatch(pending: &Mutex<PendingTable>, frame: ResponseFrame) -> Option<RequestFrame> {
    let mut table = pending.lock().unwrap_or_else(|p| p.into_inner());
    if frame.id == 0 {
        // An error about the connection itself (an unreadable frame): everyone hears of it.
        for (_, waiter) in table.waiting.drain() {
            if let Pending::Once(tx) = waiter {
                let _ = tx.send(frame.response.clone());
            }
        }
        return None;
    }
    if let Some(Pending::Stream(tx)) = table.waiting.get(&frame.id) {
        if tx.send(frame.response).is_err() {
            table.waiting.remove(&frame.id);
        }
        return None;
    }
    match table.waiting.remove(&frame.id) {
        Some(Pending::Once(tx)) => {
            let _ = tx.send(frame.response);
            None
        }
        Some(Pending::Abandoned) => match frame.response {
            Response::Granted(granted) => Some(RequestFrame {
                id: u64::MAX,
                request: Request::Release(Release {
                    lease: granted.lease,
                }),
            }),
            _ => None,
        },
        // The answer to a request sent without waiting for it.
        _ => None,
    }
}

/// The answer to a report: what a 429 was taken for.
pub(crate) fn expect_reported(response: Response) -> Result<Reported, Error> {
    match response {
        Response::Reported(reported) => Ok(reported),
        other => Err(unexpected(other)),
    }
}
