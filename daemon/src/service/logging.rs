//! Where pacerd's log lines go: daily files (14 kept) in the log directory, through a
//! non-blocking writer, and stderr when asked or when it is a terminal. The filter comes from
//! `RUST_LOG`, else the configuration, else `info`.
//!
//! What is logged: each pause start and end, each limit learned, configuration reloads, clients
//! refused, the daemon starting and stopping. Never an API key: the daemon only ever holds key
//! fingerprints, and the gateway never logs request headers.

use std::io::IsTerminal;

use anyhow::Context;
use tracing_appender::non_blocking::WorkerGuard;
use tracing_appender::rolling::{RollingFileAppender, Rotation};
use tracing_subscriber::EnvFilter;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;

use crate::config::LogConfig;

/// How many daily files are kept.
pub const KEEP_FILES: usize = 14;

/// Keeps the log writer's worker alive; lines still buffered are flushed when it is dropped,
/// so hold it for the life of the process.
#[must_use = "dropping the guard stops file logging"]
pub struct LogGuard(#[allow(dead_code)] Option<WorkerGuard>);

/// Installs the global subscriber. `stderr` forces logging to stderr (it is on anyway when stderr
/// is a terminal).
pub fn init(config: &LogConfig, stderr: bool) -> anyhow::Result<LogGuard> {
    let filter = match EnvFilter::try_from_default_env() {
        Ok(filter) => filter,
        Err(_) => EnvFilter::try_new(config.filter.as_deref().unwrap_or("info"))
            .context("invalid log filter")?,
    };
    let terminal = std::io::stderr().is_terminal();
    let stderr_layer = (stderr || terminal).then(|| {
        tracing_subscriber::fmt::layer()
            .with_writer(std::io::stderr)
            .with_ansi(terminal)
            .with_thread_names(true)
    });
    let (file_layer, guard) = match &config.dir {
        Some(dir) => {
            crate::persist::private_dir(dir)
                .map_err(|e| anyhow::anyhow!("cannot log into {}: {e}", dir.display()))?;
            let appender = RollingFileAppender::builder()
                .rotation(Rotation::DAILY)
                .filename_prefix("pacerd")
                .filename_suffix("log")
                .max_log_files(KEEP_FILES)
                .build(dir)
                .with_context(|| format!("cannot log into {}", dir.display()))?;
            let (writer, guard) = tracing_appender::non_blocking(appender);
            // Each line names its daemon (its threads are `pacerd[<pid>]`): two daemons sharing a
            // log directory stay apart.
            let layer = tracing_subscriber::fmt::layer()
                .with_writer(writer)
                .with_ansi(false)
                .with_thread_names(true);
            (Some(layer), Some(guard))
        }
        None => (None, None),
    };
    tracing_subscriber::registry()
        .with(filter)
        .with(stderr_layer)
        .with(file_layer)
        .try_init()
        .context("a logger is already installed")?;
    Ok(LogGuard(guard))
}
