//! The names a budget is filed under.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// Identifies an API key without revealing it: the first 8 bytes (16 hex characters) of the key's
/// SHA-256. Clients compute it in their own process, so the key itself never reaches the socket,
/// the daemon's memory, its logs or its state file.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct KeyFingerprint([u8; 8]);

impl KeyFingerprint {
    /// Fingerprints an API key (or OAuth token).
    pub fn of(api_key: &str) -> Self {
        let digest = Sha256::digest(api_key.trim().as_bytes());
        let mut bytes = [0; 8];
        bytes.copy_from_slice(&digest[..8]);
        Self(bytes)
    }

    /// The fingerprint used when a caller has no key at all (a local model server, say): all such
    /// callers share one budget per model class.
    pub const ANONYMOUS: Self = Self([0; 8]);
}

impl fmt::Display for KeyFingerprint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.iter().try_for_each(|b| write!(f, "{b:02x}"))
    }
}

impl fmt::Debug for KeyFingerprint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "KeyFingerprint({self})")
    }
}

/// Why a string is not a key fingerprint.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("`{0}` is not a key fingerprint: expected 16 hexadecimal characters (see `pacer key-id`)")]
pub struct InvalidFingerprint(pub String);

impl FromStr for KeyFingerprint {
    type Err = InvalidFingerprint;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let invalid = || InvalidFingerprint(s.to_owned());
        if s.len() != 16 || !s.is_ascii() {
            return Err(invalid());
        }
        let mut bytes = [0; 8];
        for (i, byte) in bytes.iter_mut().enumerate() {
            *byte = u8::from_str_radix(&s[2 * i..2 * i + 2], 16).map_err(|_| invalid())?;
        }
        Ok(Self(bytes))
    }
}

/// Whose budget it is: one API key's, or an account's — an organization whose keys all share its
/// limits (named by [`organization_label`]), or keys tied together in the configuration.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum BudgetOwner {
    Key(KeyFingerprint),
    Account(String),
}

impl fmt::Display for BudgetOwner {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BudgetOwner::Key(key) => key.fmt(f),
            BudgetOwner::Account(label) => f.write_str(label),
        }
    }
}

/// The prefix of every organization's account label.
pub const ORGANIZATION_PREFIX: &str = "org-";

/// The short, stable label of an organization's account: `org-` and the first 6 bytes (12 hex
/// characters) of the SHA-256 of its id. Status and logs show this, never a key.
pub fn organization_label(organization_id: &str) -> String {
    let digest = Sha256::digest(organization_id.trim().as_bytes());
    let hex: String = digest[..6].iter().map(|b| format!("{b:02x}")).collect();
    format!("{ORGANIZATION_PREFIX}{hex}")
}

/// A granted permit, to be settled by a report or a release.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct LeaseId(pub u64);

impl std::fmt::Display for LeaseId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// The prefix of every workspace's account label.
pub const WORKSPACE_PREFIX: &str = "wsp-";

/// The short, stable label of a workspace's account: `wsp-` and 12 hex characters of the
/// SHA-256 of its id.
pub fn workspace_label(workspace_id: &str) -> String {
    let digest = Sha256::digest(workspace_id.trim().as_bytes());
    let hex: String = digest[..6].iter().map(|b| format!("{b:02x}")).collect();
    format!("{WORKSPACE_PREFIX}{hex}")
}

/// Who goes first when a budget is spent. Waiters of a higher priority are always served before
/// those of a lower one; within a priority, clients take turns.
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize,
)]
pub enum Priority {
    /// A person is waiting on the answer (an interactive Claude Code session).
    Interactive,
    /// The default.
    #[default]
    Normal,
    /// Background work that can wait for everyone else.
    Batch,
}

impl Priority {
    /// All priorities, highest first.
    pub const ALL: [Priority; 3] = [Priority::Interactive, Priority::Normal, Priority::Batch];

    /// The priority's position in [`Priority::ALL`].
    pub fn index(self) -> usize {
        self as usize
    }

