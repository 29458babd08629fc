//! The daemon around the broker: the socket server, the gateway, the timer, persistence and the
//! service manager.
//!
//! One task per connection reads requests and applies them to the broker under a mutex (every
//! operation is short and never awaits while holding it); one writer task per connection sends its
//! responses; one timer task calls [`Broker::tick`] when the broker's next wakeup comes. Answers to
//! acquires that waited may be produced by any of these and are routed to their connection's
//! writer. A saver task writes the state file; a keep-alive task talks to systemd.

mod connection;
mod handlers;
mod notify;
mod saver;
mod session;
mod shared;
mod timer;

pub use session::Session;
pub use shared::Shared;

use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use anyhow::Context;
use pacer_protocol::message::GatewayInfo;
use tokio::net::TcpListener;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinSet;

use crate::broker::{Broker, TimeBase};
use crate::config::Config;
use crate::gateway::Gateway;
use crate::gateway::calibration::Calibration;
use crate::listener::Listener;
use crate::signals::Signal;

/// How long calls in flight get to report when the daemon stops.
pub const STOP_GRACE: Duration = Duration::from_secs(10);

/// The moment, from tokio's clock (so that tests can pause and advance it).
fn now() -> Instant {
    tokio::time::Instant::now().into_std()
}

/// What the daemon serves on.
pub struct Setup {
    pub config: Config,
    /// The pacer protocol's socket.
    pub listener: Listener,
    /// The gateway's socket when the service manager handed one over; otherwise the gateway
    /// binds `[gateway] listen` itself.
    pub gateway_listener: Option<std::net::TcpListener>,
}

/// Serves until `shutdown` completes, then stops gracefully (see [`serve`]).
pub async fn run(
    config: Config,
    listener: Listener,
    shutdown: impl Future<Output = ()>,
) -> anyhow::Result<()> {
    let (tx, rx) = mpsc::channel(1);
    let setup = Setup {
        config,
        listener,
        gateway_listener: None,
    };
    let serving = serve(setup, rx);
    tokio::pin!(serving, shutdown);
    tokio::select! {
        result = &mut serving => result,
        () = &mut shutdown => {
            let _ = tx.send(Signal::Stop).await;
            serving.await
        }
    }
}

