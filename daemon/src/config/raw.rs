//! The sections of the file as written, before they become the daemon's settings.

use std::collections::BTreeMap;
use std::num::{NonZeroU32, NonZeroU64};
use std::path::PathBuf;

use pacer_protocol::KeyFingerprint;
use serde::Deserialize;

use super::values::{
    AccountName, Address, ByteSize, Filter, Fraction, GroupId, Name, PasswordFile, PriorityName,
    RedisUrl, Seconds, UpstreamUrl, UserId,
};
use super::{
    AccessConfig, AlertsConfig, ClusterConfig, DEFAULT_CLASSES, GatewayConfig, OnUnavailable,
};
use pacer_broker::{
    AccountsConfig, BrokerConfig, LimitSet, LimitTable, MAX_LIMIT, ModelClasses, WindowsConfig,
};

/// Every section; each is read on its own, so that one mistake does not hide the next.
#[derive(Debug, Default)]
pub struct RawConfig {
    pub classes: Vec<RawClass>,
    pub limits: BTreeMap<Name, RawLimits>,
    pub keys: BTreeMap<KeyFingerprint, RawKey>,
    pub gateway: Option<RawGateway>,
    pub state: Option<RawState>,
    pub log: Option<RawLog>,
    pub accounts: Option<RawAccounts>,
    pub access: Option<RawAccess>,
    pub metrics: Option<RawMetrics>,
    pub cluster: Option<RawCluster>,
    pub windows: Option<RawWindows>,
    pub alerts: Option<RawAlerts>,
}

/// `[alerts]`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawAlerts {
    pub thresholds: Option<Vec<Fraction>>,
    pub command: Option<Name>,
    pub webhook: Option<UpstreamUrl>,
    pub slack: Option<bool>,
    pub desktop: Option<bool>,
    pub pause_over: Option<Seconds>,
    pub runaway_per_hour: Option<Fraction>,
    pub max_per_minute: Option<NonZeroU32>,
}

impl RawAlerts {
    pub fn into_config(self) -> AlertsConfig {
        let defaults = AlertsConfig::default();
        let mut thresholds: Vec<f64> = self.thresholds.map_or(defaults.thresholds, |list| {
            list.into_iter().map(|f| f.0).collect()
        });
        thresholds.sort_by(f64::total_cmp);
        thresholds.dedup();
        AlertsConfig {
            thresholds,
            command: self.command.map(|c| c.0),
            webhook: self.webhook.map(|w| w.0),
            slack: self.slack.unwrap_or(false),
            desktop: self.desktop.unwrap_or(false),
            pause_over: self.pause_over.map_or(defaults.pause_over, |s| s.0),
            runaway_per_hour: self.runaway_per_hour.map(|f| f.0),
            max_per_minute: self
                .max_per_minute
                .map_or(defaults.max_per_minute, NonZeroU32::get),
        }
    }
}

/// `[windows]`: how far each priority may bring a subscription's windows.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawWindows {
    pub batch: Option<Fraction>,
    pub normal: Option<Fraction>,
    pub pace: Option<bool>,
    pub overage: Option<Vec<PriorityName>>,
    pub max_share: Option<BTreeMap<String, Fraction>>,
}

