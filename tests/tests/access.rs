//! Who may use pacerd, tried as another local user would: the daemon checks every peer's
//! credentials, and a client refuses a daemon at its default socket that is not its user's
//! own. Those that create a user need root (CI runs as root); built by anyone else they are
//! reported as ignored.
#![cfg(unix)]

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use pacer_tests::users::{OtherUser, chown, group_with, open_dir, other_user};
use pacer_tests::{Pacerd, binary, read_logs};

const USER: &str = "pacer-t-other";
const GROUP: &str = "pacer-t-group";

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// Loosens the daemon's socket (and its directory) so that anyone can connect: what a
/// system-wide daemon's group socket, or a hand-made chmod, does.
fn loosen(socket: &Path) {
    open_dir(socket.parent().unwrap());
    std::fs::set_permissions(socket, std::fs::Permissions::from_mode(0o666)).unwrap();
}

fn status_as(user: &OtherUser, socket: &Path) -> Output {
    user.run(
        &binary("pacer"),
        &["--socket", socket.to_str().unwrap(), "status"],
        &[],
    )
}

fn wait_for_log(dir: &Path, needle: &str) -> String {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let logs = read_logs(&dir.join("pacer/logs"));
        if logs.contains(needle) || Instant::now() > deadline {
            return logs;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[cfg_attr(not(pacer_root), ignore = "needs root (to create a second user)")]
#[test]
fn another_user_is_refused_with_a_reason_one_log_line_and_a_closed_connection() {
    let user = other_user(USER);
    let dir = tempfile::tempdir().unwrap();
    let daemon = Pacerd::start(dir.path(), &["--no-gateway"]);
    loosen(daemon.socket());

    let out = status_as(&user, daemon.socket());
    assert!(!out.status.success(), "the other user was served");
    let message = stderr(&out);
    assert!(message.contains("permission denied"), "{message}");
    assert!(message.contains(&format!("uid {}", user.uid)), "{message}");
    assert!(message.contains("allow_uids"), "{message}");
    // A few more tries: the log holds one line for them (and says how many it suppressed).
    for _ in 0..5 {
        assert!(!status_as(&user, daemon.socket()).status.success());
    }
    let needle = format!("refused a connection from uid {}", user.uid);
    let logs = wait_for_log(dir.path(), &needle);
    assert_eq!(logs.matches(&needle).count(), 1, "{logs}");
    // The daemon's own user is served as before.
    assert!(daemon.status()["budgets"].is_array());
}

#[cfg_attr(not(pacer_root), ignore = "needs root (to create a second user)")]
#[test]
fn access_names_the_users_and_groups_let_in() {
    let user = other_user(USER);
    group_with(GROUP, &user);
    for access in [
        format!("allow_uids = [\"{USER}\"]"),
        format!("allow_uids = [{}]", user.uid),
        // The user's supplementary group (as a login gives it) is enough.
        format!("allow_groups = [\"{GROUP}\"]"),
    ] {
        let daemon = Pacerd::start_configured(&format!("[access]\n{access}\n"), &["--no-gateway"]);
        loosen(daemon.socket());
        let out = status_as(&user, daemon.socket());
        assert!(out.status.success(), "{access}: {}", stderr(&out));
    }
    // An unknown name is a configuration error that names it.
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("config.toml"),
        "[access]\nallow_groups = [\"no-such-group-pacer\"]\n",
    )
    .unwrap();
    let out = Pacerd::command(dir.path())
        .args(["--config", dir.path().join("config.toml").to_str().unwrap()])
        .args([
            "--no-gateway",
            "--socket",
            dir.path().join("s").to_str().unwrap(),
        ])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("no group is named `no-such-group-pacer`"),
        "{}",
        stderr(&out)
    );
}

/// `pacer` as the test's user (root) with no socket named: the default is
/// `$TMPDIR/pacer-0/pacer.sock` without `XDG_RUNTIME_DIR`.
fn pacer_default(tmpdir: &Path, args: &[&str]) -> Output {
    Command::new(binary("pacer"))
        .args(args)
        .env("TMPDIR", tmpdir)
        .env_remove("XDG_RUNTIME_DIR")
        .env_remove("PACER_SOCKET")
        .env("XDG_STATE_HOME", tmpdir)
        .env("ANTHROPIC_API_KEY", "sk-ant-victim-key")
        .output()
        .unwrap()
}

