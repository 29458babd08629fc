//! What `pacer hook` and `pacer mcp` tell of a session's account: found by the session id
//! Claude Code gives (the gateway saw its calls carry it), else by the API key in the
//! environment, else the only account pacerd knows; its windows in words.

use std::path::PathBuf;
use std::time::{Duration, SystemTime};

use pacer_client::{Client, FailMode, KeyFingerprint};
use pacer_protocol::Priority;
use pacer_protocol::message::{
    AccountStatus, BudgetStatus, SessionQuery, StatusSnapshot, WindowStatus,
};

use pacer_api::unified::window_title;

use crate::clock::local;

/// The variables an API key or token may be in, in the order Claude Code reads them.
pub const KEY_VARIABLES: [&str; 3] = [
    "ANTHROPIC_API_KEY",
    "ANTHROPIC_AUTH_TOKEN",
    "CLAUDE_CODE_OAUTH_TOKEN",
];

/// One connection attempt, no reconnecting, never starting pacerd: `None` when it is away.
pub async fn connect(socket: Option<PathBuf>, name: &str) -> Option<Client> {
    let mut builder = Client::builder()
        .fail_mode(FailMode::Closed)
        .reconnect_window(Duration::ZERO)
        .client_name(name);
    if let Some(path) = socket {
        builder = builder.endpoint(path);
    }
    builder.connect().await.ok()
}

/// A session's account, and how it was found.
#[derive(Debug, Clone)]
pub struct Found {
    pub account: AccountStatus,
    /// Its budgets (one per model class), with their pauses and queues.
    pub budgets: Vec<BudgetStatus>,
    pub how: &'static str,
}

/// The fingerprint of the first key set in the environment, if any.
pub fn key_from_env() -> Option<KeyFingerprint> {
    KEY_VARIABLES.iter().find_map(|name| {
        let key = std::env::var(name).ok()?;
        let key = key.trim();
        (!key.is_empty()).then(|| KeyFingerprint::of(key))
    })
}

/// Finds the account of `session` (else of `key`, else the only one) in pacerd's status.
pub async fn find(
    client: &Client,
    session: Option<&str>,
    key: Option<KeyFingerprint>,
) -> anyhow::Result<(Option<Found>, StatusSnapshot)> {
    let status = client.status().await?;
    let by_session = match session {
        Some(id) => {
            let query = SessionQuery {
                session_id: Some(id.to_owned()),
                model: None,
            };
            let view = client.session(query).await?;
            view.account.filter(|_| view.by_session)
        }
        None => None,
    };
    let found = match (by_session, key) {
        (Some(account), _) => Some((account, "by this session's calls")),
        (None, Some(key)) => status
            .accounts
            .iter()
            .find(|a| a.keys.contains(&key))
            .cloned()
            .map(|a| (a, "by the API key in this environment")),
        (None, None) => None,
    };
    let found = found.or_else(|| {
        let mut with_windows = status.accounts.iter().filter(|a| !a.windows.is_empty());
        match (with_windows.next(), with_windows.next()) {
            (Some(only), None) => Some((only.clone(), "as the only account with windows")),
            _ => None,
        }
    });
    let found = found.map(|(account, how)| Found {
        budgets: status
            .budgets
            .iter()
            .filter(|b| b.budget.owner == account.owner)
            .cloned()
            .collect(),
        account,
        how,
    });
    Ok((found, status))
}

/// A window's utilization as pacer last heard it, if still current.
pub fn used(window: &WindowStatus, now: SystemTime) -> Option<f64> {
    if window.reset.is_some_and(|reset| reset <= now) {
        return None;
    }
    window.utilization
}

/// The priorities a window holds now.
pub fn held(window: &WindowStatus) -> Vec<Priority> {
    [Priority::Normal, Priority::Batch]
        .into_iter()
        .filter(|p| window.ceiling(*p).is_some_and(|c| c.held))
        .collect()
}

/// `the 5-hour window is at 91 %, resets 16:40; batch work is held`.
pub fn window_line(window: &WindowStatus, now: SystemTime) -> Option<String> {
    let used = used(window, now)?;
    let mut line = format!("{} is at {:.0} %", window_title(&window.name), used * 100.0);
    if let Some(reset) = window.reset {
        line.push_str(&format!(", resets {}", local(reset, now)));
    }
    if let Some(runs_out) = window.runs_out {
        line.push_str(&format!(
            ", runs out at {} at this pace",
            local(runs_out, now)
        ));
    }
    let held = held(window);
    if !held.is_empty() {
        let who: Vec<String> = held.iter().map(ToString::to_string).collect();
        line.push_str(&format!("; {} work is held", who.join(" and ")));
    }
    Some(line)
}
