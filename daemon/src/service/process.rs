//! What the process sets for itself at start: a umask that keeps every file it creates
//! private, and the open files limit — raised to the hard limit, and shared out between the
//! socket's connections and the gateway's, leaving room for the rest (the state file, the log,
//! upstream connections), so that no flood of one kind starves the others.

use crate::server::DEFAULT_MAX_CONNECTIONS;

/// Descriptors kept back for everything that is not a client connection.
const RESERVED: u64 = 256;

/// How many connections each listener serves at once.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Caps {
    pub socket: usize,
    /// Gateway connections; each may hold an upstream connection as well.
    pub gateway: usize,
}

impl Caps {
    /// The caps for a process that may open `limit` descriptors: the socket gets two fifths of
    /// what is not reserved, the gateway one fifth (it needs two descriptors per request).
    pub fn for_limit(limit: u64) -> Caps {
        let usable = limit.saturating_sub(RESERVED).max(10);
        let cap =
            |share: u64| (usable * share / 5).clamp(4, DEFAULT_MAX_CONNECTIONS as u64) as usize;
        Caps {
            socket: cap(2),
            gateway: cap(1),
        }
    }
}

/// Files and directories the daemon creates are its user's alone (`umask 077`); the socket's
/// own mode is set where it is created.
pub fn private_files() {
    #[cfg(unix)]
    // SAFETY: umask has no preconditions and cannot fail.
    unsafe {
        libc::umask(0o077);
    }
}

/// Raises the soft limit on open files to the hard limit; returns the limit in force.
#[cfg(unix)]
#[allow(clippy::unnecessary_cast)] // rlim_t is not u64 on every Unix.
pub fn raise_limit() -> u64 {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: `limit` is a valid rlimit for getrlimit to fill.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } != 0 {
        return 1024;
    }
    let before = limit.rlim_cur;
    // macOS refuses a soft limit above OPEN_MAX however high the hard limit is.
    let wanted = if cfg!(target_os = "macos") {
        limit.rlim_max.min(10_240)
    } else {
        limit.rlim_max
    };
    if wanted > before {
        limit.rlim_cur = wanted;
        // SAFETY: as above; a soft limit up to the hard limit is always allowed.
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &limit) } == 0 {
            tracing::debug!(from = before, to = wanted, "raised the open files limit");
            return wanted as u64;
        }
    }
    before as u64
}

#[cfg(not(unix))]
pub fn raise_limit() -> u64 {
    // Windows has no per-process descriptor limit of this kind.
    (DEFAULT_MAX_CONNECTIONS as u64) * 5
}

/// The local time zone's offset from UTC now, in seconds east (0 where it cannot be told): the
/// broker gives times in messages (`held until 16:40`) as the people reading them live.
pub fn utc_offset() -> i32 {
    #[cfg(unix)]
    {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::SystemTime::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let Ok(time) = libc::time_t::try_from(now) else {
            return 0;
        };
        // SAFETY: `tm` is plain data that localtime_r fills in; both pointers are valid.
        let tm = unsafe {
            let mut tm: libc::tm = std::mem::zeroed();
            if libc::localtime_r(&time, &mut tm).is_null() {
                return 0;
            }
            tm
        };
        i32::try_from(tm.tm_gmtoff).unwrap_or(0)
    }
    #[cfg(not(unix))]
    0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn caps_leave_room_and_stay_sane() {
        let caps = Caps::for_limit(1024);
        assert_eq!(
            caps,
            Caps {
                socket: 307,
                gateway: 153
            }
        );
        // Connections plus an upstream connection per gateway request stay within the limit.
        assert!(caps.socket as u64 + 2 * caps.gateway as u64 + RESERVED <= 1024);
        let big = Caps::for_limit(1 << 20);
        assert_eq!(big.socket, DEFAULT_MAX_CONNECTIONS);
        let tiny = Caps::for_limit(20);
        assert!(tiny.socket >= 4 && tiny.gateway >= 4);
    }
}
