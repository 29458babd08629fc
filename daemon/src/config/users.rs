//! User and group names in `[access]`, looked up when the file is read.

/// A user or group name that names nobody here.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[cfg_attr(not(unix), allow(dead_code))]
pub enum Unknown {
    #[error("`{name}` is not a {what}")]
    Malformed { name: String, what: &'static str },
    #[error("no {what} is named `{name}` on this machine")]
    Missing { name: String, what: &'static str },
    #[error("cannot look up the {what} `{name}`: {error}")]
    Failed {
        name: String,
        what: &'static str,
        error: String,
    },
    #[cfg(not(unix))]
    #[error("`{name}`: {what} names are looked up on Unix only")]
    Unsupported { name: String, what: &'static str },
}

/// The uid of a user name.
#[cfg(unix)]
pub fn user_id(name: &str) -> Result<u32, Unknown> {
    lookup(name, "user", |name, buf| {
        // SAFETY: every pointer is valid for the call; getpwnam_r writes only into `pwd` and
        // `buf` (within `buf.len()`), and sets `result` to null or to `pwd`.
        unsafe {
            let mut pwd: libc::passwd = std::mem::zeroed();
            let mut result = std::ptr::null_mut();
            let rc = libc::getpwnam_r(
                name.as_ptr(),
                &mut pwd,
                buf.as_mut_ptr().cast(),
                buf.len(),
                &mut result,
            );
            (rc, (!result.is_null()).then_some(pwd.pw_uid))
        }
    })
}

/// The gid of a group name.
#[cfg(unix)]
pub fn group_id(name: &str) -> Result<u32, Unknown> {
    lookup(name, "group", |name, buf| {
        // SAFETY: as for getpwnam_r above.
        unsafe {
            let mut grp: libc::group = std::mem::zeroed();
            let mut result = std::ptr::null_mut();
            let rc = libc::getgrnam_r(
                name.as_ptr(),
                &mut grp,
                buf.as_mut_ptr().cast(),
                buf.len(),
                &mut result,
            );
            (rc, (!result.is_null()).then_some(grp.gr_gid))
        }
    })
}

/// Runs a `get*nam_r` lookup, growing its buffer while it is too small.
#[cfg(unix)]
fn lookup(
    name: &str,
    what: &'static str,
    call: impl Fn(&std::ffi::CStr, &mut Vec<u8>) -> (libc::c_int, Option<u32>),
) -> Result<u32, Unknown> {
    let name_of = || name.to_owned();
    let c_name = std::ffi::CString::new(name).map_err(|_| Unknown::Malformed {
        name: name_of(),
        what,
    })?;
    let mut buf = vec![0u8; 1024];
    loop {
        match call(&c_name, &mut buf) {
            (libc::ERANGE, _) if buf.len() < 1 << 20 => buf.resize(buf.len() * 4, 0),
            (0, Some(id)) => return Ok(id),
            (0, None) => {
                return Err(Unknown::Missing {
                    name: name_of(),
                    what,
                });
            }
            (rc, _) => {
                let error = std::io::Error::from_raw_os_error(rc).to_string();
                return Err(Unknown::Failed {
                    name: name_of(),
                    what,
                    error,
                });
            }
        }
    }
}

#[cfg(not(unix))]
pub fn user_id(name: &str) -> Result<u32, Unknown> {
    Err(Unknown::Unsupported {
        name: name.to_owned(),
        what: "user",
    })
}

#[cfg(not(unix))]
pub fn group_id(name: &str) -> Result<u32, Unknown> {
    Err(Unknown::Unsupported {
        name: name.to_owned(),
        what: "group",
    })
}

#[cfg(all(test, unix))]
mod tests {
    use super::*;

    #[test]
    fn names_are_looked_up() {
        assert_eq!(user_id("root"), Ok(0));
        assert_eq!(group_id("root"), Ok(0));
        let missing = user_id("no-such-user-pacer").unwrap_err().to_string();
        assert!(
            missing.contains("no user is named `no-such-user-pacer`"),
            "{missing}"
        );
    }
}
