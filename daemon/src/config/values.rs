//! The values a configuration file holds, each checked as it is read, so that an error names
//! what was wrong.

use std::net::SocketAddr;
use std::time::Duration;

use pacer_protocol::KeyFingerprint;
use serde::Deserialize;

/// A non-empty name (a class or a pattern).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Name(pub String);

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
pub fn fingerprint(
    text: &str,
) -> Result<KeyFingerprint, pacer_protocol::budget::InvalidFingerprint> {
    text.parse()
}

/// A URL pacerd cannot use (the gateway's upstream, a route's, Redis').
#[derive(Debug, thiserror::Error)]
pub enum BadUrl {
    #[error("the upstream URL is {0} bytes long; at most {MAX_ROUTE_URL} are taken")]
    TooLong(usize),
    #[error("`{shown}` is not a URL ({error}): expected {expected}")]
    NotAUrl {
        shown: String,
        error: String,
        expected: &'static str,
    },
    #[error("`{shown}` is not {scheme} URL with a host")]
    WrongScheme { shown: String, scheme: &'static str },
    #[error("`{shown}`: {error}")]
    Redis {
        shown: String,
        error: redis::RedisError,
    },
}

/// The longest upstream URL taken.
pub const MAX_ROUTE_URL: usize = 2048;

/// Parses an http(s) URL with a host; `expected` says what was expected, shown text of it is
/// held short and free of credentials.
pub fn http_url(text: &str, expected: &'static str) -> Result<reqwest::Url, BadUrl> {
    let shown = || match reqwest::Url::parse(text.trim()) {
        Ok(url) => shown_url(&url),
        Err(_) => text.chars().take(100).collect(),
    };
    let url = reqwest::Url::parse(text.trim()).map_err(|e| BadUrl::NotAUrl {
        shown: shown(),
        error: e.to_string(),
        expected,
    })?;
    if !matches!(url.scheme(), "http" | "https") || url.host().is_none() {
        return Err(BadUrl::WrongScheme {
            shown: shown(),
            scheme: "an http or https",
        });
    }
    Ok(url)
}

/// A name for an account tied by hand: letters, digits, `.`, `_`, `-`; `org-` is reserved for
/// organizations.
#[derive(Debug, Clone)]
pub struct AccountName(pub String);

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

/// A `tracing` filter directive, checked when the file is read.
#[derive(Debug)]
pub struct Filter(pub String);

impl<'de> Deserialize<'de> for Filter {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        tracing_subscriber::EnvFilter::try_new(&s)
            .map(|_| Filter(s.clone()))
            .map_err(|e| serde::de::Error::custom(format!("`{s}` is not a log filter: {e}")))
    }
}

/// A socket address such as `127.0.0.1:4141`.
#[derive(Debug)]
pub struct Address(pub SocketAddr);

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
pub struct UpstreamUrl(pub reqwest::Url);

impl<'de> Deserialize<'de> for UpstreamUrl {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        parse_upstream(&s)
            .map(UpstreamUrl)
            .map_err(serde::de::Error::custom)
    }
}

/// Parses the gateway's upstream: an absolute http(s) URL.
pub fn parse_upstream(text: &str) -> Result<reqwest::Url, BadUrl> {
    http_url(text, "https://host[:port]")
}

/// A positive duration: a number of seconds (`240`, `1.5`), or a string with units as the
/// command line takes them (`"4m"`, `"90s"`, `"1h30m"`, `"500ms"`).
#[derive(Debug)]
pub struct Seconds(pub Duration);

impl<'de> Deserialize<'de> for Seconds {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(SecondsVisitor)
    }
}

struct SecondsVisitor;

impl SecondsVisitor {
    fn invalid<E: serde::de::Error>(what: String) -> E {
        E::custom(format!(
            "{what} is not a duration: use a positive number of seconds, or units like \"4m\""
        ))
    }
}

