//! pacerd's configuration file.
//!
//! TOML, optional, every section optional:
//!
//! ```toml
//! # Model classes: tried in order before the defaults (*opus*, *sonnet*, *haiku*).
//! [[classes]]
//! pattern = "claude-3-7-*"
//! class = "sonnet"
//!
//! # Limits per model class, for every key. Anything left out is learned from response headers.
//! [limits.sonnet]
//! rpm = 50
//! itpm = 30000
//! otpm = 8000
//! max_in_flight = 8
//!
//! # Limits for one key (its fingerprint: `pacer key-id`) and class; they win over the above.
//! [keys.0123456789abcdef.limits.sonnet]
//! rpm = 4000
//!
//! # Keys join their organization's account (`anthropic-organization-id`) and share its
//! # budgets; "key" gives every key budgets of its own.
//! [accounts]
//! group_by = "organization"
//!
//! # Tie a key to a named account by hand (e.g. behind a proxy that strips the header).
//! [keys.fedcba9876543210]
//! account = "team"
//!
//! # The local HTTP gateway that `pacer run` points ANTHROPIC_BASE_URL at.
//! [gateway]
//! enabled = true
//! listen = "127.0.0.1:4141"
//! upstream = "https://api.anthropic.com"
//! max_hold = "4m"     # how long a request may be held waiting for the budget (or seconds)
//! max_buffered = "128MiB"  # memory gated request bodies may hold together
//! allow_non_loopback = false  # the gateway has no authentication: loopback only by default
//!
//! # Budgets shared with the daemons of other machines through Redis (also --redis URL).
//! [cluster]
//! redis = "redis://redis.internal:6379/0"   # rediss:// for TLS
//! password_file = "/etc/pacer/redis-password"
//! prefix = "pacer"
//! on_unavailable = "local"   # or "closed"
//! lease_ttl = "30s"
//!
//! # How far each priority may bring a subscription's windows (5h, 7d, per model).
//! [windows]
//! batch = 0.8           # batch calls stop at 80 % of every window (interactive: all of it)
//! normal = 1.0          # normal calls are not held unless set lower (never above batch)
//! pace = false          # true: below interactive, keep on pace with the window's time
//! overage = ["interactive"]  # who may spend extra usage once a window is spent
//!
//! # `GET /metrics` on the gateway's address (Prometheus).
//! [metrics]
//! enabled = true
//!
//! # Who may use the socket besides pacerd's own user and root (a system-wide daemon).
//! [access]
//! allow_groups = ["pacer"]   # names or gids
//! allow_uids = [1001]        # names or uids
//! ```
//!
//! Unknown keys are errors, so a typo cannot silently leave a limit unset, and so is a limit for
//! a class no model maps to (`[limits.sonet]`). Every mistake in the file is reported at once,
//! each with the file, the line and the key.
//!
//! - this file: the settings ([`Config`]) and loading them;
//! - `read`: walking the file section by section, collecting mistakes;
//! - `raw`: the sections as written; `values`: the values, checked as they are read;
//! - `check`: checks across sections; `users`: user and group names looked up.

mod check;
mod raw;
mod read;
mod users;
mod values;

pub use values::{BadUrl, MAX_ROUTE_URL, http_url, parse_redis, parse_upstream, shown_url};

use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use pacer_broker::BrokerConfig;

/// The environment variable naming the configuration file.
pub const CONFIG_ENV: &str = "PACER_CONFIG";

/// The top-level sections a file may have.
const SECTIONS: [&str; 12] = [
    "classes", "limits", "keys", "accounts", "gateway", "state", "log", "access", "metrics",
    "cluster", "windows", "alerts",
];
/// The classes every model maps to by default (and `count_tokens`, the gateway's own).
const DEFAULT_CLASSES: [&str; 4] = ["opus", "sonnet", "haiku", "count_tokens"];

/// The daemon's configuration.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    pub broker: BrokerConfig,
    pub gateway: GatewayConfig,
    /// Where state is saved across restarts; `None` keeps it in memory only. [`Config::load`] and
    /// [`Config::parse`] default it to `$XDG_STATE_HOME/pacer/state`; `Config::default()` has
    /// none (for tests and embedding).
    pub state_file: Option<PathBuf>,
    pub log: LogConfig,
    pub access: AccessConfig,
    /// Whether the gateway answers `GET /metrics`.
    pub metrics: bool,
    /// Budgets shared with other daemons through Redis (when `redis` is set).
    pub cluster: ClusterConfig,
    /// Who is told when a window crosses a threshold, a pause or lockout starts, batch work is
    /// held or a client burns a window fast (`[alerts]`).
    pub alerts: AlertsConfig,
    /// The file it came from, if any, for messages and reloads.
    pub path: Option<PathBuf>,
    /// What the file itself said of the settings a reload cannot change (before the flags and
    /// the environment had their say), to tell on SIGHUP which of them the file changed.
    pub from_file: FileSettings,
}

