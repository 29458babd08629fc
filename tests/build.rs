//! Which optional tests this build can run, as cfg flags, so that a test that cannot run here
//! is reported as ignored (with the reason) rather than counted as passed:
//!
//! - `pacer_e2e_python` / `pacer_e2e_claude`: `$PACER_E2E_PYTHON` / `$PACER_E2E_CLAUDE` name the
//!   end-to-end clients (`.ci/e2e-setup` installs them). With `PACER_E2E_REQUIRED` set, their
//!   absence fails the build instead.
//! - `pacer_root`: the build runs as root, so the tests can create the users they need.
//! - `pacer_redis`: `redis-server` is on the `PATH` (the Debian package; `.ci/run` installs it),
//!   for the tests of budgets shared through Redis. With `PACER_E2E_REQUIRED` set, its absence
//!   fails the build too.
//!
//! Each test this build will skip is also named in a warning that cargo prints while building
//! (nextest's summary only counts them), with what would make it run.

fn main() {
    let required = std::env::var_os("PACER_E2E_REQUIRED").is_some();
    println!("cargo::rerun-if-env-changed=PACER_E2E_REQUIRED");
    for (var, cfg, client) in [
        (
            "PACER_E2E_PYTHON",
            "pacer_e2e_python",
            "the anthropic Python SDK",
        ),
        ("PACER_E2E_CLAUDE", "pacer_e2e_claude", "Claude Code"),
    ] {
        println!("cargo::rerun-if-env-changed={var}");
        println!("cargo::rustc-check-cfg=cfg({cfg})");
        if std::env::var_os(var).is_some_and(|v| !v.is_empty()) {
            println!("cargo::rustc-cfg={cfg}");
        } else if required {
            panic!("${var} is not set, but PACER_E2E_REQUIRED is: `.ci/e2e-setup` installs it");
        } else {
            println!(
                "cargo::warning=the end-to-end tests with {client} will be skipped: ${var} is \
                 not set (`eval \"$(.ci/e2e-setup)\"` installs the clients and sets it)"
            );
        }
    }
    println!("cargo::rerun-if-env-changed=PATH");
    println!("cargo::rustc-check-cfg=cfg(pacer_redis)");
    let on_path = std::env::var_os("PATH").is_some_and(|path| {
        std::env::split_paths(&path).any(|dir| dir.join("redis-server").is_file())
    });
    if on_path {
        println!("cargo::rustc-cfg=pacer_redis");
    } else if required {
        panic!(
            "redis-server is not on the PATH, but PACER_E2E_REQUIRED is set: apt-get install redis-server"
        );
    } else {
        println!(
            "cargo::warning=the tests of budgets shared through Redis will be skipped: \
             redis-server is not on the PATH (apt-get install redis-server)"
        );
    }
    println!("cargo::rustc-check-cfg=cfg(pacer_faketime)");
    let faketime = "/usr/lib/x86_64-linux-gnu/faketime/libfaketimeMT.so.1";
    if std::path::Path::new(faketime).is_file() {
        println!("cargo::rustc-cfg=pacer_faketime");
    } else if required {
        panic!(
            "libfaketime is not installed, but PACER_E2E_REQUIRED is set: apt-get install faketime"
        );
    } else {
        println!(
            "cargo::warning=the clock-step test will be skipped: libfaketime is not installed \
             (apt-get install faketime)"
        );
    }
    println!("cargo::rustc-check-cfg=cfg(pacer_root)");
    let uid = std::process::Command::new("id")
        .arg("-u")
        .output()
        .ok()
        .and_then(|out| String::from_utf8(out.stdout).ok());
    if uid.as_deref().map(str::trim) == Some("0") {
        println!("cargo::rustc-cfg=pacer_root");
    } else {
        println!(
            "cargo::warning=the tests that create another local user will be skipped: they \
             need root (CI runs as root)"
        );
    }
}
