//! The socket server around the broker.
//!
//! One task per connection reads requests and applies them to the broker under a mutex (every
//! operation is short and never awaits while holding it); one writer task per connection sends its
//! responses; one timer task calls [`Broker::tick`] when the broker's next wakeup comes. Answers to
//! acquires that waited may be produced by any of these and are routed to their connection's writer.

mod connection;
mod handlers;
mod session;
mod shared;
mod timer;

pub use session::Session;
pub use shared::Shared;

use std::future::Future;
use std::sync::Arc;
use std::time::{Instant, SystemTime};

use anyhow::Context;
use pacer_protocol::message::GatewayInfo;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinSet;

use crate::broker::{Broker, TimeBase};
use crate::config::Config;
use crate::gateway::Gateway;
use crate::listener::Listener;

/// The moment, from tokio's clock (so that tests can pause and advance it).
fn now() -> Instant {
    tokio::time::Instant::now().into_std()
}

/// Serves pacer's protocol on `listener`, and the HTTP gateway if the configuration enables it,
/// until `shutdown` completes; then tells every waiting acquire the daemon is stopping, closes
/// every connection and returns.
pub async fn run(
    config: Config,
    listener: Listener,
    shutdown: impl Future<Output = ()>,
) -> anyhow::Result<()> {
    use interprocess::local_socket::traits::tokio::Listener as _;

    let gateway_listener = match config.gateway.listen {
        Some(addr) => Some(TcpListener::bind(addr).await.with_context(|| {
            format!(
                "cannot listen on {addr} for the HTTP gateway \
                 (choose another address with --gateway ADDR, or run with --no-gateway)"
            )
        })?),
        None => None,
    };
    let gateway_info = GatewayInfo {
        listen: match &gateway_listener {
            Some(listener) => Some(listener.local_addr()?.to_string()),
            None => None,
        },
        upstream: config.gateway.upstream.to_string(),
    };
    let time_base = TimeBase {
        instant: now(),
        wall: SystemTime::now(),
    };
    let broker = Broker::new(config.broker, time_base, first_lease_id(time_base.wall));
    let shared = Arc::new(Shared::new(broker, gateway_info.clone()));
    let (stop_tx, stop_rx) = watch::channel(false);
    let mut timer = tokio::spawn(timer::drive(shared.clone(), stop_rx.clone()));
    let gateway = match gateway_listener {
        Some(listener) => {
            tracing::info!(
                listen = gateway_info.listen.as_deref().unwrap_or_default(),
                upstream = %gateway_info.upstream,
                "HTTP gateway listening"
            );
            let gateway = Gateway::new(shared.clone(), &config.gateway)?;
            Some(tokio::spawn(crate::gateway::serve(
                listener,
                gateway,
                stop_rx.clone(),
            )))
        }
        None => None,
    };

    let mut connections = JoinSet::new();
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(stream) => {
                    let conn = shared.new_conn_id();
                    connections.spawn(connection::serve(stream, conn, shared.clone(), stop_rx.clone()));
                }
                Err(e) => {
                    // Out of file descriptors, typically: back off instead of spinning.
                    tracing::warn!("cannot accept a connection: {e}");
                    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                }
            },
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
            ended = &mut timer => {
                // Without its timer no waiter would ever be served: better to exit and be
                // restarted than to hang every client.
                anyhow::bail!("the broker's timer stopped unexpectedly: {ended:?}");
            }
            () = &mut shutdown => break,
        }
    }

    tracing::info!("stopping: answering waiting acquires and closing connections");
    drop(listener);
    shared.stop();
    let _ = stop_tx.send(true);
    while connections.join_next().await.is_some() {}
    if let Some(gateway) = gateway {
        let _ = gateway.await;
    }
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
