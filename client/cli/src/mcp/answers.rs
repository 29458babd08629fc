//! The MCP tools' answers, in words a model reads well: short lines, units on every figure.

use std::fmt::Write;
use std::time::SystemTime;

use pacer_api::unified::window_title;
use pacer_protocol::Priority;
use pacer_protocol::message::{BudgetStatus, StatusSnapshot, WindowStatus};
use serde_json::{Map, Value};

use crate::clock::local;
use crate::quota::{self, Found};

/// What one call costs of a window before pacer learned it: one reporting step.
const DEFAULT_SHARE: f64 = 0.01;

/// When no account was found.
pub fn no_account(status: &StatusSnapshot) -> String {
    let known = status
        .accounts
        .iter()
        .filter(|a| !a.windows.is_empty())
        .count();
    format!(
        "pacer has not seen this session's account yet (no call of this session went through \
         pacer's gateway, and no API key in this environment matches one it knows; it knows \
         {known} account(s) with windows). Run Claude Code through `pacer run -- claude` so its \
         calls are seen."
    )
}

/// `pacer_windows`.
pub fn windows(found: Option<&Found>, status: &StatusSnapshot, now: SystemTime) -> String {
    let Some(found) = found else {
        return no_account(status);
    };
    let mut out = format!("Account {} (found {}).\n", found.account.owner, found.how);
    if found.account.windows.is_empty() {
        out.push_str("No subscription windows reported for it (an API key's account has per-minute limits only).\n");
    }
    for window in &found.account.windows {
        out.push_str(&window_text(window, now));
    }
    for budget in &found.budgets {
        out.push_str(&budget_text(budget, now));
    }
    out
}

fn window_text(window: &WindowStatus, now: SystemTime) -> String {
    let title = window_title(&window.name);
    let Some(used) = quota::used(window, now) else {
        let reset = window
            .reset
            .map_or(String::new(), |r| format!(" at {}", local(r, now)));
        return format!(
            "- {title}: reset{reset}; no answer since says how much of the new one is used.\n"
        );
    };
    let mut line = format!("- {title}: {:.0} % used", used * 100.0);
    if let Some(estimated) = window.estimated.filter(|e| *e > used + 1e-9) {
        let _ = write!(
            line,
            " ({:.0} % with the calls in flight)",
            estimated * 100.0
        );
    }
    if let Some(reset) = window.reset {
        let _ = write!(
            line,
            "; resets {} ({})",
            local(reset, now),
            from_now(reset, now)
        );
    }
    match (window.burn_per_hour, window.runs_out) {
        (Some(burn), Some(out)) => {
            let _ = write!(
                line,
                "; burning {:.1} %/hour, runs out at {} at this pace",
                burn * 100.0,
                local(out, now)
            );
        }
        (Some(burn), None) => {
            let _ = write!(
                line,
                "; burning {:.1} %/hour, lasts until its reset at this pace",
                burn * 100.0
            );
        }
        _ => {}
    }
    let ceilings: Vec<String> = window
        .ceilings
        .iter()
        .map(|c| {
            let held = if c.held { " (held now)" } else { "" };
            format!(
                "{} up to {:.0} %{held}",
                c.priority,
                c.ceiling.min(1.0) * 100.0
            )
        })
        .collect();
    if !ceilings.is_empty() {
        let _ = write!(line, "; {}", ceilings.join(", "));
    }
    line.push_str(".\n");
    line
}

fn budget_text(b: &BudgetStatus, now: SystemTime) -> String {
    let mut parts = Vec::new();
    for (name, limit, available) in [
        ("requests/min", b.limits.rpm, b.available.requests),
        ("input tokens/min", b.limits.itpm, b.available.input_tokens),
        (
            "output tokens/min",
            b.limits.otpm,
            b.available.output_tokens,
        ),
    ] {
        if let Some(limit) = limit {
            let left = available.map_or(String::new(), |a| format!(" ({a} free now)"));
            parts.push(format!("{limit} {name}{left}"));
        }
    }
    let mut line = format!("- budget {}: ", b.budget.model_class);
    line.push_str(&if parts.is_empty() {
        "limits not learned yet".to_owned()
    } else {
        parts.join(", ")
    });
    let _ = write!(line, "; {} in flight, {} waiting", b.in_flight, b.waiting);
    if let Some(until) = b.paused_until.filter(|u| *u > now) {
        let why = b.pause_reason.as_deref().unwrap_or("paused");
        let _ = write!(line, "; paused until {} ({why})", local(until, now));
    }
    line.push_str(".\n");
    line
}

