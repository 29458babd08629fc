//! Other local users, for tests of who may use pacerd: created when missing (CI runs as root),
//! and commands run as them.

use std::path::Path;
use std::process::{Command, Output};

/// A local user other than the one running the tests.
#[derive(Debug, Clone)]
pub struct OtherUser {
    pub name: String,
    pub uid: u32,
    pub gid: u32,
}

/// Whether this process runs as root (and so can create users and act as them).
pub fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() == 0 }
}

/// The user `name`, created (a system user with no home and no login) if missing. Tests that
/// need it are built ignored unless the build runs as root (`pacer_root`, see `build.rs`).
pub fn other_user(name: &str) -> OtherUser {
    assert!(is_root(), "creating the user {name} needs root");
    if id(name, "-u").is_none() {
        let out = Command::new("useradd")
            .args([
                "--system",
                "--no-create-home",
                "--shell",
                "/usr/sbin/nologin",
                name,
            ])
            .output()
            .expect("run useradd");
        // 9: created meanwhile by a test running in parallel.
        assert!(
            out.status.success() || out.status.code() == Some(9),
            "useradd {name}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    OtherUser {
        name: name.to_owned(),
        uid: id(name, "-u").expect("the user exists"),
        gid: id(name, "-g").expect("the user has a group"),
    }
}

/// The group `name`, created if missing, with `user` among its members; its gid.
pub fn group_with(name: &str, user: &OtherUser) -> u32 {
    if getent_gid(name).is_none() {
        let out = Command::new("groupadd")
            .args(["--system", name])
            .output()
            .expect("run groupadd");
        assert!(
            out.status.success() || out.status.code() == Some(9),
            "groupadd {name}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let out = Command::new("usermod")
        .args(["--append", "--groups", name, &user.name])
        .output()
        .expect("run usermod");
    assert!(
        out.status.success(),
        "usermod: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    getent_gid(name).expect("the group exists")
}

fn id(name: &str, flag: &str) -> Option<u32> {
    let out = Command::new("id").args([flag, name]).output().ok()?;
    String::from_utf8_lossy(&out.stdout).trim().parse().ok()
}

fn getent_gid(name: &str) -> Option<u32> {
    let out = Command::new("getent").args(["group", name]).output().ok()?;
    String::from_utf8_lossy(&out.stdout)
        .trim()
        .split(':')
        .nth(2)?
        .parse()
        .ok()
}

impl OtherUser {
    /// `program ARGS` as this user, through `runuser` (so with the user's groups, as a login
    /// would have them), with a clean environment plus `env`.
    pub fn run(&self, program: &Path, args: &[&str], env: &[(&str, &str)]) -> Output {
        let mut command = Command::new("runuser");
        command
            .args(["-u", &self.name, "--", "env", "-i"])
            .arg("PATH=/usr/bin:/bin")
            .args(env.iter().map(|(k, v)| format!("{k}={v}")))
            .arg(program)
            .args(args);
        command.output().expect("run a command as another user")
    }

    /// A command that runs as this user (uid and primary group only).
    pub fn command(&self, program: &Path) -> Command {
        use std::os::unix::process::CommandExt;
        let mut command = Command::new(program);
        command.uid(self.uid).gid(self.gid);
        command
    }
}

/// Lets every user into `dir` (tests' temporary directories are private to root).
pub fn open_dir(dir: &Path) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755)).expect("chmod 755");
}

/// Gives `path` to `user`.
pub fn chown(path: &Path, user: &OtherUser) {
    std::os::unix::fs::chown(path, Some(user.uid), Some(user.gid)).expect("chown");
}
