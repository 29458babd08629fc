//! The series of accounts' subscription windows: utilization as the API said it and as pacer
//! estimates it, ceilings by priority, burn rate and when each runs out.

use super::*;

pub(super) fn encode(encoder: &mut DescriptorEncoder, s: &Snapshot) -> std::fmt::Result {
    let windows = || {
        s.accounts.iter().flat_map(|a| {
            a.windows.iter().map(move |w| {
                let labels = vec![("owner", a.owner.to_string()), ("window", w.name.clone())];
                (labels, w)
            })
        })
    };
    gauges(
        encoder,
        "pacer_window_utilization",
        "The spent fraction of a subscription window (0 to 1)",
        windows().filter_map(|(labels, w)| Some((labels, w.utilization?))),
    )?;
    gauges(
        encoder,
        "pacer_window_reset_seconds",
        "Seconds until a subscription window resets",
        windows().filter_map(|(labels, w)| {
            let left = w.reset?.duration_since(s.now).unwrap_or_default();
            Some((labels, left.as_secs_f64()))
        }),
    )?;
    gauges(
        encoder,
        "pacer_window_estimated_utilization",
        "Where pacer reckons a window is: its utilization plus the calls in flight toward it",
        windows().filter_map(|(labels, w)| Some((labels, w.estimated?))),
    )?;
    gauges(
        encoder,
        "pacer_window_burn_per_hour",
        "Utilization spent per hour over the last 15 minutes",
        windows().filter_map(|(labels, w)| Some((labels, w.burn_per_hour?))),
    )?;
    gauges(
        encoder,
        "pacer_window_runs_out_seconds",
        "Seconds until the window runs out at the last 15 minutes' rate (absent: not before \
         it resets)",
        windows().filter_map(|(labels, w)| {
            let left = w.runs_out?.duration_since(s.now).unwrap_or_default();
            Some((labels, left.as_secs_f64()))
        }),
    )?;
    let per_priority = || {
        windows().flat_map(|(labels, w)| {
            w.ceilings
                .iter()
                .map(move |c| (with(labels.clone(), "priority", &c.priority.to_string()), c))
        })
    };
    gauges(
        encoder,
        "pacer_window_ceiling",
        "How far a priority may bring the window now ([windows], paced)",
        per_priority().map(|(labels, c)| (labels, c.ceiling)),
    )?;
    gauges(
        encoder,
        "pacer_window_held",
        "1 while the window holds a priority's calls",
        per_priority().map(|(labels, c)| (labels, f64::from(u8::from(c.held)))),
    )?;
    counters(
        encoder,
        "pacer_window_held_refused",
        "Calls of a priority the window held until they were refused",
        per_priority().map(|(labels, c)| (labels, c.refused as f64)),
    )
}
