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
//! max_hold = 240      # seconds a request may be held waiting for the budget
//! ```
//!
//! Unknown keys are errors, so a typo cannot silently leave a limit unset. Every error names the
//! file, the line and the key.

use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;
use std::num::{NonZeroU32, NonZeroU64};
use std::path::{Path, PathBuf};
use std::time::Duration;

use pacer_protocol::KeyFingerprint;
use serde::Deserialize;

use crate::broker::{AccountsConfig, BrokerConfig, LimitSet, LimitTable, ModelClasses};

/// The environment variable naming the configuration file.
pub const CONFIG_ENV: &str = "PACER_CONFIG";

/// The daemon's configuration.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Config {
    pub broker: BrokerConfig,
    pub gateway: GatewayConfig,
    /// Where state is saved across restarts; `None` keeps it in memory only. [`Config::load`] and
    /// [`Config::parse`] default it to `$XDG_STATE_HOME/pacer/state`; `Config::default()` has
    /// none (for tests and embedding).
    pub state_file: Option<PathBuf>,
    pub log: LogConfig,
    /// The file it came from, if any, for messages and reloads.
    pub path: Option<PathBuf>,
}

/// Where and what pacerd logs.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct LogConfig {
    /// The directory of the daily log files; `None` logs to stderr only.
    pub dir: Option<PathBuf>,
    /// A `tracing` filter such as `info` or `info,pacer_daemon::gateway=debug` (`RUST_LOG` wins).
    pub filter: Option<String>,
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
}

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
        }
    }
}

/// Why a configuration could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {}: {source}", path.display())]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("invalid config file {}, line {line}{}: {message}", path.display(), key_suffix(key))]
    Invalid {
        path: PathBuf,
        line: usize,
        /// The dotted path of the offending key, when known.
        key: String,
        message: String,
    },
}

fn key_suffix(key: &str) -> String {
    if key.is_empty() || key == "." {
        String::new()
    } else {
        format!(", key `{key}`")
    }
}

/// The configuration file used when none is named: `$XDG_CONFIG_HOME/pacer/config.toml`, else
/// `~/.config/pacer/config.toml`.
pub fn default_path() -> Option<PathBuf> {
    let base = std::env::var_os("XDG_CONFIG_HOME")
        .filter(|p| !p.is_empty())
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|home| PathBuf::from(home).join(".config")))?;
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
            Err(source) => Err(ConfigError::Read { path, source }),
        }
    }

    /// Parses configuration text; `path` is only used in messages.
    pub fn parse(text: &str, path: &Path) -> Result<Config, ConfigError> {
        let invalid = |offset: Option<usize>, key: String, message: String| ConfigError::Invalid {
            path: path.to_owned(),
            line: offset.map_or(1, |at| line_of(text, at)),
            key,
            message,
        };
        let deserializer = toml::de::Deserializer::parse(text)
            .map_err(|e| invalid(e.span().map(|s| s.start), String::new(), e.message().into()))?;
        let mut raw: RawConfig = serde_path_to_error::deserialize(deserializer).map_err(|e| {
            let key = e.path().to_string();
            let inner = e.into_inner();
            invalid(inner.span().map(|s| s.start), key, inner.message().into())
        })?;
        let gateway = raw.gateway.take().unwrap_or_default().into_config();
        let state = raw.state.take().unwrap_or_default();
        let state_file = match state.enabled {
            Some(false) => None,
            _ => state
                .file
                .or_else(|| pacer_protocol::endpoint::state_dir().map(|d| d.join("state"))),
        };
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
        Ok(Config {
            broker: raw.into_broker_config(gateway.max_hold),
            gateway,
            state_file,
            log,
            path: Some(path.to_owned()),
        })
    }
}

