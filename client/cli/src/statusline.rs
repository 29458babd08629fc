//! `pacer statusline`: one short line for Claude Code's status bar (its `statusLine` setting).
//!
//! Claude Code runs the command with a JSON object on stdin (`session_id`, `model.id`, and —
//! for subscribers, since 2.1.80 — `rate_limits.five_hour` / `seven_day`, any of it missing
//! sometimes). The line names the account this session's calls went to (pacerd knows it from the
//! session id the gateway saw), its windows as the API's headers reported them (`5h 63 % ↻16:40
//! · 7d 41 %`), the budget's state (paused, waiting), and whether batch work is held. Claude
//! Code's own `rate_limits` fill in only where pacer has no figure.
//!
//! It must answer within 100 ms and never get in the way: one connection attempt with a short
//! timeout (no reconnecting, never starting pacerd), and a short line with exit 0 whatever
//! happens — pacerd away, stdin not JSON.
//!
//! `pacer statusline --install` writes the setting into `~/.claude/settings.json`, keeping
//! what is there (a backup first).

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, SystemTime};

use pacer_client::{Client, FailMode};
use pacer_protocol::Priority;
use pacer_protocol::message::{SessionQuery, SessionView, WindowStatus};
use serde_json::Value;

use crate::clock::local;
use crate::settings::{self, Settings};

/// How long the whole answer may take, stdin included.
const BUDGET: Duration = Duration::from_millis(80);

#[derive(Debug, clap::Args)]
pub struct StatuslineArgs {
    /// Write the `statusLine` setting into Claude Code's settings (keeping the rest, after a
    /// backup) instead of printing a line.
    #[arg(long)]
    install: bool,
    /// The settings file to install into [default: ~/.claude/settings.json].
    #[arg(long, value_name = "PATH", requires = "install")]
    settings: Option<PathBuf>,
}

