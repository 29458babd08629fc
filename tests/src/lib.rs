//! Fixtures for pacer's integration and end-to-end tests.
//!
//! - [`TestDaemon`] (in `daemon`) runs a real daemon in this process, through
//!   [`pacer_daemon::run`] on a socket in a temporary directory (the way pueue's tests do), so
//!   tests reach it through the real socket protocol and can control its clock.
//! - [`Pacerd`] (in `process`) runs the real `pacerd` binary as a process, isolated in a
//!   directory of its own, for tests of signals, restarts, files and the command line; [`pacer`]
//!   runs the real `pacer` command against it.
//! - [`budget_status`] and [`budget_json`] find one budget in what `pacer status` shows.
//! - [`binary`] finds the real `pacerd` and `pacer` executables.
//! - [`wait_until`] waits for a condition with a deadline instead of sleeping.
//! - [`mock`]: a mock of the Anthropic Messages API (also the `mock-upstream` binary).
//! - [`bench`]: what the benchmark binaries share.
//! - [`redis`]: a real `redis-server` on a free port, for the tests of shared budgets.
//! - [`users`]: other local users (created when missing), for tests of who may connect.

pub mod bench;
mod daemon;
pub mod mock;
mod process;
pub mod redis;
#[cfg(unix)]
pub mod users;

pub use daemon::TestDaemon;
pub use process::{Pacerd, pacer};

use std::future::Future;
use std::path::PathBuf;
use std::time::Duration;

use pacer_client::Client;
use pacer_protocol::message::BudgetStatus;
use pacer_protocol::{BudgetOwner, KeyFingerprint};
use serde_json::Value;

/// Everything in the daily log files under `dir`.
pub fn read_logs(dir: &std::path::Path) -> String {
    let mut text = String::new();
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        text.push_str(&std::fs::read_to_string(entry.path()).unwrap_or_default());
    }
    text
}

/// Polls `condition` until it holds or `deadline` passes; returns whether it held.
pub async fn wait_until<F, Fut>(deadline: Duration, mut condition: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let end = tokio::time::Instant::now() + deadline;
    loop {
        if condition().await {
            return true;
        }
        if tokio::time::Instant::now() >= end {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The budget the key `api_key` draws on for `class` — its own, or its account's — as the
/// daemon's status shows it.
pub async fn budget_status(client: &Client, api_key: &str, class: &str) -> BudgetStatus {
    let key = KeyFingerprint::of(api_key);
    let status = client.status().await.expect("status");
    let owner = status
        .accounts
        .iter()
        .find(|a| matches!(a.owner, BudgetOwner::Account(_)) && a.keys.contains(&key))
        .map_or(BudgetOwner::Key(key), |a| a.owner.clone());
    status
        .budgets
        .into_iter()
        .find(|b| b.budget.owner == owner && b.budget.model_class == class)
        .unwrap_or_else(|| panic!("no budget {owner}/{class}"))
}

/// The budget the key fingerprint `key` draws on for `class` — its own, or its account's — in
/// `pacer status --json` output.
pub fn budget_json<'a>(status: &'a Value, key: &str, class: &str) -> &'a Value {
    let account = status["accounts"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|a| {
            a["account"].is_string()
                && a["keys"]
                    .as_array()
                    .is_some_and(|k| k.iter().any(|k| k == key))
        })
        .map(|a| a["account"].clone());
    status["budgets"]
        .as_array()
        .expect("a budgets array")
        .iter()
        .find(|b| {
            b["model_class"] == class
                && match &account {
                    Some(account) => b["account"] == *account,
                    None => b["key"] == key,
                }
        })
        .unwrap_or_else(|| panic!("no budget {key}/{class} in {status}"))
}

/// The path of one of the workspace's executables (`pacerd`, `pacer`): beside the running one
/// (a benchmark in `target/<profile>`), or one directory up (a test in `target/<profile>/deps`).
/// `cargo test --workspace` builds them alongside the tests (the daemon and CLI crates have
/// integration tests, which makes cargo build their binaries first).
pub fn binary(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("the running executable's path");
    let file = format!("{name}{}", std::env::consts::EXE_SUFFIX);
    let dir = exe.parent().expect("the running executable's directory");
    [Some(dir), dir.parent()]
        .into_iter()
        .flatten()
        .map(|dir| dir.join(&file))
        .find(|path| path.is_file())
        .unwrap_or_else(|| {
            panic!(
                "{file} is not built next to {}: run `cargo test --workspace` or \
                 `cargo build --release --workspace`",
                exe.display()
            )
        })
}
