//! `pacerd`'s command line: the flags, and how they override the configuration file.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::Parser;

use crate::config::{self, Config};

/// The pacer daemon: one shared rate-limit budget per account and model class for every process
/// on this machine.
#[derive(Debug, Parser)]
#[command(name = "pacerd", version)]
pub struct Args {
    /// Socket to listen on [default: $XDG_RUNTIME_DIR/pacer/pacer.sock, else a private directory
    /// under the temp dir]. Ignored when systemd hands a socket over (socket activation).
    #[arg(long, env = "PACER_SOCKET", value_name = "PATH")]
    pub socket: Option<PathBuf>,
    /// Configuration file [default: $XDG_CONFIG_HOME/pacer/config.toml, optional].
    #[arg(long, env = "PACER_CONFIG", value_name = "PATH")]
    pub config: Option<PathBuf>,
    /// Address of the HTTP gateway [default: [gateway] listen, else 127.0.0.1:4141].
    #[arg(
        long,
        env = "PACER_GATEWAY",
        value_name = "ADDR",
        conflicts_with = "no_gateway"
    )]
    pub gateway: Option<SocketAddr>,
    /// Do not serve the HTTP gateway.
    #[arg(long)]
    pub no_gateway: bool,
    /// The API the gateway forwards to [default: [gateway] upstream, else https://api.anthropic.com].
    #[arg(long, env = "PACER_UPSTREAM", value_name = "URL", value_parser = config::parse_upstream)]
    pub upstream: Option<reqwest::Url>,
    /// State file [default: [state] file, else $XDG_STATE_HOME/pacer/state].
    #[arg(long, env = "PACER_STATE", value_name = "PATH")]
    pub state: Option<PathBuf>,
    /// Log directory [default: [log] dir, else $XDG_STATE_HOME/pacer/logs].
    #[arg(long, env = "PACER_LOG_DIR", value_name = "PATH")]
    pub log_dir: Option<PathBuf>,
    /// Share budgets with the daemons of other machines through this Redis
    /// (redis://host:6379/0, rediss:// for TLS) [default: [cluster] redis, else none].
    #[arg(long, env = "PACER_REDIS", value_name = "URL", value_parser = config::parse_redis)]
    pub redis: Option<reqwest::Url>,
    /// Also log to stderr (always on when stderr is a terminal).
    #[arg(long)]
    pub log_stderr: bool,
}

impl Args {
    /// The configuration file, with the flags applied over it.
    pub fn load_config(&self) -> anyhow::Result<Config> {
        let mut config = Config::load(self.config.as_deref())?;
        if let Some(addr) = self.gateway {
            config.gateway.listen = Some(addr);
        }
        if self.no_gateway {
            config.gateway.listen = None;
        }
        if let Some(upstream) = &self.upstream {
            config.gateway.upstream = upstream.clone();
        }
        if let Some(state) = &self.state {
            config.state_file = Some(state.clone());
        }
        if let Some(dir) = &self.log_dir {
            config.log.dir = Some(dir.clone());
        }
        if let Some(redis) = &self.redis {
            config.cluster.redis = Some(redis.clone());
        }
        Ok(config)
    }
}
