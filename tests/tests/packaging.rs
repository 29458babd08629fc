//! What the Debian package ships (`cargo deb -p pacer-cli`, see client/cli/Cargo.toml) is
//! committed beside the code, and must not go stale: pacerd's man page is what its command line
//! generates, and the packaged systemd user units are the committed ones pointing at
//! `/usr/bin/pacerd` (`PACER_BLESS=1 cargo test -p pacer-tests --test packaging` writes them
//! again). pacer's own pages and completions are checked in pacer-cli.

use std::path::PathBuf;

use clap::CommandFactory;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn check(relative: &str, bytes: &[u8]) {
    let path = root().join("client/cli/assets").join(relative);
    if std::env::var_os("PACER_BLESS").is_some() {
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, bytes).unwrap();
    }
    let committed = std::fs::read(&path).unwrap_or_default();
    assert!(
        committed == bytes,
        "{relative} is stale: PACER_BLESS=1 cargo test -p pacer-tests --test packaging"
    );
}

#[test]
fn pacerds_man_page_is_what_its_command_line_says() {
    let mut page = Vec::new();
    clap_mangen::Man::new(pacer_daemon::cli::Args::command())
        .render(&mut page)
        .unwrap();
    check("man/pacerd.1", &page);
}

#[test]
fn the_packaged_user_units_are_the_committed_ones_pointing_at_usr_bin() {
    for unit in ["pacerd.service", "pacerd.socket"] {
        let text = std::fs::read_to_string(root().join("systemd").join(unit)).unwrap();
        let packaged = text.replace("/usr/local/bin/", "/usr/bin/");
        check(&format!("systemd/{unit}"), packaged.as_bytes());
    }
}

#[test]
fn pacer_man_writes_pages_where_man_finds_them() {
    let dir = tempfile::tempdir().unwrap();
    let out = std::process::Command::new(pacer_tests::binary("pacer"))
        .arg("man")
        .arg(dir.path())
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    for page in ["pacer.1", "pacer-status.1", "pacerd.1"] {
        let path = dir.path().join("man1").join(page);
        assert!(path.is_file(), "{} was not written", path.display());
    }
    let help = std::process::Command::new(pacer_tests::binary("pacer"))
        .arg("--help")
        .output()
        .unwrap();
    let help = String::from_utf8_lossy(&help.stdout);
    assert!(
        help.lines().any(|l| l.trim_start().starts_with("man ")),
        "`pacer --help` does not list man: {help}"
    );
    // With man-db installed (.ci/run installs it), man itself finds them there.
    if let Ok(found) = std::process::Command::new("man")
        .args(["-w", "pacer-status"])
        .env("MANPATH", dir.path())
        .output()
    {
        let found = String::from_utf8_lossy(&found.stdout);
        assert_eq!(
            found.trim(),
            dir.path().join("man1/pacer-status.1").to_str().unwrap(),
            "MANPATH=DIR man -w pacer-status"
        );
    }
}