/// `pacer_held`.
pub fn held(found: Option<&Found>, status: &StatusSnapshot, now: SystemTime) -> String {
    let owner = found.map(|f| &f.account.owner);
    let mine = |o: &pacer_protocol::BudgetOwner| owner.is_none_or(|owner| owner == o);
    let mut lines = Vec::new();
    for b in status.budgets.iter().filter(|b| mine(&b.budget.owner)) {
        if let Some(until) = b.paused_until.filter(|u| *u > now) {
            let why = b.pause_reason.as_deref().unwrap_or("paused");
            lines.push(format!(
                "budget {} is paused until {}: {why}",
                b.budget,
                local(until, now)
            ));
        }
        if let Some(until) = b.overloaded_until.filter(|u| *u > now) {
            lines.push(format!(
                "model class {} backs off after 529 (overloaded) answers until {}",
                b.budget.model_class,
                local(until, now)
            ));
        }
        if b.waiting > 0 {
            let [i, n, batch] = b.waiting_by_priority;
            lines.push(format!(
                "budget {} has {} calls waiting (interactive {i}, normal {n}, batch {batch})",
                b.budget, b.waiting
            ));
        }
    }
    for a in status.accounts.iter().filter(|a| mine(&a.owner)) {
        for lockout in a.lockouts.iter().filter(|l| l.until > now) {
            let class = lockout
                .model_class
                .as_deref()
                .map_or(String::new(), |c| format!(" ({c})"));
            lines.push(format!(
                "account {}{class} is locked out until {}: {}",
                a.owner,
                local(lockout.until, now),
                lockout.reason
            ));
        }
        for w in &a.windows {
            let held = quota::held(w);
            if !held.is_empty() {
                let who: Vec<String> = held.iter().map(ToString::to_string).collect();
                let used = quota::used(w, now)
                    .map_or(String::new(), |u| format!(" (at {:.0} %)", u * 100.0));
                lines.push(format!(
                    "{} work is held by {}{used} of account {}",
                    who.join(" and "),
                    window_title(&w.name),
                    a.owner
                ));
            }
        }
    }
    let of_this_account = |c: &&pacer_protocol::message::ClientStatus| {
        c.budget.as_ref().is_none_or(|b| mine(&b.owner))
    };
    for c in status
        .clients
        .iter()
        .filter(|c| c.capped)
        .filter(of_this_account)
    {
        let cap = c
            .max_share
            .map_or(String::new(), |s| format!(" of {:.0} %", s * 100.0));
        lines.push(format!("client {} used its cap{cap} of a window (--max-share) and is held until the window resets", c.id));
    }
    if !status.starts.is_empty() {
        lines.push("new Claude Code sessions start at a pace (the API turned sessions starting together away)".into());
    }
    if lines.is_empty() {
        return "Nothing is held, paused or locked out now.".into();
    }
    lines.iter().map(|l| format!("- {l}.\n")).collect()
}

/// `The 5-hour window`.
fn capitalized(text: &str) -> String {
    let mut chars = text.chars();
    chars.next().map_or(String::new(), |first| {
        first.to_uppercase().chain(chars).collect()
    })
}

/// `in 2 h 5 min`, `in 3 days 4 h`: how far off a moment is, to the minute.
fn from_now(at: SystemTime, now: SystemTime) -> String {
    let minutes = at
        .duration_since(now)
        .unwrap_or_default()
        .as_secs()
        .div_ceil(60);
    match (minutes / (24 * 60), minutes / 60 % 24, minutes % 60) {
        (0, 0, m) => format!("in {m} min"),
        (0, h, m) => format!("in {h} h {m} min"),
        (d, h, _) => format!("in {d} days {h} h"),
    }
}

