//! Accounts: which keys share an account's budgets (its subscription windows are in `windows`).
//!
//! The API counts limits per organization, shared by every key it has; a subscription's OAuth
//! token changes at every refresh. So a key joins an account when a response names its
//! organization (`anthropic-organization-id`), or when the configuration ties it to a named
//! account; a key whose responses never name one keeps budgets of its own.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;

use pacer_protocol::KeyFingerprint;
use pacer_protocol::budget::{organization_label, workspace_label};

use super::owner::Owner;

/// How keys are grouped into accounts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccountsConfig {
    /// Keys join their organization's account when responses name it (`group_by =
    /// "organization"`); otherwise every key keeps its own budgets (`"key"`).
    pub by_organization: bool,
    /// Keys tied to a named account by hand (`[keys.<fingerprint>] account = "name"`); they
    /// are never moved by a response.
    pub tied: HashMap<KeyFingerprint, String>,
}

impl Default for AccountsConfig {
    fn default() -> Self {
        Self {
            by_organization: true,
            tied: HashMap::new(),
        }
    }
}

#[derive(Debug, Default)]
pub struct Accounts {
    config: AccountsConfig,
    /// Key → the account it belongs to.
    links: HashMap<KeyFingerprint, Arc<str>>,
    /// Account → its keys.
    members: BTreeMap<Arc<str>, BTreeSet<KeyFingerprint>>,
    /// Workspace account → its organization's account.
    parents: BTreeMap<Arc<str>, Arc<str>>,
}

impl Accounts {
    pub fn new(config: AccountsConfig) -> Self {
        let mut accounts = Accounts::default();
        accounts.configure(config);
        accounts
    }

    /// Applies a new configuration. Returns the keys that had budgets of their own and are now
    /// tied to an account by hand: the caller merges those budgets into the account's.
    pub fn configure(&mut self, config: AccountsConfig) -> Vec<(KeyFingerprint, Arc<str>)> {
        let before: Vec<(KeyFingerprint, Owner)> = config
            .tied
            .keys()
            .map(|&key| (key, self.owner_of(key)))
            .collect();
        self.config = config;
        before
            .into_iter()
            .filter(|(_, owner)| matches!(owner, Owner::Key(_)))
            .filter_map(|(key, _)| match self.owner_of(key) {
                Owner::Account(account) => Some((key, account)),
                Owner::Key(_) => None,
            })
            .collect()
    }

    /// The owner of a key's budgets now: the account the configuration ties it to, else the
    /// account a response named, else the key itself.
    pub fn owner_of(&self, key: KeyFingerprint) -> Owner {
        if let Some(name) = self.config.tied.get(&key) {
            return Owner::Account(Arc::from(name.as_str()));
        }
        match self.links.get(&key) {
            Some(account) => Owner::Account(account.clone()),
            None => Owner::Key(key),
        }
    }

    /// The account a response for `key` puts it in, if that is news (the key is not linked
    /// yet, not tied by hand, and accounts are grouped by organization): its organization's, or
    /// — when the response names a workspace — the workspace's, with the organization's as its
    /// parent.
    pub fn account_named_by(
        &self,
        key: KeyFingerprint,
        organization: Option<&str>,
        workspace: Option<&str>,
    ) -> Option<(Arc<str>, Option<Arc<str>>)> {
        let organization = organization?;
        if !self.config.by_organization
            || self.links.contains_key(&key)
            || self.config.tied.contains_key(&key)
        {
            return None;
        }
        let organization: Arc<str> = Arc::from(organization_label(organization));
        Some(match workspace {
            Some(workspace) => (Arc::from(workspace_label(workspace)), Some(organization)),
            None => (organization, None),
        })
    }

    /// Records that workspace account `account` belongs to organization account `parent`.
    pub fn set_parent(&mut self, account: Arc<str>, parent: Arc<str>) {
        self.parents.insert(account, parent);
    }

    /// The organization account of a workspace account.
    pub fn parent_of(&self, owner: &Owner) -> Option<&Arc<str>> {
        match owner {
            Owner::Account(account) => self.parents.get(account),
            Owner::Key(_) => None,
        }
    }

    /// Every workspace with its organization.
    pub fn parents(&self) -> impl Iterator<Item = (&Arc<str>, &Arc<str>)> {
        self.parents.iter()
    }

    /// Records that `key` belongs to `account`.
    pub fn link(&mut self, key: KeyFingerprint, account: Arc<str>) {
        if let Some(previous) = self.links.insert(key, account.clone())
            && let Some(keys) = self.members.get_mut(&previous)
        {
            keys.remove(&key);
        }
        self.members.entry(account).or_default().insert(key);
    }

    /// The keys of an owner: an account's members (and keys tied to it by hand), or the key
    /// itself.
    pub fn keys_of(&self, owner: &Owner) -> Vec<KeyFingerprint> {
        match owner {
            Owner::Key(key) => vec![*key],
            Owner::Account(account) => {
                let mut keys: BTreeSet<KeyFingerprint> =
                    self.members.get(account).cloned().unwrap_or_default();
                keys.extend(
                    self.config
                        .tied
                        .iter()
                        .filter(|(_, name)| name.as_str() == &**account)
                        .map(|(key, _)| *key),
                );
                keys.into_iter().collect()
            }
        }
    }

    /// Every account known.
    pub fn owners(&self) -> BTreeSet<Owner> {
        let mut owners: BTreeSet<Owner> = self
            .members
            .keys()
            .map(|a| Owner::Account(a.clone()))
            .collect();
        owners.extend(
            self.config
                .tied
                .values()
                .map(|name| Owner::Account(Arc::from(name.as_str()))),
        );
        owners.extend(self.parents.values().map(|a| Owner::Account(a.clone())));
        owners
    }

    /// Links made from responses (configured ties come from the configuration).
    pub fn links(&self) -> impl Iterator<Item = (KeyFingerprint, &Arc<str>)> {
        self.links.iter().map(|(key, account)| (*key, account))
    }
}