/// Another user's daemon at `dir/pacer.sock`, `dir` being theirs.
fn daemon_of(user: &OtherUser, dir: &Path) -> Pacerd {
    let home = dir.parent().unwrap().join("home");
    std::fs::create_dir_all(&home).unwrap();
    chown(&home, user);
    let socket = dir.join("pacer.sock");
    let mut command = user.command(&binary("pacerd"));
    command
        .env_clear()
        .env("XDG_STATE_HOME", &home)
        .env("XDG_CONFIG_HOME", &home)
        .args(["--no-gateway", "--socket", socket.to_str().unwrap()]);
    Pacerd::spawn(command, &socket)
}

#[cfg_attr(not(pacer_root), ignore = "needs root (to create a second user)")]
#[test]
fn a_client_refuses_a_default_socket_in_a_directory_another_user_owns() {
    let user = other_user(USER);
    // The attacker got to `$TMPDIR/pacer-0` first and runs a daemon there.
    let tmp = tempfile::tempdir().unwrap();
    open_dir(tmp.path());
    let planted = tmp.path().join("pacer-0");
    std::fs::create_dir(&planted).unwrap();
    chown(&planted, &user);
    let _theirs = daemon_of(&user, &planted);
    let socket = planted.join("pacer.sock");

    let out = pacer_default(tmp.path(), &["status"]);
    assert!(!out.status.success(), "the planted daemon was used");
    let message = stderr(&out);
    assert!(
        message.contains(&format!("refusing the pacerd at {}", socket.display())),
        "{message}"
    );
    assert!(
        message.contains(&format!("owned by uid {}", user.uid)),
        "{message}"
    );
    // `pacer run` does not hand the key to that daemon's gateway: the command never runs.
    let marker = tmp.path().join("ran");
    let script = format!("touch {}", marker.display());
    let out = pacer_default(tmp.path(), &["run", "--", "sh", "-c", &script]);
    assert!(!out.status.success());
    assert!(!marker.exists(), "the wrapped command ran");
    assert!(
        stderr(&out).contains("refusing the pacerd"),
        "{}",
        stderr(&out)
    );
    // A socket named on purpose is used as it is.
    let out = Command::new(binary("pacer"))
        .args(["status"])
        .env("PACER_SOCKET", &socket)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
}

#[cfg_attr(not(pacer_root), ignore = "needs root (to create a second user)")]
#[test]
fn a_client_refuses_a_daemon_that_runs_as_another_user() {
    let user = other_user(USER);
    let theirs_tmp = tempfile::tempdir().unwrap();
    open_dir(theirs_tmp.path());
    let theirs_dir = theirs_tmp.path().join("theirs");
    std::fs::create_dir(&theirs_dir).unwrap();
    chown(&theirs_dir, &user);
    let _theirs = daemon_of(&user, &theirs_dir);
    // The directory is ours and private, yet the socket in it leads to the other user's
    // daemon (a hard link stands in for any way that could come about).
    let tmp = tempfile::tempdir().unwrap();
    let ours = tmp.path().join("pacer-0");
    std::fs::create_dir(&ours).unwrap();
    std::fs::set_permissions(&ours, std::fs::Permissions::from_mode(0o700)).unwrap();
    std::fs::hard_link(theirs_dir.join("pacer.sock"), ours.join("pacer.sock")).unwrap();

    let out = pacer_default(tmp.path(), &["status"]);
    assert!(!out.status.success(), "the other user's daemon was used");
    let message = stderr(&out);
    assert!(
        message.contains(&format!("runs as uid {}", user.uid)),
        "{message}"
    );
}

#[test]
fn state_and_log_directories_others_can_write_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let shared = dir.path().join("shared");
    std::fs::create_dir(&shared).unwrap();
    std::fs::set_permissions(&shared, std::fs::Permissions::from_mode(0o777)).unwrap();
    for flag in ["--state", "--log-dir"] {
        let target = if flag == "--state" {
            shared.join("state")
        } else {
            shared.clone()
        };
        let out = Pacerd::command(dir.path())
            .args(["--no-gateway", "--socket"])
            .arg(dir.path().join("s.sock"))
            .arg(flag)
            .arg(&target)
            .output()
            .unwrap();
        assert!(!out.status.success(), "{flag}: pacerd started");
        let message = stderr(&out);
        assert!(
            message.contains("others can write into it"),
            "{flag}: {message}"
        );
        assert!(message.contains(&shared.display().to_string()), "{message}");
    }
}
