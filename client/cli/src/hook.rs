//! `pacer hook`: Claude Code's hooks (its `hooks` setting), one command for every event. It
//! reads the hook's JSON on stdin and acts on its `hook_event_name`:
//!
//! - `UserPromptSubmit`: when this session's account crossed a threshold of a window (75 %,
//!   90 % by default) since the last turn, one line of context for the turn — "pacer: the
//!   5-hour window is at 91 %, resets 16:40; batch work is held" — and nothing otherwise, so
//!   turns cost nothing extra. What was said is kept per session in pacer's state directory.
//! - `PreToolUse` on the subagent tool (`Task`, `Agent`): when a window is past `--ask-at`
//!   (90 %), answer `ask` (or `deny`) with the reason and the forecast; otherwise nothing.
//! - anything else: nothing.
//!
//! Like the status line it never gets in the way: one connection attempt with a short timeout,
//! exit 0 with no output when pacerd is away or stdin is not what was expected.
//! `pacer hook --install` writes both hooks into `~/.claude/settings.json` (a backup first,
//! every other setting and hook kept, nothing written when they are there already).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, SystemTime};

use pacer_protocol::message::WindowStatus;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::quota::{self, Found};
use crate::settings::{self, Settings};

/// How long the whole answer may take (Claude Code's hook timeout is far longer; a turn waits
/// on it).
const BUDGET: Duration = Duration::from_millis(800);

/// The tools that start subagents.
const SUBAGENT_TOOLS: [&str; 2] = ["Task", "Agent"];

/// Whether this process is answering a hook (`pacer hook` without `--install`): then nothing
/// it does may exit with status 2, which Claude Code takes as "block".
pub fn is_hook_call() -> bool {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let sub = args.iter().find(|a| !a.starts_with('-'));
    sub.is_some_and(|s| s == "hook") && !args.iter().any(|a| a == "--install")
}

/// A percentage of a window, as written on the hook's command line: `90` or `90%` (not a
/// fraction: `0.9` would be 0.9 %).
fn percent(text: &str) -> Result<f64, String> {
    let number = text.trim().trim_end_matches('%').trim();
    match number.parse::<f64>() {
        Ok(p) if p.is_finite() && p > 1.0 && p <= 100.0 => Ok(p),
        Ok(p) if p.is_finite() && p > 0.0 && p <= 1.0 => Err(format!(
            "`{text}` reads as {p} % of a window: give percentages (90, not 0.9)"
        )),
        _ => Err(format!(
            "`{text}` is not a share of a window: give a percentage above 1 and at most 100"
        )),
    }
}

#[derive(Debug, clap::Args)]
pub struct HookArgs {
    /// The window shares (percent) at which a turn is told, once per crossing.
    #[arg(
        long,
        value_name = "PERCENTS",
        value_delimiter = ',',
        default_value = "75,90",
        value_parser = percent
    )]
    thresholds: Vec<f64>,
    /// Past this share (percent) of a window, starting a subagent is asked about first.
    #[arg(long, value_name = "PERCENT", default_value = "90", value_parser = percent)]
    ask_at: f64,
    /// What to answer about a subagent past --ask-at: ask the person, or deny it outright.
    #[arg(long, value_enum, default_value_t = Decision::Ask)]
    decision: Decision,
    /// Write the hooks into Claude Code's settings (keeping the rest, after a backup) instead
    /// of answering one.
    #[arg(long)]
    install: bool,
    /// The settings file to install into [default: ~/.claude/settings.json].
    #[arg(long, value_name = "PATH", requires = "install")]
    settings: Option<PathBuf>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum Decision {
    Ask,
    Deny,
}

impl Decision {
    fn as_str(self) -> &'static str {
        match self {
            Decision::Ask => "ask",
            Decision::Deny => "deny",
        }
    }
}

/// What Claude Code sends a hook (every field may be missing).
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct Input {
    session_id: Option<String>,
    hook_event_name: Option<String>,
    tool_name: Option<String>,
}

