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

/// `at` as a person reads it, in local time (`utc_offset` seconds east of UTC): `16:40` within
/// a day of `now`, `Fri 4 Dec 16:40` further off.
pub fn local_time(at: SystemTime, now: SystemTime, utc_offset: i32) -> String {
    let local = |t: SystemTime| -> i64 {
        let secs = match t.duration_since(SystemTime::UNIX_EPOCH) {
            Ok(d) => d.as_secs() as i64,
            Err(e) => -(e.duration().as_secs() as i64),
        };
        secs + i64::from(utc_offset)
    };
    let secs = local(at);
    let (day, of_day) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    let clock = format!("{:02}:{:02}", of_day / 3600, of_day % 3600 / 60);
    let far = at
        .duration_since(now)
        .or_else(|_| now.duration_since(at))
        .is_ok_and(|d| d >= Duration::from_secs(86_400));
    if !far {
        return clock;
    }
    // Days since 1970-01-01 (a Thursday) to a civil date (Howard Hinnant's algorithm).
    let weekday = ["Thu", "Fri", "Sat", "Sun", "Mon", "Tue", "Wed"][day.rem_euclid(7) as usize];
    let z = day + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let dom = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let name = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ][(month - 1) as usize];
    format!("{weekday} {dom} {name} {clock}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_read_as_a_clock_within_a_day_and_with_their_date_beyond() {
        // 2026-12-04 16:40 UTC, a Friday.
        let at = SystemTime::UNIX_EPOCH + Duration::from_secs(1_796_402_400);
        let now = at - Duration::from_secs(3600);
        assert_eq!(local_time(at, now, 0), "16:40");
        assert_eq!(local_time(at, now, 3600), "17:40");
        let week_before = at - Duration::from_secs(7 * 86_400);
        assert_eq!(local_time(at, week_before, 0), "Fri 4 Dec 16:40");
    }
}
