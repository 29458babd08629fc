//! What to tell, from what the broker shows: each crossing once. Pure — the status and the
//! wall clock in, alerts out — so every rule is tested without a daemon.

use std::collections::{HashMap, HashSet, VecDeque};
use std::time::{Duration, SystemTime};

use pacer_api::unified::{same_reset, window_class, window_title};
use pacer_broker::local_time;
use pacer_protocol::Priority;
use pacer_protocol::message::{
    AccountStatus, BudgetStatus, ClientStatus, PauseCause, WindowStatus,
};

use super::{Alert, Kind};
use crate::config::AlertsConfig;

/// What the watcher looks at.
#[derive(Debug, Clone, Default)]
pub struct View {
    pub budgets: Vec<BudgetStatus>,
    pub accounts: Vec<AccountStatus>,
    pub clients: Vec<ClientStatus>,
}

/// A band is left only this far below its threshold: a window hovering at 90 % is told once.
const HYSTERESIS: f64 = 0.05;
/// A client's rate is measured over this long, once its samples span [`MIN_SPAN`].
const SPAN: Duration = Duration::from_secs(15 * 60);
const MIN_SPAN: Duration = Duration::from_secs(60);

#[derive(Debug, Default)]
pub struct Watcher {
    config: AlertsConfig,
    /// Per account and window: the window's reset, and the highest threshold told for it.
    bands: HashMap<(String, String), (Option<SystemTime>, usize)>,
    /// Pauses, lockouts, holds and runaways told, until they end.
    told: HashSet<(Kind, String, String)>,
    /// Each client's grants over the last [`SPAN`].
    grants: HashMap<String, VecDeque<(SystemTime, u64)>>,
    /// Seconds east of UTC, for the times messages give.
    utc_offset: i32,
}

impl Watcher {
    pub fn new(config: AlertsConfig, utc_offset: i32) -> Watcher {
        Watcher {
            config,
            utc_offset,
            ..Watcher::default()
        }
    }

    /// New settings (a reload): what was told of each window is kept only while the thresholds
    /// are the same ones.
    pub fn configure(&mut self, config: AlertsConfig) {
        if config.thresholds != self.config.thresholds {
            self.bands.clear();
        }
        self.config = config;
    }

    /// What changed since the last look that has not been told.
    pub fn observe(&mut self, view: &View, now: SystemTime) -> Vec<Alert> {
        let mut alerts = Vec::new();
        let mut ongoing = HashSet::new();
        for account in &view.accounts {
            self.windows(account, now, &mut alerts, &mut ongoing);
            for lockout in account.lockouts.iter().filter(|l| l.until > now) {
                let class = lockout.model_class.clone().unwrap_or_default();
                let key = (Kind::Lockout, account.owner.to_string(), class);
                let message = format!(
                    "pacer: {} is locked out until {}: {}",
                    account.owner,
                    self.time(lockout.until, now),
                    lockout.reason
                );
                let alert = Alert {
                    until: Some(lockout.until),
                    subject: lockout.model_class.clone(),
                    ..self.alert(Kind::Lockout, &account.owner, message)
                };
                self.once(key, alert, &mut alerts, &mut ongoing);
            }
        }
        for budget in &view.budgets {
            // A lockout shows as a pause of each of its budgets: told once, as the lockout.
            let Some(until) = budget
                .paused_until
                .filter(|_| budget.pause_cause != Some(PauseCause::Lockout))
            else {
                continue;
            };
            if until.duration_since(now).unwrap_or_default() <= self.config.pause_over
                && !self
                    .told
                    .contains(&(Kind::Pause, budget.budget.to_string(), String::new()))
            {
                continue;
            }
            let why = budget.pause_reason.as_deref().unwrap_or("paused");
            let message = format!(
                "pacer: {} is paused until {}: {why}",
                budget.budget,
                self.time(until, now)
            );
            let alert = Alert {
                until: Some(until),
                subject: Some(budget.budget.to_string()),
                ..self.alert(Kind::Pause, &budget.budget.owner, message)
            };
            let key = (Kind::Pause, budget.budget.to_string(), String::new());
            self.once(key, alert, &mut alerts, &mut ongoing);
        }
        self.runaways(view, now, &mut alerts, &mut ongoing);
        // What is no longer going on may be told again when it starts again.
        self.told.retain(|key| ongoing.contains(key));
        alerts
    }

