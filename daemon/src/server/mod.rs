//! The socket server: pacer's protocol on a Unix socket (a named pipe on Windows), one task per
//! connection, all of them clients of the [`Hub`].
//!
//! - this file: who may connect ([`access`]) and how many at once (the accept loop itself is
//!   [`crate::accept`], shared with the gateway);
//! - `connection`: one connection, from the handshake to its close;
//! - `turn_away`: the answer to a connection turned away (not allowed, or too many);
//! - [`listener`]: claiming the socket (permissions, stale sockets, a second daemon).

pub mod access;
mod connection;
pub mod listener;
mod turn_away;

use std::sync::Arc;
use std::time::Duration;

use interprocess::local_socket::traits::tokio::Listener as ListenerExt;
use pacer_protocol::message::ErrorKind;
use tokio_util::sync::CancellationToken;

use crate::accept::{self, Shutdown, Task};
use crate::hub::Hub;
use crate::throttle::Throttle;
use crate::warn_throttled;
use access::Policy;
use listener::{Listener, Stream};

/// How many connections the socket serves at once unless told otherwise.
pub const DEFAULT_MAX_CONNECTIONS: usize = 8192;

#[cfg(unix)]
static DENIED: Throttle = Throttle::new(Duration::from_secs(10));
static BUSY: Throttle = Throttle::new(Duration::from_secs(10));

/// What the socket server needs besides its listener.
pub struct Server {
    pub hub: Arc<Hub>,
    pub access: Arc<Policy>,
    /// Connections beyond this many are refused with a `Busy` error (the cap leaves file
    /// descriptors for the gateway, the state file and the log).
    pub max_connections: usize,
}

/// Serves connections on `listener` (see [`crate::accept::serve`]): each admitted one on a task
/// of its own, until the daemon stops.
pub async fn serve(listener: Listener, server: Server, shutdown: Shutdown) {
    let server = Front {
        server,
        closing: shutdown.closing.clone(),
    };
    accept::serve(SocketListener(listener), server, shutdown).await;
}

struct SocketListener(Listener);

impl accept::Listen for SocketListener {
    type Conn = Stream;

    fn next(&self) -> impl Future<Output = std::io::Result<Stream>> + Send {
        ListenerExt::accept(&self.0)
    }
}

struct Front {
    server: Server,
    closing: CancellationToken,
}

impl accept::Serve for Front {
    type Conn = Stream;

    fn admit(&self, stream: Stream, open: usize) -> Result<Task, Task> {
        let server = &self.server;
        match admit(server, &stream, open) {
            Ok(()) => {
                let conn = server.hub.new_conn_id();
                let hub = server.hub.clone();
                Ok(Box::pin(connection::serve(
                    stream,
                    conn,
                    hub,
                    self.closing.clone(),
                )))
            }
            Err((kind, message)) => Err(Box::pin(turn_away::refuse(stream, kind, message))),
        }
    }

    fn refused(&self) {
        self.server.hub.stats().count_refusal();
    }

    fn name(&self) -> &'static str {
        "the socket"
    }

    /// Connections end by themselves when the daemon closes, after flushing what they owe (a
    /// waiting client must hear that the daemon stopped, not find its socket hanging).
    fn close_grace(&self) -> Duration {
        Duration::from_secs(5)
    }
}

/// Whether a new connection is served; if not, the error it gets.
fn admit(server: &Server, stream: &Stream, open: usize) -> Result<(), (ErrorKind, String)> {
    #[cfg(unix)]
    {
        let peer = access::peer_of(stream).map_err(|e| {
            let message = format!("cannot tell who connected ({e}); refusing the connection");
            warn_throttled!(DENIED, "refused a connection: {message}");
            (ErrorKind::PermissionDenied, message)
        })?;
        if let Err(denied) = server.access.check(&peer) {
            let message = denied.to_string();
            warn_throttled!(
                DENIED,
                "refused a connection from uid {} (pid {}): {message}",
                peer.uid,
                peer.pid.map_or("?".into(), |p| p.to_string())
            );
            return Err((ErrorKind::PermissionDenied, message));
        }
    }
    #[cfg(not(unix))]
    let _ = stream;
    if open >= server.max_connections {
        let message = format!(
            "pacerd serves {} connections already, as many as it takes; try again shortly",
            server.max_connections
        );
        warn_throttled!(BUSY, "refused a connection: {message}");
        return Err((ErrorKind::Busy, message));
    }
    Ok(())
}
