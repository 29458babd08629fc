//! `pacer status`: every budget, and every account with its subscription windows; with
//! `--clients`, who is using them.
//!
//! - this file: the command, and what it prints;
//! - `tables`: the tables a person reads;
//! - `json`: `--json`, the shape scripts read.

mod json;
mod tables;
#[cfg(test)]
mod tests;

use std::process::ExitCode;
use std::time::SystemTime;

use pacer_client::{Client, StatusSnapshot};

pub use json::window as window_json;
pub use tables::{reset_passed, window};

pub async fn status(client: &Client, as_json: bool, clients: bool) -> anyhow::Result<ExitCode> {
    let snapshot = client.status().await?;
    if as_json {
        crate::outln!(
            "{}",
            serde_json::to_string_pretty(&json::status(&snapshot))?
        );
    } else {
        let now = SystemTime::now();
        crate::out!("{}", render(&snapshot, now));
        if clients {
            crate::outln!();
            crate::out!("{}", tables::clients_table(&snapshot.clients, now));
            let sessions = tables::sessions_table(&snapshot.sessions, now);
            if !sessions.is_empty() {
                crate::outln!();
                crate::out!("{sessions}");
            }
        }
        if let Some(truncated) = &snapshot.truncated {
            crate::outln!("\n({truncated})");
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// What `pacer status` prints: a line on the daemon, the budgets, the pauses with their reasons,
/// the accounts, the routes.
pub fn render(snapshot: &StatusSnapshot, now: SystemTime) -> String {
    let mut out = daemon_line(snapshot, now);
    if snapshot.budgets.is_empty() && snapshot.accounts.is_empty() {
        out.push_str(
            "no budgets yet (one appears with the first permit for a key and model class)\n",
        );
        return out;
    }
    out.push('\n');
    out.push_str(&tables::budgets_table(&snapshot.budgets, now));
    let pauses = tables::pauses(&snapshot.budgets, now);
    let throttles = tables::throttles(&snapshot.budgets);
    let starts = tables::starts(&snapshot.starts, now);
    if !pauses.is_empty() || !throttles.is_empty() || !starts.is_empty() {
        out.push('\n');
        out.push_str(&pauses);
        out.push_str(&throttles);
        out.push_str(&starts);
    }
    if !snapshot.accounts.is_empty() {
        out.push('\n');
        out.push_str(&tables::accounts_table(&snapshot.accounts, now));
        let windows = tables::windows_detail(&snapshot.accounts, now);
        if !windows.is_empty() {
            out.push('\n');
            out.push_str(&windows);
        }
    }
    if !snapshot.routes.is_empty() {
        out.push('\n');
        out.push_str(&tables::routes_table(&snapshot.routes, now));
    }
    out
}

/// `pacerd 0.1.0 · up 2h 3m · 4 connections · 2 refused by pacer`.
fn daemon_line(snapshot: &StatusSnapshot, now: SystemTime) -> String {
    let daemon = &snapshot.daemon;
    let mut parts = vec![format!("pacerd {}", snapshot.daemon_version)];
    if let Some(started) = daemon.started_at {
        let up = now.duration_since(started).unwrap_or_default();
        let up = std::time::Duration::from_secs(up.as_secs() / 60 * 60);
        let up = if up.is_zero() {
            "up less than a minute".to_owned()
        } else {
            format!("up {}", humantime::format_duration(up))
        };
        parts.push(up);
    }
    parts.push(match daemon.connections {
        1 => "1 connection".to_owned(),
        n => format!("{n} connections"),
    });
    let refused: u64 = snapshot.budgets.iter().map(|b| b.refused).sum();
    parts.push(match refused {
        1 => "1 request refused by pacer".to_owned(),
        n => format!("{n} requests refused by pacer"),
    });
    if daemon.refused_connections > 0 {
        parts.push(format!(
            "{} connections turned away",
            daemon.refused_connections
        ));
    }
    let mut out = format!("{}\n", parts.join(" · "));
    if let Some(cluster) = &snapshot.cluster {
        out.push_str(&match (cluster.connected, cluster.local_share) {
            (true, _) => format!(
                "shared through Redis at {} with {} daemons (this one: {})\n",
                cluster.redis, cluster.daemons, cluster.daemon_id
            ),
            (false, Some(share)) => format!(
                "Redis at {} is unreachable ({}): serving this daemon's local share, {:.0} % of \
                 each limit\n",
                cluster.redis,
                cluster.problem.as_deref().unwrap_or("no answer"),
                share * 100.0
            ),
            (false, None) => format!(
                "Redis at {} is unreachable ({}): granting nothing until it is back\n",
                cluster.redis,
                cluster.problem.as_deref().unwrap_or("no answer")
            ),
        });
    }
    out
}