fn line_of(text: &str, offset: usize) -> usize {
    text[..offset.min(text.len())].matches('\n').count() + 1
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    #[serde(default)]
    classes: Vec<RawClass>,
    #[serde(default)]
    limits: BTreeMap<Name, RawLimits>,
    #[serde(default)]
    keys: BTreeMap<Fingerprint, RawKey>,
    gateway: Option<RawGateway>,
    state: Option<RawState>,
    log: Option<RawLog>,
    accounts: Option<RawAccounts>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawAccounts {
    group_by: Option<GroupBy>,
}

/// How keys are grouped into accounts.
#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(rename_all = "lowercase")]
enum GroupBy {
    Organization,
    Key,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawState {
    enabled: Option<bool>,
    file: Option<PathBuf>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawLog {
    enabled: Option<bool>,
    dir: Option<PathBuf>,
    filter: Option<Filter>,
}

/// A `tracing` filter directive, checked when the file is read.
#[derive(Debug)]
struct Filter(String);

impl<'de> Deserialize<'de> for Filter {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        tracing_subscriber::EnvFilter::try_new(&s)
            .map(|_| Filter(s.clone()))
            .map_err(|e| serde::de::Error::custom(format!("`{s}` is not a log filter: {e}")))
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawGateway {
    enabled: Option<bool>,
    listen: Option<Address>,
    upstream: Option<Upstream>,
    max_hold: Option<Seconds>,
}

impl RawGateway {
    fn into_config(self) -> GatewayConfig {
        let default = GatewayConfig::default();
        GatewayConfig {
            listen: match self.enabled {
                Some(false) => None,
                _ => self.listen.map(|a| a.0).or(default.listen),
            },
            upstream: self.upstream.map_or(default.upstream, |u| u.0),
            max_hold: self.max_hold.map_or(default.max_hold, |s| s.0),
        }
    }
}

/// A socket address such as `127.0.0.1:4141`.
#[derive(Debug)]
struct Address(SocketAddr);

impl<'de> Deserialize<'de> for Address {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map(Address).map_err(|_| {
            serde::de::Error::custom(format!(
                "`{s}` is not an address: expected IP:PORT, such as 127.0.0.1:4141"
            ))
        })
    }
}

/// An http or https URL.
#[derive(Debug)]
struct Upstream(reqwest::Url);

impl<'de> Deserialize<'de> for Upstream {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        parse_upstream(&s)
            .map(Upstream)
            .map_err(serde::de::Error::custom)
    }
}

/// Parses the gateway's upstream: an absolute http(s) URL.
pub fn parse_upstream(text: &str) -> Result<reqwest::Url, String> {
    let url = reqwest::Url::parse(text)
        .map_err(|e| format!("`{text}` is not a URL ({e}): expected https://host[:port]"))?;
    if !matches!(url.scheme(), "http" | "https") || url.host().is_none() {
        return Err(format!("`{text}` is not an http or https URL with a host"));
    }
    Ok(url)
}

/// A positive number of seconds.
#[derive(Debug)]
struct Seconds(Duration);

impl<'de> Deserialize<'de> for Seconds {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let secs = f64::deserialize(d)?;
        if !(secs.is_finite() && secs > 0.0 && secs < 1e9) {
            return Err(serde::de::Error::custom(format!(
                "{secs} is not a positive number of seconds"
            )));
        }
        Ok(Seconds(Duration::from_secs_f64(secs)))
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawClass {
    pattern: Name,
    class: Name,
}

#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawLimits {
    rpm: Option<NonZeroU64>,
    itpm: Option<NonZeroU64>,
    otpm: Option<NonZeroU64>,
    max_in_flight: Option<NonZeroU32>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawKey {
    #[serde(default)]
    limits: BTreeMap<Name, RawLimits>,
    /// The account this key belongs to, whatever its responses say.
    account: Option<AccountName>,
}

/// A name for an account tied by hand: letters, digits, `.`, `_`, `-`; `org-` is reserved for
/// organizations.
#[derive(Debug, Clone)]
struct AccountName(String);

impl<'de> Deserialize<'de> for AccountName {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        let valid = !s.is_empty()
            && s.len() <= 64
            && s.bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
        if !valid {
            return Err(serde::de::Error::custom(format!(
                "`{s}` is not an account name: use 1 to 64 letters, digits, `.`, `_` or `-`"
            )));
        }
        if s.starts_with(pacer_protocol::budget::ORGANIZATION_PREFIX) {
            return Err(serde::de::Error::custom(format!(
                "`{s}`: account names starting with `org-` are reserved for organizations"
            )));
        }
        Ok(AccountName(s))
    }
}

impl From<RawLimits> for LimitSet {
    fn from(raw: RawLimits) -> Self {
        LimitSet {
            rpm: raw.rpm.map(NonZeroU64::get),
            itpm: raw.itpm.map(NonZeroU64::get),
            otpm: raw.otpm.map(NonZeroU64::get),
            max_in_flight: raw.max_in_flight.map(NonZeroU32::get),
        }
    }
}

impl RawConfig {
    fn into_broker_config(self, max_hold: Duration) -> BrokerConfig {
        let classes = ModelClasses::new(
            self.classes
                .into_iter()
                .map(|c| (c.pattern.0, c.class.0))
                .collect(),
        );
        let mut limits = LimitTable::default();
        for (class, raw) in self.limits {
            limits.per_class.insert(class.0, raw.into());
        }
        let mut accounts = AccountsConfig {
            by_organization: !matches!(self.accounts.and_then(|a| a.group_by), Some(GroupBy::Key)),
            ..AccountsConfig::default()
        };
        for (key, raw) in self.keys {
            for (class, limits_for_class) in raw.limits {
                limits
                    .per_key
                    .insert((key.0, class.0), limits_for_class.into());
            }
            if let Some(account) = raw.account {
                accounts.tied.insert(key.0, account.0);
            }
        }
        BrokerConfig {
            classes,
            limits,
            accounts,
            max_hold,
            ..BrokerConfig::default()
        }
    }
}

/// A non-empty name (a class or a pattern).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct Name(String);

impl<'de> Deserialize<'de> for Name {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        let trimmed = s.trim();
        if trimmed.is_empty() {
            return Err(serde::de::Error::custom("must not be empty"));
        }
        Ok(Name(trimmed.to_owned()))
    }
}

/// A key fingerprint written as 16 hex characters.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
struct Fingerprint(KeyFingerprint);

impl<'de> Deserialize<'de> for Fingerprint {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map(Fingerprint).map_err(serde::de::Error::custom)
    }
}

