//! The socket server: pacer's protocol on a Unix socket (a named pipe on Windows), one task per
//! connection, all of them clients of the [`Hub`].
//!
//! - this file: the accept loop;
//! - `connection`: one connection, from the handshake to its close;
//! - [`listener`]: claiming the socket (permissions, stale sockets, a second daemon).

mod connection;
pub mod listener;

use std::sync::Arc;
use std::time::Duration;

use interprocess::local_socket::traits::tokio::Listener as _;
use tokio::sync::watch;
use tokio::task::JoinSet;

use crate::hub::Hub;
use listener::Listener;

/// Serves connections on `listener` until `draining` fires; then lets the connections finish
/// until `closing` fires, and waits for them.
pub async fn serve(
    listener: Listener,
    hub: Arc<Hub>,
    mut draining: watch::Receiver<bool>,
    closing: watch::Receiver<bool>,
) {
    let mut connections = JoinSet::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(stream) => {
                    let conn = hub.new_conn_id();
                    connections.spawn(connection::serve(stream, conn, hub.clone(), closing.clone()));
                }
                Err(e) => {
                    // Out of file descriptors, typically: back off instead of spinning.
                    tracing::warn!("cannot accept a connection: {e}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            },
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
            _ = draining.changed() => break,
        }
    }
    drop(listener);
    while connections.join_next().await.is_some() {}
}
