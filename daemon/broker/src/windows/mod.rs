//! Subscription windows by priority: batch work keeps its share, interactive work the rest.
//!
//! A subscription's 5-hour and weekly windows (and the per-model weekly ones) are the limit most
//! Claude Code users meet. Below interactive, each priority may bring every window only to its
//! ceiling (`[windows] batch = 0.8`, `normal = 1.0`): a call of that priority is admitted only
//! while `utilization + (calls in flight + 1) × share` stays under it, where the share is what one
//! call was seen to cost of the window (`estimate`) and the calls in flight count those of every
//! daemon sharing the account. With `pace = true`, the ceiling grows with the window's elapsed
//! time (`ceiling × max(elapsed, 10 %)`). When the account spends extra usage (overage), only
//! the priorities `[windows] overage` lists may add to it. A held call waits in its queue like
//! any other — interactive calls overtake it — and is refused with the time it would be admitted
//! (the pace) or the window's reset.
//!
//! - this file: the policy ([`WindowsConfig`]), whether a priority is held ([`Hold`]), and what
//!   `pacer status` shows of the windows;
//! - `estimate`: a window's share of a call and its burn rate;
//! - `in_flight`: the calls each account has in flight toward its windows, here and elsewhere.

pub(crate) mod estimate;
mod in_flight;

pub use estimate::Estimate;
pub use in_flight::{InFlight, WindowUse};

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use pacer_api::unified::{WindowState, window_class};
use pacer_protocol::Priority;
use pacer_protocol::message::{PriorityCeiling, WindowStatus};

use super::accounts::{Subscription, WindowInfo};
use super::budgets::BudgetIdx;
use super::owner::Owner;
use super::time::{later, local_time};
use super::{Broker, FOREVER};

/// The windows' policy (`[windows]`).
#[derive(Debug, Clone, PartialEq)]
pub struct WindowsConfig {
    /// How far batch and normal calls may bring every window (interactive ones: all of it).
    pub batch: f64,
    pub normal: f64,
    /// Keep below-interactive use on pace with each window's elapsed time.
    pub pace: bool,
    /// The priorities that may spend extra usage (overage).
    pub overage: Vec<Priority>,
}

impl Default for WindowsConfig {
    fn default() -> Self {
        WindowsConfig {
            batch: 0.8,
            normal: 1.0,
            pace: false,
            overage: vec![Priority::Interactive],
        }
    }
}

impl WindowsConfig {
    /// How far `priority` may bring a window, before pacing; `None`: all of it, never held by a
    /// ceiling (interactive calls, and a priority whose ceiling is 1: the API decides at 100 %).
    pub fn ceiling(&self, priority: Priority) -> Option<f64> {
        let ceiling = match priority {
            Priority::Interactive => return None,
            Priority::Normal => self.normal,
            Priority::Batch => self.batch,
        };
        (ceiling < 1.0 || self.pace).then_some(ceiling.min(1.0))
    }

    /// How far `priority` may bring `window` at `wall`: its ceiling, paced when `pace` is on and
    /// the window's length is known.
    fn allowed(
        &self,
        priority: Priority,
        name: &str,
        window: &WindowInfo,
        wall: SystemTime,
    ) -> f64 {
        let Some(ceiling) = self.ceiling(priority) else {
            return f64::INFINITY;
        };
        match (self.pace, elapsed(name, window.reset, wall)) {
            (true, Some(elapsed)) => ceiling * elapsed.max(MIN_PACE),
            _ => ceiling,
        }
    }
}

/// Pacing never holds a priority below this share of its ceiling (a window just started).
const MIN_PACE: f64 = 0.1;

/// How long a window lasts, from its name: `5h` five hours, `7d` and `7d_<model>` seven days;
/// `None` for a name that does not say (it is not paced).
pub fn window_length(name: &str) -> Option<Duration> {
    let head = name.split('_').next()?;
    let (number, unit) = head.split_at(head.find(|c: char| !c.is_ascii_digit())?);
    let number: u64 = number.parse().ok()?;
    let unit = match unit {
        "h" => 3600,
        "d" => 24 * 3600,
        _ => return None,
    };
    Some(Duration::from_secs(number.checked_mul(unit)?)).filter(|d| !d.is_zero())
}

/// How much of window `name` has passed at `wall` (0 to 1), from its reset and its length.
fn elapsed(name: &str, reset: Option<SystemTime>, wall: SystemTime) -> Option<f64> {
    let length = window_length(name)?.as_secs_f64();
    let left = reset?
        .duration_since(wall)
        .unwrap_or_default()
        .as_secs_f64();
    Some((1.0 - left / length).clamp(0.0, 1.0))
}

