//! Sending requests to the daemon.
//!
//! A request is written straight away by the caller, with a non-blocking write — no hand-over to
//! another task, which would cost a wakeup on every call. Only when the socket is full does the
//! rest wait in a buffer for the flush task. (The daemon's side of the socket works the same way:
//! `pacer-daemon`'s `server::outbox`.) Requests can be queued from synchronous code, such as a
//! dropped permit's report.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use interprocess::local_socket::tokio::Stream;
use pacer_protocol::codec;
use pacer_protocol::message::RequestFrame;
use tokio::sync::Notify;

/// How long the flush task waits for the daemon to read before taking it for gone.
const WRITE_TIMEOUT: Duration = Duration::from_secs(10);

#[cfg(unix)]
pub type ReadHalf = tokio::net::unix::OwnedReadHalf;
#[cfg(unix)]
type WriteHalf = tokio::net::unix::OwnedWriteHalf;
#[cfg(not(unix))]
pub type ReadHalf = crate::connection::StreamHalf;
#[cfg(not(unix))]
type WriteHalf = tokio::sync::Mutex<crate::connection::StreamHalf>;

/// Splits a connection into its reading side and an outbox for its writing side.
pub fn split(stream: Stream) -> (ReadHalf, Arc<Outbox>) {
    #[cfg(unix)]
    let (read, write) = {
        let Stream::UdSocket(stream) = stream;
        tokio::net::UnixStream::from(stream).into_split()
    };
    #[cfg(not(unix))]
    let (read, write) = {
        let stream = Arc::new(stream);
        (
            crate::connection::StreamHalf(stream.clone()),
            tokio::sync::Mutex::new(crate::connection::StreamHalf(stream)),
        )
    };
    let outbox = Arc::new(Outbox {
        half: write,
        pending: Mutex::new(Pending::default()),
        flush: Notify::new(),
    });
    (read, outbox)
}

pub struct Outbox {
    half: WriteHalf,
    pending: Mutex<Pending>,
    /// Wakes the flush task: bytes are waiting, or the outbox is closing.
    flush: Notify,
}

#[derive(Default)]
struct Pending {
    /// Encoded frames not yet written.
    bytes: Vec<u8>,
    /// No more frames will be queued: the flush task writes what is left and ends.
    closing: bool,
    /// The socket failed or the client stopped reading: frames are dropped.
    broken: bool,
}

impl Outbox {
    fn lock(&self) -> std::sync::MutexGuard<'_, Pending> {
        self.pending.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Queues a request, writing it at once if the socket takes it. False if the connection is
    /// broken or closing (the request was not sent).
    pub fn send(&self, frame: &RequestFrame) -> bool {
        let mut pending = self.lock();
        if pending.broken || pending.closing {
            return false;
        }
        let was_empty = pending.bytes.is_empty();
        if let Err(e) = codec::encode(frame, &mut pending.bytes) {
            tracing::error!("cannot encode a request for pacerd: {e}");
            return false;
        }
        if was_empty {
            self.write_now(&mut pending);
        }
        if !pending.bytes.is_empty() {
            self.flush.notify_one();
        }
        !pending.broken
    }

    /// Writes as much as the socket takes without waiting.
    fn write_now(&self, pending: &mut Pending) {
        while !pending.bytes.is_empty() {
            match try_write(&self.half, &pending.bytes) {
                Ok(0) => self.break_down(pending),
                Ok(n) => {
                    pending.bytes.drain(..n);
                }
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return,
                Err(_) => self.break_down(pending),
            }
        }
    }

    /// The socket failed: drop what is queued and wake the flush task, which ends (and with it
    /// the connection).
    fn break_down(&self, pending: &mut Pending) {
        pending.broken = true;
        pending.bytes.clear();
        self.flush.notify_one();
    }

    /// Whether the socket failed or the peer stopped reading.
    pub fn is_broken(&self) -> bool {
        self.lock().broken
    }

    /// No more requests: the flush task writes what is left, then ends, closing the socket's
    /// writing side — which tells the daemon this client is gone.
    pub fn close(&self) {
        self.lock().closing = true;
        self.flush.notify_one();
    }

    /// Writes queued bytes as the client reads them, until closed or broken. Ends early (and
    /// marks the outbox broken) when the daemon stops reading for [`WRITE_TIMEOUT`].
    pub async fn flush(self: Arc<Self>) {
        loop {
            let (done, idle) = {
                let pending = self.lock();
                let idle = pending.bytes.is_empty();
                (pending.broken || (pending.closing && idle), idle)
            };
            if done {
                return;
            }
            if idle {
                // A send between the check and here leaves a permit: no wakeup is lost.
                self.flush.notified().await;
                continue;
            }
            if tokio::time::timeout(WRITE_TIMEOUT, self.write_some())
                .await
                .is_err()
            {
                self.break_down(&mut self.lock());
                return;
            }
        }
    }
}

impl Outbox {
    /// Waits until the socket takes more, and writes what it takes.
    #[cfg(unix)]
    async fn write_some(&self) {
        if self.half.writable().await.is_err() {
            self.lock().broken = true;
            return;
        }
        let mut pending = self.lock();
        self.write_now(&mut pending);
    }

    /// Writes everything queued (without a non-blocking write, all writes happen here).
    #[cfg(not(unix))]
    async fn write_some(&self) {
        use tokio::io::AsyncWriteExt;
        let bytes = std::mem::take(&mut self.lock().bytes);
        if self.half.lock().await.write_all(&bytes).await.is_err() {
            self.lock().broken = true;
        }
    }
}

#[cfg(unix)]
fn try_write(half: &WriteHalf, bytes: &[u8]) -> std::io::Result<usize> {
    half.try_write(bytes)
}

/// Without a non-blocking write, everything goes through the flush task.
#[cfg(not(unix))]
fn try_write(_: &WriteHalf, _: &[u8]) -> std::io::Result<usize> {
    Err(std::io::ErrorKind::WouldBlock.into())
}
