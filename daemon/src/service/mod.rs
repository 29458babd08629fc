//! The composition root: [`run`] builds the daemon from its parts, serves until told to stop,
//! and takes it down in order. `pacerd` and the tests call it alike.
//!
//! - this file: [`Setup`] and [`run`];
//! - `control`: stop / reload commands and readiness ([`control()`], [`forward_signals`]);
//! - `listeners`: claiming the socket and the gateway's port (or taking them from systemd);
//! - [`process`]: the umask, the open files limit, and how many connections each listener takes;
//! - `activation`: the sockets systemd hands over (Unix);
//! - `reload`: SIGHUP's new configuration, applied without dropping anyone;
//! - `saver`: the state file kept current;
//! - `notify`: READY, STOPPING, STATUS and watchdog pings for systemd;
//! - `logging`: the daily log files and stderr.

#[cfg(unix)]
pub mod activation;
mod control;
mod listeners;
pub mod logging;
mod notify;
pub mod process;
mod reload;
mod saver;

pub use control::{Command, Control, Controller, Ready, control, forward_signals};
pub use listeners::Inherited;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use pacer_protocol::message::GatewayInfo;
use tokio_util::task::TaskTracker;

use crate::accept::Shutdown;
use crate::config::Config;
use crate::gateway::Gateway;
use crate::hub::{self, Hub};
use crate::server::Server;
use crate::server::access::Policy;
use pacer_broker::{Broker, Calibration, TimeBase};

/// How long calls in flight get to report when the daemon stops.
pub const STOP_GRACE: Duration = Duration::from_secs(10);

/// What to run.
pub struct Setup {
    pub config: Config,
    /// The socket to listen on; `None`: the default endpoint. Ignored when the service manager
    /// hands one over.
    pub socket: Option<PathBuf>,
    /// Sockets handed over by the service manager (socket activation).
    pub inherited: Inherited,
}

impl Setup {
    /// A daemon with this configuration on this socket.
    pub fn new(config: Config, socket: Option<PathBuf>) -> Setup {
        Setup {
            config,
            socket,
            inherited: Inherited::default(),
        }
    }
}

