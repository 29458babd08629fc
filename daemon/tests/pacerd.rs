//! Starting the real `pacerd` binary: sockets, a second daemon, bad configuration.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// `pacerd` without its HTTP gateway (tests run in parallel; they cannot all have port 4141),
/// keeping its state and logs in the test's own directory.
fn pacerd(dir: &std::path::Path) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_pacerd"));
    command
        .arg("--no-gateway")
        .env("XDG_STATE_HOME", dir)
        .env("XDG_CONFIG_HOME", dir)
        .env_remove("PACER_CONFIG")
        .env_remove("PACER_SOCKET")
        .env_remove("PACER_GATEWAY");
    command
}

/// Waits until something accepts connections at `path`.
fn wait_for_socket(path: &std::path::Path) {
    let deadline = Instant::now() + Duration::from_secs(10);
    #[cfg(unix)]
    while std::os::unix::net::UnixStream::connect(path).is_err() {
        assert!(Instant::now() < deadline, "pacerd did not come up");
        std::thread::sleep(Duration::from_millis(20));
    }
}

struct Running(std::process::Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn a_second_daemon_on_the_same_socket_refuses_to_start() {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("pacer.sock");
    let _first = Running(
        pacerd(dir.path())
            .arg("--socket")
            .arg(&socket)
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    wait_for_socket(&socket);
    let second = pacerd(dir.path())
        .arg("--socket")
        .arg(&socket)
        .output()
        .unwrap();
    assert!(!second.status.success());
    let stderr = String::from_utf8_lossy(&second.stderr);
    assert!(
        stderr.contains(&format!("already running at {}", socket.display())),
        "{stderr}"
    );
}

#[cfg(unix)]
#[test]
fn a_stale_socket_is_replaced_and_permissions_are_private() {
    use std::os::unix::fs::PermissionsExt;

    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("run").join("pacer.sock");
    std::fs::create_dir(socket.parent().unwrap()).unwrap();
    std::fs::set_permissions(
        socket.parent().unwrap(),
        std::fs::Permissions::from_mode(0o700),
    )
    .unwrap();
    drop(std::os::unix::net::UnixListener::bind(&socket).unwrap());
    let _daemon = Running(
        pacerd(dir.path())
            .arg("--socket")
            .arg(&socket)
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    wait_for_socket(&socket);
    let mode = std::fs::metadata(&socket).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
}

#[test]
fn an_invalid_config_names_the_file_line_and_key() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("config.toml");
    std::fs::write(&config, "[limits.sonnet]\nrpm = 50\notpm = -3\n").unwrap();
    let out = pacerd(dir.path())
        .arg("--socket")
        .arg(dir.path().join("pacer.sock"))
        .arg("--config")
        .arg(&config)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains(&*config.to_string_lossy()), "{stderr}");
    assert!(stderr.contains("line 3"), "{stderr}");
    assert!(stderr.contains("limits.sonnet.otpm"), "{stderr}");
}

#[test]
fn the_config_file_can_come_from_the_environment() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("elsewhere.toml");
    std::fs::write(&config, "[limits.opus]\nrpm = 0\n").unwrap();
    let out = pacerd(dir.path())
        .arg("--socket")
        .arg(dir.path().join("pacer.sock"))
        .env("PACER_CONFIG", &config)
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("elsewhere.toml"));
}