/// The settings that take effect only at the next start, as the file says them.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct FileSettings {
    pub listen: Option<SocketAddr>,
    pub upstream: Option<reqwest::Url>,
    pub state_file: Option<PathBuf>,
    pub log: LogConfig,
    pub metrics: bool,
    pub cluster: Option<reqwest::Url>,
}

/// Where budgets are shared, and how.
#[derive(Debug, Clone, PartialEq)]
pub struct ClusterConfig {
    /// `redis://` or `rediss://` (TLS); `None`: budgets are this daemon's own.
    pub redis: Option<reqwest::Url>,
    /// From `password_file`, for a URL that carries none.
    pub password: Option<String>,
    /// The prefix of every key and of the channel.
    pub prefix: String,
    /// What to do while Redis is unreachable.
    pub on_unavailable: OnUnavailable,
    /// How long an in-flight slot outlives its daemon (renewed while the daemon lives).
    pub lease_ttl: Duration,
}

impl Default for ClusterConfig {
    fn default() -> Self {
        ClusterConfig {
            redis: None,
            password: None,
            prefix: "pacer".into(),
            on_unavailable: OnUnavailable::Local,
            lease_ttl: Duration::from_secs(30),
        }
    }
}

impl ClusterConfig {
    /// The URL to connect to: `redis` with the password from `password_file` if it has none.
    pub fn url(&self) -> Option<reqwest::Url> {
        let mut url = self.redis.clone()?;
        if url.password().is_none()
            && let Some(password) = &self.password
        {
            let _ = url.set_password(Some(password));
        }
        Some(url)
    }
}

/// What a daemon does while Redis is unreachable.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OnUnavailable {
    /// Serve from a local share: the limits divided by the daemons seen recently.
    Local,
    /// Grant nothing until Redis is back (acquires wait out their deadlines).
    Closed,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            broker: BrokerConfig::default(),
            gateway: GatewayConfig::default(),
            state_file: None,
            log: LogConfig::default(),
            access: AccessConfig::default(),
            metrics: true,
            cluster: ClusterConfig::default(),
            alerts: AlertsConfig::default(),
            path: None,
            from_file: FileSettings::default(),
        }
    }
}

/// `[alerts]`: where alerts go, and which are sent.
#[derive(Debug, Clone, PartialEq)]
pub struct AlertsConfig {
    /// The window shares whose crossing is told (each once per crossing).
    pub thresholds: Vec<f64>,
    /// Run with `sh -c`, the facts in `PACER_*` environment variables.
    pub command: Option<String>,
    /// POSTed a JSON object (Slack's `{"text": …}` with `slack`).
    pub webhook: Option<reqwest::Url>,
    pub slack: bool,
    /// A desktop notification (`notify-send` on Linux, `osascript` on macOS).
    pub desktop: bool,
    /// A pause told when it is longer than this.
    pub pause_over: Duration,
    /// A client told when it spends a window faster than this share of it per hour.
    pub runaway_per_hour: Option<f64>,
    /// At most this many alerts a minute, per destination; the rest are counted in the log.
    pub max_per_minute: u32,
}

impl Default for AlertsConfig {
    fn default() -> Self {
        AlertsConfig {
            thresholds: vec![0.75, 0.9, 1.0],
            command: None,
            webhook: None,
            slack: false,
            desktop: false,
            pause_over: Duration::from_secs(60),
            runaway_per_hour: None,
            max_per_minute: 6,
        }
    }
}

impl AlertsConfig {
    /// Whether any destination is set.
    pub fn enabled(&self) -> bool {
        self.command.is_some() || self.webhook.is_some() || self.desktop
    }
}

/// Where and what pacerd logs.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct LogConfig {
    /// The directory of the daily log files; `None` logs to stderr only.
    pub dir: Option<PathBuf>,
    /// A `tracing` filter such as `info` or `info,pacer_daemon::gateway=debug` (`RUST_LOG` wins).
    pub filter: Option<String>,
}

/// Who may connect to the socket, besides the daemon's own user and root.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AccessConfig {
    pub allow_uids: Vec<u32>,
    /// Users whose primary or supplementary groups include one of these.
    pub allow_gids: Vec<u32>,
}

/// The HTTP gateway's settings.
#[derive(Debug, Clone, PartialEq)]
pub struct GatewayConfig {
    /// Where to listen; `None` disables the gateway.
    pub listen: Option<SocketAddr>,
    /// The API to forward to.
    pub upstream: reqwest::Url,
    /// How long a request may be held (waiting for a permit, or for a 429's pause to pass)
    /// before the gateway answers 429 itself.
    pub max_hold: Duration,
    /// Whether the gateway may listen on an address other than loopback (it has no
    /// authentication: anyone who reaches it spends the keys sent through it).
    pub allow_non_loopback: bool,
    /// The most memory the bodies of gated requests may hold together while they are read and
    /// held (each is kept whole, to find its model and to send it again after a 429); past it,
    /// new requests get a 503 with `retry-after`.
    pub max_buffered: usize,
}

