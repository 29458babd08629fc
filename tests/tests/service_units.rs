//! `pacer service install`: the units and plist it writes, and what it says without a user manager.

use std::path::PathBuf;
use std::process::Command;

use pacer_tests::binary;

#[test]
fn service_install_writes_units_that_systemd_accepts_and_a_valid_launchd_plist() {
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(binary("pacer"))
        .args(["service", "install", "--no-start"])
        .env("XDG_CONFIG_HOME", dir.path())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let units = dir.path().join("systemd/user");
    let service = std::fs::read_to_string(units.join("pacerd.service")).unwrap();
    let pacerd = binary("pacerd");
    assert!(
        service.contains(&format!("ExecStart={}", pacerd.display())),
        "{service}"
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("systemctl --user enable --now pacerd.socket"),
        "{stdout}"
    );

    let has_systemd = Command::new("systemd-analyze")
        .arg("--version")
        .output()
        .is_ok();
    if !has_systemd {
        assert!(
            std::env::var_os("PACER_E2E_REQUIRED").is_none(),
            "systemd-analyze is needed to check the units (.ci/run installs it)"
        );
        eprintln!("skipped the unit checks: systemd-analyze is not installed");
        return;
    }
    let verify = Command::new("systemd-analyze")
        .args(["--user", "verify"])
        .arg(units.join("pacerd.socket"))
        .arg(units.join("pacerd.service"))
        .env("XDG_RUNTIME_DIR", dir.path())
        .output()
        .unwrap();
    let complaints = String::from_utf8_lossy(&verify.stderr);
    assert!(
        verify.status.success() && complaints.trim().is_empty(),
        "{complaints}"
    );

    // The system-wide variant, with the real binary in ExecStart.
    let system = dir.path().join("system");
    std::fs::create_dir_all(&system).unwrap();
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../systemd/system");
    let unit = std::fs::read_to_string(root.join("pacerd.service"))
        .unwrap()
        .replace("/usr/local/bin/pacerd", &pacerd.to_string_lossy());
    std::fs::write(system.join("pacerd.service"), unit).unwrap();
    std::fs::copy(root.join("pacerd.socket"), system.join("pacerd.socket")).unwrap();
    let verify = Command::new("systemd-analyze")
        .arg("verify")
        .arg(system.join("pacerd.socket"))
        .arg(system.join("pacerd.service"))
        .output()
        .unwrap();
    let complaints = String::from_utf8_lossy(&verify.stderr);
    assert!(
        verify.status.success() && complaints.trim().is_empty(),
        "{complaints}"
    );

    let plist = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../systemd/dev.pacer.pacerd.plist");
    if Command::new("python3").arg("--version").output().is_err() {
        assert!(
            std::env::var_os("PACER_E2E_REQUIRED").is_none(),
            "python3 is needed to check the plist (.ci/run installs it)"
        );
        eprintln!("skipped the plist check: python3 is not installed");
        return;
    }
    let check = Command::new("python3")
        .args([
            "-c",
            "import plistlib, sys; p = plistlib.load(open(sys.argv[1], 'rb')); \
             assert p['Label'] == 'dev.pacer.pacerd' and p['KeepAlive'] is True, p",
        ])
        .arg(&plist)
        .output()
        .unwrap();
    assert!(
        check.status.success(),
        "{}",
        String::from_utf8_lossy(&check.stderr)
    );

    let out = Command::new(binary("pacer"))
        .args(["service", "uninstall", "--no-stop"])
        .env("XDG_CONFIG_HOME", dir.path())
        .output()
        .unwrap();
    assert!(out.status.success());
    assert!(!units.join("pacerd.service").exists());
}

#[cfg(target_os = "linux")]
#[test]
fn service_install_without_a_user_manager_fails_and_says_what_to_do() {
    let dir = tempfile::tempdir().unwrap();
    // No user bus reachable (as in a container or an ssh session without a login session).
    let pacer = |args: &[&str]| {
        Command::new(binary("pacer"))
            .args(args)
            .env("XDG_CONFIG_HOME", dir.path())
            .env("XDG_RUNTIME_DIR", dir.path().join("no-runtime"))
            .env("DBUS_SESSION_BUS_ADDRESS", "unix:path=/nonexistent/bus")
            .output()
            .unwrap()
    };
    let out = pacer(&["service", "install"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "install claimed success: {stderr}");
    assert!(stderr.contains("loginctl enable-linger"), "{stderr}");
    assert!(stderr.contains("run `pacerd` in a terminal"), "{stderr}");
    assert!(dir.path().join("systemd/user/pacerd.socket").exists());
    // Uninstall removes the files and says so, naming what it could not do as a partial
    // success, not as a failure; a second one has nothing to do, and says so quietly.
    let out = pacer(&["service", "uninstall"]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{out:?}");
    assert!(!dir.path().join("systemd/user/pacerd.socket").exists());
    assert!(
        stdout.contains("the pacerd service is uninstalled (its files are removed), but the service manager could not be told"),
        "{stdout}"
    );
    assert!(!stdout.contains("to finish, run"), "{stdout}");
    assert!(
        !String::from_utf8_lossy(&out.stderr).contains("failed"),
        "{out:?}"
    );
    let again = pacer(&["service", "uninstall"]);
    assert!(again.status.success());
    assert_eq!(
        String::from_utf8_lossy(&again.stdout),
        "the pacerd service is not installed: nothing to remove\n"
    );
    assert!(
        again.stderr.is_empty(),
        "{}",
        String::from_utf8_lossy(&again.stderr)
    );
}