impl RawWindows {
    pub fn into_config(self) -> WindowsConfig {
        let defaults = WindowsConfig::default();
        let normal = self.normal.map_or(defaults.normal, |f| f.0);
        WindowsConfig {
            // Unset, batch follows a normal set below its default.
            batch: self.batch.map_or(defaults.batch.min(normal), |f| f.0),
            normal,
            pace: self.pace.unwrap_or(defaults.pace),
            overage: self.overage.map_or(defaults.overage, |list| {
                list.into_iter().map(|p| p.0).collect()
            }),
            max_share: self
                .max_share
                .unwrap_or_default()
                .into_iter()
                .map(|(client, share)| (client, share.0))
                .collect(),
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawClass {
    pub pattern: Name,
    pub class: Name,
}

#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawLimits {
    rpm: Option<Limit>,
    itpm: Option<Limit>,
    otpm: Option<Limit>,
    max_in_flight: Option<NonZeroU32>,
}

impl From<RawLimits> for LimitSet {
    fn from(raw: RawLimits) -> Self {
        LimitSet {
            rpm: raw.rpm.map(|l| l.0),
            itpm: raw.itpm.map(|l| l.0),
            otpm: raw.otpm.map(|l| l.0),
            max_in_flight: raw.max_in_flight.map(NonZeroU32::get),
        }
    }
}

/// A per-minute limit: nonzero, and no larger than [`MAX_LIMIT`].
#[derive(Debug, Clone, Copy)]
struct Limit(u64);

impl<'de> Deserialize<'de> for Limit {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let n = NonZeroU64::deserialize(d)?.get();
        if n > MAX_LIMIT {
            return Err(serde::de::Error::custom(format!(
                "{n} is beyond any real limit: at most {MAX_LIMIT}"
            )));
        }
        Ok(Limit(n))
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawKey {
    #[serde(default)]
    pub limits: BTreeMap<Name, RawLimits>,
    /// The account this key belongs to, whatever its responses say.
    pub account: Option<AccountName>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawAccounts {
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
pub struct RawState {
    pub enabled: Option<bool>,
    pub file: Option<PathBuf>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawLog {
    pub enabled: Option<bool>,
    pub dir: Option<PathBuf>,
    pub filter: Option<Filter>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawGateway {
    enabled: Option<bool>,
    listen: Option<Address>,
    upstream: Option<UpstreamUrl>,
    max_hold: Option<Seconds>,
    allow_non_loopback: Option<bool>,
    max_buffered: Option<ByteSize>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawCluster {
    redis: Option<RedisUrl>,
    prefix: Option<Name>,
    on_unavailable: Option<OnUnavailableValue>,
    lease_ttl: Option<Seconds>,
    password_file: Option<PasswordFile>,
}

#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(rename_all = "lowercase")]
enum OnUnavailableValue {
    Local,
    Closed,
}

impl RawCluster {
    pub fn into_config(self) -> ClusterConfig {
        let defaults = ClusterConfig::default();
        ClusterConfig {
            redis: self.redis.map(|r| r.0),
            password: self.password_file.map(|p| p.0),
            prefix: self.prefix.map_or(defaults.prefix, |p| p.0),
            on_unavailable: match self.on_unavailable {
                Some(OnUnavailableValue::Closed) => OnUnavailable::Closed,
                _ => OnUnavailable::Local,
            },
            lease_ttl: self.lease_ttl.map_or(defaults.lease_ttl, |s| s.0),
        }
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawMetrics {
    pub enabled: Option<bool>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawAccess {
    #[serde(default)]
    allow_uids: Vec<UserId>,
    #[serde(default)]
    allow_groups: Vec<GroupId>,
}

impl From<RawAccess> for AccessConfig {
    fn from(raw: RawAccess) -> Self {
        AccessConfig {
            allow_uids: raw.allow_uids.into_iter().map(|u| u.0).collect(),
            allow_gids: raw.allow_groups.into_iter().map(|g| g.0).collect(),
        }
    }
}

impl RawGateway {
    pub fn into_config(self) -> GatewayConfig {
        let default = GatewayConfig::default();
        GatewayConfig {
            listen: match self.enabled {
                Some(false) => None,
                _ => self.listen.map(|a| a.0).or(default.listen),
            },
            upstream: self.upstream.map_or(default.upstream, |u| u.0),
            max_hold: self.max_hold.map_or(default.max_hold, |s| s.0),
            allow_non_loopback: self.allow_non_loopback.unwrap_or(false),
            max_buffered: self.max_buffered.map_or(default.max_buffered, |b| b.0),
        }
    }
}

impl RawConfig {
    /// The classes a model can map to: the defaults and those `[[classes]]` names.
    pub fn known_classes(&self) -> Vec<&str> {
        DEFAULT_CLASSES
            .iter()
            .copied()
            .chain(self.classes.iter().map(|c| c.class.0.as_str()))
            .collect()
    }

    pub fn into_broker_config(self, gateway: &GatewayConfig) -> BrokerConfig {
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
                    .insert((key, class.0), limits_for_class.into());
            }
            if let Some(account) = raw.account {
                accounts.tied.insert(key, account.0);
            }
        }
        BrokerConfig {
            classes,
            limits,
            accounts,
            max_hold: gateway.max_hold,
            windows: self.windows.unwrap_or_default().into_config(),
            ..BrokerConfig::default()
        }
    }
}