impl serde::de::Visitor<'_> for SecondsVisitor {
    type Value = Seconds;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a number of seconds or a duration such as \"4m\"")
    }

    fn visit_f64<E: serde::de::Error>(self, secs: f64) -> Result<Seconds, E> {
        if secs.is_finite() && secs > 0.0 && secs < 1e9 {
            Ok(Seconds(Duration::from_secs_f64(secs)))
        } else {
            Err(Self::invalid(secs.to_string()))
        }
    }

    fn visit_i64<E: serde::de::Error>(self, secs: i64) -> Result<Seconds, E> {
        self.visit_f64(secs as f64)
    }

    fn visit_u64<E: serde::de::Error>(self, secs: u64) -> Result<Seconds, E> {
        self.visit_f64(secs as f64)
    }

    fn visit_str<E: serde::de::Error>(self, text: &str) -> Result<Seconds, E> {
        match humantime::parse_duration(text.trim()) {
            Ok(d) if !d.is_zero() && d < Duration::from_secs(1_000_000_000) => Ok(Seconds(d)),
            _ => Err(Self::invalid(format!("`{text}`"))),
        }
    }
}

/// A user allowed to use the daemon: a uid, or a user name looked up when the file is read.
#[derive(Debug, Clone, Copy)]
pub struct UserId(pub u32);

impl<'de> Deserialize<'de> for UserId {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        match NameOrId::deserialize(d)? {
            NameOrId::Id(id) => Ok(UserId(id)),
            NameOrId::Name(name) => super::users::user_id(&name)
                .map(UserId)
                .map_err(serde::de::Error::custom),
        }
    }
}

/// A group whose members may use the daemon: a gid, or a group name looked up when the file
/// is read.
#[derive(Debug, Clone, Copy)]
pub struct GroupId(pub u32);

impl<'de> Deserialize<'de> for GroupId {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        match NameOrId::deserialize(d)? {
            NameOrId::Id(id) => Ok(GroupId(id)),
            NameOrId::Name(name) => super::users::group_id(&name)
                .map(GroupId)
                .map_err(serde::de::Error::custom),
        }
    }
}

#[derive(Deserialize)]
#[serde(untagged, expecting = "a name, or a number")]
enum NameOrId {
    Id(u32),
    Name(String),
}

/// A Redis URL: `redis://` or `rediss://` (TLS), with a host.
#[derive(Debug)]
pub struct RedisUrl(pub reqwest::Url);

impl<'de> Deserialize<'de> for RedisUrl {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        parse_redis(&s)
            .map(RedisUrl)
            .map_err(serde::de::Error::custom)
    }
}

/// Parses a Redis URL: `redis://[:password@]host[:port][/db]`, or `rediss://` for TLS.
pub fn parse_redis(text: &str) -> Result<reqwest::Url, BadUrl> {
    let url = reqwest::Url::parse(text).map_err(|e| BadUrl::NotAUrl {
        shown: text.chars().take(100).collect(),
        error: e.to_string(),
        expected: "redis://host:6379/0 (rediss:// for TLS)",
    })?;
    if !matches!(url.scheme(), "redis" | "rediss") || url.host().is_none() {
        return Err(BadUrl::WrongScheme {
            shown: shown_url(&url),
            scheme: "a redis:// or rediss://",
        });
    }
    redis::Client::open(url.as_str()).map_err(|error| BadUrl::Redis {
        shown: shown_url(&url),
        error,
    })?;
    Ok(url)
}

/// A URL as it may be shown (in logs, `pacer status`, `/healthz`, error messages): without its
/// user name and password, its query string (which may carry a token) or its fragment.
pub fn shown_url(url: &reqwest::Url) -> String {
    let mut shown = url.clone();
    let _ = shown.set_username("");
    let _ = shown.set_password(None);
    shown.set_query(None);
    shown.set_fragment(None);
    shown.to_string()
}

/// A file holding a password (its first line), read when the configuration is read.
#[derive(Debug)]
pub struct PasswordFile(pub String);