pub async fn hook(socket: Option<PathBuf>, args: HookArgs) -> anyhow::Result<ExitCode> {
    if args.install {
        return install(args.settings);
    }
    let input: Input = serde_json::from_str(&crate::statusline::read_stdin()).unwrap_or_default();
    let answer = tokio::time::timeout(BUDGET, answer(socket, &input, &args))
        .await
        .ok()
        .flatten();
    if let Some(answer) = answer {
        crate::outln!("{answer}");
    }
    Ok(ExitCode::SUCCESS)
}

/// The hook's answer, if it has one.
async fn answer(socket: Option<PathBuf>, input: &Input, args: &HookArgs) -> Option<Value> {
    let event = input.hook_event_name.as_deref()?;
    let subagent = event == "PreToolUse"
        && input
            .tool_name
            .as_deref()
            .is_some_and(|tool| SUBAGENT_TOOLS.contains(&tool));
    if event != "UserPromptSubmit" && !subagent {
        return None;
    }
    let client = quota::connect(socket, "pacer-hook").await?;
    let session = input.session_id.as_deref();
    let (found, _) = quota::find(&client, session, quota::key_from_env())
        .await
        .ok()?;
    let found = found?;
    let now = SystemTime::now();
    match event {
        "UserPromptSubmit" => {
            let session = session?;
            let thresholds: Vec<f64> = args.thresholds.iter().map(|p| p / 100.0).collect();
            let line = crossed(&found, session, &thresholds, now)?;
            Some(json!({"hookSpecificOutput": {
                "hookEventName": "UserPromptSubmit",
                "additionalContext": line,
            }}))
        }
        _ => {
            let reason = past(&found, args.ask_at / 100.0, now)?;
            Some(json!({"hookSpecificOutput": {
                "hookEventName": "PreToolUse",
                "permissionDecision": args.decision.as_str(),
                "permissionDecisionReason": reason,
            }}))
        }
    }
}

/// The line to add when a window crossed a threshold since the session's last turn (what was
/// said is kept in the session's file); `None` when none did.
fn crossed(found: &Found, session: &str, thresholds: &[f64], now: SystemTime) -> Option<String> {
    let path = state_file(session)?;
    let mut said = Said::read(&path);
    let mut lines = Vec::new();
    for window in &found.account.windows {
        let Some(used) = quota::used(window, now) else {
            continue;
        };
        let band = thresholds.iter().filter(|t| used + 1e-9 >= **t).count();
        let key = format!("{}/{}", found.account.owner, window.name);
        // The same window (its reset read a second or two off between answers) is told each
        // threshold once; a new window starts over.
        let before = said
            .bands
            .get(&key)
            .filter(|b| same_reset(b.reset, epoch(window)));
        let told = before.map_or(0, |b| b.band);
        if band > told {
            lines.extend(quota::window_line(window, now));
        }
        if before.is_none() || band > told {
            let band = Band {
                band: band.max(told),
                reset: epoch(window),
            };
            said.bands.insert(key, band);
        }
    }
    said.write(&path);
    prune(&path, now);
    (!lines.is_empty()).then(|| format!("pacer: {}", lines.join("; ")))
}

/// Why a subagent is asked about: the windows past `share`, with their forecast.
fn past(found: &Found, share: f64, now: SystemTime) -> Option<String> {
    let lines: Vec<String> = found
        .account
        .windows
        .iter()
        .filter(|w| quota::used(w, now).is_some_and(|u| u + 1e-9 >= share))
        .filter_map(|w| quota::window_line(w, now))
        .collect();
    (!lines.is_empty()).then(|| {
        format!(
            "pacer: {}. A subagent makes many calls and would spend more of it; run it anyway?",
            lines.join("; ")
        )
    })
}

/// Whether two resets (epoch seconds) are one window's (see `pacer_api::unified::same_reset`).
fn same_reset(a: Option<u64>, b: Option<u64>) -> bool {
    let at = |secs: Option<u64>| secs.map(|s| SystemTime::UNIX_EPOCH + Duration::from_secs(s));
    pacer_api::unified::same_reset(at(a), at(b))
}

