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

use pacer_broker::{BrokerState, Calibration};
use pacer_protocol::endpoint::UnsafeDir;

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
    let problem = match parse(&bytes) {
        Ok(state) => return Some(state),
        Err(problem) => problem,
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

/// Reads a state file's bytes: what they hold, or why they cannot be used. (Values are held
/// to sense when the broker restores them.)
pub fn parse(bytes: &[u8]) -> Result<StateFile, Unusable> {
    match serde_json::from_slice::<StateFile>(bytes) {
        Ok(state) if state.version == STATE_VERSION => Ok(state),
        Ok(state) => Err(Unusable::Version(state.version)),
        Err(e) => Err(Unusable::Invalid(e)),
    }
}

/// Why a state file's bytes cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum Unusable {
    #[error("it is version {0}, this pacerd reads version {STATE_VERSION}")]
    Version(u32),
    #[error("it is not a valid state file ({0})")]
    Invalid(serde_json::Error),
}

/// Why the state file could not be locked for this daemon.
#[derive(Debug, thiserror::Error)]
pub enum LockError {
    #[error("cannot open {}: {source}", path.display())]
    Open {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(
        "another pacerd{} uses the state file {}: stop it, or give this one a state file of its \
         own (--state PATH, or [state] file)",
        holder.as_ref().map_or(String::new(), |pid| format!(" (pid {pid})")),
        path.display()
    )]
    Held {
        path: PathBuf,
        holder: Option<String>,
    },
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

/// The directory a file of the daemon's goes in.
pub fn dir_of(path: &Path) -> &Path {
    path.parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."))
}

/// Makes sure `dir` is the daemon's own: created (0700) if missing; otherwise it must belong to
/// the daemon's user and be writable by nobody else — another user who could write there could
/// replace the state file, or plant a symlink that the next save or log line follows.
pub fn private_dir(dir: &Path) -> Result<(), UnsafeDir> {
    if !dir.exists() {
        let mut builder = std::fs::DirBuilder::new();
        builder.recursive(true);
        #[cfg(unix)]
        std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
        return builder.create(dir).map_err(|source| UnsafeDir::Create {
            path: dir.to_path_buf(),
            source,
        });
    }
    #[cfg(unix)]
    pacer_protocol::endpoint::check_private_dir(dir)?;
    Ok(())
}

/// Held for the daemon's life: no second daemon uses the same state file (each would overwrite
/// the other's saves). The lock is released when the process ends, however it ends.
#[derive(Debug)]
pub struct StateLock {
    _file: std::fs::File,
}

/// Locks `path` for this daemon (`<path>.lock`, holding the owner's pid). Fails, naming the
/// other daemon's pid, if one holds it.
#[cfg(unix)]
pub fn lock(path: &Path) -> Result<StateLock, LockError> {
    use std::io::{Read, Seek};
    use std::os::fd::AsRawFd;
    use std::os::unix::fs::OpenOptionsExt;

    let lock_path = path.with_extension("lock");
    let mut file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW)
        .open(&lock_path)
        .map_err(|source| LockError::Open {
            path: lock_path.clone(),
            source,
        })?;
    // SAFETY: flock on an open descriptor we own; it has no memory effects.
    if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
        let mut holder = String::new();
        let _ = file.read_to_string(&mut holder);
        let holder = holder.trim();
        return Err(LockError::Held {
            path: path.to_path_buf(),
            holder: (!holder.is_empty()).then(|| holder.to_owned()),
        });
    }
    let _ = file.set_len(0);
    let _ = file.rewind();
    let _ = file.write_all(std::process::id().to_string().as_bytes());
    Ok(StateLock { _file: file })
}

#[cfg(windows)]
pub fn lock(path: &Path) -> Result<StateLock, LockError> {
    use std::os::windows::fs::OpenOptionsExt;
    // Windows: the lock file is opened with no sharing, so a second daemon cannot open it
    // while this one runs (ERROR_SHARING_VIOLATION).
    const ERROR_SHARING_VIOLATION: i32 = 32;
    let lock_path = path.with_extension("lock");
    let opened = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(true)
        .share_mode(0)
        .open(&lock_path);
    match opened {
        Ok(mut file) => {
            let _ = file.write_all(std::process::id().to_string().as_bytes());
            Ok(StateLock { _file: file })
        }
        Err(e) if e.raw_os_error() == Some(ERROR_SHARING_VIOLATION) => Err(LockError::Held {
            path: path.to_path_buf(),
            holder: None,
        }),
        Err(source) => Err(LockError::Open {
            path: lock_path.clone(),
            source,
        }),
    }
}

/// Writes the state file atomically: a new private file (never through a symlink), fsync,
/// rename over the old one, fsync of the directory.
pub fn save(path: &Path, state: &StateFile) -> std::io::Result<()> {
    let dir = dir_of(path);
    private_dir(dir).map_err(std::io::Error::other)?;
    let json = serde_json::to_vec_pretty(state).map_err(std::io::Error::other)?;
    let tmp = path.with_extension("tmp");
    {
        // A temporary file left by a crash (or planted) goes first: the new one is created
        // exclusively, so no existing file or symlink is ever written through.
        match std::fs::remove_file(&tmp) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e),
            _ => {}
        }
        let mut options = std::fs::OpenOptions::new();
        options.write(true).create_new(true);
        #[cfg(unix)]
        {
            use std::os::unix::fs::OpenOptionsExt;
            options.mode(0o600).custom_flags(libc::O_NOFOLLOW);
        }
        let mut file = options.open(&tmp)?;
        let written = file
            .write_all(&json)
            .and_then(|()| file.sync_all())
            .and_then(|()| std::fs::rename(&tmp, path));
        if let Err(e) = written {
            // A full disk: the partial file goes, and the old state file stays as it was.
            let _ = std::fs::remove_file(&tmp);
            return Err(e);
        }
    }
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

    #[cfg(unix)]
    #[test]
    fn the_file_is_private_and_never_written_through_a_symlink() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state");
        let victim = dir.path().join("victim");
        std::fs::write(&victim, b"precious").unwrap();
        std::os::unix::fs::symlink(&victim, path.with_extension("tmp")).unwrap();
        save(&path, &state()).unwrap();
        assert_eq!(std::fs::read(&victim).unwrap(), b"precious");
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        assert!(
            !std::fs::symlink_metadata(&path)
                .unwrap()
                .file_type()
                .is_symlink()
        );
    }

    #[cfg(unix)]
    #[test]
    fn a_directory_others_can_write_is_refused() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o777)).unwrap();
        let err = save(&dir.path().join("state"), &state())
            .unwrap_err()
            .to_string();
        assert!(err.contains("others can write into it"), "{err}");
        assert!(!dir.path().join("state").exists());
    }

    #[cfg(unix)]
    #[test]
    fn a_second_lock_on_one_state_file_is_refused_with_the_holders_pid() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state");
        let held = lock(&path).unwrap();
        // flock locks belong to the open file: a second open in this process conflicts too.
        let err = lock(&path).unwrap_err().to_string();
        assert!(
            err.contains(&format!("another pacerd (pid {})", std::process::id())),
            "{err}"
        );
        drop(held);
        assert!(lock(&path).is_ok());
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