/// The window as people call it: `the 5-hour window`, `the weekly opus window`.
pub fn window_title(name: &str) -> String {
    let class = window_class(name);
    let length = match name.split('_').next() {
        Some("5h") => "5-hour".to_owned(),
        Some("7d") => "weekly".to_owned(),
        Some(other) => other.to_owned(),
        None => name.to_owned(),
    };
    match class {
        Some(class) => format!("the {length} {class} window"),
        None => format!("the {length} window"),
    }
}

/// Why a priority's calls are held by an account's window now.
#[derive(Debug, Clone, PartialEq)]
pub struct Hold {
    pub window: String,
    pub priority: Priority,
    /// How far the priority may bring the window now.
    pub allowed: f64,
    pub cause: HoldCause,
    /// When the hold ends by itself, as far as can be told: when the pace allows the next call,
    /// or the window's reset.
    pub until: Option<Instant>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HoldCause {
    /// The window's estimate reaches the priority's ceiling.
    Ceiling,
    /// The window's estimate is ahead of its pace.
    Pace,
    /// The account spends extra usage, which this priority may not.
    Overage,
}

impl Hold {
    /// What the holdup says (after `pacer: `): `batch work is held at 70 % of the 5-hour window
    /// until 16:40; interactive sessions keep the rest`.
    pub fn text(&self, until: Option<SystemTime>, now: SystemTime, utc_offset: i32) -> String {
        let who = match self.priority {
            Priority::Batch => "batch",
            Priority::Normal => "normal-priority",
            Priority::Interactive => "interactive",
        };
        let until = until.map_or(String::new(), |at| {
            format!(" until {}", local_time(at, now, utc_offset))
        });
        let title = window_title(&self.window);
        let percent = (self.allowed * 100.0).round();
        match self.cause {
            HoldCause::Ceiling => format!(
                "{who} work is held at {percent} % of {title}{until}; interactive sessions keep the \
                 rest"
            ),
            HoldCause::Pace => format!(
                "{who} work is paced to {percent} % of {title} for now (it gets more as the \
                 window goes by){until}; interactive sessions keep the rest"
            ),
            HoldCause::Overage => format!(
                "{who} work may not spend extra usage, which the account is using now for \
                 {title}; it is held{until}"
            ),
        }
    }
}

impl Broker {
    /// Whether calls of `priority` on budget `b` are held by its account's windows now, and by
    /// which (the one whose hold lasts longest).
    pub(super) fn window_hold(
        &self,
        b: BudgetIdx,
        priority: Priority,
        now: Instant,
    ) -> Option<Hold> {
        let budget = &self.budgets[b];
        let owner = budget.owner();
        let subscription = self.accounts.subscription(owner)?;
        let class = budget.class();
        let config = &self.config.windows;
        let wall = self.time_base.to_wall(now);
        let mut holds = Vec::new();
        let spends_overage = !config.overage.contains(&priority)
            && (subscription.overage_in_use == Some(true)
                || is_allowed(subscription.overage.as_ref()));
        for (name, window) in covering(subscription, class) {
            let Some(utilization) = current(window, wall) else {
                continue;
            };
            let in_flight = self.window_calls(owner, name);
            let estimated = utilization + f64::from(in_flight + 1) * window.estimate.share();
            let reset = window.reset.map(|at| self.time_base.to_instant(at));
            if spends_overage
                && (subscription.overage_in_use == Some(true) && utilization >= 1.0
                    || estimated > 1.0)
            {
                holds.push(Hold {
                    window: name.clone(),
                    priority,
                    allowed: 1.0,
                    cause: HoldCause::Overage,
                    until: reset,
                });
                continue;
            }
            let allowed = config.allowed(priority, name, window, wall);
            if estimated <= allowed + 1e-9 {
                continue;
            }
            let ceiling = config.ceiling(priority).unwrap_or(f64::INFINITY);
            let paced = config.pace && allowed < ceiling;
            // When the pace lets the next call in: allowed(t) = ceiling × elapsed(t) ≥ estimated.
            let until = match (paced, window_length(name), reset) {
                (true, Some(length), Some(reset)) if estimated < ceiling => {
                    let early = length.mul_f64(1.0 - estimated / ceiling);
                    Some(reset.checked_sub(early).unwrap_or(now).max(now))
                }
                (_, _, reset) => reset,
            };
            holds.push(Hold {
                window: name.clone(),
                priority,
                allowed,
                cause: if paced {
                    HoldCause::Pace
                } else {
                    HoldCause::Ceiling
                },
                until,
            });
        }
        holds
            .into_iter()
            .max_by_key(|hold| hold.until.unwrap_or(later(now, FOREVER)))
    }

