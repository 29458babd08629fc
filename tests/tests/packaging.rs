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
