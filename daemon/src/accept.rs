//! The one accept loop, shared by the socket server and the gateway: take connections until
//! the daemon drains, turn away those over the cap (or not allowed) with an answer of their
//! own, serve the rest each on a task, and wait for them when it stops.
//!
//! Shutdown comes in two steps, each a [`CancellationToken`]: `draining` stops new
//! connections (those open carry on), `closing` ends what is left.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::time::Duration;

use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::throttle::Throttle;
use crate::warn_throttled;

static ACCEPT_FAILED: Throttle = Throttle::new(Duration::from_secs(10));

/// At most this many refusals are written at once; connections beyond are dropped unanswered.
pub const MAX_REFUSING: usize = 256;

/// A task's future.
pub type Task = Pin<Box<dyn Future<Output = ()> + Send + 'static>>;

/// The two steps of a daemon's shutdown.
#[derive(Debug, Clone, Default)]
pub struct Shutdown {
    /// Fired first: stop taking new work; work under way carries on.
    pub draining: CancellationToken,
    /// Fired last: end every task.
    pub closing: CancellationToken,
}

/// A listener the loop takes connections from.
pub trait Listen {
    type Conn: Send + 'static;
    fn next(&self) -> impl Future<Output = io::Result<Self::Conn>> + Send;
}

/// What a front end does with its connections.
pub trait Serve {
    type Conn: Send + 'static;
    /// The task serving an admitted connection, or (`Err`) the task answering a refused one;
    /// `open` is how many are served now.
    fn admit(&self, conn: Self::Conn, open: usize) -> Result<Task, Task>;
    /// Counts a refusal (for `pacer status` and /metrics).
    fn refused(&self);
    /// What the log calls this listener.
    fn name(&self) -> &'static str;
    /// How long connections still open when the daemon closes get to end by themselves (those
    /// that watch `closing`, to finish what they owe the client) before they are aborted.
    fn close_grace(&self) -> Duration {
        Duration::ZERO
    }
}

/// Serves connections from `listener` until `shutdown.draining` fires; then lets those open
/// finish until `shutdown.closing` fires, and waits for them (aborting what is left).
pub async fn serve<L, S>(listener: L, front: S, shutdown: Shutdown)
where
    L: Listen,
    S: Serve<Conn = L::Conn>,
{
    let mut connections = JoinSet::new();
    let mut refusals = JoinSet::new();
    loop {
        tokio::select! {
            accepted = listener.next() => match accepted {
                Ok(conn) => match front.admit(conn, connections.len()) {
                    Ok(task) => {
                        connections.spawn(task);
                    }
                    Err(refusal) => {
                        front.refused();
                        // Refusals are bounded too: past the mark the connection is dropped.
                        if refusals.len() < MAX_REFUSING {
                            refusals.spawn(refusal);
                        }
                    }
                },
                Err(e) => {
                    // Out of file descriptors, typically: back off instead of spinning.
                    warn_throttled!(ACCEPT_FAILED, "{} cannot accept a connection: {e}", front.name());
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            },
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
            Some(_) = refusals.join_next(), if !refusals.is_empty() => {}
            () = shutdown.draining.cancelled() => break,
        }
    }
    drop(listener);
    refusals.abort_all();
    tokio::select! {
        () = all_ended(&mut connections) => return,
        () = shutdown.closing.cancelled() => {}
    }
    let _ = tokio::time::timeout(front.close_grace(), all_ended(&mut connections)).await;
    connections.shutdown().await;
}

async fn all_ended(connections: &mut JoinSet<()>) {
    while connections.join_next().await.is_some() {}
}
