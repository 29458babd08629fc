//! The tables of `pacer status` a person reads: budgets, accounts, routes, clients.

use std::time::SystemTime;

use pacer_protocol::Throttle;
use pacer_protocol::message::{
    AccountStatus, BudgetStatus, ClientStatus, PauseCause, RouteStatus, SessionStatus, StartStatus,
    WindowStatus,
};

use crate::clock::{local, remaining};

pub fn routes_table(routes: &[RouteStatus], now: SystemTime) -> String {
    let rows: Vec<Vec<String>> = routes
        .iter()
        .map(|r| {
            vec![
                r.id.clone(),
                r.upstream.clone(),
                dash_if_empty(r.clients.join(", ")),
                format!("{} ago", remaining(now, r.last_used)),
            ]
        })
        .collect();
    table(&["ROUTE", "UPSTREAM", "CLIENTS", "LAST USED"], &rows)
}

pub fn budgets_table(budgets: &[BudgetStatus], now: SystemTime) -> String {
    let header = [
        "OWNER",
        "CLASS",
        "RPM",
        "ITPM",
        "OTPM",
        "AVAIL REQ",
        "AVAIL IN",
        "AVAIL OUT",
        "IN FLIGHT",
        "WAITING (I/N/B)",
        "DRAINS IN",
        "PAUSED",
        "GRANTED",
        "429S",
        "529S",
        "REFUSED",
    ];
    let rows: Vec<Vec<String>> = budgets.iter().map(|b| budget_row(b, now)).collect();
    table(&header, &rows)
}

fn budget_row(b: &BudgetStatus, now: SystemTime) -> Vec<String> {
    let opt = |v: Option<u64>| v.map_or("-".to_owned(), |v| v.to_string());
    let avail = |v: Option<i64>| v.map_or("-".to_owned(), |v| v.to_string());
    let paused = match (b.paused_until, b.overloaded_until) {
        (Some(until), _) => {
            let cause = b.pause_cause.map_or("paused", PauseCause::as_str);
            format!("{cause}, {} more", remaining(until, now))
        }
        (None, Some(until)) => format!("529, {} more", remaining(until, now)),
        (None, None) => "-".to_owned(),
    };
    let [interactive, normal, batch] = b.waiting_by_priority;
    let waiting = if b.waiting == 0 {
        "0".to_owned()
    } else {
        format!("{} ({interactive}/{normal}/{batch})", b.waiting)
    };
    let drains = b
        .drain_estimate
        .map_or("-".to_owned(), |d| format!("~{}", remaining(now + d, now)));
    vec![
        b.budget.owner.to_string(),
        b.budget.model_class.clone(),
        opt(b.limits.rpm),
        opt(b.limits.itpm),
        opt(b.limits.otpm),
        avail(b.available.requests),
        avail(b.available.input_tokens),
        avail(b.available.output_tokens),
        match b.limits.max_in_flight {
            Some(max) => format!("{}/{max}", b.in_flight),
            None => b.in_flight.to_string(),
        },
        waiting,
        drains,
        paused,
        b.granted.to_string(),
        match b.throttled.bare {
            0 => b.rate_limited.to_string(),
            bare => format!("{} ({bare} bare)", b.rate_limited),
        },
        b.overloaded.to_string(),
        b.refused.to_string(),
    ]
}

/// One line per paused or backing-off budget: why, until when.
pub fn pauses(budgets: &[BudgetStatus], now: SystemTime) -> String {
    let mut out = String::new();
    for b in budgets {
        if let Some(until) = b.paused_until {
            let cause = match b.pause_cause {
                Some(PauseCause::RateLimited) => "paused after a 429",
                Some(PauseCause::Administrator) => "paused by hand (pacer pause)",
                Some(PauseCause::Lockout) => "locked out",
                None => "paused",
            };
            out.push_str(&format!(
                "{}/{} {cause} until {} ({} more): {}\n",
                b.budget.owner,
                b.budget.model_class,
                local(until, now),
                remaining(until, now),
                b.pause_reason.as_deref().unwrap_or("-"),
            ));
        }
        if let Some(until) = b.overloaded_until {
            out.push_str(&format!(
                "{}/{} backs off after 529 (overloaded) answers until {} ({} more)\n",
                b.budget.owner,
                b.budget.model_class,
                local(until, now),
                remaining(until, now),
            ));
        }
    }
    out
}

