//! The socket server: pacer's protocol on a Unix socket (a named pipe on Windows), one task per
//! connection, all of them clients of the [`Hub`].
//!
//! - this file: the accept loop: who may connect ([`access`]) and how many at once;
//! - `connection`: one connection, from the handshake to its close;
//! - `refuse`: the answer to a connection turned away (not allowed, or too many);
//! - [`listener`]: claiming the socket (permissions, stale sockets, a second daemon).

pub mod access;
mod connection;
pub mod listener;
mod refuse;

use std::sync::Arc;
use std::time::Duration;

use interprocess::local_socket::traits::tokio::Listener as _;
use pacer_protocol::message::ErrorKind;
use tokio::sync::watch;
use tokio::task::JoinSet;

use crate::hub::Hub;
use crate::throttle::Throttle;
use crate::warn_throttled;
use access::Policy;
use listener::{Listener, Stream};

/// How many connections the socket serves at once unless told otherwise.
pub const DEFAULT_MAX_CONNECTIONS: usize = 8192;

static ACCEPT_FAILED: Throttle = Throttle::new(Duration::from_secs(10));
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

/// Serves connections on `listener` until `draining` fires; then lets the connections finish
/// until `closing` fires, and waits for them.
pub async fn serve(
    listener: Listener,
    server: Server,
    mut draining: watch::Receiver<bool>,
    closing: watch::Receiver<bool>,
) {
    let mut connections = JoinSet::new();
    let mut refusals = JoinSet::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(stream) => {
                    if let Err((kind, message)) = admit(&server, &stream, connections.len()) {
                        server.hub.count_refusal();
                        // Refusals are bounded too: past the mark the stream is just dropped.
                        if refusals.len() < refuse::MAX_REFUSING {
                            refusals.spawn(refuse::refuse(stream, kind, message));
                        }
                        continue;
                    }
                    let conn = server.hub.new_conn_id();
                    connections.spawn(connection::serve(stream, conn, server.hub.clone(), closing.clone()));
                }
                Err(e) => {
                    // Out of file descriptors, typically: back off instead of spinning.
                    warn_throttled!(ACCEPT_FAILED, "cannot accept a connection: {e}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            },
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
            Some(_) = refusals.join_next(), if !refusals.is_empty() => {}
            _ = draining.changed() => break,
        }
    }
    drop(listener);
    refusals.abort_all();
    while connections.join_next().await.is_some() {}
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
        if let Err(message) = server.access.check(&peer) {
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
