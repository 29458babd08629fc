//! A model class's shared backoff after 529 (overloaded) answers: the API as a whole is busy, so
//! every budget of the class waits together, 1 s at first, doubling per consecutive 529 up to
//! 32 s, reset by a success.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::later;

/// The first backoff after a 529, doubled for each consecutive one up to the maximum.
pub const OVERLOAD_BACKOFF_START: Duration = Duration::from_secs(1);
pub const OVERLOAD_BACKOFF_MAX: Duration = Duration::from_secs(32);

/// One class's backoff.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Overload {
    /// 529s since the last success.
    pub consecutive: u32,
    /// Nothing of the class is granted before then.
    pub until: Option<Instant>,
}

#[derive(Debug, Default)]
pub struct Overloads {
    by_class: HashMap<Arc<str>, Overload>,
}

impl Overloads {
    /// When the class's backoff ends, if one is in force.
    pub fn gate(&self, class: &str) -> Option<Instant> {
        self.by_class.get(class).and_then(|o| o.until)
    }

    /// A 529 was answered for `class`; returns the new end of its backoff if it moved later.
    pub fn record(
        &mut self,
        class: &Arc<str>,
        retry_after: Option<Duration>,
        now: Instant,
    ) -> Option<Instant> {
        let overload = self.by_class.entry(class.clone()).or_default();
        overload.consecutive = overload.consecutive.saturating_add(1);
        let doublings = overload.consecutive.saturating_sub(1).min(16);
        let backoff = (OVERLOAD_BACKOFF_START * 2u32.pow(doublings)).min(OVERLOAD_BACKOFF_MAX);
        // A 529's retry-after is believed up to the cap: the API as a whole is busy, which
        // passes in seconds, not days.
        let asked = retry_after.unwrap_or_default().min(OVERLOAD_BACKOFF_MAX);
        let until = later(now, backoff.max(asked));
        if overload.until.is_some_and(|current| current >= until) {
            return None;
        }
        overload.until = Some(until);
        Some(until)
    }

    /// Backs the class off until `until` at least (another daemon saw the 529s).
    pub fn extend(&mut self, class: &Arc<str>, until: Instant) {
        let overload = self.by_class.entry(class.clone()).or_default();
        if overload.until.is_none_or(|current| current < until) {
            overload.until = Some(until);
        }
    }

    /// A call of the class succeeded: the next 529 starts the backoff over.
    pub fn succeeded(&mut self, class: &str) {
        if let Some(overload) = self.by_class.get_mut(class) {
            overload.consecutive = 0;
        }
    }

    /// Ends the class's backoff now (an administrator lifted it), and starts the count over.
    pub fn lift(&mut self, class: &str) {
        self.by_class.remove(class);
    }

    /// Ends the backoffs whose time has passed.
    pub fn expire(&mut self, now: Instant) {
        for overload in self.by_class.values_mut() {
            if overload.until.is_some_and(|until| until <= now) {
                overload.until = None;
            }
        }
    }

    pub fn iter(&self) -> impl Iterator<Item = (&Arc<str>, &Overload)> {
        self.by_class.iter()
    }

    /// A backoff from the state file, held to the cap.
    pub fn restore(&mut self, class: Arc<str>, mut overload: Overload, now: Instant) {
        overload.until = overload
            .until
            .map(|until| until.min(later(now, OVERLOAD_BACKOFF_MAX)));
        overload.consecutive = overload.consecutive.min(16);
        self.by_class.insert(class, overload);
    }
}
