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
//! - this file: the policy ([`WindowsConfig`]), the table of every account's windows
//!   ([`Windows`]): whether a priority is held ([`Hold`]), and what `pacer status` shows of them;
//! - `account`: what the API said of one account's windows ([`AccountWindows`]);
//! - `estimate`: a window's share of a call and its burn rate;
//! - `in_flight`: the calls each account has in flight toward its windows, here and elsewhere;
//! - `caps`: a client's cap on each window (`--max-share`), and the calls counted against it.

mod account;
mod caps;
pub(crate) mod estimate;
mod in_flight;

pub use account::{AccountWindows, MAX_WINDOWS_PER_ACCOUNT, Step, Window};
pub use estimate::Estimate;
pub use in_flight::InFlight;
use in_flight::WindowUse;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

pub use pacer_api::unified::window_title;
use pacer_api::unified::{Unified, window_class};
use pacer_protocol::Priority;
use pacer_protocol::message::{Event, PriorityCeiling, WindowStatus};

use super::owner::Owner;
use super::time::{FOREVER, TimeBase, later, local_time};

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
    /// Caps per client name (`[windows.max_share]`): the most of each window a client of that
    /// name (or a session of a `pacer run --name` of it) may use, per window.
    pub max_share: BTreeMap<String, f64>,
}

impl Default for WindowsConfig {
    fn default() -> Self {
        WindowsConfig {
            batch: 0.8,
            normal: 1.0,
            pace: false,
            overage: vec![Priority::Interactive],
            max_share: BTreeMap::new(),
        }
    }
}

impl WindowsConfig {
    /// The cap `[windows.max_share]` names for `client`: by its whole id, else by the name
    /// before a `/` (`review/3f2a9c1d`, a session of `pacer run --name review`).
    pub fn max_share_of(&self, client: &str) -> Option<f64> {
        let named = || client.split_once('/').map(|(name, _)| name);
        self.max_share
            .get(client)
            .or_else(|| named().and_then(|name| self.max_share.get(name)))
            .copied()
    }

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
    fn allowed(&self, priority: Priority, name: &str, window: &Window, wall: SystemTime) -> f64 {
        let Some(ceiling) = self.ceiling(priority) else {
            return f64::INFINITY;
        };
        match (self.pace, elapsed(name, window.reset(), wall)) {
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
    /// The client used its cap (`--max-share`) of the window.
    Cap,
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
            HoldCause::Cap => format!(
                "this client used its cap of {percent} % of {title} (its --max-share); it is \
                 held{until}; other clients go on"
            ),
        }
    }
}

/// The accounts' subscription windows and the rules about them: the policy, what the API said
/// of each account's windows, and the calls in flight toward them, here and elsewhere.
#[derive(Debug, Default)]
pub struct Windows {
    config: WindowsConfig,
    accounts: BTreeMap<Owner, AccountWindows>,
    calls: WindowUse,
    /// What capped clients used of each window.
    caps: caps::CapCounts,
    /// Seconds east of UTC, for the times messages give (`until 16:40`).
    utc_offset: i32,
}

/// The most accounts whose windows are kept (as many as budgets): each holds at most
/// [`MAX_WINDOWS_PER_ACCOUNT`], so the table is bounded in all.
pub const MAX_ACCOUNTS: usize = 10_000;

impl Windows {
    /// Forgets what the API said of `owner`'s windows (`pacer pause --for 0`: a bad window
    /// cleared by hand); the next answer says again.
    pub fn forget(&mut self, owner: &Owner) {
        self.accounts.remove(owner);
    }

    /// The wall clock stepped: every window's reset moves with it.
    pub fn shift(&mut self, step: account::Step) {
        for account in self.accounts.values_mut() {
            account.shift(step);
        }
        self.shift_caps(step);
    }

    pub fn new(config: WindowsConfig) -> Self {
        Windows {
            config,
            ..Windows::default()
        }
    }

    pub fn configure(&mut self, config: WindowsConfig) {
        self.config = config;
    }

    /// The local time zone's offset from UTC (seconds east), for the times messages give.
    pub fn set_utc_offset(&mut self, seconds: i32) {
        self.utc_offset = seconds.clamp(-18 * 3600, 18 * 3600);
    }

    /// An account's windows, if a response told of any.
    pub fn of(&self, owner: &Owner) -> Option<&AccountWindows> {
        self.accounts.get(owner)
    }

    pub fn iter(&self) -> impl Iterator<Item = (&Owner, &AccountWindows)> {
        self.accounts.iter()
    }

