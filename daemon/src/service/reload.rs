//! SIGHUP: the configuration file read again. New limits and classes apply at once to every
//! budget, and `[access]` to every new connection, without dropping a connection or a waiter;
//! an invalid file is refused and the old one stays in force. What needs new sockets or files (`[gateway] listen`/`upstream`, `[state]`,
//! `[log]`, `[metrics]`) waits for the next start, and the log says so.

use std::sync::Arc;

use crate::config::Config;
use crate::gateway::Gateway;
use crate::hub::Hub;
use crate::server::access::Policy;

/// Re-reads the configuration file; new limits and classes apply at once to every budget,
/// without dropping a connection or a waiter. An invalid file is refused, the old one stays.
pub fn reload(config: &mut Config, hub: &Hub, access: &Policy, gateway: Option<&Arc<Gateway>>) {
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
    hub.update(|broker, now| (broker.reconfigure(new.broker.clone(), now), ()));
    access.reconfigure(new.access.clone());
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
        (config.metrics != new.metrics, "[metrics]"),
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
        metrics: config.metrics,
        ..new
    };
}