/// One line per budget that met 429s of more than one kind, or bare ones: how many of each,
/// and what each holds.
pub fn throttles(budgets: &[BudgetStatus]) -> String {
    let mut out = String::new();
    for b in budgets {
        let kinds: Vec<String> = Throttle::ALL
            .iter()
            .filter(|&&kind| b.throttled.get(kind) > 0)
            .map(|&kind| format!("{} {}", b.throttled.get(kind), kind.as_str()))
            .collect();
        let mixed = kinds.len() > 1 || b.throttled.bare > 0;
        if mixed {
            out.push_str(&format!(
                "{}/{} 429s: {}{}\n",
                b.budget.owner,
                b.budget.model_class,
                kinds.join(", "),
                if b.throttled.bare > 0 {
                    " (bare ones held their own request, nobody else)"
                } else {
                    ""
                }
            ));
        }
    }
    out
}

/// Where new Claude Code sessions start one at a time, and how many wait.
pub fn starts(starts: &[StartStatus], now: SystemTime) -> String {
    let mut out = String::new();
    for s in starts {
        let whose = s
            .account
            .as_ref()
            .map_or("on this machine".to_owned(), |a| format!("of {a}"));
        let next = match s.next_start {
            Some(at) if at > now => format!(", the next at {}", local(at, now)),
            _ => String::new(),
        };
        out.push_str(&format!(
            "new Claude Code sessions {whose} start one at a time, {:.1} a minute (a bare 429 \
             met sessions starting at {}); {} waiting to start{next}\n",
            s.per_minute,
            local(s.last_wall, now),
            s.waiting,
        ));
    }
    out
}

/// A client's cap on each window: `10 % (6 % used)`, `10 % (held)`, `-` when it has none.
fn cap(c: &ClientStatus) -> String {
    let Some(max_share) = c.max_share else {
        return "-".to_owned();
    };
    let percent = |share: f64| format!("{} %", (share * 1000.0).round() / 10.0);
    match (c.capped, c.window_use) {
        (true, _) => format!("{} (held)", percent(max_share)),
        (false, Some(used)) => format!("{} ({} used)", percent(max_share), percent(used)),
        (false, None) => percent(max_share),
    }
}

/// `pacer status --clients`: each client seen in the last 10 minutes.
pub fn clients_table(clients: &[ClientStatus], now: SystemTime) -> String {
    if clients.is_empty() {
        return "no clients in the last 10 minutes\n".to_owned();
    }
    let header = [
        "CLIENT",
        "PRIORITY",
        "BUDGET",
        "GRANTED",
        "TOKENS IN",
        "TOKENS OUT",
        "WAITING",
        "REFUSED",
        "CAP",
        "LAST SEEN",
    ];
    let rows: Vec<Vec<String>> = clients
        .iter()
        .map(|c| {
            let waiting = match c.longest_wait {
                Some(longest) if c.waiting > 0 => {
                    format!("{} (longest {})", c.waiting, remaining(now + longest, now))
                }
                _ => c.waiting.to_string(),
            };
            let seen = now.duration_since(c.last_seen).unwrap_or_default();
            vec![
                c.id.clone(),
                c.priority.to_string(),
                c.budget
                    .as_ref()
                    .map_or("-".to_owned(), ToString::to_string),
                c.granted.to_string(),
                c.input_tokens.to_string(),
                c.output_tokens.to_string(),
                waiting,
                c.refused.to_string(),
                cap(c),
                if seen.as_secs() < 1 {
                    "now".to_owned()
                } else {
                    format!("{} ago", remaining(now, now - seen))
                },
            ]
        })
        .collect();
    table(&header, &rows)
}