/// Serves pacer's protocol, and the HTTP gateway if configured, until told to stop.
///
/// On start, the state file is loaded. [`Signal::Reload`] re-reads the configuration file (an
/// invalid one is refused and logged; the old one stays in force). [`Signal::Stop`] stops
/// accepting, answers waiting acquires "stopping", gives calls in flight up to [`STOP_GRACE`]
/// to report, saves the state and returns.
pub async fn serve(setup: Setup, mut signals: mpsc::Receiver<Signal>) -> anyhow::Result<()> {
    use interprocess::local_socket::traits::tokio::Listener as _;

    let Setup {
        config,
        listener,
        gateway_listener,
    } = setup;
    let gateway_listener = match (gateway_listener, config.gateway.listen) {
        (Some(inherited), _) => Some(TcpListener::from_std(inherited)?),
        (None, Some(addr)) => Some(TcpListener::bind(addr).await.with_context(|| {
            format!(
                "cannot listen on {addr} for the HTTP gateway \
                 (choose another address with --gateway ADDR, or run with --no-gateway)"
            )
        })?),
        (None, None) => None,
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
    let mut broker = Broker::new(
        config.broker.clone(),
        time_base,
        first_lease_id(time_base.wall),
    );
    let calibration = Arc::new(Mutex::new(Calibration::default()));
    if let Some(path) = &config.state_file
        && let Some(saved) = crate::persist::load(path)
    {
        broker.restore(
            saved.broker,
            saved.saved_at,
            time_base.instant,
            time_base.wall,
        );
        *calibration.lock().unwrap_or_else(|p| p.into_inner()) = saved.calibration;
        tracing::info!(path = %path.display(), "state restored");
    }
    let shared = Arc::new(Shared::new(broker, gateway_info.clone()));

    // `draining` stops new work; `closing` ends every task.
    let (draining_tx, draining) = watch::channel(false);
    let (closing_tx, closing) = watch::channel(false);
    let mut timer = tokio::spawn(timer::drive(shared.clone(), closing.clone()));
    let saver = config.state_file.clone().map(|path| {
        tokio::spawn(saver::keep_saved(
            shared.clone(),
            calibration.clone(),
            path,
            closing.clone(),
        ))
    });
    let keep_alive = tokio::spawn(notify::keep_alive(shared.clone(), closing.clone()));
    let gateway = match gateway_listener {
        Some(listener) => {
            tracing::info!(
                listen = gateway_info.listen.as_deref().unwrap_or_default(),
                upstream = %gateway_info.upstream,
                "HTTP gateway listening"
            );
            let gateway = Gateway::new(shared.clone(), &config.gateway, calibration.clone())?;
            let task = tokio::spawn(crate::gateway::serve(
                listener,
                gateway.clone(),
                draining.clone(),
                closing.clone(),
            ));
            Some((gateway, task))
        }
        None => None,
    };
    notify::ready(&shared);

    let mut config = config;
    let mut connections = JoinSet::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(stream) => {
                    let conn = shared.new_conn_id();
                    connections.spawn(connection::serve(stream, conn, shared.clone(), closing.clone()));
                }
                Err(e) => {
                    // Out of file descriptors, typically: back off instead of spinning.
                    tracing::warn!("cannot accept a connection: {e}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            },
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
            ended = &mut timer => {
                // Without its timer no waiter would ever be served: better to exit and be
                // restarted than to hang every client.
                anyhow::bail!("the broker's timer stopped unexpectedly: {ended:?}");
            }
            signal = signals.recv() => match signal {
                Some(Signal::Reload) => {
                    reload(&mut config, &shared, gateway.as_ref().map(|(g, _)| g));
                }
                Some(Signal::Stop) | None => break,
            },
        }
    }

    tracing::info!("stopping: waiting acquires are told so; calls in flight may still report");
    notify::stopping();
    drop(listener);
    let _ = draining_tx.send(true);
    shared.stop();
    let deadline = tokio::time::Instant::now() + STOP_GRACE;
    while shared.leases_in_flight() > 0 && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let unsettled = shared.leases_in_flight();
    if unsettled > 0 {
        tracing::warn!("{unsettled} calls in flight did not report within {STOP_GRACE:?}");
    }
    let _ = closing_tx.send(true);
    while connections.join_next().await.is_some() {}
    if let Some((_, task)) = gateway {
        let _ = task.await;
    }
    let _ = timer.await;
    let _ = keep_alive.await;
    if let Some(saver) = saver {
        let _ = saver.await;
    }
    if let Some(path) = &config.state_file {
        saver::save_now(&shared, &calibration, path).await;
    }
    tracing::info!("stopped");
    Ok(())
}

/// Re-reads the configuration file; new limits and classes apply at once to every budget,
/// without dropping a connection or a waiter. An invalid file is refused, the old one stays.
fn reload(config: &mut Config, shared: &Shared, gateway: Option<&Arc<Gateway>>) {
    let Some(path) = config.path.clone() else {
        tracing::warn!("reload asked, but pacerd runs without a configuration file");
        return;
    };
    let new = match Config::load(Some(&path)) {
        Ok(new) => new,
        Err(e) => {
            tracing::error!("configuration not reloaded, the previous one stays in force: {e}");
            return;
        }
    };
    shared.update(|broker, now| (broker.reconfigure(new.broker.clone(), now), ()));
    if let Some(gateway) = gateway {
        gateway.set_max_hold(new.gateway.max_hold);
    }
    let restart_needed = [
        (
            config.gateway.listen != new.gateway.listen,
            "[gateway] listen",
        ),
        (
            config.gateway.upstream != new.gateway.upstream,
            "[gateway] upstream",
        ),
        (config.state_file != new.state_file, "[state]"),
        (config.log != new.log, "[log]"),
    ];
    for (changed, what) in restart_needed {
        if changed {
            tracing::warn!(
                "{what} changed in {}: it takes effect at the next start",
                path.display()
            );
        }
    }
    tracing::info!(config = %path.display(), "configuration reloaded");
    *config = Config {
        gateway: config.gateway.clone(),
        state_file: config.state_file.clone(),
        log: config.log.clone(),
        ..new
    };
}

/// Lease ids start from the wall clock so that a restarted daemon does not hand out the ids of
/// leases that scripts of the previous run may still hold: ~1M ids per second of wall time. (A
/// restored state moves the start further if need be.)
fn first_lease_id(wall: SystemTime) -> u64 {
    let secs = wall
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    secs << 20
}
