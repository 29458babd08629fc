//! Keeps the state file current: at once when a pause or backoff starts or ends (a restart must
//! never forget that the API told everyone to wait), otherwise at most every few seconds, and only
//! when something changed.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::SystemTime;

use tokio_util::sync::CancellationToken;

use crate::hub::Hub;
use crate::persist::{self, SAVE_INTERVAL, STATE_VERSION, StateFile};

/// Saves whenever something changed, until `stop` fires.
pub async fn keep_saved(hub: Arc<Hub>, path: PathBuf, stop: CancellationToken) {
    let mut saved = hub.changes().generation();
    loop {
        let urgent = tokio::select! {
            () = hub.changes().next_pause_change() => true,
            () = tokio::time::sleep(SAVE_INTERVAL) => false,
            () = stop.cancelled() => return,
        };
        let generation = hub.changes().generation();
        if urgent || generation != saved {
            save_now(&hub, &path).await;
            saved = generation;
        }
    }
}

/// Writes the state file now (off the async threads: it fsyncs).
pub async fn save_now(hub: &Hub, path: &Path) {
    let (broker, calibration, routes) = hub.snapshot();
    let state = StateFile {
        version: STATE_VERSION,
        saved_at: SystemTime::now(),
        broker,
        calibration,
        routes,
    };
    let path = path.to_owned();
    let written =
        tokio::task::spawn_blocking(move || persist::save(&path, &state).map_err(|e| (path, e)))
            .await;
    let failure = match written {
        Ok(Ok(())) => {
            hub.stats().count_save();
            if FAILING.swap(false, Ordering::Relaxed) {
                tracing::info!("the state is saved again");
            }
            return;
        }
        Ok(Err((path, e))) => format!("cannot save the state to {}: {e}", path.display()),
        Err(e) => format!("cannot save the state: {e}"),
    };
    // A full disk fails every save: said once, until one succeeds again.
    if FAILING.swap(true, Ordering::Relaxed) {
        tracing::debug!("{failure}");
    } else {
        tracing::error!("{failure} (said once; pacerd keeps trying, and says when it can again)");
    }
}

/// Whether the last save failed (the daemon has one state file).
static FAILING: AtomicBool = AtomicBool::new(false);
