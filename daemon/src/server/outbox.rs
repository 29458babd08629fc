//! Sending responses to one connection.
//!
//! A response is written straight away, from whichever task produced it, with a non-blocking
//! write — no hand-over to another task, which would cost a wakeup on the hot path. Only when the
//! socket is full does the rest wait in a buffer for the flush task, which writes it as the
//! client reads (and gives up on a client that stops reading).

use std::sync::{Arc, Mutex};
use std::time::Duration;

use pacer_protocol::codec;
use pacer_protocol::message::{ErrorKind, ResponseFrame};
use tokio::sync::Notify;

use crate::listener::Stream;

/// How long the flush task waits for a client to read before taking it for gone.
const WRITE_TIMEOUT: Duration = Duration::from_secs(10);

#[cfg(unix)]
pub type ReadHalf = tokio::net::unix::OwnedReadHalf;
#[cfg(unix)]
type WriteHalf = tokio::net::unix::OwnedWriteHalf;
#[cfg(not(unix))]
pub type ReadHalf = crate::listener::StreamHalf;
#[cfg(not(unix))]
type WriteHalf = tokio::sync::Mutex<crate::listener::StreamHalf>;

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
            crate::listener::StreamHalf(stream.clone()),
            tokio::sync::Mutex::new(crate::listener::StreamHalf(stream)),
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

    /// Queues a response, writing it at once if the socket takes it.
    pub fn send(&self, frame: &ResponseFrame) {
        let mut pending = self.lock();
        if pending.broken || pending.closing {
            return;
        }
        let was_empty = pending.bytes.is_empty();
        encode(frame, &mut pending.bytes);
        if was_empty {
            self.write_now(&mut pending);
        }
        if !pending.bytes.is_empty() {
            self.flush.notify_one();
        }
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

    /// No more responses: the flush task writes what is left, then ends (closing the socket's
    /// writing side).
    pub fn close(&self) {
        self.lock().closing = true;
        self.flush.notify_one();
    }

    /// Writes queued bytes as the client reads them, until closed or broken. Ends early (and
    /// marks the outbox broken) when the client stops reading for [`WRITE_TIMEOUT`].
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

fn encode(frame: &ResponseFrame, buf: &mut Vec<u8>) {
    if let Err(e) = codec::encode(frame, buf) {
        tracing::error!("cannot encode a response: {e}");
        let fallback = ResponseFrame {
            id: frame.id,
            response: super::handlers::error(
                ErrorKind::InvalidRequest,
                format!("the response could not be sent: {e}"),
            ),
        };
        codec::encode(&fallback, buf).expect("a short error always encodes");
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
