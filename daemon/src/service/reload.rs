//! SIGHUP: the configuration file read again. New limits and classes apply at once to every
//! budget, and `[access]` to every new connection, without dropping a connection or a waiter;
//! an invalid file is refused and the old one stays in force. What needs new sockets, files or
//! connections (`[gateway] listen`/`upstream`, `[state]`, `[log]`, `[metrics]`, `[cluster]`)
//! waits for the next start, and the log says which changed in the file.

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
    // What the file says now against what it said before: a value that came from a flag or
    // the environment is not the file's to change.
    let (old, file) = (&config.from_file, &new.from_file);
    let restart_needed = [
        (old.listen != file.listen, "[gateway] listen"),
        (old.upstream != file.upstream, "[gateway] upstream"),
        (old.state_file != file.state_file, "[state]"),
        (old.log != file.log, "[log]"),
        (old.metrics != file.metrics, "[metrics]"),
        (old.cluster != file.cluster, "[cluster] redis"),
    ];
    for (changed, what) in restart_needed {
        if changed {
            tracing::warn!(
                "{what} changed in {}: it takes effect at the next start",
                path.display()
            );
        }
    }
    if config.cluster.prefix != new.cluster.prefix
        || config.cluster.on_unavailable != new.cluster.on_unavailable
        || config.cluster.lease_ttl != new.cluster.lease_ttl
        || config.cluster.password != new.cluster.password
    {
        tracing::warn!(
            "[cluster] changed in {} (prefix, on_unavailable, lease_ttl or password_file): it \
             takes effect at the next start",
            path.display()
        );
    }
    tracing::info!(config = %path.display(), "configuration reloaded");
    *config = Config {
        gateway: config.gateway.clone(),
        state_file: config.state_file.clone(),
        log: config.log.clone(),
        metrics: config.metrics,
        cluster: config.cluster.clone(),
        ..new
    };
}