/// Forgets the files of sessions not heard of for 8 days (no window outlasts a week).
fn prune(written: &Path, now: SystemTime) {
    let Some(dir) = written.parent() else {
        return;
    };
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    let old = Duration::from_secs(8 * 24 * 3600);
    for entry in entries.flatten() {
        let stale = entry
            .metadata()
            .and_then(|m| m.modified())
            .is_ok_and(|at| now.duration_since(at).is_ok_and(|age| age > old));
        if stale {
            let _ = std::fs::remove_file(entry.path());
        }
    }
}

fn epoch(window: &WindowStatus) -> Option<u64> {
    window
        .reset
        .and_then(|r| r.duration_since(SystemTime::UNIX_EPOCH).ok())
        .map(|d| d.as_secs())
}

/// What was said to a session: per account and window, the highest threshold told, for the
/// window that resets at `reset`.
#[derive(Debug, Default, Serialize, Deserialize)]
struct Said {
    bands: BTreeMap<String, Band>,
}

#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
struct Band {
    band: usize,
    reset: Option<u64>,
}

impl Said {
    fn read(path: &Path) -> Said {
        std::fs::read(path)
            .ok()
            .and_then(|bytes| serde_json::from_slice(&bytes).ok())
            .unwrap_or_default()
    }

    /// Best effort: a hook that cannot keep its state still answers (and may say it again).
    fn write(&self, path: &Path) {
        let Some(dir) = path.parent() else {
            return;
        };
        let _ = std::fs::create_dir_all(dir);
        let tmp = path.with_extension(format!("tmp-{}", std::process::id()));
        if serde_json::to_vec(self)
            .ok()
            .is_some_and(|bytes| std::fs::write(&tmp, bytes).is_ok())
        {
            let _ = std::fs::rename(&tmp, path);
        }
        let _ = std::fs::remove_file(&tmp);
    }
}

/// `<state dir>/hooks/<session>.json`, the session id reduced to safe characters.
fn state_file(session: &str) -> Option<PathBuf> {
    let name: String = session
        .chars()
        .take(128)
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' {
                c
            } else {
                '_'
            }
        })
        .collect();
    (!name.is_empty()).then(|| {
        pacer_protocol::endpoint::state_dir()
            .map(|dir| dir.join("hooks").join(format!("{name}.json")))
    })?
}

/// Adds `pacer hook` for `UserPromptSubmit` and for `PreToolUse` on the subagent tools to
/// Claude Code's settings, keeping every other setting and hook.
fn install(settings: Option<PathBuf>) -> anyhow::Result<ExitCode> {
    let path = settings::in_home(settings, ".claude/settings.json", "--settings")?;
    let mut settings = Settings::read(&path)?;
    let command = crate::statusline::command_for("hook");
    let mut hooks = settings.get("hooks").unwrap_or_else(|| json!({}));
    let Some(events) = hooks.as_object_mut() else {
        anyhow::bail!(
            "the `hooks` setting in {} is not an object; fix it first (nothing was changed)",
            path.display()
        );
    };
    for (event, matcher) in [
        ("UserPromptSubmit", None),
        ("PreToolUse", Some("Task|Agent")),
    ] {
        let list = events.entry(event).or_insert_with(|| json!([]));
        let Some(list) = list.as_array_mut() else {
            anyhow::bail!(
                "`hooks.{event}` in {} is not a list; fix it first (nothing was changed)",
                path.display()
            );
        };
        let ours = list.iter().any(|entry| {
            entry["hooks"].as_array().is_some_and(|hooks| {
                hooks.iter().any(|h| {
                    h["command"].as_str().is_some_and(|c| {
                        c.contains("pacer") && c.split_whitespace().any(|w| w == "hook")
                    })
                })
            })
        });
        if !ours {
            let mut entry =
                json!({"hooks": [{"type": "command", "command": command, "timeout": 10}]});
            if let Some(matcher) = matcher {
                entry["matcher"] = json!(matcher);
            }
            list.push(entry);
        }
    }
    let change = settings.set("hooks", &hooks)?;
    settings.save(
        &change,
        &format!("Claude Code already runs `{command}` for its hooks"),
        &format!("Claude Code now runs `{command}` on UserPromptSubmit and before Task/Agent"),
    )?;
    Ok(ExitCode::SUCCESS)
}