/// How much memory gated request bodies may hold together, by default: four bodies of the API's
/// largest size, or hundreds of Claude Code's.
pub const DEFAULT_MAX_BUFFERED: usize = 128 << 20;
/// The gateway's default address.
pub const DEFAULT_GATEWAY_LISTEN: &str = "127.0.0.1:4141";
/// The API the gateway forwards to by default.
pub const DEFAULT_UPSTREAM: &str = "https://api.anthropic.com";

impl Default for GatewayConfig {
    fn default() -> Self {
        Self {
            listen: Some(DEFAULT_GATEWAY_LISTEN.parse().expect("a valid address")),
            upstream: DEFAULT_UPSTREAM.parse().expect("a valid URL"),
            max_hold: Duration::from_secs(240),
            allow_non_loopback: false,
            max_buffered: DEFAULT_MAX_BUFFERED,
        }
    }
}

/// One mistake in a configuration file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    pub line: usize,
    /// The dotted path of the offending key, when known.
    pub key: String,
    pub message: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "line {}", self.line)?;
        if !self.key.is_empty() && self.key != "." {
            write!(f, ", key `{}`", self.key)?;
        }
        write!(f, ": {}", self.message)
    }
}

/// Why a configuration could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    // The OS error is part of the message, not a separate cause, so that it is said once.
    #[error("cannot read config file {}: {error}", path.display())]
    Read {
        path: PathBuf,
        error: std::io::Error,
    },
    #[error("invalid config file {}{}", path.display(), describe(problems))]
    Invalid {
        path: PathBuf,
        /// Every mistake found, in the order of the file.
        problems: Vec<Problem>,
    },
}

fn describe(problems: &[Problem]) -> String {
    match problems {
        [one] => format!(", {one}"),
        many => {
            let mut text = format!(": {} mistakes", many.len());
            for problem in many {
                text.push_str(&format!("\n  {problem}"));
            }
            text
        }
    }
}

/// The configuration file used when none is named: `$XDG_CONFIG_HOME/pacer/config.toml`, else
/// `~/.config/pacer/config.toml`.
pub fn default_path() -> Option<PathBuf> {
    let base = std::env::var_os("XDG_CONFIG_HOME")
        .filter(|p| !p.is_empty())
        .map(PathBuf::from)
        .or_else(|| pacer_protocol::endpoint::home_dir().map(|home| home.join(".config")))?;
    Some(base.join("pacer").join("config.toml"))
}

impl Config {
    /// Loads the configuration. A file named explicitly (`--config` or `$PACER_CONFIG`) must
    /// exist; the default file is optional, and its absence gives the defaults.
    pub fn load(explicit: Option<&Path>) -> Result<Config, ConfigError> {
        let (path, required) = match explicit {
            Some(path) => (path.to_owned(), true),
            None => match default_path() {
                Some(path) => (path, false),
                None => return Ok(Config::default()),
            },
        };
        match std::fs::read_to_string(&path) {
            Ok(text) => Config::parse(&text, &path),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && !required => {
                let mut config = Config::parse("", &path)?;
                config.path = Some(path);
                Ok(config)
            }
            Err(error) => Err(ConfigError::Read { path, error }),
        }
    }

    /// Parses configuration text; `path` is only used in messages.
    pub fn parse(text: &str, path: &Path) -> Result<Config, ConfigError> {
        let mut reader = read::Reader::new(text);
        let mut raw = reader.read();
        check::check_classes(&raw, text, &mut reader);
        check::check_windows(&raw, text, &mut reader);
        check::check_alerts(&raw, text, &mut reader);
        if !reader.problems.is_empty() {
            let mut problems = reader.problems;
            problems.sort_by_key(|p| p.line);
            return Err(ConfigError::Invalid {
                path: path.to_owned(),
                problems,
            });
        }
        let gateway = raw.gateway.take().unwrap_or_default().into_config();
        let state = raw.state.take().unwrap_or_default();
        let state_file = match state.enabled {
            Some(false) => None,
            _ => state
                .file
                .or_else(|| pacer_protocol::endpoint::state_dir().map(|d| d.join("state"))),
        };
        let access = raw
            .access
            .take()
            .map(AccessConfig::from)
            .unwrap_or_default();
        let metrics = raw.metrics.take().and_then(|m| m.enabled).unwrap_or(true);
        let cluster = raw.cluster.take().unwrap_or_default().into_config();
        let alerts = raw.alerts.take().unwrap_or_default().into_config();
        let log = raw.log.take().unwrap_or_default();
        let log = LogConfig {
            dir: match log.enabled {
                Some(false) => None,
                _ => log
                    .dir
                    .or_else(|| pacer_protocol::endpoint::state_dir().map(|d| d.join("logs"))),
            },
            filter: log.filter.map(|f| f.0),
        };
        let from_file = FileSettings {
            listen: gateway.listen,
            upstream: Some(gateway.upstream.clone()),
            state_file: state_file.clone(),
            log: log.clone(),
            metrics,
            cluster: cluster.redis.clone(),
        };
        Ok(Config {
            broker: raw.into_broker_config(&gateway),
            gateway,
            state_file,
            log,
            access,
            metrics,
            cluster,
            alerts,
            path: Some(path.to_owned()),
            from_file,
        })
    }
}

#[cfg(test)]
mod tests;