    fn windows(
        &mut self,
        account: &AccountStatus,
        now: SystemTime,
        alerts: &mut Vec<Alert>,
        ongoing: &mut HashSet<(Kind, String, String)>,
    ) {
        let owner = account.owner.to_string();
        for window in &account.windows {
            let Some(used) = window
                .utilization
                .filter(|_| window.reset.is_none_or(|r| r > now))
            else {
                continue;
            };
            let thresholds = &self.config.thresholds;
            let band = thresholds.iter().filter(|t| used + 1e-9 >= **t).count();
            let key = (owner.clone(), window.name.clone());
            let (reset, told) = self.bands.get(&key).copied().unwrap_or((None, 0));
            let told = if same_reset(reset, window.reset) {
                told.min(thresholds.len())
            } else {
                0
            };
            if band > told {
                let threshold = thresholds[band - 1];
                let mut message = format!(
                    "pacer: {} of {owner} is at {:.0} % (past {:.0} %)",
                    window_title(&window.name),
                    used * 100.0,
                    threshold * 100.0
                );
                if let Some(reset) = window.reset {
                    message.push_str(&format!(", resets {}", self.time(reset, now)));
                }
                alerts.push(Alert {
                    window: Some(window.name.clone()),
                    utilization: Some(used),
                    threshold: Some(threshold),
                    reset: window.reset,
                    ..self.alert(Kind::Window, &account.owner, message)
                });
                self.bands.insert(key, (window.reset, band));
            } else if band < told && used < thresholds[told - 1] - HYSTERESIS {
                self.bands.insert(key, (window.reset, band));
            } else if !same_reset(reset, window.reset) {
                self.bands.insert(key, (window.reset, band.max(told)));
            }
            for priority in held(window, used) {
                let key = (
                    Kind::Held,
                    owner.clone(),
                    format!("{}/{priority}", window.name),
                );
                let message = format!(
                    "pacer: {priority} work is held by {} of {owner} at {:.0} %",
                    window_title(&window.name),
                    used * 100.0
                );
                let alert = Alert {
                    window: Some(window.name.clone()),
                    utilization: Some(used),
                    reset: window.reset,
                    subject: Some(priority.to_string()),
                    ..self.alert(Kind::Held, &account.owner, message)
                };
                self.once(key, alert, alerts, ongoing);
            }
        }
    }

    /// Clients spending a window faster than `runaway_per_hour`: their calls an hour (over the
    /// last 15 minutes) at what one call costs of the window.
    fn runaways(
        &mut self,
        view: &View,
        now: SystemTime,
        alerts: &mut Vec<Alert>,
        ongoing: &mut HashSet<(Kind, String, String)>,
    ) {
        let Some(limit) = self.config.runaway_per_hour else {
            self.grants.clear();
            return;
        };
        let seen: HashSet<&str> = view.clients.iter().map(|c| c.id.as_str()).collect();
        self.grants.retain(|id, _| seen.contains(id.as_str()));
        for client in &view.clients {
            let samples = self.grants.entry(client.id.clone()).or_default();
            samples.push_back((now, client.granted));
            while samples
                .front()
                .is_some_and(|(at, _)| now.duration_since(*at).unwrap_or_default() > SPAN)
            {
                samples.pop_front();
            }
            let (Some(&(first_at, first)), Some(budget)) = (samples.front(), &client.budget) else {
                continue;
            };
            let span = now.duration_since(first_at).unwrap_or_default();
            if span < MIN_SPAN {
                continue;
            }
            let per_hour =
                client.granted.saturating_sub(first) as f64 * 3600.0 / span.as_secs_f64();
            let Some(account) = view.accounts.iter().find(|a| a.owner == budget.owner) else {
                continue;
            };
            let class = budget.model_class.as_str();
            for window in account
                .windows
                .iter()
                .filter(|w| window_class(&w.name).is_none_or(|c| c == class))
            {
                let Some(share) = window.share else { continue };
                let burn = per_hour * share;
                let key = (Kind::Runaway, client.id.clone(), window.name.clone());
                // Told again only once it slowed down well below the rate.
                if burn < limit && !(self.told.contains(&key) && burn >= limit * 0.8) {
                    continue;
                }
                let message = format!(
                    "pacer: client {} is spending {} of {} at {:.0} % an hour ({:.0} calls an \
                     hour), past the {:.0} % an hour alerts are set for",
                    client.id,
                    window_title(&window.name),
                    account.owner,
                    burn * 100.0,
                    per_hour,
                    limit * 100.0
                );
                let alert = Alert {
                    window: Some(window.name.clone()),
                    utilization: window.utilization,
                    reset: window.reset,
                    subject: Some(client.id.clone()),
                    ..self.alert(Kind::Runaway, &account.owner, message)
                };
                self.once(key, alert, alerts, ongoing);
            }
        }
    }

    /// Tells `alert` unless `key` was told and is still going on.
    fn once(
        &mut self,
        key: (Kind, String, String),
        alert: Alert,
        alerts: &mut Vec<Alert>,
        ongoing: &mut HashSet<(Kind, String, String)>,
    ) {
        if self.told.insert(key.clone()) {
            alerts.push(alert);
        }
        ongoing.insert(key);
    }

    fn alert(&self, event: Kind, owner: &impl ToString, message: String) -> Alert {
        Alert {
            event,
            account: owner.to_string(),
            window: None,
            utilization: None,
            threshold: None,
            reset: None,
            until: None,
            subject: None,
            message,
        }
    }

    fn time(&self, at: SystemTime, now: SystemTime) -> String {
        local_time(at, now, self.utc_offset)
    }
}

/// The priorities a window holds by what it has spent (`used`, as reported), not only by the
/// calls in flight, which come and go within seconds.
fn held(window: &WindowStatus, used: f64) -> impl Iterator<Item = Priority> + '_ {
    let share = window.share.unwrap_or(0.01);
    [Priority::Normal, Priority::Batch]
        .into_iter()
        .filter(move |p| {
            window
                .ceiling(*p)
                .is_some_and(|c| c.held && used + share > c.ceiling + 1e-9)
        })
}

#[cfg(test)]
mod tests;
