//! Socket activation: listening sockets handed over by systemd (`LISTEN_FDS`).
//!
//! `pacerd.socket` passes the Unix socket and, optionally, the gateway's TCP socket; pacerd tells
//! them apart by address family. Sockets held by systemd survive a restart of the daemon: clients
//! that connect meanwhile wait in the backlog instead of finding nobody there.

use std::net::TcpListener;
use std::os::fd::{FromRawFd, OwnedFd};

use super::listeners::Inherited;

/// Takes the sockets passed in `LISTEN_FDS` and unsets the variables.
///
/// # Safety
/// Must be called before any other thread is started (it changes the environment).
pub unsafe fn take() -> std::io::Result<Inherited> {
    let mut inherited = Inherited::default();
    // SAFETY: the caller guarantees no other thread runs yet.
    let fds = unsafe { sd_notify::listen_fds_and_unset_env() }?;
    for raw in fds {
        // SAFETY: systemd hands these descriptors to this process alone, open, from 3 upward;
        // nothing else in the process owns them.
        let fd = unsafe { OwnedFd::from_raw_fd(raw) };
        match family(&fd) {
            Some(family) if family == libc::AF_UNIX as libc::sa_family_t => {
                inherited.socket.get_or_insert(fd);
            }
            Some(_) => {
                if inherited.gateway.is_none() {
                    let listener = TcpListener::from(fd);
                    listener.set_nonblocking(true)?;
                    inherited.gateway = Some(listener);
                }
            }
            None => tracing::warn!(
                fd = raw,
                "ignoring an inherited descriptor that is not a socket"
            ),
        }
    }
    Ok(inherited)
}

/// The address family a socket is bound to.
fn family(fd: &OwnedFd) -> Option<libc::sa_family_t> {
    use std::os::fd::AsRawFd;
    // SAFETY: sockaddr_storage is plain data; getsockname writes at most `len` bytes into it.
    unsafe {
        let mut storage: libc::sockaddr_storage = std::mem::zeroed();
        let mut len = std::mem::size_of::<libc::sockaddr_storage>() as libc::socklen_t;
        let rc = libc::getsockname(
            fd.as_raw_fd(),
            (&mut storage as *mut libc::sockaddr_storage).cast(),
            &mut len,
        );
        (rc == 0).then_some(storage.ss_family)
    }
}