impl fmt::Display for Fingerprint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Config, ConfigError> {
        Config::parse(text, Path::new("/etc/pacer.toml"))
    }

    fn error(text: &str) -> String {
        parse(text).unwrap_err().to_string()
    }

    #[test]
    fn an_empty_file_is_the_defaults() {
        let config = parse("").unwrap();
        assert_eq!(config.broker, BrokerConfig::default());
    }

    #[test]
    fn a_full_file() {
        let text = r#"
[[classes]]
pattern = "claude-3-7-*"
class = "sonnet"

[limits.sonnet]
rpm = 50
itpm = 30000
otpm = 8000
max_in_flight = 8

[keys.0123456789abcdef.limits.sonnet]
rpm = 4000
"#;
        let config = parse(text).unwrap();
        let broker = &config.broker;
        assert_eq!(broker.classes.classify("claude-3-7-foo"), "sonnet");
        let key: KeyFingerprint = "0123456789abcdef".parse().unwrap();
        let limits = broker.limits.for_budget(key, "sonnet");
        assert_eq!(limits.rpm, Some(4000));
        assert_eq!(limits.itpm, Some(30_000));
        assert_eq!(limits.max_in_flight, Some(8));
        assert_eq!(
            broker
                .limits
                .for_budget(KeyFingerprint::of("x"), "sonnet")
                .rpm,
            Some(50)
        );
    }

    #[test]
    fn a_misspelt_key_is_named_with_its_line() {
        let e = error("[limits.sonnet]\nrpm = 50\nrmp = 10\n");
        assert!(e.contains("/etc/pacer.toml"), "{e}");
        assert!(e.contains("line 3"), "{e}");
        assert!(e.contains("rmp"), "{e}");
    }

    #[test]
    fn a_zero_limit_is_refused() {
        let e = error("[limits.opus]\n\nitpm = 0\n");
        assert!(e.contains("line 3"), "{e}");
        assert!(e.contains("limits.opus.itpm"), "{e}");
        assert!(e.contains("nonzero"), "{e}");
    }

    #[test]
    fn a_wrong_type_is_refused() {
        let e = error("[limits.opus]\nrpm = \"fast\"\n");
        assert!(e.contains("line 2"), "{e}");
        assert!(e.contains("limits.opus.rpm"), "{e}");
    }

    #[test]
    fn a_bad_fingerprint_is_refused() {
        let e = error("\n[keys.sk-ant-123.limits.sonnet]\nrpm = 1\n");
        assert!(e.contains("line 2"), "{e}");
        assert!(e.contains("16 hexadecimal"), "{e}");
    }

    #[test]
    fn an_empty_class_name_is_refused() {
        let e = error("[[classes]]\npattern = \"gpt-*\"\nclass = \" \"\n");
        assert!(e.contains("line 3"), "{e}");
        assert!(e.contains("classes[0].class"), "{e}");
    }

    #[test]
    fn gateway_settings() {
        let config = parse("[gateway]\nlisten = \"127.0.0.1:0\"\nupstream = \"http://localhost:9000/api\"\nmax_hold = 1.5\n").unwrap();
        assert_eq!(config.gateway.listen, Some("127.0.0.1:0".parse().unwrap()));
        assert_eq!(
            config.gateway.upstream.as_str(),
            "http://localhost:9000/api"
        );
        assert_eq!(config.gateway.max_hold, Duration::from_millis(1500));
        let disabled = parse("[gateway]\nenabled = false\n").unwrap();
        assert_eq!(disabled.gateway.listen, None);
        assert_eq!(parse("").unwrap().gateway, GatewayConfig::default());
    }

    #[test]
    fn bad_gateway_settings_are_named() {
        let e = error("[gateway]\nlisten = \"localhost\"\n");
        assert!(e.contains("gateway.listen") && e.contains("IP:PORT"), "{e}");
        let e = error("[gateway]\nupstream = \"ftp://x\"\n");
        assert!(e.contains("gateway.upstream"), "{e}");
        let e = error("[gateway]\nmax_hold = -1\n");
        assert!(e.contains("gateway.max_hold"), "{e}");
    }

    #[test]
    fn state_and_log_settings() {
        let config = parse("[state]\nfile = \"/var/lib/pacer/state\"\n[log]\ndir = \"/var/log/pacer\"\nfilter = \"debug\"\n").unwrap();
        assert_eq!(
            config.state_file,
            Some(PathBuf::from("/var/lib/pacer/state"))
        );
        assert_eq!(config.log.dir, Some(PathBuf::from("/var/log/pacer")));
        assert_eq!(config.log.filter.as_deref(), Some("debug"));
        let off = parse("[state]\nenabled = false\n[log]\nenabled = false\n").unwrap();
        assert_eq!((off.state_file, off.log.dir), (None, None));
        let e = error("[log]\nfilter = \"info,[[\"\n");
        assert!(e.contains("log.filter"), "{e}");
    }

    #[test]
    fn accounts_settings() {
        let config = parse("[accounts]\ngroup_by = \"key\"\n[keys.0123456789abcdef]\naccount = \"team\"\n[gateway]\nmax_hold = 30\n").unwrap();
        let accounts = &config.broker.accounts;
        assert!(!accounts.by_organization);
        let key: KeyFingerprint = "0123456789abcdef".parse().unwrap();
        assert_eq!(accounts.tied.get(&key).map(String::as_str), Some("team"));
        assert_eq!(config.broker.max_hold, Duration::from_secs(30));
        assert!(parse("").unwrap().broker.accounts.by_organization);
        let e = error("[accounts]\ngroup_by = \"team\"\n");
        assert!(e.contains("accounts.group_by"), "{e}");
        let e = error("[keys.0123456789abcdef]\naccount = \"org-x\"\n");
        assert!(e.contains("reserved"), "{e}");
        let e = error("[keys.0123456789abcdef]\naccount = \"my team\"\n");
        assert!(e.contains("keys.0123456789abcdef.account"), "{e}");
    }

    #[test]
    fn broken_toml_is_refused_with_its_line() {
        let e = error("[limits.sonnet]\nrpm = = 5\n");
        assert!(e.contains("line 2"), "{e}");
    }

    #[test]
    fn an_explicit_missing_file_is_an_error_but_the_default_one_is_not() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("nope.toml");
        let e = Config::load(Some(&missing)).unwrap_err().to_string();
        assert!(e.contains("nope.toml"), "{e}");
    }
}
