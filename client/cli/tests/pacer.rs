//! The `pacer` binary without a daemon: what a user sees when something is missing.

use std::process::{Command, Output};

fn pacer(args: &[&str], socket: &std::path::Path) -> Output {
    Command::new(env!("CARGO_BIN_EXE_pacer"))
        .args(args)
        .env("PACER_SOCKET", socket)
        .env("ANTHROPIC_API_KEY", "sk-ant-secret-value")
        .output()
        .unwrap()
}

#[test]
fn key_id_prints_a_fingerprint_never_the_key() {
    let dir = tempfile::tempdir().unwrap();
    let out = pacer(&["key-id"], &dir.path().join("none.sock"));
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    let id = text.trim();
    assert_eq!(id.len(), 16);
    assert!(id.chars().all(|c| c.is_ascii_hexdigit()));
    assert!(!text.contains("secret"));
}

#[test]
fn status_without_a_daemon_names_the_socket() {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("none.sock");
    let out = pacer(&["status"], &socket);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains(&*socket.to_string_lossy()), "{stderr}");
}

#[test]
fn acquire_without_a_daemon_fails_open_unless_told_otherwise() {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("none.sock");
    let open = pacer(&["acquire", "--model", "claude-sonnet-4-5"], &socket);
    assert!(open.status.success());
    assert_eq!(String::from_utf8_lossy(&open.stdout).trim(), "0");
    assert!(String::from_utf8_lossy(&open.stderr).contains("without pacing"));
    // Lease 0 (unpaced) can be reported like any other.
    assert!(
        pacer(&["report", "0", "--status", "200"], &socket)
            .status
            .success()
    );

    let closed = pacer(
        &["acquire", "--model", "claude-sonnet-4-5", "--fail-closed"],
        &socket,
    );
    assert!(!closed.status.success());
}

#[test]
fn acquire_without_a_key_names_the_variable() {
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_pacer"))
        .args(["acquire", "--model", "m", "--api-key-env", "MY_KEY"])
        .env("PACER_SOCKET", dir.path().join("none.sock"))
        .env_remove("MY_KEY")
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("$MY_KEY"));
}

#[test]
fn bad_arguments_are_named() {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("none.sock");
    let out = pacer(
        &["acquire", "--model", "m", "--priority", "urgent"],
        &socket,
    );
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("urgent"));
    let out = pacer(&["acquire", "--model", "m", "--timeout", "soon"], &socket);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("soon"));
}