impl<'de> Deserialize<'de> for PasswordFile {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let path = std::path::PathBuf::deserialize(d)?;
        #[cfg(unix)]
        if let Ok(meta) = std::fs::metadata(&path) {
            use std::os::unix::fs::PermissionsExt;
            let mode = meta.permissions().mode() & 0o777;
            if mode & 0o007 != 0 {
                // As ssh does for keys: a secret every local user can read is no secret.
                return Err(serde::de::Error::custom(format!(
                    "{} is readable or writable by every user (mode {mode:04o}): make it \
                     private with `chmod 600 {0}` (or `chmod 640 {0}` for pacerd's group)",
                    path.display()
                )));
            }
        }
        let text = std::fs::read_to_string(&path).map_err(|e| {
            serde::de::Error::custom(format!("cannot read {}: {e}", path.display()))
        })?;
        let password = text.lines().next().unwrap_or("").trim().to_owned();
        if password.is_empty() {
            return Err(serde::de::Error::custom(format!(
                "{} is empty",
                path.display()
            )));
        }
        Ok(PasswordFile(password))
    }
}

/// A size in bytes: a number, or a string with a unit (`"128MiB"`, `"64 MB"`, `"512KiB"`).
#[derive(Debug, Clone, Copy)]
pub struct ByteSize(pub usize);

impl<'de> Deserialize<'de> for ByteSize {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(
            untagged,
            expecting = "a number of bytes, or a size such as \"128MiB\""
        )]
        enum Raw {
            Bytes(u64),
            Text(String),
        }
        let bytes = match Raw::deserialize(d)? {
            Raw::Bytes(n) => Some(n),
            Raw::Text(text) => parse_size(&text),
        };
        match bytes {
            Some(n) if (1 << 20..=1 << 40).contains(&n) => Ok(ByteSize(n as usize)),
            _ => Err(serde::de::Error::custom(
                "is not a size between 1MiB and 1TiB: use bytes, or units like \"128MiB\"",
            )),
        }
    }
}

/// `128MiB`, `64 MB`, `512kib`, `1048576`: bytes, with an optional unit (KB/MB/GB are powers of
/// ten, KiB/MiB/GiB of two).
pub fn parse_size(text: &str) -> Option<u64> {
    let text = text.trim();
    let split = text
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let number: f64 = number.parse().ok()?;
    let scale: f64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1.0,
        "kb" | "k" => 1e3,
        "kib" => 1024.0,
        "mb" | "m" => 1e6,
        "mib" => 1024.0 * 1024.0,
        "gb" | "g" => 1e9,
        "gib" => 1024.0 * 1024.0 * 1024.0,
        _ => return None,
    };
    let bytes = number * scale;
    (0.0..1e15).contains(&bytes).then_some(bytes as u64)
}

/// A share of a window: a number above 0 and at most 1 (`0.8`), or a percentage (`"80%"`).
#[derive(Debug, Clone, Copy)]
pub struct Fraction(pub f64);

impl<'de> Deserialize<'de> for Fraction {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(
            untagged,
            expecting = "a fraction such as 0.8, or a percentage such as \"80%\""
        )]
        enum Raw {
            Number(f64),
            Text(String),
        }
        let value = match Raw::deserialize(d)? {
            Raw::Number(n) => Some(n),
            Raw::Text(text) => text
                .trim()
                .strip_suffix('%')
                .and_then(|n| n.trim().parse::<f64>().ok())
                .map(|n| n / 100.0),
        };
        match value {
            Some(n) if n > 0.0 && n <= 1.0 => Ok(Fraction(n)),
            _ => Err(serde::de::Error::custom(
                "is not a share of a window: use a number above 0 and at most 1 (0.8), or a \
                 percentage (\"80%\")",
            )),
        }
    }
}

/// A priority's name: `interactive`, `normal` or `batch`.
#[derive(Debug, Clone, Copy)]
pub struct PriorityName(pub pacer_protocol::Priority);

impl<'de> Deserialize<'de> for PriorityName {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        text.parse().map(PriorityName).map_err(|_| {
            serde::de::Error::custom(format!(
                "`{text}` is not a priority: use interactive, normal or batch"
            ))
        })
    }
}
