//! Time as the broker sees it: monotonic instants passed in by the caller, anchored to the wall
//! clock only for what users read.

use std::time::{Duration, Instant, SystemTime};

/// The longest wait the broker reckons with. Durations from clients and headers are clamped to
/// it, so that no arithmetic on time can overflow.
pub const FOREVER: Duration = Duration::from_secs(366 * 24 * 3600);

/// `now + wait`, with `wait` clamped to [`FOREVER`].
pub fn later(now: Instant, wait: Duration) -> Instant {
    now.checked_add(wait.min(FOREVER)).unwrap_or(now)
}

/// Anchors the monotonic clock to the wall clock, for the times shown to users.
#[derive(Debug, Clone, Copy)]
pub struct TimeBase {
    pub instant: Instant,
    pub wall: SystemTime,
}

impl TimeBase {
    pub fn to_wall(&self, at: Instant) -> SystemTime {
        match at.checked_duration_since(self.instant) {
            Some(after) => self.wall + after,
            None => self.wall - self.instant.duration_since(at),
        }
    }

    pub fn to_instant(&self, at: SystemTime) -> Instant {
        match at.duration_since(self.wall) {
            Ok(after) => later(self.instant, after),
            Err(before) => self
                .instant
                .checked_sub(before.duration())
                .unwrap_or(self.instant),
        }
    }
}
