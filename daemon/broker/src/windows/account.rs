//! What the last responses said of one account's subscription windows, and how pacer's
//! estimate of each moves with them.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Instant, SystemTime};

use pacer_api::unified::{Unified, UnifiedWindow, WindowState, window_class};
use pacer_protocol::message::WindowStatus;

use super::estimate::Estimate;

/// One account's windows (5-hour, weekly, per-model weekly), its unified status and extra
/// usage.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct AccountWindows {
    /// The overall status of the unified limit.
    pub status: Option<WindowState>,
    pub windows: BTreeMap<String, Window>,
    /// Extra usage beyond the windows: whether the account may spend it, and whether it does.
    pub overage: Option<WindowState>,
    pub overage_in_use: Option<bool>,
    /// Calls of this daemon answered with the unified headers, per model class (what the
    /// windows' shares are learned from), and those other daemons told of.
    pub answered: BTreeMap<Arc<str>, u64>,
    pub answered_elsewhere: u64,
}

/// One window: what the API last said of it, and pacer's estimate.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Window {
    pub said: UnifiedWindow,
    /// What one call costs of it, and how fast it is spent.
    pub estimate: Estimate,
    /// When an answer last spoke of it (the least recently seen goes first when an account
    /// would hold more than [`MAX_WINDOWS_PER_ACCOUNT`]).
    pub seen: Option<Instant>,
}

/// The most windows kept of one account: the API names three or four (`5h`, `7d`, `7d_opus`,
/// `7d_sonnet`); an upstream naming new ones on every answer cannot grow the table past this.
pub const MAX_WINDOWS_PER_ACCOUNT: usize = 16;

impl AccountWindows {
    /// The calls answered that count toward window `name`: every class's for a window over every
    /// model, its class's for a model-specific one.
    pub fn answered_for(&self, name: &str) -> u64 {
        match window_class(name) {
            Some(class) => self.answered.get(class).copied().unwrap_or(0),
            None => self.answered.values().sum::<u64>() + self.answered_elsewhere,
        }
    }

    /// Whether extra usage is allowed (available to spend).
    pub fn overage_allowed(&self) -> bool {
        matches!(
            self.overage,
            Some(WindowState::Allowed | WindowState::AllowedWarning)
        )
    }

    /// The windows that count calls of `class`: those over every model, and its own
    /// model-specific ones.
    pub fn covering<'a>(
        &'a self,
        class: &'a Arc<str>,
    ) -> impl Iterator<Item = (&'a String, &'a Window)> {
        self.windows
            .iter()
            .filter(move |(name, _)| window_class(name).is_none_or(|c| c == &**class))
    }

    /// Takes in what a response said — the answer to a call of `class`, or (`None`) what
    /// another daemon reported; returns the windows that crossed 75 %, 90 % or 100 % or changed
    /// status, and whether anything moved that other daemons should hear (a status, a reset, a
    /// point of utilization, extra usage).
    pub fn observe(
        &mut self,
        unified: &Unified,
        class: Option<&Arc<str>>,
        now: Instant,
    ) -> (Vec<WindowStatus>, bool) {
        if let Some(class) = class {
            *self.answered.entry(class.clone()).or_default() += 1;
        }
        let mut moved = unified.status.is_some() && self.status != unified.status;
        if unified.status.is_some() {
            self.status = unified.status.clone();
        }
        if unified.overage_status.is_some() {
            moved |= self.overage != unified.overage_status;
            self.overage = unified.overage_status.clone();
        }
        if unified.overage_in_use.is_some() {
            moved |= self.overage_in_use != unified.overage_in_use;
            self.overage_in_use = unified.overage_in_use;
        }
        let mut changed = Vec::new();
        // Windows known already first: a new name makes room only by the least recently seen
        // of those this answer did not name (and is dropped when there is none).
        let (known, new): (Vec<_>, Vec<_>) = unified
            .windows
            .iter()
            .partition(|w| self.windows.contains_key(&w.name));
        for window in known.into_iter().chain(new) {
            let answered = self.answered_for(&window.name);
            if !self.windows.contains_key(&window.name)
                && self.windows.len() >= MAX_WINDOWS_PER_ACCOUNT
            {
                let stalest = self
                    .windows
                    .iter()
                    .filter(|(_, w)| w.seen.is_none_or(|seen| seen < now))
                    .min_by_key(|(_, w)| w.seen)
                    .map(|(name, _)| name.clone());
                match stalest {
                    Some(stalest) => self.windows.remove(&stalest),
                    None => continue,
                };
            }
            let known = self
                .windows
                .entry(window.name.clone())
                .or_insert_with(|| Window {
                    said: UnifiedWindow {
                        name: window.name.clone(),
                        ..UnifiedWindow::default()
                    },
                    estimate: Estimate::default(),
                    seen: None,
                });
            known.seen = Some(now);
            let before = known.said.clone();
            let band = known.band();
            if window.status.is_some() {
                known.said.status = window.status.clone();
            }
            if let Some(utilization) = window.utilization {
                known.said.utilization = Some(utilization);
                known.estimate.observe(utilization, answered, now);
            }
            if window.reset.is_some() {
                known.said.reset = window.reset;
            }
            let said = &known.said;
            if said.status != before.status || known.band() > band {
                changed.push(known.to_wire());
            }
            let utilization_moved = match (said.utilization, before.utilization) {
                (Some(now), Some(then)) => (now - then).abs() >= 0.01,
                (now, then) => now.is_some() != then.is_some(),
            };
            moved |=
                said.status != before.status || said.reset != before.reset || utilization_moved;
        }
        (changed, moved)
    }
}

impl AccountWindows {
    /// The wall clock stepped by `step` (see `Broker::rebase`): each reset, read against the
    /// clock as it was, moves with it, so it stays as far ahead as the API said.
    pub fn shift(&mut self, step: Step) {
        for window in self.windows.values_mut() {
            window.said.reset = window.said.reset.and_then(|reset| step.apply(reset));
        }
    }
}

/// How far the wall clock stepped: forward or back.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    Forward(std::time::Duration),
    Back(std::time::Duration),
}

impl Step {
    /// `at` moved by the step.
    pub fn apply(self, at: SystemTime) -> Option<SystemTime> {
        match self {
            Step::Forward(by) => at.checked_add(by),
            Step::Back(by) => at.checked_sub(by),
        }
    }
}

impl Window {
    /// What the API said of the window, as `pacer status` shows it (the broker adds its
    /// estimates, see `windows`).
    pub fn to_wire(&self) -> WindowStatus {
        let said = &self.said;
        WindowStatus::reported(
            said.name.clone(),
            said.status.as_ref().map(|s| s.as_str().to_owned()),
            said.utilization,
            said.reset,
        )
    }

    /// When it resets, if the API said.
    pub fn reset(&self) -> Option<SystemTime> {
        self.said.reset
    }

    /// Its utilization as last reported, unless its reset has passed since (then nothing is
    /// known until the next answer says).
    pub fn current(&self, wall: SystemTime) -> Option<f64> {
        let utilization = self.said.utilization?;
        self.said
            .reset
            .is_none_or(|reset| reset > wall)
            .then_some(utilization)
    }

    /// 0 below 75 %, 1 from 75 %, 2 from 90 %, 3 from 100 %.
    fn band(&self) -> u8 {
        match self.said.utilization {
            Some(u) if u >= 1.0 => 3,
            Some(u) if u >= 0.9 => 2,
            Some(u) if u >= 0.75 => 1,
            _ => 0,
        }
    }
}
