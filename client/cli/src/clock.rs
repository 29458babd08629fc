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

/// A moment in local time: "14:10" within a day of now, else with its date, "Fri 11 Dec
/// 14:10" (a weekly window's reset seen on the same weekday is not today); on platforms without
/// a local time zone here, UTC with a "Z".
pub fn local(at: SystemTime, now: SystemTime) -> String {
    let near = at
        .duration_since(now)
        .or_else(|_| now.duration_since(at))
        .is_ok_and(|d| d < Duration::from_secs(20 * 3600));
    match local_parts(at) {
        Some(parts) if near => format!("{:02}:{:02}", parts.hour, parts.minute),
        Some(parts) => format!(
            "{} {} {} {:02}:{:02}",
            parts.weekday, parts.day, parts.month, parts.hour, parts.minute
        ),
        None => {
            let text = humantime::format_rfc3339_seconds(at).to_string();
            if near {
                format!("{}Z", &text[11..16])
            } else {
                format!("{} {}Z", &text[..10], &text[11..16])
            }
        }
    }
}

/// A moment's local calendar parts.
struct Parts {
    weekday: &'static str,
    day: i32,
    month: &'static str,
    hour: i32,
    minute: i32,
}

#[cfg(unix)]
fn local_parts(at: SystemTime) -> Option<Parts> {
    const DAYS: [&str; 7] = ["Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat"];
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
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
    Some(Parts {
        weekday: DAYS.get(usize::try_from(tm.tm_wday).ok()?)?,
        day: tm.tm_mday,
        month: MONTHS.get(usize::try_from(tm.tm_mon).ok()?)?,
        hour: tm.tm_hour,
        minute: tm.tm_min,
    })
}

#[cfg(not(unix))]
fn local_parts(_at: SystemTime) -> Option<Parts> {
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
        // A week off is shown with its date, not as if it were today.
        let later = local(now + Duration::from_secs(7 * 24 * 3600), now);
        assert!(later.len() > 10, "{later}");
        assert!(later.split(' ').count() >= 3, "{later}");
    }
}
