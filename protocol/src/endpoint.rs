//! Where `pacerd` listens on this machine.
//!
//! Resolution order on Unix: `$PACER_SOCKET`; else `$XDG_RUNTIME_DIR/pacer/pacer.sock`; else
//! `pacer-<uid>/pacer.sock` under the temporary directory. The daemon creates the directory with
//! mode 0700 and the socket with 0600, so only the user who runs it can ask for permits.
//!
//! On Windows the endpoint is the named pipe `\\.\pipe\pacer-<user>` (or `$PACER_SOCKET`).
//!
//! [`state_dir`] is where pacer keeps its files (the daemon's state and logs, the log of a
//! daemon `pacer run` starts): both sides must agree on it.

use std::env;
use std::path::PathBuf;

/// The environment variable that overrides the endpoint for daemon and clients alike.
pub const SOCKET_ENV: &str = "PACER_SOCKET";

/// The endpoint daemon and clients use when none is given on the command line.
pub fn default_endpoint() -> PathBuf {
    resolve_default().0
}

/// The default endpoint, and whether someone chose it (`$PACER_SOCKET`) rather than it being
/// the per-user default. Clients trust a chosen one as it is (a system-wide daemon's group
/// socket); the per-user default must be the user's own (see [`check_private_dir`]).
pub fn resolve_default() -> (PathBuf, bool) {
    if let Some(path) = env::var_os(SOCKET_ENV).filter(|p| !p.is_empty()) {
        return (PathBuf::from(path), true);
    }
    (platform_default(), false)
}

/// A directory that is not safely this user's own, or cannot be made so.
#[derive(Debug, thiserror::Error)]
pub enum UnsafeDir {
    #[error("cannot create {}: {source}", path.display())]
    Create {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot inspect {}: {source}", path.display())]
    Inspect {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{} is not a directory", path.display())]
    NotADirectory { path: PathBuf },
    #[error(
        "{} is owned by uid {owner}, not by you (uid {me}): another user may be impersonating \
         pacerd there",
        path.display()
    )]
    NotYours { path: PathBuf, owner: u32, me: u32 },
    #[error("{} has mode {mode:o}: others can write into it", path.display())]
    Writable { path: PathBuf, mode: u32 },
}

/// Checks that `dir` is this user's own and nobody else can write into it: owned by the
/// effective user, no write permission for group or others. Another user could otherwise
/// plant a socket (or a symlink) there first. The error names the directory, its owner and
/// its mode.
#[cfg(unix)]
pub fn check_private_dir(dir: &std::path::Path) -> Result<(), UnsafeDir> {
    use std::os::unix::fs::MetadataExt;
    let path = dir.to_path_buf();
    let meta = std::fs::symlink_metadata(dir).map_err(|source| UnsafeDir::Inspect {
        path: path.clone(),
        source,
    })?;
    let me = effective_uid();
    if !meta.is_dir() {
        return Err(UnsafeDir::NotADirectory { path });
    }
    if meta.uid() != me {
        let owner = meta.uid();
        return Err(UnsafeDir::NotYours { path, owner, me });
    }
    if meta.mode() & 0o022 != 0 {
        let mode = meta.mode() & 0o7777;
        return Err(UnsafeDir::Writable { path, mode });
    }
    Ok(())
}

/// This process's effective user id.
#[cfg(unix)]
pub fn effective_uid() -> u32 {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() }
}

/// Where pacer keeps its files: `$XDG_STATE_HOME/pacer`, else `~/.local/state/pacer` (on
/// Windows, `%LOCALAPPDATA%\pacer`).
pub fn state_dir() -> Option<PathBuf> {
    let base = env::var_os("XDG_STATE_HOME")
        .filter(|p| !p.is_empty())
        .map(PathBuf::from)
        .or_else(|| {
            #[cfg(windows)]
            if let Some(local) = env::var_os("LOCALAPPDATA").filter(|p| !p.is_empty()) {
                return Some(PathBuf::from(local));
            }
            home_dir().map(|home| home.join(".local/state"))
        })?;
    Some(base.join("pacer"))
}

/// The user's home directory: `$HOME`, else what the system says (on Windows, where `HOME`
/// is usually unset, the profile directory).
pub fn home_dir() -> Option<PathBuf> {
    env::var_os("HOME")
        .filter(|p| !p.is_empty())
        .map(PathBuf::from)
        .or_else(env::home_dir)
}

#[cfg(unix)]
fn platform_default() -> PathBuf {
    if let Some(runtime) = env::var_os("XDG_RUNTIME_DIR").filter(|p| !p.is_empty()) {
        return PathBuf::from(runtime).join("pacer").join("pacer.sock");
    }
    // SAFETY: getuid has no preconditions and cannot fail.
    let uid = unsafe { libc::getuid() };
    env::temp_dir()
        .join(format!("pacer-{uid}"))
        .join("pacer.sock")
}

#[cfg(windows)]
fn platform_default() -> PathBuf {
    let user = env::var("USERNAME").unwrap_or_else(|_| "default".to_owned());
    let user: String = user
        .chars()
        .map(|c| if c.is_alphanumeric() { c } else { '_' })
        .collect();
    PathBuf::from(format!(r"\\.\pipe\pacer-{user}"))
}

#[cfg(all(test, unix))]
mod tests {
    use super::*;

    // Environment variables are process-global; these cases run in one test to avoid races.
    #[test]
    fn resolution_order() {
        // SAFETY: no other test in this crate reads or writes these variables.
        unsafe {
            env::set_var(SOCKET_ENV, "/tmp/explicit.sock");
            env::set_var("XDG_RUNTIME_DIR", "/run/user/1000");
        }
        assert_eq!(default_endpoint(), PathBuf::from("/tmp/explicit.sock"));

        unsafe { env::remove_var(SOCKET_ENV) };
        assert_eq!(
            default_endpoint(),
            PathBuf::from("/run/user/1000/pacer/pacer.sock")
        );

        unsafe { env::remove_var("XDG_RUNTIME_DIR") };
        let fallback = default_endpoint();
        assert!(fallback.starts_with(env::temp_dir()));
        let uid = unsafe { libc::getuid() };
        assert!(fallback.ends_with(format!("pacer-{uid}/pacer.sock")));
    }
}