    /// A call of budget `b` was granted: counted in flight toward its account's windows, if it
    /// has any. Returns what to end when its answer comes.
    pub(super) fn start_window_call(&mut self, b: BudgetIdx) -> Option<(Owner, Arc<str>)> {
        let owner = self.budgets[b].owner().clone();
        self.accounts
            .subscription(&owner)
            .filter(|s| !s.windows.is_empty())?;
        let class = self.budgets[b].class().clone();
        self.window_use.start(&owner, &class);
        self.tell_window_calls(&owner);
        Some((owner, class))
    }

    /// The answer to a call counted in flight came (or never will): its cost is in the
    /// utilization the API reports now. Calls held by the windows may go.
    pub(super) fn end_window_call(&mut self, call: Option<(Owner, Arc<str>)>, now: Instant) {
        if let Some((owner, class)) = call {
            self.window_use.end(&owner, &class);
            self.tell_window_calls(&owner);
            self.serve_owner(&owner, now);
        }
    }

    /// Tells the other daemons sharing the account what this one has in flight toward its
    /// windows and has had answered.
    fn tell_window_calls(&mut self, owner: &Owner) {
        if !self.shares.is_on() {
            return;
        }
        let answered = self
            .accounts
            .subscription(owner)
            .map_or(0, |s| s.answered.values().sum());
        let in_flight = self.window_use.here(owner);
        self.publish(super::ClusterEvent::WindowCalls {
            owner: owner.to_wire(),
            in_flight,
            answered,
        });
    }

    /// Every heartbeat: what other daemons told and did not tell again is forgotten, and this
    /// daemon tells again what it has in flight (so that a daemon that joins, or missed a
    /// message, knows).
    pub fn windows_heartbeat(&mut self, now: Instant) -> Vec<super::Output> {
        self.window_use.expire(now);
        for owner in self.window_use.owners_here() {
            self.tell_window_calls(&owner);
        }
        let owners: Vec<Owner> = self
            .accounts
            .subscriptions()
            .map(|(o, _)| o.clone())
            .collect();
        for owner in owners {
            self.serve_owner(&owner, now);
        }
        self.take_output()
    }

    /// Another daemon told what it has in flight toward `owner`'s windows, and has had answered.
    pub(super) fn told_window_calls(
        &mut self,
        owner: &Owner,
        from: &str,
        told: InFlight,
        now: Instant,
    ) {
        let more = self.window_use.told(owner, from, told, now);
        self.accounts.answered_elsewhere(owner, more);
        self.serve_owner(owner, now);
    }

    /// Serves the budgets of `owner` that have waiters (its windows changed).
    pub(super) fn serve_owner(&mut self, owner: &Owner, now: Instant) {
        let budgets: Vec<BudgetIdx> = self
            .budgets
            .needing_attention()
            .filter(|&b| self.budgets[b].owner() == owner)
            .collect();
        for b in budgets {
            self.serve(b, now);
        }
    }

    /// What holds the head of budget `b` by its account's windows, if anything does.
    pub(super) fn head_window_hold(&self, b: BudgetIdx, now: Instant) -> Option<Hold> {
        let (id, _) = self.budgets[b].head()?;
        let priority = self.waiters.get(id)?.priority;
        self.window_hold(b, priority, now)
    }

    /// Calls of `owner` in flight toward window `name`, on this daemon and the others.
    fn window_calls(&self, owner: &Owner, name: &str) -> u32 {
        self.window_use.calls(owner, window_class(name))
    }

    /// What holds a call of `priority` on budget `b`, in words, if a window does.
    pub(super) fn window_holdup(
        &self,
        b: BudgetIdx,
        priority: Priority,
        now: Instant,
    ) -> Option<(Duration, String)> {
        let hold = self.window_hold(b, priority, now)?;
        let until = hold.until.map(|at| self.time_base.to_wall(at));
        let wait = hold
            .until
            .map_or(FOREVER, |at| at.saturating_duration_since(now));
        let text = hold.text(until, self.time_base.to_wall(now), self.utc_offset);
        Some((wait, text))
    }

    /// A window held a call of `b` until it was refused: counted for `pacer status` and
    /// `/metrics`.
    pub(super) fn count_window_refusal(&mut self, b: BudgetIdx, priority: Priority, now: Instant) {
        if let Some(hold) = self.window_hold(b, priority, now) {
            let owner = self.budgets[b].owner().clone();
            self.window_use.refused(&owner, &hold.window, priority);
        }
    }

