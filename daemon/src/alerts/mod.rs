//! Alerts (`[alerts]`): the person learns without looking. Once a second pacerd looks at what
//! the broker shows and tells, once per crossing:
//!
//! - a window crossing a threshold (`thresholds`, 75 %, 90 % and 100 % by default);
//! - a pause longer than `pause_over` (a 429's `retry-after`, `pacer pause`);
//! - a lockout (a spent window, a spend cap, a 429 asking for longer than `max_hold`);
//! - batch (or normal) work held by a window's ceiling;
//! - a client spending a window faster than `runaway_per_hour` (the runaway loop).
//!
//! This file decides what to tell ([`Watcher`], pure: a view of the status in, alerts out);
//! `deliver` tells it (a command, a webhook, the desktop), throttled, each failure logged once.

mod deliver;
mod watch;

pub use deliver::{Deliveries, alert_task};
pub use watch::{View, Watcher};

use std::time::SystemTime;

use serde::Serialize;

/// What happened.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    /// A window crossed a threshold.
    Window,
    /// A budget is paused for longer than `pause_over`.
    Pause,
    /// An account (or one of its classes) is locked out.
    Lockout,
    /// A priority's calls are held by a window's ceiling.
    Held,
    /// A client spends a window faster than `runaway_per_hour`.
    Runaway,
}

impl Kind {
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Window => "window",
            Kind::Pause => "pause",
            Kind::Lockout => "lockout",
            Kind::Held => "held",
            Kind::Runaway => "runaway",
        }
    }
}

/// One alert: the facts, and one line saying them.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Alert {
    pub event: Kind,
    /// The account (or key) it is about.
    pub account: String,
    pub window: Option<String>,
    /// The window's utilization, 0 to 1 (a little over once spent).
    pub utilization: Option<f64>,
    /// The threshold crossed.
    pub threshold: Option<f64>,
    #[serde(serialize_with = "rfc3339")]
    pub reset: Option<SystemTime>,
    /// When a pause or lockout ends.
    #[serde(serialize_with = "rfc3339")]
    pub until: Option<SystemTime>,
    /// The client, for a runaway; the priority held, for `held`; the budget, for a pause.
    pub subject: Option<String>,
    pub message: String,
}

fn rfc3339<S: serde::Serializer>(at: &Option<SystemTime>, s: S) -> Result<S::Ok, S::Error> {
    match at {
        Some(at) => s.serialize_str(&humantime::format_rfc3339_seconds(*at).to_string()),
        None => s.serialize_none(),
    }
}

impl Alert {
    /// The `PACER_*` variables a command gets.
    pub fn env(&self) -> Vec<(&'static str, String)> {
        let mut env = vec![
            ("PACER_EVENT", self.event.as_str().to_owned()),
            ("PACER_ACCOUNT", self.account.clone()),
            ("PACER_MESSAGE", self.message.clone()),
        ];
        let percent = |share: f64| format!("{:.0}", share * 100.0);
        if let Some(window) = &self.window {
            env.push(("PACER_WINDOW", window.clone()));
        }
        if let Some(used) = self.utilization {
            env.push(("PACER_UTILIZATION", percent(used)));
        }
        if let Some(threshold) = self.threshold {
            env.push(("PACER_THRESHOLD", percent(threshold)));
        }
        let epoch = |at: SystemTime| {
            at.duration_since(SystemTime::UNIX_EPOCH)
                .map_or(0, |d| d.as_secs())
                .to_string()
        };
        if let Some(reset) = self.reset {
            env.push((
                "PACER_RESET",
                humantime::format_rfc3339_seconds(reset).to_string(),
            ));
            env.push(("PACER_RESET_EPOCH", epoch(reset)));
        }
        if let Some(until) = self.until {
            env.push((
                "PACER_UNTIL",
                humantime::format_rfc3339_seconds(until).to_string(),
            ));
        }
        if let Some(subject) = &self.subject {
            env.push(("PACER_SUBJECT", subject.clone()));
        }
        env
    }
}
