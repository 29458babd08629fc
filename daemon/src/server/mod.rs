//! The socket server around the broker.
//!
//! One task per connection reads requests and applies them to the broker under a mutex (every
//! operation is short and never awaits while holding it); one writer task per connection sends its
//! responses; one timer task calls [`Broker::tick`] when the broker's next wakeup comes. Answers to
//! acquires that waited may be produced by any of these and are routed to their connection's writer.

mod connection;
mod handlers;
mod shared;
mod timer;

use std::future::Future;
use std::sync::Arc;
use std::time::{Instant, SystemTime};

use tokio::sync::watch;
use tokio::task::JoinSet;

use crate::broker::{Broker, ConnId, TimeBase};
use crate::config::Config;
use crate::listener::Listener;
use shared::Shared;

/// The moment, from tokio's clock (so that tests can pause and advance it).
fn now() -> Instant {
    tokio::time::Instant::now().into_std()
}

/// Serves pacer's protocol on `listener` until `shutdown` completes; then answers every waiting
/// acquire with a rejection, closes every connection and returns.
pub async fn run(
    config: Config,
    listener: Listener,
    shutdown: impl Future<Output = ()>,
) -> anyhow::Result<()> {
    use interprocess::local_socket::traits::tokio::Listener as _;

    let time_base = TimeBase {
        instant: now(),
        wall: SystemTime::now(),
    };
    let broker = Broker::new(config.broker, time_base, first_lease_id(time_base.wall));
    let shared = Arc::new(Shared::new(broker));
    let (stop_tx, stop_rx) = watch::channel(false);
    let timer = tokio::spawn(timer::drive(shared.clone(), stop_rx.clone()));

    let mut connections = JoinSet::new();
    let mut next_conn = 1;
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(stream) => {
                    let conn = ConnId(next_conn);
                    next_conn += 1;
                    connections.spawn(connection::serve(stream, conn, shared.clone(), stop_rx.clone()));
                }
                Err(e) => {
                    // Out of file descriptors, typically: back off instead of spinning.
                    tracing::warn!("cannot accept a connection: {e}");
                    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                }
            },
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
            () = &mut shutdown => break,
        }
    }

    tracing::info!("stopping: answering waiting acquires and closing connections");
    drop(listener);
    shared.stop();
    let _ = stop_tx.send(true);
    while connections.join_next().await.is_some() {}
    let _ = timer.await;
    Ok(())
}

/// Lease ids start from the wall clock so that a restarted daemon does not hand out the ids of
/// leases that scripts of the previous run may still hold: ~1M ids per second of wall time.
fn first_lease_id(wall: SystemTime) -> u64 {
    let secs = wall
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    secs << 20
}