/// What Claude Code says of the session on stdin (every field may be missing).
#[derive(Debug, Default)]
struct Input {
    session_id: Option<String>,
    model: Option<String>,
    /// Its own figures for the windows: (name, used 0–100, resets).
    rate_limits: Vec<(&'static str, f64, Option<SystemTime>)>,
}

impl Input {
    fn parse(text: &str) -> Input {
        let Ok(value) = serde_json::from_str::<Value>(text) else {
            return Input::default();
        };
        let text = |v: &Value| v.as_str().map(str::to_owned);
        let mut rate_limits = Vec::new();
        for (field, name) in [("five_hour", "5h"), ("seven_day", "7d")] {
            let window = &value["rate_limits"][field];
            // A percentage: anything else (1e308, a negative) is not shown.
            let used = window["used_percentage"].as_f64();
            if let Some(used) = used.filter(|u| (0.0..=100.0).contains(u)) {
                rate_limits.push((name, used, reset_of(&window["resets_at"])));
            }
        }
        Input {
            session_id: text(&value["session_id"]),
            model: text(&value["model"]["id"]),
            rate_limits,
        }
    }
}

/// `resets_at`: epoch seconds in most reports, ISO text in some.
fn reset_of(value: &Value) -> Option<SystemTime> {
    if let Some(secs) = value.as_f64().filter(|s| s.is_finite() && *s > 0.0) {
        return SystemTime::UNIX_EPOCH.checked_add(Duration::try_from_secs_f64(secs).ok()?);
    }
    let text = value.as_str()?;
    if let Ok(secs) = text.trim().parse::<f64>() {
        return reset_of(&Value::from(secs));
    }
    humantime::parse_rfc3339_weak(text.trim().trim_end_matches("+00:00")).ok()
}

pub async fn statusline(socket: Option<PathBuf>, args: StatuslineArgs) -> anyhow::Result<ExitCode> {
    if args.install {
        return install(args.settings);
    }
    let input = Input::parse(&read_stdin());
    let view = tokio::time::timeout(BUDGET, ask(socket, &input))
        .await
        .ok()
        .flatten();
    crate::outln!("{}", line(view.as_ref(), &input, SystemTime::now()));
    Ok(ExitCode::SUCCESS)
}

/// Claude Code's JSON, if stdin is not a terminal (it writes the object and closes it).
pub(crate) fn read_stdin() -> String {
    use std::io::IsTerminal;
    let stdin = std::io::stdin();
    if stdin.is_terminal() {
        return String::new();
    }
    let mut text = String::new();
    let _ = stdin.lock().take(1 << 20).read_to_string(&mut text);
    text
}

/// The session's account and budget, from pacerd: one connection attempt, no reconnecting.
async fn ask(socket: Option<PathBuf>, input: &Input) -> Option<SessionView> {
    let mut builder = Client::builder()
        .fail_mode(FailMode::Closed)
        .reconnect_window(Duration::ZERO)
        .client_name("pacer-statusline");
    if let Some(path) = socket {
        builder = builder.endpoint(path);
    }
    let client = builder.connect().await.ok()?;
    let query = SessionQuery {
        session_id: input.session_id.clone(),
        model: input.model.clone(),
    };
    client.session(query).await.ok()
}

/// The line: `pacer org-9e333b773173 · 5h 63 % ↻16:40 · 7d 41 % · 3 waiting · batch held`.
fn line(view: Option<&SessionView>, input: &Input, now: SystemTime) -> String {
    let mut parts = Vec::new();
    let Some(view) = view else {
        // pacerd is away: say so, and show Claude Code's own figures.
        parts.push("pacer off".to_owned());
        parts.extend(
            input
                .rate_limits
                .iter()
                .map(|(name, used, reset)| window_text(name, used / 100.0, *reset, now)),
        );
        return parts.join(" · ");
    };
    let account = view.account.as_ref();
    parts.push(match account {
        Some(account) => format!("pacer {}", account.owner),
        None => "pacer".to_owned(),
    });
    let windows: Vec<&WindowStatus> = account.map_or(Vec::new(), |a| a.windows.iter().collect());
    // pacer's figure, where it has a current one; Claude Code's own where pacer has none or
    // its window has reset since its last answer (pacer then says nothing of the new one, and
    // Claude Code's figure is the fresher).
    for window in &windows {
        if let Some(used) = window.utilization {
            parts.push(window_text(&window.name, used, window.reset, now));
        }
    }
    for (name, used, reset) in &input.rate_limits {
        let ours = windows
            .iter()
            .any(|w| w.name == *name && w.utilization.is_some());
        if !ours {
            parts.push(window_text(name, used / 100.0, *reset, now));
        }
    }
    if let Some(budget) = &view.budget {
        if let Some(until) = budget.paused_until {
            parts.push(format!("paused until {}", local(until, now)));
        }
        if budget.waiting > 0 {
            parts.push(format!("{} waiting", budget.waiting));
        }
    }
    let held: Vec<String> = [Priority::Normal, Priority::Batch]
        .into_iter()
        .filter(|p| {
            windows
                .iter()
                .any(|w| w.ceiling(*p).is_some_and(|c| c.held))
        })
        .map(|p| p.to_string())
        .collect();
    if !held.is_empty() {
        parts.push(format!("{} held", held.join("+")));
    }
    parts.join(" · ")
}

/// `5h 63 % ↻16:40`: the 5-hour window with its reset; weekly ones without (far off).
fn window_text(name: &str, used: f64, reset: Option<SystemTime>, now: SystemTime) -> String {
    let mut text = format!("{name} {:.0} %", used * 100.0);
    if let Some(reset) = reset.filter(|r| {
        r.duration_since(now)
            .is_ok_and(|d| d < Duration::from_secs(20 * 3600))
    }) {
        text.push_str(&format!(" ↻{}", local(reset, now)));
    }
    text
}

/// The command Claude Code is to run: this `pacer`, by its full path when it is not the one on
/// the `PATH` (Claude Code may not have the same `PATH`).
fn command() -> String {
    command_for("statusline")
}

/// `pacer <subcommand>`, by this `pacer`'s full path when it is not the one on the `PATH`.
pub(crate) fn command_for(subcommand: &str) -> String {
    let exe = std::env::current_exe().ok();
    let on_path = std::env::var_os("PATH").and_then(|path| {
        std::env::split_paths(&path)
            .map(|dir| dir.join(format!("pacer{}", std::env::consts::EXE_SUFFIX)))
            .find(|p| p.is_file())
    });
    match (exe, on_path) {
        (Some(exe), Some(found)) if same_file(&exe, &found) => format!("pacer {subcommand}"),
        (Some(exe), _) => format!("{} {subcommand}", exe.display()),
        (None, _) => format!("pacer {subcommand}"),
    }
}

fn same_file(a: &Path, b: &Path) -> bool {
    match (a.canonicalize(), b.canonicalize()) {
        (Ok(a), Ok(b)) => a == b,
        _ => false,
    }
}

/// Writes `{"statusLine": {"type": "command", "command": "pacer statusline"}}` into Claude
/// Code's settings, keeping every other setting; the file is copied aside first.
fn install(settings: Option<PathBuf>) -> anyhow::Result<ExitCode> {
    let path = settings::in_home(settings, ".claude/settings.json", "--settings")?;
    let mut settings = Settings::read(&path)?;
    let line = serde_json::json!({"type": "command", "command": command(), "padding": 0});
    let change = settings.set("statusLine", &line)?;
    settings.save(
        &change,
        &format!("Claude Code's status line already runs `{}`", command()),
        &format!("Claude Code's status line now runs `{}`", command()),
    )?;
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;
    use pacer_protocol::BudgetOwner;
    use pacer_protocol::message::{AccountStatus, PriorityCeiling};

    fn now() -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000)
    }

    #[test]
    fn claude_codes_json_is_read_whatever_it_holds() {
        let input = Input::parse(
            r#"{"session_id":"s-1","model":{"id":"claude-sonnet-4-5","display_name":"Sonnet"},
                "rate_limits":{"five_hour":{"used_percentage":63,"resets_at":1800003600},
                               "seven_day":{"used_percentage":41.5,"resets_at":"2027-01-15T09:00:00Z"}}}"#,
        );
        assert_eq!(input.session_id.as_deref(), Some("s-1"));
        assert_eq!(input.model.as_deref(), Some("claude-sonnet-4-5"));
        assert_eq!(input.rate_limits.len(), 2);
        assert!(input.rate_limits[1].2.is_some());
        let nothing = Input::parse("not json");
        assert!(nothing.session_id.is_none() && nothing.rate_limits.is_empty());
    }

    #[test]
    fn a_percentage_that_is_not_one_is_not_shown() {
        for used in ["1e308", "-5", "100.5"] {
            let input = Input::parse(&format!(
                r#"{{"rate_limits":{{"five_hour":{{"used_percentage":{used},"resets_at":1800003600}}}}}}"#
            ));
            assert!(input.rate_limits.is_empty(), "{used}");
        }
    }

    #[test]
    fn the_line_shows_the_accounts_windows_and_what_is_held() {
        let mut five = WindowStatus::reported(
            "5h".into(),
            Some("allowed".into()),
            Some(0.63),
            Some(now() + Duration::from_secs(3600)),
        );
        five.ceilings = vec![PriorityCeiling {
            priority: Priority::Batch,
            ceiling: 0.6,
            held: true,
            refused: 3,
        }];
        let view = SessionView {
            account: Some(AccountStatus {
                owner: BudgetOwner::Account("org-9e333b773173".into()),
                parent: None,
                keys: Vec::new(),
                windows: vec![five],
                unified_status: None,
                lockouts: Vec::new(),
                overage: None,
                overage_in_use: None,
            }),
            budget: None,
            by_session: true,
        };
        let input = Input {
            rate_limits: vec![("5h", 99.0, None), ("7d", 41.0, None)],
            ..Input::default()
        };
        let text = line(Some(&view), &input, now());
        assert!(
            text.starts_with("pacer org-9e333b773173 · 5h 63 % ↻"),
            "{text}"
        );
        assert!(
            text.contains("7d 41 %"),
            "Claude Code's figure where pacer has none: {text}"
        );
        assert!(!text.contains("99"), "pacer's own figure wins: {text}");
        assert!(text.ends_with("batch held"), "{text}");
        let away = line(None, &input, now());
        assert_eq!(away, "pacer off · 5h 99 % · 7d 41 %");
        // pacer's window reset since its last answer: Claude Code's figure is shown.
        let mut reset = view.clone();
        let past = now() - Duration::from_secs(60);
        reset.account.as_mut().unwrap().windows =
            vec![WindowStatus::reported("5h".into(), None, None, Some(past))];
        let text = line(Some(&reset), &input, now());
        assert!(text.contains("5h 99 %"), "{text}");
    }
}