/// `pacer_fanout_fits`' arguments.
#[derive(Debug, Clone, Copy)]
pub struct Fanout {
    count: u64,
    subagents: bool,
    priority: Priority,
    calls_per_subagent: u64,
}

impl Fanout {
    pub fn read(args: &Map<String, Value>) -> Result<Fanout, String> {
        let count = args
            .get("count")
            .and_then(Value::as_u64)
            .filter(|n| *n >= 1)
            .ok_or("`count` must be a whole number, 1 or more")?;
        let subagents = match args.get("unit").and_then(Value::as_str) {
            None | Some("subagents") => true,
            Some("calls") => false,
            Some(other) => return Err(format!("`unit` is `calls` or `subagents`, not `{other}`")),
        };
        let priority = match args.get("priority").and_then(Value::as_str) {
            None => Priority::Normal,
            Some(p) => p
                .parse()
                .map_err(|_| format!("`priority` is interactive, normal or batch, not `{p}`"))?,
        };
        let calls_per_subagent = match args.get("calls_per_subagent") {
            None => 20,
            Some(v) => v
                .as_u64()
                .filter(|n| *n >= 1)
                .ok_or("`calls_per_subagent` must be a whole number, 1 or more")?,
        };
        Ok(Fanout {
            count,
            subagents,
            priority,
            calls_per_subagent,
        })
    }

    /// Whether the fan-out fits each window (its estimate, what one call costs of it, the
    /// priority's ceiling), and if not, how many fit and when the rest would.
    pub fn fits(&self, found: &Found, now: SystemTime) -> String {
        let per = if self.subagents {
            self.calls_per_subagent
        } else {
            1
        };
        let calls = self.count.saturating_mul(per);
        let what = match (self.subagents, self.count) {
            (true, 1) => format!("1 subagent (about {calls} calls)"),
            (true, n) => format!("{n} subagents (about {calls} calls at {per} each)"),
            (false, 1) => "1 call".to_owned(),
            (false, _) => format!("{calls} calls"),
        };
        let verb = if self.count == 1 { "fits" } else { "fit" };
        let mut blocked = Vec::new();
        for w in &found.account.windows {
            let Some(used) = quota::used(w, now) else {
                continue;
            };
            let share = w.share.unwrap_or(DEFAULT_SHARE).max(1e-6);
            let ceiling = w.ceiling(self.priority).map_or(1.0, |c| c.ceiling.min(1.0));
            let estimated = w.estimated.unwrap_or(used);
            let room = (ceiling - estimated).max(0.0);
            let needed = calls as f64 * share;
            if needed <= room + 1e-9 {
                continue;
            }
            let fit_now = (room / share).floor() as u64 / per;
            let unit = if self.subagents { "subagents" } else { "calls" };
            let mut line = format!(
                "{} is at {:.0} % and {} work may take it to {:.0} %: about {fit_now} {unit} fit now",
                capitalized(&window_title(&w.name)),
                estimated * 100.0,
                self.priority,
                ceiling * 100.0
            );
            if let Some(reset) = w.reset {
                let after = ((ceiling / share).floor() as u64 / per).min(self.count);
                let _ = write!(
                    line,
                    "; after it resets at {}, {after} of them would",
                    local(reset, now)
                );
            }
            blocked.push(line);
        }
        let mut out = if blocked.is_empty() {
            format!(
                "Yes: {what} at {} priority {verb} in the account's windows now.",
                self.priority
            )
        } else {
            let not = if self.count == 1 {
                "does not fit"
            } else {
                "do not fit"
            };
            format!(
                "No: {what} at {} priority {not} now. {}.",
                self.priority,
                blocked.join(". ")
            )
        };
        if let Some(rpm) = found.budgets.iter().filter_map(|b| b.limits.rpm).min()
            && calls > rpm
        {
            let minutes = calls.div_ceil(rpm);
            let _ = write!(
                out,
                " At {rpm} requests/min, pacer spreads the calls over about {minutes} minutes."
            );
        }
        out
    }
}
