//! The real `pacerd` binary refusing a bad configuration before it serves anything. (Tests of a
//! running `pacerd` use the fixture in `pacer-tests`; these need none, and keeping them here
//! makes cargo build `pacerd` for the workspace's tests.)

use std::process::Command;

/// `pacerd` without its HTTP gateway, keeping its state and logs in the test's own directory.
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