/// Serves pacer's protocol, and the HTTP gateway if configured, until told to stop.
///
/// On start, the listeners are claimed and the state file is loaded; readiness is announced on
/// `control`. [`Command::Reload`] re-reads the configuration file (an invalid one is refused and
/// logged; the old one stays in force). [`Command::Stop`] (or every controller dropped) stops
/// accepting, answers waiting acquires "stopping", gives calls in flight up to [`STOP_GRACE`]
/// to report, saves the state and returns.
pub async fn run(mut setup: Setup, mut control: Control) -> anyhow::Result<()> {
    // The socket first: a second daemon on the same socket is told "already running" by it.
    let listeners = listeners::claim(&mut setup).await?;
    let _state_lock = match &setup.config.state_file {
        Some(path) => {
            crate::persist::private_dir(crate::persist::dir_of(path)).map_err(|e| {
                anyhow::anyhow!("cannot keep the state file {}: {e}", path.display())
            })?;
            Some(crate::persist::lock(path).map_err(anyhow::Error::msg)?)
        }
        None => None,
    };

    let mut config = setup.config;
    match &config.path {
        Some(path) if path.exists() => {
            tracing::info!(config = %path.display(), "configuration loaded")
        }
        _ => tracing::info!("no configuration file: limits will be learned from response headers"),
    }
    let gateway_addr = match &listeners.gateway {
        Some(listener) => Some(listener.local_addr()?),
        None => None,
    };
    let gateway_info = GatewayInfo {
        listen: gateway_addr.map(|addr| addr.to_string()),
        upstream: crate::config::shown_url(&config.gateway.upstream),
    };
    let hub = Arc::new(restore(&config, gateway_info.clone()));

    // `draining` stops new work; `closing` ends every task; `tasks` waits for them all.
    let shutdown = Shutdown::default();
    let tasks = TaskTracker::new();
    let mut timer = tokio::spawn(hub::drive_timer(hub.clone(), shutdown.closing.clone()));
    if let Some(url) = config.cluster.url() {
        let (cluster, closing) = (config.cluster.clone(), shutdown.closing.clone());
        crate::cluster::start(url, cluster, hub.clone(), closing, &tasks).await?;
    }
    if let Some(path) = config.state_file.clone() {
        tasks.spawn(saver::keep_saved(
            hub.clone(),
            path,
            shutdown.closing.clone(),
        ));
    }
    tasks.spawn(notify::keep_alive(hub.clone(), shutdown.closing.clone()));
    let (alerts, alerts_config) = tokio::sync::watch::channel(config.alerts.clone());
    tasks.spawn(crate::alerts::alert_task(
        hub.clone(),
        alerts_config,
        process::utc_offset(),
        shutdown.closing.clone(),
    ));
    let access = Arc::new(Policy::for_this_process(config.access.clone()));
    let server = Server {
        hub: hub.clone(),
        access: access.clone(),
        max_connections: listeners.caps.socket,
    };
    tasks.spawn(crate::server::serve(
        listeners.socket,
        server,
        shutdown.clone(),
    ));
    let gateway = match listeners.gateway {
        Some(listener) => {
            tracing::info!(
                listen = gateway_info.listen.as_deref().unwrap_or_default(),
                upstream = %gateway_info.upstream,
                "HTTP gateway listening"
            );
            let gateway = Gateway::new(hub.clone(), &config.gateway, config.metrics)?;
            tasks.spawn(crate::gateway::serve(
                listener,
                gateway.clone(),
                listeners.caps.gateway,
                shutdown.clone(),
            ));
            Some(gateway)
        }
        None => None,
    };
    tracing::info!(
        socket = listeners.socket_name,
        version = env!("CARGO_PKG_VERSION"),
        "pacerd listening"
    );
    notify::ready(&hub);
    let ready = Ready {
        socket: listeners.socket_name,
        socket_path: listeners.socket_path,
        gateway: gateway_addr,
        upstream: gateway_info.upstream,
    };
    if std::io::IsTerminal::is_terminal(&std::io::stderr()) {
        eprint!("{}", notify::next_steps(&ready, config.log.dir.as_deref()));
    }
    control.announce(ready);

    loop {
        tokio::select! {
            ended = &mut timer => {
                // Without its timer no waiter would ever be served: better to exit and be
                // restarted than to hang every client.
                anyhow::bail!("the broker's timer stopped unexpectedly: {ended:?}");
            }
            command = control.next() => match command {
                Some(Command::Reload) => {
                    reload::reload(&mut config, &hub, &access, gateway.as_ref());
                    alerts.send_replace(config.alerts.clone());
                }
                Some(Command::Stop) | None => break,
            },
        }
    }

    tracing::info!("stopping: waiting acquires are told so; calls in flight may still report");
    notify::stopping();
    shutdown.draining.cancel();
    hub.stop();
    if tokio::time::timeout(STOP_GRACE, hub.settled())
        .await
        .is_err()
    {
        let unsettled = hub.leases_in_flight();
        tracing::warn!("{unsettled} calls in flight did not report within {STOP_GRACE:?}");
    }
    shutdown.closing.cancel();
    tasks.close();
    tasks.wait().await;
    let _ = timer.await;
    if let Some(path) = &config.state_file {
        saver::save_now(&hub, path).await;
    }
    tracing::info!("stopped");
    Ok(())
}

/// The hub with a fresh broker, and what the state file remembers.
fn restore(config: &Config, gateway: GatewayInfo) -> Hub {
    let time_base = TimeBase {
        instant: hub::now(),
        wall: SystemTime::now(),
    };
    let mut broker = Broker::new(
        config.broker.clone(),
        time_base,
        first_lease_id(time_base.wall),
    );
    broker.set_utc_offset(process::utc_offset());
    let mut calibration = Calibration::default();
    let mut routes = Vec::new();
    if let Some(path) = &config.state_file
        && let Some(saved) = crate::persist::load(path)
    {
        broker.restore(
            saved.broker,
            saved.saved_at,
            time_base.instant,
            time_base.wall,
        );
        calibration = saved.calibration.sane();
        routes = saved.routes;
        tracing::info!(path = %path.display(), "state restored");
    }
    let hub = Hub::new(broker, calibration, gateway);
    hub.restore_routes(routes);
    hub
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
