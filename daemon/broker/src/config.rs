//! The broker's share of the configuration.

use std::time::Duration;

use super::{AccountsConfig, LimitTable, ModelClasses, WindowsConfig};

/// The broker's share of the configuration.
#[derive(Debug, Clone, PartialEq)]
pub struct BrokerConfig {
    pub classes: ModelClasses,
    pub limits: LimitTable,
    pub accounts: AccountsConfig,
    /// A 429 whose wait is longer than this locks its budget out (requests are refused at once)
    /// instead of pausing it: nobody holds a request that long. The gateway's `max_hold`.
    pub max_hold: Duration,
    /// First contact: how long the other calls of a budget that has never heard from the API
    /// wait for the first call's headers.
    pub cold_start_hold: Duration,
    /// How far each priority may bring a subscription's windows (`[windows]`).
    pub windows: WindowsConfig,
}

impl Default for BrokerConfig {
    fn default() -> Self {
        Self {
            classes: ModelClasses::default(),
            limits: LimitTable::default(),
            accounts: AccountsConfig::default(),
            max_hold: Duration::from_secs(240),
            cold_start_hold: Duration::from_secs(5),
            windows: WindowsConfig::default(),
        }
    }
}
