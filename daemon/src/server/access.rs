//! Who may use the socket: the peer's credentials, checked on every connection.
//!
//! The socket is created 0600 in a 0700 directory, but a system-wide daemon's socket is meant
//! for a group, and permissions get loosened by hand. So the kernel's word on who connected
//! (`SO_PEERCRED`: the effective uid and gid at `connect`) decides: the daemon's own user and
//! root always; other users only when `[access]` names them or one of their groups. The
//! supplementary groups come from `/proc/<pid>/status` of the connecting process (Linux).
//!
//! On Windows the named pipe's default security descriptor already limits it to its creator
//! and administrators; no further check is made.

use std::sync::RwLock;

use crate::config::AccessConfig;

/// Who connected, as the kernel saw it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Peer {
    pub uid: u32,
    pub gid: u32,
    pub pid: Option<u32>,
    /// Supplementary groups, where they can be found.
    pub groups: Vec<u32>,
}

/// The access rules, replaced as a whole on reload.
pub struct Policy {
    own_uid: u32,
    rules: RwLock<AccessConfig>,
}

impl Policy {
    pub fn new(own_uid: u32, config: AccessConfig) -> Self {
        Policy {
            own_uid,
            rules: RwLock::new(config),
        }
    }

    /// The policy for this process's effective user.
    pub fn for_this_process(config: AccessConfig) -> Self {
        Self::new(effective_uid(), config)
    }

    pub fn reconfigure(&self, config: AccessConfig) {
        *self.rules.write().unwrap_or_else(|p| p.into_inner()) = config;
    }

    /// Whether `peer` may use the daemon; if not, why, in words for the peer and the log.
    pub fn check(&self, peer: &Peer) -> Result<(), Denied> {
        if peer.uid == self.own_uid || peer.uid == 0 {
            return Ok(());
        }
        let rules = self.rules.read().unwrap_or_else(|p| p.into_inner());
        let in_group = std::iter::once(peer.gid)
            .chain(peer.groups.iter().copied())
            .any(|gid| rules.allow_gids.contains(&gid));
        if rules.allow_uids.contains(&peer.uid) || in_group {
            return Ok(());
        }
        Err(Denied {
            uid: peer.uid,
            gid: peer.gid,
            daemon_uid: self.own_uid,
        })
    }
}

/// A peer the access rules do not let in.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "permission denied: uid {uid} (gid {gid}) may not use this pacerd, which runs as uid \
     {daemon_uid}; its [access] allow_uids / allow_groups settings name who else may"
)]
pub struct Denied {
    pub uid: u32,
    pub gid: u32,
    pub daemon_uid: u32,
}

#[cfg(unix)]
fn effective_uid() -> u32 {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() }
}

#[cfg(not(unix))]
fn effective_uid() -> u32 {
    0
}

/// Who is at the other end of a connection.
#[cfg(unix)]
pub fn peer_of(stream: &super::listener::Stream) -> std::io::Result<Peer> {
    use interprocess::local_socket::traits::StreamCommon as _;
    let creds = stream.peer_creds()?;
    let missing = || std::io::Error::other("the kernel gave no credentials for the peer");
    let uid = creds.euid().ok_or_else(missing)?;
    let gid = creds.egid().ok_or_else(missing)?;
    let pid = creds.pid().and_then(|p| u32::try_from(p).ok());
    let groups = match creds.groups() {
        Some(groups) => groups.to_vec(),
        None => pid.map(supplementary_groups).unwrap_or_default(),
    };
    Ok(Peer {
        uid,
        gid,
        pid,
        groups,
    })
}

/// The supplementary groups of a process, from `/proc/<pid>/status` (empty where unknown).
#[cfg(unix)]
fn supplementary_groups(pid: u32) -> Vec<u32> {
    let Ok(status) = std::fs::read_to_string(format!("/proc/{pid}/status")) else {
        return Vec::new();
    };
    status
        .lines()
        .find_map(|line| line.strip_prefix("Groups:"))
        .map(|groups| {
            groups
                .split_whitespace()
                .filter_map(|g| g.parse().ok())
                .collect()
        })
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn peer(uid: u32, gid: u32, groups: &[u32]) -> Peer {
        Peer {
            uid,
            gid,
            pid: None,
            groups: groups.to_vec(),
        }
    }

    #[test]
    fn the_daemons_user_and_root_are_always_allowed() {
        let policy = Policy::new(1000, AccessConfig::default());
        assert!(policy.check(&peer(1000, 1000, &[])).is_ok());
        assert!(policy.check(&peer(0, 0, &[])).is_ok());
        let denied = policy
            .check(&peer(1001, 1001, &[]))
            .unwrap_err()
            .to_string();
        assert!(denied.contains("uid 1001"), "{denied}");
        assert!(denied.contains("allow_uids"), "{denied}");
    }

    #[test]
    fn named_users_and_members_of_named_groups_are_allowed() {
        let policy = Policy::new(
            1000,
            AccessConfig {
                allow_uids: vec![1001],
                allow_gids: vec![500],
            },
        );
        assert!(policy.check(&peer(1001, 1001, &[])).is_ok());
        assert!(policy.check(&peer(1002, 500, &[])).is_ok());
        assert!(policy.check(&peer(1003, 1003, &[7, 500])).is_ok());
        assert!(policy.check(&peer(1004, 1004, &[7])).is_err());
        policy.reconfigure(AccessConfig::default());
        assert!(policy.check(&peer(1001, 1001, &[])).is_err());
    }
}
