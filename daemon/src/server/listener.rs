//! Claiming the local endpoint: a Unix socket (0600, in a 0700 directory) or a Windows named pipe.
//!
//! A socket file left by a daemon that died is removed; a live daemon at the same path is an error
//! ("already running at PATH"), so two daemons never split one machine's budget.

use std::io;
use std::path::{Path, PathBuf};

use interprocess::local_socket::tokio::prelude::*;
use interprocess::local_socket::{GenericFilePath, ListenerOptions};

pub use interprocess::local_socket::tokio::{Listener, Stream};

/// Why the endpoint could not be claimed.
#[derive(Debug, thiserror::Error)]
pub enum BindError {
    #[error("pacerd is already running at {}", .0.display())]
    AlreadyRunning(PathBuf),
    #[error("{} exists and is not a socket; refusing to replace it", .0.display())]
    NotASocket(PathBuf),
    #[error("refusing the socket directory: {reason}")]
    Insecure {
        path: PathBuf,
        reason: pacer_protocol::endpoint::UnsafeDir,
    },
    #[error("cannot {op} {}: {source}", path.display())]
    Io {
        path: PathBuf,
        op: &'static str,
        source: io::Error,
    },
}

fn io_error(path: &Path, op: &'static str) -> impl FnOnce(io::Error) -> BindError {
    let path = path.to_owned();
    move |source| BindError::Io { path, op, source }
}

/// Binds the daemon's endpoint at `path`. Must be called within a tokio runtime.
pub async fn bind(path: &Path) -> Result<Listener, BindError> {
    prepare(path).await?;
    create(path)
}

/// Adopts a listening Unix socket handed over by the service manager (socket activation). Its
/// file belongs to the service manager and is left in place on exit.
#[cfg(unix)]
pub fn from_fd(fd: std::os::fd::OwnedFd) -> io::Result<Listener> {
    use interprocess::os::unix::uds_local_socket::tokio::Listener as UdsListener;
    Ok(UdsListener::try_from(fd)?.into())
}

/// Whether a daemon answers at `path`.
pub async fn is_live(path: &Path) -> bool {
    connect(path).await.is_ok()
}

/// Connects to the endpoint at `path`.
pub async fn connect(path: &Path) -> io::Result<Stream> {
    let name = path.to_fs_name::<GenericFilePath>()?;
    Stream::connect(name).await
}

#[cfg(unix)]
async fn prepare(path: &Path) -> Result<(), BindError> {
    use std::os::unix::fs::{DirBuilderExt, FileTypeExt};

    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        if !dir.exists() {
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(dir)
                .map_err(io_error(dir, "create directory"))?;
        } else if path == pacer_protocol::endpoint::default_endpoint() {
            // The default directory is ours alone: refuse one another user could write into.
            pacer_protocol::endpoint::check_private_dir(dir).map_err(|reason| {
                BindError::Insecure {
                    path: dir.to_owned(),
                    reason,
                }
            })?;
        }
    }
    match std::fs::symlink_metadata(path) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(io_error(path, "inspect")(e)),
        Ok(meta) if !meta.file_type().is_socket() => Err(BindError::NotASocket(path.to_owned())),
        Ok(_) if is_live(path).await => Err(BindError::AlreadyRunning(path.to_owned())),
        Ok(_) => {
            tracing::info!(path = %path.display(), "removing stale socket left by an earlier daemon");
            std::fs::remove_file(path).map_err(io_error(path, "remove stale socket"))
        }
    }
}

#[cfg(windows)]
async fn prepare(path: &Path) -> Result<(), BindError> {
    if is_live(path).await {
        return Err(BindError::AlreadyRunning(path.to_owned()));
    }
    Ok(())
}

#[cfg(unix)]
fn create(path: &Path) -> Result<Listener, BindError> {
    use interprocess::os::unix::local_socket::ListenerOptionsExt;
    use std::os::unix::fs::PermissionsExt;

    let options = || -> Result<ListenerOptions<'static>, BindError> {
        let name = path
            .to_owned()
            .to_fs_name::<GenericFilePath>()
            .map_err(io_error(path, "name socket"))?;
        Ok(ListenerOptions::new().name(name))
    };
    let listener = match options()?.mode(0o600).create_tokio() {
        Ok(listener) => listener,
        // Platforms that cannot set the mode before binding: the chmod below sets it. The
        // directory (0700) keeps others out meanwhile.
        Err(e) if e.kind() == io::ErrorKind::Unsupported => options()?
            .create_tokio()
            .map_err(io_error(path, "listen on"))?,
        Err(e) if e.kind() == io::ErrorKind::AddrInUse => {
            return Err(BindError::AlreadyRunning(path.to_owned()));
        }
        Err(e) => return Err(io_error(path, "listen on")(e)),
    };
    // Always set the file's mode by its path as well: some kernels (sandboxes among them) accept
    // the mode on the socket before `bind` and then create the file from the umask anyway.
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
        .map_err(io_error(path, "restrict permissions of"))?;
    Ok(listener)
}

#[cfg(windows)]
fn create(path: &Path) -> Result<Listener, BindError> {
    let name = path
        .to_owned()
        .to_fs_name::<GenericFilePath>()
        .map_err(io_error(path, "name pipe"))?;
    ListenerOptions::new()
        .name(name)
        .create_tokio()
        .map_err(|e| match e.kind() {
            io::ErrorKind::AddrInUse | io::ErrorKind::PermissionDenied => {
                BindError::AlreadyRunning(path.to_owned())
            }
            _ => io_error(path, "listen on")(e),
        })
}

#[cfg(all(test, unix))]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[tokio::test]
    async fn creates_a_private_directory_and_socket() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("run").join("pacer.sock");
        let _listener = bind(&path).await.unwrap();
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(path.parent().unwrap()), 0o700);
        assert_eq!(mode(&path), 0o600);
    }

    #[tokio::test]
    async fn a_live_daemon_keeps_its_socket() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("pacer.sock");
        let _first = bind(&path).await.unwrap();
        let err = bind(&path).await.unwrap_err();
        assert!(matches!(err, BindError::AlreadyRunning(_)));
        assert!(err.to_string().contains(&*path.to_string_lossy()));
    }

    #[tokio::test]
    async fn a_stale_socket_is_replaced() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("pacer.sock");
        // A socket file with nobody listening, as a killed daemon leaves it.
        drop(std::os::unix::net::UnixListener::bind(&path).unwrap());
        assert!(path.exists());
        let _listener = bind(&path).await.unwrap();
        assert!(is_live(&path).await);
    }

    #[tokio::test]
    async fn a_regular_file_is_not_replaced() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("pacer.sock");
        std::fs::write(&path, "precious").unwrap();
        assert!(matches!(
            bind(&path).await.unwrap_err(),
            BindError::NotASocket(_)
        ));
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "precious");
    }
}