    /// The lowercase name used on the command line and in logs.
    pub fn as_str(self) -> &'static str {
        match self {
            Priority::Interactive => "interactive",
            Priority::Normal => "normal",
            Priority::Batch => "batch",
        }
    }
}

impl fmt::Display for Priority {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why a string is not a priority.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown priority `{0}`: expected interactive, normal or batch")]
pub struct InvalidPriority(pub String);

impl FromStr for Priority {
    type Err = InvalidPriority;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.to_ascii_lowercase().as_str() {
            "interactive" | "high" => Ok(Priority::Interactive),
            "normal" | "default" => Ok(Priority::Normal),
            "batch" | "low" => Ok(Priority::Batch),
            _ => Err(InvalidPriority(s.to_owned())),
        }
    }
}

/// The three per-minute limits the API enforces on each model class.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum LimitKind {
    /// Requests per minute (RPM).
    Requests,
    /// Input tokens per minute (ITPM): uncached input plus cache writes.
    InputTokens,
    /// Output tokens per minute (OTPM).
    OutputTokens,
}

impl LimitKind {
    /// All kinds, in the order they are indexed by [`LimitKind::index`].
    pub const ALL: [LimitKind; 3] = [
        LimitKind::Requests,
        LimitKind::InputTokens,
        LimitKind::OutputTokens,
    ];

    /// The kind's position in [`LimitKind::ALL`], for arrays indexed by kind.
    pub fn index(self) -> usize {
        self as usize
    }

    /// The short name used in configuration and status output (`rpm`, `itpm`, `otpm`).
    pub fn short_name(self) -> &'static str {
        match self {
            LimitKind::Requests => "rpm",
            LimitKind::InputTokens => "itpm",
            LimitKind::OutputTokens => "otpm",
        }
    }
}

impl fmt::Display for LimitKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            LimitKind::Requests => "requests",
            LimitKind::InputTokens => "input tokens",
            LimitKind::OutputTokens => "output tokens",
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fingerprint_is_16_hex_chars_of_sha256() {
        // sha256("sk-ant-test") = 2b1ee5a1...; only the first 8 bytes are kept.
        let fp = KeyFingerprint::of("sk-ant-test");
        let text = fp.to_string();
        assert_eq!(text.len(), 16);
        assert!(text.chars().all(|c| c.is_ascii_hexdigit()));
        let full = Sha256::digest(b"sk-ant-test");
        let expected: String = full[..8].iter().map(|b| format!("{b:02x}")).collect();
        assert_eq!(text, expected);
        assert_ne!(KeyFingerprint::of("sk-ant-other"), fp);
    }

    #[test]
    fn fingerprint_round_trips_through_text() {
        let fp = KeyFingerprint::of("key");
        assert_eq!(fp.to_string().parse::<KeyFingerprint>(), Ok(fp));
    }

    #[test]
    fn malformed_fingerprints_are_refused() {
        for bad in [
            "",
            "abc",
            "0123456789abcdeg",
            "0123456789abcdef0",
            "ééééééééé",
        ] {
            assert!(bad.parse::<KeyFingerprint>().is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn organizations_get_short_stable_labels() {
        let label = organization_label("f1c3a7e2-0000-4b1e-9c3d-aaaaaaaaaaaa");
        assert!(label.starts_with("org-") && label.len() == 16, "{label}");
        assert_eq!(
            label,
            organization_label(" f1c3a7e2-0000-4b1e-9c3d-aaaaaaaaaaaa ")
        );
        assert_ne!(label, organization_label("another-org"));
        let owner = BudgetOwner::Account(label.clone());
        assert_eq!(owner.to_string(), label);
        let key = KeyFingerprint::of("k");
        assert_eq!(BudgetOwner::Key(key).to_string(), key.to_string());
    }

    #[test]
    fn priorities_order_highest_first() {
        assert!(Priority::Interactive < Priority::Normal);
        assert!(Priority::Normal < Priority::Batch);
        assert_eq!("BATCH".parse(), Ok(Priority::Batch));
        assert!("urgent".parse::<Priority>().is_err());
    }
}
