//! Accounts: which keys share an account's budgets, and what the account's subscription windows
//! look like.
//!
//! The API counts limits per organization, shared by every key it has; a subscription's OAuth
//! token changes at every refresh. So a key joins an account when a response names its
//! organization (`anthropic-organization-id`), or when the configuration ties it to a named
//! account; a key whose responses never name one keeps budgets of its own.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;
use std::time::{Instant, SystemTime};

use pacer_api::unified::{Unified, WindowState, window_class};
use pacer_protocol::KeyFingerprint;
use pacer_protocol::budget::{organization_label, workspace_label};
use pacer_protocol::message::WindowStatus;

use super::owner::Owner;
use super::windows::estimate::Estimate;

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

/// What the last responses said of one owner's subscription.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Subscription {
    /// The overall status of the unified limit.
    pub status: Option<WindowState>,
    pub windows: BTreeMap<String, WindowInfo>,
    /// Extra usage beyond the windows: whether the account may spend it, and whether it does.
    pub overage: Option<WindowState>,
    pub overage_in_use: Option<bool>,
    /// Calls of this daemon answered with the unified headers, per model class (what the
    /// windows' shares are learned from), and those other daemons told of.
    pub answered: BTreeMap<Arc<str>, u64>,
    pub answered_elsewhere: u64,
}

impl Subscription {
    /// The calls answered that count toward window `name`: every class's for a window over every
    /// model, its class's for a model-specific one.
    pub fn answered_for(&self, name: &str) -> u64 {
        match window_class(name) {
            Some(class) => self.answered.get(class).copied().unwrap_or(0),
            None => self.answered.values().sum::<u64>() + self.answered_elsewhere,
        }
    }
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct WindowInfo {
    pub status: Option<WindowState>,
    pub utilization: Option<f64>,
    pub reset: Option<SystemTime>,
    /// What one call costs of it, and how fast it is spent.
    pub estimate: Estimate,
}

impl WindowInfo {
    /// What the API said of the window (the broker adds its estimates, see `windows`).
    pub fn to_wire(&self, name: &str) -> WindowStatus {
        WindowStatus::reported(
            name.to_owned(),
            self.status.as_ref().map(|s| s.as_str().to_owned()),
            self.utilization,
            self.reset,
        )
    }

    /// 0 below 75 %, 1 from 75 %, 2 from 90 %, 3 from 100 %.
    fn band(&self) -> u8 {
        match self.utilization {
            Some(u) if u >= 1.0 => 3,
            Some(u) if u >= 0.9 => 2,
            Some(u) if u >= 0.75 => 1,
            _ => 0,
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
    subscriptions: BTreeMap<Owner, Subscription>,
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

    /// Every account known, with the owners that have a subscription.
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
        owners.extend(self.subscriptions.keys().cloned());
        owners.extend(self.parents.values().map(|a| Owner::Account(a.clone())));
        owners
    }

    /// Takes in what a response said of `owner`'s subscription — the answer to a call of
    /// `class`, or (`None`) what another daemon reported; returns the windows that crossed 75 %,
    /// 90 % or 100 % or changed status, and whether anything moved that other daemons should
    /// hear (a status, a reset, a point of utilization, extra usage).
    pub fn observe_subscription(
        &mut self,
        owner: &Owner,
        unified: &Unified,
        class: Option<&Arc<str>>,
        now: Instant,
    ) -> (Vec<WindowStatus>, bool) {
        if unified.is_empty() {
            return (Vec::new(), false);
        }
        let subscription = self.subscriptions.entry(owner.clone()).or_default();
        if let Some(class) = class {
            *subscription.answered.entry(class.clone()).or_default() += 1;
        }
        let mut moved = unified.status.is_some() && subscription.status != unified.status;
        if unified.status.is_some() {
            subscription.status = unified.status.clone();
        }
        if unified.overage_status.is_some() {
            moved |= subscription.overage != unified.overage_status;
            subscription.overage = unified.overage_status.clone();
        }
        if unified.overage_in_use.is_some() {
            moved |= subscription.overage_in_use != unified.overage_in_use;
            subscription.overage_in_use = unified.overage_in_use;
        }
        let mut changed = Vec::new();
        for window in &unified.windows {
            let answered = subscription.answered_for(&window.name);
            let known = subscription.windows.entry(window.name.clone()).or_default();
            let before = known.clone();
            if window.status.is_some() {
                known.status = window.status.clone();
            }
            if let Some(utilization) = window.utilization {
                known.utilization = Some(utilization);
                known.estimate.observe(utilization, answered, now);
            }
            if window.reset.is_some() {
                known.reset = window.reset;
            }
            if known.status != before.status || known.band() > before.band() {
                changed.push(known.to_wire(&window.name));
            }
            let utilization_moved = match (known.utilization, before.utilization) {
                (Some(now), Some(then)) => (now - then).abs() >= 0.01,
                (now, then) => now.is_some() != then.is_some(),
            };
            moved |=
                known.status != before.status || known.reset != before.reset || utilization_moved;
        }
        (changed, moved)
    }

    /// Other daemons had `more` calls of `owner` answered.
    pub fn answered_elsewhere(&mut self, owner: &Owner, more: u64) {
        if let Some(subscription) = self.subscriptions.get_mut(owner) {
            subscription.answered_elsewhere = subscription.answered_elsewhere.saturating_add(more);
        }
    }

    pub fn subscription(&self, owner: &Owner) -> Option<&Subscription> {
        self.subscriptions.get(owner)
    }

    /// A key's subscription becomes its account's when it joins one (the account's own, if it
    /// has one, is newer or as new).
    pub fn move_subscription(&mut self, from: &Owner, to: &Owner) {
        if let Some(subscription) = self.subscriptions.remove(from) {
            self.subscriptions.entry(to.clone()).or_insert(subscription);
        }
    }

    /// Links made from responses (configured ties come from the configuration).
    pub fn links(&self) -> impl Iterator<Item = (KeyFingerprint, &Arc<str>)> {
        self.links.iter().map(|(key, account)| (*key, account))
    }

    pub fn subscriptions(&self) -> impl Iterator<Item = (&Owner, &Subscription)> {
        self.subscriptions.iter()
    }

    pub fn restore_subscription(&mut self, owner: Owner, subscription: Subscription) {
        self.subscriptions.insert(owner, subscription);
    }
}