pub fn accounts_table(accounts: &[AccountStatus], now: SystemTime) -> String {
    let header = ["ACCOUNT", "KEYS", "WINDOWS", "LOCKED OUT"];
    let rows: Vec<Vec<String>> = accounts
        .iter()
        .map(|a| {
            let keys: Vec<String> = a.keys.iter().map(ToString::to_string).collect();
            let windows: Vec<String> = a.windows.iter().map(|w| window(w, now)).collect();
            let lockouts: Vec<String> = a
                .lockouts
                .iter()
                .map(|l| {
                    let scope = l.model_class.as_deref().unwrap_or("all");
                    format!("{scope} until {} ({})", local(l.until, now), l.reason)
                })
                .collect();
            let owner = match &a.parent {
                Some(parent) => format!("{} (in {parent})", a.owner),
                None => a.owner.to_string(),
            };
            vec![
                owner,
                dash_if_empty(keys.join(", ")),
                dash_if_empty(windows.join(", ")),
                dash_if_empty(lockouts.join("; ")),
            ]
        })
        .collect();
    table(&header, &rows)
}

/// Every account's subscription windows in detail: how far each is spent (and where pacer
/// reckons it is with the calls in flight), how far each priority may bring it and whether it
/// is held now, and when it would run out at the last quarter hour's pace.
pub fn windows_detail(accounts: &[AccountStatus], now: SystemTime) -> String {
    let mut out = String::new();
    for a in accounts {
        for w in &a.windows {
            if let Some(reset) = reset_passed(w, now) {
                out.push_str(&format!(
                    "{} {}: reset at {}; nothing is known of it until the next answer\n",
                    a.owner,
                    w.name,
                    local(reset, now)
                ));
                continue;
            }
            let Some(used) = w.utilization else {
                continue;
            };
            let mut line = format!("{} {}: {:.0} % used", a.owner, w.name, used * 100.0);
            if let Some(estimated) = w.estimated.filter(|e| (*e - used).abs() >= 0.005) {
                line.push_str(&format!(
                    " (about {:.0} % with the calls in flight)",
                    estimated * 100.0
                ));
            }
            if let Some(share) = w.share {
                line.push_str(&format!(", {:.1} % a call", share * 100.0));
            }
            if let Some(reset) = w.reset {
                line.push_str(&format!(", resets {}", local(reset, now)));
            }
            out.push_str(&line);
            out.push('\n');
            let ceilings: Vec<String> = w
                .ceilings
                .iter()
                .map(|c| {
                    let limit = if c.ceiling >= 1.0 {
                        "may use all of it".to_owned()
                    } else {
                        format!("up to {:.0} %", c.ceiling * 100.0)
                    };
                    let held = if c.held { "held now, " } else { "" };
                    let refused = match c.refused {
                        0 => String::new(),
                        n => format!(" ({n} refused)"),
                    };
                    format!("{}: {held}{limit}{refused}", c.priority)
                })
                .collect();
            if !ceilings.is_empty() {
                out.push_str(&format!("  {}\n", ceilings.join(" · ")));
            }
            match (w.burn_per_hour, w.runs_out, w.reset) {
                (Some(rate), Some(out_at), reset) => out.push_str(&format!(
                    "  at the last 15 minutes' pace ({:.1} % an hour) it runs out at {}{}\n",
                    rate * 100.0,
                    local(out_at, now),
                    reset.map_or(String::new(), |r| format!(", before it resets at {}", local(r, now)))
                )),
                (Some(rate), None, Some(reset)) => out.push_str(&format!(
                    "  at the last 15 minutes' pace ({:.1} % an hour) it lasts until it resets at {}\n",
                    rate * 100.0,
                    local(reset, now)
                )),
                (None, ..) => out.push_str(
                    "  no forecast yet: it needs answers spread over 5 minutes of use\n",
                ),
                _ => {}
            }
        }
        if let Some(overage) = &a.overage {
            let in_use = match a.overage_in_use {
                Some(true) => ", in use now",
                _ => "",
            };
            out.push_str(&format!("{} extra usage: {overage}{in_use}\n", a.owner));
        }
    }
    out
}

