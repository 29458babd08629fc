//! Arguments several commands share: where the API key comes from, and durations.

use std::time::Duration;

use anyhow::Context;
use pacer_client::KeyFingerprint;

/// Where the API key comes from.
#[derive(Debug, clap::Args)]
pub struct KeyArgs {
    /// The environment variable holding the API key.
    #[arg(long, value_name = "VAR", default_value = "ANTHROPIC_API_KEY")]
    api_key_env: String,
}

impl KeyArgs {
    /// The key's fingerprint; the key itself goes no further than this process.
    pub fn fingerprint(&self) -> anyhow::Result<KeyFingerprint> {
        Ok(KeyFingerprint::of(&self.value()?))
    }

    /// The key itself (for `pacer probe`, which calls the API with it).
    pub fn value(&self) -> anyhow::Result<String> {
        let key = std::env::var(&self.api_key_env).with_context(|| {
            format!(
                "${} is not set: pacer needs the API key to know which budget to use \
                 (only its fingerprint leaves this process)",
                self.api_key_env
            )
        })?;
        anyhow::ensure!(!key.trim().is_empty(), "${} is empty", self.api_key_env);
        Ok(key.trim().to_owned())
    }
}

/// A command-line value `pacer` cannot take.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum BadValue {
    #[error("`{0}` is not a duration: it must be zero or more seconds")]
    NegativeDuration(String),
    #[error("`{text}` is not a duration ({error}): use seconds, or units like 30s, 2m")]
    Duration {
        text: String,
        error: humantime::DurationError,
    },
    #[error(
        "`{0}` is not a lease id: `pacer acquire` prints one (a number, 0 when it went unpaced)"
    )]
    Lease(String),
    #[error("`{0}` is not a size: use COLSxROWS, such as 100x30")]
    Size(String),
}

/// Parses a duration: plain seconds (`30`, `1.5`) or with units (`2m`, `1h30m`, `500ms`).
pub fn parse_duration(text: &str) -> Result<Duration, BadValue> {
    let text = text.trim();
    if let Ok(secs) = text.parse::<f64>() {
        return if secs.is_finite() && secs >= 0.0 {
            Ok(Duration::from_secs_f64(secs))
        } else {
            Err(BadValue::NegativeDuration(text.to_owned()))
        };
    }
    humantime::parse_duration(text).map_err(|error| BadValue::Duration {
        text: text.to_owned(),
        error,
    })
}