    /// Takes in what a response said of `owner`'s windows (see [`AccountWindows::observe`]):
    /// returns the events for the windows that crossed a band or changed status, and whether
    /// anything moved that other daemons should hear.
    pub fn observe(
        &mut self,
        owner: &Owner,
        unified: &Unified,
        class: Option<&Arc<str>>,
        now: Instant,
    ) -> (Vec<Event>, bool) {
        if unified.is_empty() {
            return (Vec::new(), false);
        }
        if !self.accounts.contains_key(owner) && self.accounts.len() >= MAX_ACCOUNTS {
            // Room for a new account: the one whose windows were heard of least recently goes.
            let stalest = self
                .accounts
                .iter()
                .min_by_key(|(_, account)| account.windows.values().filter_map(|w| w.seen).max())
                .map(|(owner, _)| owner.clone());
            self.accounts.remove(&stalest.expect("the table is full"));
        }
        let account = self.accounts.entry(owner.clone()).or_default();
        let (crossed, moved) = account.observe(unified, class, now);
        let events = crossed
            .into_iter()
            .map(|window| Event::Window {
                owner: owner.to_wire(),
                window,
            })
            .collect();
        (events, moved)
    }

    /// A key's windows become its account's when it joins one (the account's own, if it has
    /// any, are newer or as new).
    pub fn move_owner(&mut self, from: &Owner, to: &Owner) {
        self.move_caps(from, to);
        if let Some(windows) = self.accounts.remove(from) {
            self.accounts.entry(to.clone()).or_insert(windows);
        }
    }

    pub fn restore(&mut self, owner: Owner, windows: AccountWindows) {
        self.accounts.insert(owner, windows);
    }

    /// Whether calls of `priority` to `owner`'s `class` are held by its windows now, and by
    /// which (the one whose hold lasts longest).
    pub fn hold(
        &self,
        owner: &Owner,
        class: &Arc<str>,
        priority: Priority,
        clock: &TimeBase,
        now: Instant,
    ) -> Option<Hold> {
        let account = self.accounts.get(owner)?;
        let config = &self.config;
        let wall = clock.to_wall(now);
        let mut holds = Vec::new();
        let spends_overage = !config.overage.contains(&priority)
            && (account.overage_in_use == Some(true) || account.overage_allowed());
        for (name, window) in account.covering(class) {
            let Some(utilization) = window.current(wall) else {
                continue;
            };
            let in_flight = self.calls.calls(owner, window_class(name));
            let estimated = utilization + f64::from(in_flight + 1) * window.estimate.share();
            let reset = window.reset().map(|at| clock.to_instant(at));
            if spends_overage
                && (account.overage_in_use == Some(true) && utilization >= 1.0 || estimated > 1.0)
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
            if utilization + window.estimate.share() <= allowed + 1e-9 {
                // The calls in flight (here or told by other daemons) hold it, not what the
                // window has spent: they are answered, or their count expires, in seconds.
                holds.push(Hold {
                    window: name.clone(),
                    priority,
                    allowed,
                    cause: HoldCause::Ceiling,
                    until: Some(later(now, in_flight::ELSEWHERE_TTL)),
                });
                continue;
            }
            let paced = config.pace && allowed < ceiling;
            // When the pace lets the next call in: allowed(t) = ceiling × elapsed(t) ≥ estimated.
            let until = match (paced, window_length(name), reset) {
                (true, Some(length), Some(reset)) if estimated < ceiling => {
                    let early = length.mul_f64(1.0 - estimated / ceiling);
                    Some(reset.checked_sub(early).unwrap_or(now).max(now))
                }
                (_, _, reset) => reset,
            };
            let cause = if paced {
                HoldCause::Pace
            } else {
                HoldCause::Ceiling
            };
            holds.push(Hold {
                window: name.clone(),
                priority,
                allowed,
                cause,
                until,
            });
        }
        holds
            .into_iter()
            .max_by_key(|hold| hold.until.unwrap_or(later(now, FOREVER)))
    }

    /// How long `hold` lasts, and what it says in words.
    pub fn holdup(&self, hold: &Hold, clock: &TimeBase, now: Instant) -> (Duration, String) {
        let until = hold.until.map(|at| clock.to_wall(at));
        let wait = hold
            .until
            .map_or(FOREVER, |at| at.saturating_duration_since(now));
        (wait, hold.text(until, clock.to_wall(now), self.utc_offset))
    }

    /// A call held by `hold` until it was refused: counted for `pacer status` and `/metrics`.
    pub fn count_refusal(&mut self, owner: &Owner, hold: &Hold) {
        self.calls.refused(owner, &hold.window, hold.priority);
    }

    /// A call of `owner`'s `class` was granted: counted in flight toward the account's windows,
    /// if it has any (returns whether it was).
    pub fn start_call(&mut self, owner: &Owner, class: &Arc<str>) -> bool {
        if self
            .accounts
            .get(owner)
            .is_none_or(|a| a.windows.is_empty())
        {
            return false;
        }
        self.calls.start(owner, class);
        true
    }

