//! Times as a user at this terminal reads them: "14:10" (local time), "in 28s".

use std::time::{Duration, SystemTime};

/// RFC 3339 in UTC to the second, or JSON `null`.
pub fn rfc3339(at: Option<SystemTime>) -> serde_json::Value {
    at.map_or(serde_json::Value::Null, |at| {
        serde_json::Value::String(humantime::format_rfc3339_seconds(at).to_string())
    })
}

/// How long until `until`, rounded up to whole seconds: "28s", "1h 2m 5s".
pub fn remaining(until: SystemTime, now: SystemTime) -> String {
    let left = until.duration_since(now).unwrap_or_default();
    humantime::format_duration(Duration::from_secs(left.as_secs_f64().ceil() as u64)).to_string()
}

/// A moment in local time: "14:10" within the next day, else "Tue 14:10"; on platforms
/// without a local time zone here, UTC with a "Z".
pub fn local(at: SystemTime, now: SystemTime) -> String {
    let soon = at
        .duration_since(now)
        .is_ok_and(|d| d < Duration::from_secs(20 * 3600))
        || now.duration_since(at).is_ok();
    match local_parts(at) {
        Some((_, hour, minute)) if soon => format!("{hour:02}:{minute:02}"),
        Some((weekday, hour, minute)) => format!("{weekday} {hour:02}:{minute:02}"),
        None => {
            let text = humantime::format_rfc3339_seconds(at).to_string();
            format!("{}Z", &text[11..16])
        }
    }
}

#[cfg(unix)]
fn local_parts(at: SystemTime) -> Option<(&'static str, i32, i32)> {
    const DAYS: [&str; 7] = ["Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat"];
    let secs = at.duration_since(SystemTime::UNIX_EPOCH).ok()?.as_secs();
    let time = libc::time_t::try_from(secs).ok()?;
    // SAFETY: `tm` is plain data that localtime_r fills in; both pointers are valid for the call.
    let tm = unsafe {
        let mut tm: libc::tm = std::mem::zeroed();
        if libc::localtime_r(&time, &mut tm).is_null() {
            return None;
        }
        tm
    };
    let weekday = DAYS.get(usize::try_from(tm.tm_wday).ok()?)?;
    Some((weekday, tm.tm_hour, tm.tm_min))
}

#[cfg(not(unix))]
fn local_parts(_at: SystemTime) -> Option<(&'static str, i32, i32)> {
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn remaining_rounds_up() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1000);
        assert_eq!(remaining(now + Duration::from_millis(27_100), now), "28s");
        assert_eq!(remaining(now, now + Duration::from_secs(5)), "0s");
    }

    #[test]
    fn local_times_have_hours_and_minutes() {
        let now = SystemTime::now();
        let soon = local(now + Duration::from_secs(600), now);
        assert_eq!(soon.len(), 5, "{soon}");
        assert_eq!(&soon[2..3], ":");
        let later = local(now + Duration::from_secs(3 * 24 * 3600), now);
        assert!(later.len() >= 5, "{later}");
    }
}
