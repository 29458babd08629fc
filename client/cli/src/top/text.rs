//! How `pacer top` writes numbers and durations in little room.

use std::time::Duration;

/// `12s`, `4m`, `2h 10m`: a short duration, at most two units.
pub(super) fn short(d: Duration) -> String {
    let secs = d.as_secs_f64().ceil() as u64;
    match secs {
        0..60 => format!("{secs}s"),
        60..3600 => format!("{}m", secs.div_ceil(60)),
        3600..86400 => format!("{}h {}m", secs / 3600, secs % 3600 / 60),
        _ => format!("{}d {}h", secs / 86400, secs % 86400 / 3600),
    }
}

/// `12/50`, `1.2k/30.0k`: what is available of a limit, in the limit's unit.
pub(super) fn of_limit(available: i64, limit: u64) -> String {
    if limit < 10_000 {
        return format!("{available}/{limit}");
    }
    let (scale, unit) = if limit < 10_000_000 {
        (1e3, "k")
    } else {
        (1e6, "M")
    };
    format!(
        "{:.1}{unit}/{:.1}{unit}",
        available as f64 / scale,
        limit as f64 / scale
    )
}

/// `1 connection`, `4 connections`.
pub(super) fn plural(n: usize, what: &str) -> String {
    if n == 1 {
        format!("1 {what}")
    } else {
        format!("{n} {what}s")
    }
}

/// `950`, `12.3k`, `4.1M`.
pub(super) fn count(n: i64) -> String {
    let abs = n.unsigned_abs() as f64;
    let sign = if n < 0 { "-" } else { "" };
    match abs {
        a if a < 10_000.0 => n.to_string(),
        a if a < 1e6 => format!("{sign}{:.1}k", a / 1e3),
        a => format!("{sign}{:.1}M", a / 1e6),
    }
}
