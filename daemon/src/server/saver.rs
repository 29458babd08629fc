//! Keeps the state file current: at once when a pause or backoff starts or ends (a restart must
//! never forget that the API told everyone to wait), otherwise at most every few seconds, and only
//! when something changed.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use tokio::sync::watch;

use super::shared::Shared;
use crate::gateway::calibration::Calibration;
use crate::persist::{self, SAVE_INTERVAL, STATE_VERSION, StateFile};

pub async fn keep_saved(
    shared: Arc<Shared>,
    calibration: Arc<Mutex<Calibration>>,
    path: PathBuf,
    mut stop: watch::Receiver<bool>,
) {
    let mut saved = shared.generation();
    loop {
        let urgent = tokio::select! {
            () = shared.pause_changed.notified() => true,
            () = tokio::time::sleep(SAVE_INTERVAL) => false,
            _ = stop.changed() => return,
        };
        let generation = shared.generation();
        if urgent || generation != saved {
            save_now(&shared, &calibration, &path).await;
            saved = generation;
        }
    }
}

/// Writes the state file now (off the async threads: it fsyncs).
pub async fn save_now(shared: &Shared, calibration: &Mutex<Calibration>, path: &Path) {
    let state = StateFile {
        version: STATE_VERSION,
        saved_at: SystemTime::now(),
        broker: shared.snapshot(),
        calibration: calibration
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone(),
    };
    let path = path.to_owned();
    let written =
        tokio::task::spawn_blocking(move || persist::save(&path, &state).map_err(|e| (path, e)))
            .await;
    match written {
        Ok(Ok(())) => {}
        Ok(Err((path, e))) => tracing::error!(path = %path.display(), "cannot save the state: {e}"),
        Err(e) => tracing::error!("cannot save the state: {e}"),
    }
}
