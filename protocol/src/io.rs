//! Frames over a local socket, for the daemon and its clients alike (feature `io`).
//!
//! [`split`] divides a connection into its reading half and an [`Outbox`] for its writing half.
//! A frame sent to the outbox is written straight away by whoever sends it, with a non-blocking
//! write — no hand-over to a writer task, which would cost a wakeup on every message. Only when the
//! socket is full does the rest wait in a buffer for the flush task, which writes it as the peer
//! reads and gives up on a peer that stops reading. Frames can be sent from synchronous code (a
//! dropped permit's report; an answer produced under the broker's lock).
//!
//! On Unix the connection is split natively (closing the writing half tells the peer); elsewhere
//! both halves share the stream and every write goes through the flush task.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use interprocess::local_socket::tokio::Stream;
use serde::Serialize;
use tokio::sync::Notify;

use crate::codec::{self, FrameError};

/// How long the flush task waits for the peer to read before taking it for gone.
const WRITE_TIMEOUT: Duration = Duration::from_secs(10);
/// The most bytes a connection may have queued for a peer that does not read them; past it the
/// connection is taken for broken. (A reader that stops reading requests at
/// [`Outbox::drained`]'s mark never gets near it.)
pub const MAX_BACKLOG: usize = 16 << 20;

/// The reading side of a connection.
#[cfg(unix)]
pub type ReadHalf = tokio::net::unix::OwnedReadHalf;
#[cfg(unix)]
type WriteHalf = tokio::net::unix::OwnedWriteHalf;
/// The reading side of a connection.
#[cfg(not(unix))]
pub type ReadHalf = StreamHalf;
#[cfg(not(unix))]
type WriteHalf = tokio::sync::Mutex<StreamHalf>;

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
            StreamHalf(stream.clone()),
            tokio::sync::Mutex::new(StreamHalf(stream)),
        )
    };
    let outbox = Arc::new(Outbox {
        half: write,
        pending: Mutex::new(Pending::default()),
        flush: Notify::new(),
        drained: Notify::new(),
    });
    (read, outbox)
}

/// Why a frame was not sent.
#[derive(Debug, thiserror::Error)]
pub enum SendError {
    /// The connection is closing, or failed.
    #[error("the connection is closed")]
    Closed,
    /// The frame could not be encoded (it would exceed the size cap).
    #[error(transparent)]
    Encode(#[from] FrameError),
}

/// The writing side of a connection (see the module documentation).
pub struct Outbox {
    half: WriteHalf,
    pending: Mutex<Pending>,
    /// Wakes the flush task: bytes are waiting, or the outbox is closing.
    flush: Notify,
    /// Wakes whoever waits in [`Outbox::drained`]: bytes were written, or the outbox broke.
    drained: Notify,
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

    /// Queues a frame, writing it at once if the socket takes it.
    pub fn send<T: Serialize>(&self, frame: &T) -> Result<(), SendError> {
        let mut pending = self.lock();
        if pending.broken || pending.closing {
            return Err(SendError::Closed);
        }
        let was_empty = pending.bytes.is_empty();
        codec::encode(frame, &mut pending.bytes)?;
        if was_empty {
            self.write_now(&mut pending);
        }
        if pending.bytes.len() > MAX_BACKLOG {
            self.break_down(&mut pending);
        }
        if !pending.bytes.is_empty() {
            self.flush.notify_one();
        }
        if pending.broken {
            return Err(SendError::Closed);
        }
        Ok(())
    }

    /// Writes as much as the socket takes without waiting.
    fn write_now(&self, pending: &mut Pending) {
        let before = pending.bytes.len();
        while !pending.bytes.is_empty() {
            match try_write(&self.half, &pending.bytes) {
                Ok(0) => self.break_down(pending),
                Ok(n) => {
                    pending.bytes.drain(..n);
                }
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                Err(_) => self.break_down(pending),
            }
        }
        if pending.bytes.len() < before {
            self.drained.notify_waiters();
        }
    }

    /// How many bytes wait for the peer to read them.
    pub fn backlog(&self) -> usize {
        self.lock().bytes.len()
    }

    /// Waits until at most `mark` bytes wait for the peer, or the outbox is broken or closing:
    /// a reader of requests calls it before reading more, so that a peer which sends requests
    /// but does not read the answers is not answered without bound.
    pub async fn drained(&self, mark: usize) {
        loop {
            let notified = self.drained.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            {
                let pending = self.lock();
                if pending.bytes.len() <= mark || pending.broken || pending.closing {
                    return;
                }
            }
            notified.await;
        }
    }

    /// The socket failed: drop what is queued and wake the flush task, which ends (and with it
    /// the connection).
    fn break_down(&self, pending: &mut Pending) {
        pending.broken = true;
        pending.bytes.clear();
        self.flush.notify_one();
        self.drained.notify_waiters();
    }

    /// Whether the socket failed or the peer stopped reading.
    pub fn is_broken(&self) -> bool {
        self.lock().broken
    }

    /// No more frames: the flush task writes what is left, then ends, closing the socket's
    /// writing side — which tells the peer.
    pub fn close(&self) {
        self.lock().closing = true;
        self.flush.notify_one();
        self.drained.notify_waiters();
    }

    /// Writes queued bytes as the client reads them, until closed or broken. Ends early (and
    /// marks the outbox broken) when the peer stops reading for [`WRITE_TIMEOUT`].
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
            self.break_down(&mut self.lock());
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
        let written = self.half.lock().await.write_all(&bytes).await;
        if written.is_err() {
            self.break_down(&mut self.lock());
        } else {
            self.drained.notify_waiters();
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

/// One side of a connection where no native split is used (`&Stream` reads and writes, so the
/// halves need no lock).
#[cfg(not(unix))]
pub struct StreamHalf(pub Arc<Stream>);

#[cfg(not(unix))]
impl tokio::io::AsyncRead for StreamHalf {
    fn poll_read(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut &*self.0).poll_read(cx, buf)
    }
}

#[cfg(not(unix))]
impl tokio::io::AsyncWrite for StreamHalf {
    fn poll_write(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        std::pin::Pin::new(&mut &*self.0).poll_write(cx, buf)
    }

    fn poll_flush(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut &*self.0).poll_flush(cx)
    }

    fn poll_shutdown(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut &*self.0).poll_shutdown(cx)
    }
}
