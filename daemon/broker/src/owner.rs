//! Whose budget it is: one key's own, or an account's. Keys join an account when their responses
//! name its organization (or when the configuration ties them to it); from then on they draw on
//! the account's budgets.

use std::sync::Arc;

use pacer_protocol::{BudgetOwner, KeyFingerprint};

#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Owner {
    /// A key no response has tied to an account (yet).
    Key(KeyFingerprint),
    /// An account: `org-…` for an organization, or a name from the configuration.
    Account(Arc<str>),
}

impl Owner {
    pub fn to_wire(&self) -> BudgetOwner {
        match self {
            Owner::Key(key) => BudgetOwner::Key(*key),
            Owner::Account(label) => BudgetOwner::Account(label.to_string()),
        }
    }

    /// The owner a wire name denotes.
    pub fn from_wire(owner: &BudgetOwner) -> Owner {
        match owner {
            BudgetOwner::Key(key) => Owner::Key(*key),
            BudgetOwner::Account(label) => Owner::Account(Arc::from(label.as_str())),
        }
    }
}

impl std::fmt::Display for Owner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Owner::Key(key) => key.fmt(f),
            Owner::Account(label) => f.write_str(label),
        }
    }
}
