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
//! ```
//!
//! Unknown keys are errors, so a typo cannot silently leave a limit unset, and so is a limit for
//! a class no model maps to (`[limits.sonet]`). Every mistake in the file is reported at once,
//! each with the file, the line and the key.
//!
//! - this file: the settings ([`Config`]) and loading them;
//! - `read`: walking the file section by section, collecting mistakes;
//! - `raw`: the sections as written; `values`: the values, checked as they are read.

mod raw;
mod read;
mod values;

pub use values::parse_upstream;

use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::broker::BrokerConfig;

/// The environment variable naming the configuration file.
pub const CONFIG_ENV: &str = "PACER_CONFIG";

/// The top-level sections a file may have.
const SECTIONS: [&str; 7] = [
    "classes", "limits", "keys", "accounts", "gateway", "state", "log",
];
/// The classes every model maps to by default (and `count_tokens`, the gateway's own).
const DEFAULT_CLASSES: [&str; 4] = ["opus", "sonnet", "haiku", "count_tokens"];

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
    #[error("cannot read config file {}: {source}", path.display())]
    Read {
        path: PathBuf,
        source: std::io::Error,
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
        let mut reader = read::Reader::new(text);
        let mut raw = reader.read();
        check_classes(&raw, text, &mut reader);
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
            broker: raw.into_broker_config(&gateway),
            gateway,
            state_file,
            log,
            path: Some(path.to_owned()),
        })
    }
}

/// Limits for a class no model maps to are a mistake (`[limits.sonet]`): a class is one of the
/// defaults, one `[[classes]]` names, or a full model name (a class of its own), which has a
/// digit, `-`, `.` or `/` in it.
fn check_classes(raw: &raw::RawConfig, text: &str, reader: &mut read::Reader<'_>) {
    let known = raw.known_classes();
    let looks_like_a_model =
        |name: &str| name.contains(|c: char| c.is_ascii_digit() || matches!(c, '-' | '.' | '/'));
    let classes = raw
        .limits
        .keys()
        .map(|class| (format!("limits.{}", class.0), class.0.as_str()))
        .chain(raw.keys.iter().flat_map(|(key, entry)| {
            entry
                .limits
                .keys()
                .map(move |class| (format!("keys.{key}.limits.{}", class.0), class.0.as_str()))
        }));
    for (path, class) in classes {
        let lower = class.to_ascii_lowercase();
        if known.iter().any(|k| k.eq_ignore_ascii_case(class)) || looks_like_a_model(&lower) {
            continue;
        }
        let closest = known
            .iter()
            .min_by_key(|k| edit_distance(k, &lower))
            .filter(|k| edit_distance(k, &lower) <= 2);
        let hint = closest.map_or(String::new(), |k| format!(" (did you mean `{k}`?)"));
        let offset = text.find(&format!(
            "{}]",
            path.rsplit_once('.').map_or(class, |(_, c)| c)
        ));
        reader.problem(
            offset,
            path,
            format!(
                "no model maps to the class `{class}`{hint}: the classes are {}, any a \
                 [[classes]] entry names, or a full model name",
                known.join(", ")
            ),
        );
    }
}

/// How many single-character edits turn `a` into `b`.
fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut previous = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let substitution = previous + usize::from(ca != *cb);
            previous = row[j + 1];
            row[j + 1] = substitution.min(row[j] + 1).min(previous + 1);
        }
    }
    row[b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;
    use pacer_protocol::KeyFingerprint;

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
    fn an_absurd_limit_is_refused() {
        let e = error("[limits.opus]\nrpm = 18446744073709551615\n");
        assert!(
            e.contains("limits.opus.rpm") && e.contains("at most"),
            "{e}"
        );
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
    fn every_mistake_is_reported_at_once() {
        let text = "[limits.sonnet]\nrmp = 50\n\n[gateway]\nlisten = \"localhost\"\n\n[limits.opus]\nitpm = 0\n\n[oops]\nx = 1\n";
        let e = error(text);
        assert!(e.contains("4 mistakes"), "{e}");
        for part in [
            "line 2, key `limits.sonnet.rmp`",
            "line 5, key `gateway.listen`",
            "line 8, key `limits.opus.itpm`",
            "line 10, key `oops`: unknown section",
        ] {
            assert!(e.contains(part), "no `{part}` in {e}");
        }
    }

    #[test]
    fn a_class_no_model_maps_to_is_refused() {
        let e = error("[limits.sonet]\nrpm = 5\n");
        assert!(e.contains("line 1, key `limits.sonet`"), "{e}");
        assert!(e.contains("did you mean `sonnet`?"), "{e}");
        let e = error("[keys.0123456789abcdef.limits.hiaku]\nrpm = 5\n");
        assert!(e.contains("keys.0123456789abcdef.limits.hiaku"), "{e}");
        // Declared classes and model names (classes of their own) are fine.
        parse("[[classes]]\npattern = \"gpt-*\"\nclass = \"openai\"\n[limits.openai]\nrpm = 5\n[limits.\"gpt-4o\"]\nrpm = 1\n[limits.Sonnet]\nrpm = 2\n").unwrap();
    }

    #[test]
    fn durations_take_units_as_on_the_command_line() {
        let config = parse("[gateway]\nmax_hold = \"4m\"\n").unwrap();
        assert_eq!(config.gateway.max_hold, Duration::from_secs(240));
        let config = parse("[gateway]\nmax_hold = 90\n").unwrap();
        assert_eq!(config.gateway.max_hold, Duration::from_secs(90));
        let e = error("[gateway]\nmax_hold = \"soon\"\n");
        assert!(
            e.contains("gateway.max_hold") && e.contains("`soon`"),
            "{e}"
        );
        let e = error("[gateway]\nmax_hold = \"0s\"\n");
        assert!(e.contains("gateway.max_hold"), "{e}");
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
