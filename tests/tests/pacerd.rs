//! Starting the real `pacerd` binary: its socket, and a second daemon on it.

use pacer_tests::Pacerd;

#[test]
fn a_second_daemon_on_the_same_socket_refuses_to_start() {
    let dir = tempfile::tempdir().unwrap();
    let first = Pacerd::start(dir.path(), &["--no-gateway"]);
    let second = Pacerd::command(dir.path())
        .arg("--socket")
        .arg(first.socket())
        .arg("--no-gateway")
        .output()
        .unwrap();
    assert!(!second.status.success());
    let stderr = String::from_utf8_lossy(&second.stderr);
    assert!(
        stderr.contains(&format!("already running at {}", first.socket().display())),
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
    let daemon = Pacerd::start_at(dir.path(), &socket, &["--no-gateway"]);
    // Once it answers a request it is past binding (the socket may accept connections a moment
    // before its mode is set by path).
    assert_eq!(daemon.gateway_url(), None);
    let mode = std::fs::metadata(&socket).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
}