    /// The answer to such a call came (or never will): its cost is in the utilization the API
    /// reports now.
    pub fn end_call(&mut self, owner: &Owner, class: &Arc<str>) {
        self.calls.end(owner, class);
    }

    /// What this daemon tells the others sharing `owner`'s account: its calls in flight toward
    /// the windows, and those answered.
    pub fn calls_here(&self, owner: &Owner) -> InFlight {
        InFlight {
            in_flight: self.calls.here(owner),
            answered: self
                .accounts
                .get(owner)
                .map_or(0, |a| a.answered.values().sum()),
        }
    }

    /// Another daemon told what it has in flight toward `owner`'s windows and has had answered.
    pub fn told(&mut self, owner: &Owner, from: &str, told: InFlight, now: Instant) {
        let more = self.calls.told(owner, from, told, now);
        if let Some(account) = self.accounts.get_mut(owner) {
            account.answered_elsewhere = account.answered_elsewhere.saturating_add(more);
        }
    }

    /// Forgets what other daemons told and did not tell again; returns the accounts this daemon
    /// has calls in flight for (to tell again).
    pub fn expire(&mut self, now: Instant) -> Vec<Owner> {
        self.calls.expire(now);
        self.calls.owners_here()
    }

    /// When the calls waiting on `owner`'s `class` budget (`waiting`: interactive, normal,
    /// batch) that the windows hold can go: `None` when no window holds them, `Some(None)`
    /// when a hold has no end in sight. A budget's queue drains at that pace, not its buckets'.
    pub fn drain(
        &self,
        (owner, class): (&Owner, &Arc<str>),
        waiting: [u32; 3],
        clock: &TimeBase,
        now: Instant,
    ) -> Option<Option<Duration>> {
        let priorities = [Priority::Interactive, Priority::Normal, Priority::Batch];
        let holds: Vec<Option<Instant>> = priorities
            .into_iter()
            .zip(waiting)
            .filter(|&(_, n)| n > 0)
            .filter_map(|(priority, _)| self.hold(owner, class, priority, clock, now))
            .map(|hold| hold.until)
            .collect();
        if holds.is_empty() {
            return None;
        }
        Some(
            holds
                .into_iter()
                .try_fold(Duration::ZERO, |longest, until| {
                    until.map(|at| longest.max(at.saturating_duration_since(now)))
                }),
        )
    }

    /// `owner`'s windows as `pacer status` shows them: what the API said, and pacer's estimate,
    /// ceilings and forecast.
    pub fn status(&self, owner: &Owner, clock: &TimeBase, now: Instant) -> Vec<WindowStatus> {
        let Some(account) = self.accounts.get(owner) else {
            return Vec::new();
        };
        let wall = clock.to_wall(now);
        account
            .windows
            .iter()
            .map(|(name, window)| {
                // Past its reset, what the API said is over: nothing is known of the new
                // window until an answer says (its old reset is kept, to say when it reset).
                if window.reset().is_some_and(|reset| reset <= wall) {
                    return WindowStatus::reported(name.clone(), None, None, window.reset());
                }
                let mut status = window.to_wire();
                if let Some(utilization) = window.current(wall) {
                    let seen = Seen {
                        name,
                        window,
                        utilization,
                        wall,
                    };
                    self.estimate(&mut status, owner, account, seen, now);
                }
                status
            })
            .collect()
    }

    /// Adds pacer's estimate, ceilings and forecast to a window's status.
    fn estimate(
        &self,
        status: &mut WindowStatus,
        owner: &Owner,
        account: &AccountWindows,
        seen: Seen<'_>,
        now: Instant,
    ) {
        let Seen {
            name,
            window,
            utilization,
            wall,
        } = seen;
        let config = &self.config;
        let in_flight = self.calls.calls(owner, window_class(name));
        let share = window.estimate.share();
        let estimated = utilization + f64::from(in_flight) * share;
        status.estimated = Some(estimated);
        status.share = window.estimate.learned_share();
        let spending =
            account.overage_in_use == Some(true) && utilization >= 1.0 || account.overage_allowed();
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
                    refused: self.calls.refused_of(owner, name, priority),
                }
            })
            .collect();
        if let Some(rate) = window.estimate.burn_per_second(now) {
            status.burn_per_hour = Some(rate * 3600.0);
            let left = (1.0 - estimated).max(0.0) / rate;
            let runs_out = wall + Duration::from_secs_f64(left.min(FOREVER.as_secs_f64()));
            status.runs_out = window
                .reset()
                .is_none_or(|reset| runs_out < reset)
                .then_some(runs_out);
        }
    }
}

/// A window with a utilization still current at `wall`.
struct Seen<'a> {
    name: &'a str,
    window: &'a Window,
    utilization: f64,
    wall: SystemTime,
}

#[cfg(test)]
mod tests;