    /// A subscription window as `pacer status` shows it: what the API said, and pacer's
    /// estimate, ceilings and forecast.
    pub(super) fn window_status(
        &self,
        owner: &Owner,
        name: &str,
        window: &WindowInfo,
        now: Instant,
    ) -> WindowStatus {
        let mut status = window.to_wire(name);
        let Some(utilization) = current(window, self.time_base.to_wall(now)) else {
            return status;
        };
        let subscription = self.accounts.subscription(owner);
        let config = &self.config.windows;
        let wall = self.time_base.to_wall(now);
        let in_flight = self.window_calls(owner, name);
        let share = window.estimate.share();
        let estimated = utilization + f64::from(in_flight) * share;
        status.estimated = Some(estimated);
        status.share = window.estimate.learned_share();
        let spending = subscription.is_some_and(|s| {
            s.overage_in_use == Some(true) && utilization >= 1.0 || is_allowed(s.overage.as_ref())
        });
        status.ceilings = [Priority::Interactive, Priority::Normal, Priority::Batch]
            .into_iter()
            .map(|priority| {
                let allowed = config.allowed(priority, name, window, wall);
                let overage =
                    spending && !config.overage.contains(&priority) && estimated + share > 1.0;
                PriorityCeiling {
                    priority,
                    ceiling: allowed.min(1.0),
                    held: overage || estimated + share > allowed + 1e-9,
                    refused: self.window_use.refused_of(owner, name, priority),
                }
            })
            .collect();
        if let Some(rate) = window.estimate.burn_per_second(now) {
            status.burn_per_hour = Some(rate * 3600.0);
            let left = (1.0 - estimated).max(0.0) / rate;
            let runs_out = wall + Duration::from_secs_f64(left.min(FOREVER.as_secs_f64()));
            status.runs_out = window
                .reset
                .is_none_or(|reset| runs_out < reset)
                .then_some(runs_out);
        }
        status
    }
}

/// A window's utilization as last reported, unless its reset has passed since (then nothing
/// is known until the next answer says).
fn current(window: &WindowInfo, wall: SystemTime) -> Option<f64> {
    let utilization = window.utilization?;
    window
        .reset
        .is_none_or(|reset| reset > wall)
        .then_some(utilization)
}

/// Whether extra usage is allowed (available to spend).
fn is_allowed(overage: Option<&WindowState>) -> bool {
    matches!(
        overage,
        Some(WindowState::Allowed | WindowState::AllowedWarning)
    )
}

/// The windows of `subscription` that count calls of `class`: those over every model, and its
/// own model-specific ones.
fn covering<'a>(
    subscription: &'a Subscription,
    class: &'a Arc<str>,
) -> impl Iterator<Item = (&'a String, &'a WindowInfo)> {
    subscription
        .windows
        .iter()
        .filter(move |(name, _)| window_class(name).is_none_or(|c| c == &**class))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn window_lengths_come_from_their_names() {
        assert_eq!(window_length("5h"), Some(Duration::from_secs(5 * 3600)));
        assert_eq!(
            window_length("7d"),
            Some(Duration::from_secs(7 * 24 * 3600))
        );
        assert_eq!(
            window_length("7d_opus"),
            Some(Duration::from_secs(7 * 24 * 3600))
        );
        assert_eq!(window_length("overage"), None);
        assert_eq!(window_length("0h"), None);
        assert_eq!(window_title("7d_opus"), "the weekly opus window");
        assert_eq!(window_title("5h"), "the 5-hour window");
    }

    #[test]
    fn a_weekly_window_half_gone_paces_batch_to_half_its_ceiling() {
        let config = WindowsConfig {
            batch: 0.7,
            pace: true,
            ..WindowsConfig::default()
        };
        let wall = SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000);
        let window = WindowInfo {
            utilization: Some(0.2),
            reset: Some(wall + Duration::from_secs(7 * 24 * 3600 / 2)),
            ..WindowInfo::default()
        };
        let allowed = config.allowed(Priority::Batch, "7d", &window, wall);
        assert!((allowed - 0.35).abs() < 1e-9, "{allowed}");
        assert!(
            config
                .allowed(Priority::Interactive, "7d", &window, wall)
                .is_infinite()
        );
        // A window just started: at least a tenth of the ceiling.
        let fresh = WindowInfo {
            reset: Some(wall + Duration::from_secs(7 * 24 * 3600)),
            ..window
        };
        let allowed = config.allowed(Priority::Batch, "7d", &fresh, wall);
        assert!((allowed - 0.07).abs() < 1e-9, "{allowed}");
    }
}