/// `pacer status --clients`: each Claude Code session seen in the last day, with its share of
/// its account's calls in the last hour.
pub fn sessions_table(sessions: &[SessionStatus], now: SystemTime) -> String {
    if sessions.is_empty() {
        return String::new();
    }
    let rows: Vec<Vec<String>> = sessions
        .iter()
        .map(|s| {
            vec![
                s.id.clone(),
                s.owner.as_ref().map_or("-".into(), ToString::to_string),
                s.calls_last_hour.to_string(),
                s.share_last_hour
                    .map_or("-".into(), |share| format!("{:.0} %", share * 100.0)),
                format!("{} ago", remaining(now, s.last_seen)),
            ]
        })
        .collect();
    table(
        &[
            "SESSION",
            "ACCOUNT",
            "CALLS (1H)",
            "SHARE (1H)",
            "LAST SEEN",
        ],
        &rows,
    )
}

/// One window as a person reads it: `5h 42% · resets 14:10`, `7d 100% rejected · resets Tue
/// 09:00`.
pub fn window(w: &WindowStatus, now: SystemTime) -> String {
    let mut text = w.name.clone();
    if let Some(reset) = reset_passed(w, now) {
        // What the API said is over; nothing is known of the new window yet.
        text.push_str(&format!(
            " reset at {} · unknown until the next answer",
            local(reset, now)
        ));
        return text;
    }
    if let Some(u) = w.utilization {
        text.push_str(&format!(" {:.0}%", u * 100.0));
    }
    if let Some(status) = w.status.as_deref().filter(|s| *s != "allowed") {
        text.push(' ');
        text.push_str(status);
    }
    if let Some(reset) = w.reset {
        text.push_str(&format!(" · resets {}", local(reset, now)));
    }
    text
}

#[cfg(test)]
#[test]
fn a_window_past_its_reset_is_shown_as_reset() {
    let now = SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(1_800_000_000);
    let reset = now - std::time::Duration::from_secs(36);
    let w = WindowStatus::reported("5h".into(), None, None, Some(reset));
    let text = window(&w, now);
    assert!(text.starts_with("5h reset at "), "{text}");
    assert!(text.ends_with("unknown until the next answer"), "{text}");
    assert!(!text.contains('%'), "{text}");
}

/// When the window reset, if it has and nothing has been said of it since.
pub fn reset_passed(w: &WindowStatus, now: SystemTime) -> Option<SystemTime> {
    w.reset
        .filter(|reset| *reset <= now && w.utilization.is_none())
}

fn dash_if_empty(text: String) -> String {
    if text.is_empty() { "-".into() } else { text }
}

/// Columns padded to their widest cell, two spaces apart.
pub fn table(header: &[&str], rows: &[Vec<String>]) -> String {
    let widths: Vec<usize> = (0..header.len())
        .map(|i| {
            rows.iter()
                .map(|r| r[i].chars().count())
                .chain([header[i].len()])
                .max()
                .unwrap_or(0)
        })
        .collect();
    let mut out = String::new();
    let mut line = |cells: Vec<&str>| {
        let text: Vec<String> = cells
            .iter()
            .zip(&widths)
            .map(|(cell, width)| format!("{cell:<width$}"))
            .collect();
        out.push_str(text.join("  ").trim_end());
        out.push('\n');
    };
    line(header.to_vec());
    for r in rows {
        line(r.iter().map(String::as_str).collect());
    }
    out
}
