//! The state file: what a restart must not forget.
//!
//! Pauses (the API told everyone to wait), learned limits, bucket levels and the gateway's
//! estimate calibration are written to `$XDG_STATE_HOME/pacer/state` (JSON) on every pause
//! change, at most every few seconds otherwise, and at shutdown — each time atomically: a
//! temporary file, fsync, rename, fsync of the directory. On start they are loaded. A file that
//! cannot be read back is moved aside with a warning; the daemon never refuses to start over it.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use serde::{Deserialize, Serialize};

use crate::broker::{BrokerState, Calibration};

/// Bumped when the file's meaning changes; a file of another version is moved aside.
pub const STATE_VERSION: u32 = 1;
/// The longest a change other than a pause waits to be saved.
pub const SAVE_INTERVAL: Duration = Duration::from_secs(5);

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StateFile {
    pub version: u32,
    /// When it was written (bucket levels and pauses are as of then).
    pub saved_at: SystemTime,
    pub broker: BrokerState,
    pub calibration: Calibration,
    /// Routes registered by wrapped commands (those without credentials in their URL).
    #[serde(default)]
    pub routes: Vec<pacer_protocol::message::RouteStatus>,
}

/// The default state file: `$XDG_STATE_HOME/pacer/state`, else `~/.local/state/pacer/state`.
pub fn default_path() -> Option<PathBuf> {
    pacer_protocol::endpoint::state_dir().map(|dir| dir.join("state"))
}

/// Reads the state file. `None` when there is none, or when it was unreadable and has been moved
/// aside (with a warning naming where).
pub fn load(path: &Path) -> Option<StateFile> {
    let bytes = match std::fs::read(path) {
        Ok(bytes) => bytes,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return None,
        Err(e) => {
            tracing::warn!(path = %path.display(), "cannot read the state file, starting without it: {e}");
            return None;
        }
    };
    let problem = match serde_json::from_slice::<StateFile>(&bytes) {
        Ok(state) if state.version == STATE_VERSION => return Some(state),
        Ok(state) => format!(
            "it is version {}, this pacerd reads version {STATE_VERSION}",
            state.version
        ),
        Err(e) => format!("it is not a valid state file ({e})"),
    };
    let aside = aside_path(path);
    match std::fs::rename(path, &aside) {
        Ok(()) => tracing::warn!(
            path = %path.display(),
            moved_to = %aside.display(),
            "state file set aside, starting without it: {problem}"
        ),
        Err(e) => tracing::warn!(
            path = %path.display(),
            "state file ignored ({problem}) and could not be moved aside: {e}"
        ),
    }
    None
}

fn aside_path(path: &Path) -> PathBuf {
    let stamp = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let name = path
        .file_name()
        .map_or("state".into(), |n| n.to_string_lossy().into_owned());
    path.with_file_name(format!("{name}.corrupt-{stamp}"))
}

/// Writes the state file atomically.
pub fn save(path: &Path, state: &StateFile) -> std::io::Result<()> {
    let dir = path
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir)?;
    let json = serde_json::to_vec_pretty(state).map_err(std::io::Error::other)?;
    let tmp = path.with_extension("tmp");
    {
        let mut file = std::fs::File::create(&tmp)?;
        file.write_all(&json)?;
        file.sync_all()?;
    }
    std::fs::rename(&tmp, path)?;
    // The rename itself is durable only once the directory is.
    if let Ok(dir) = std::fs::File::open(dir) {
        let _ = dir.sync_all();
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn state() -> StateFile {
        StateFile {
            version: STATE_VERSION,
            saved_at: SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000),
            broker: BrokerState {
                next_lease: 42,
                ..Default::default()
            },
            calibration: Calibration::default(),
            routes: Vec::new(),
        }
    }

    #[test]
    fn saves_and_loads() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("nested").join("state");
        save(&path, &state()).unwrap();
        assert_eq!(load(&path), Some(state()));
        assert!(!path.with_extension("tmp").exists());
        // Saving again replaces it whole.
        let mut newer = state();
        newer.broker.next_lease = 43;
        save(&path, &newer).unwrap();
        assert_eq!(load(&path).unwrap().broker.next_lease, 43);
    }

    #[test]
    fn a_missing_file_is_no_state() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(load(&dir.path().join("state")), None);
    }

    #[test]
    fn a_corrupt_file_is_moved_aside() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state");
        std::fs::write(&path, b"{ not json").unwrap();
        assert_eq!(load(&path), None);
        assert!(!path.exists());
        let aside: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        assert_eq!(aside.len(), 1);
        assert!(aside[0].starts_with("state.corrupt-"), "{aside:?}");
        assert_eq!(
            std::fs::read(dir.path().join(&aside[0])).unwrap(),
            b"{ not json"
        );
    }

    #[test]
    fn another_version_is_moved_aside() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state");
        let mut future = state();
        future.version = STATE_VERSION + 1;
        save(&path, &future).unwrap();
        assert_eq!(load(&path), None);
        assert!(!path.exists());
    }
}
