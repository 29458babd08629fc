//! Shell completions (`pacer completions bash|zsh|fish|elvish|powershell`) and man pages
//! (`pacer man DIR`), both from the same clap definitions as the command line itself, so they
//! cannot say something the command does not do.

use std::io::Write;
use std::path::Path;
use std::process::ExitCode;

use anyhow::Context;
use clap_complete::Shell;

/// Prints the completion script for `shell`.
pub fn completions(shell: Shell, mut command: clap::Command) -> anyhow::Result<ExitCode> {
    let mut script = Vec::new();
    clap_complete::generate(shell, &mut command, "pacer", &mut script);
    write_stdout(&script)
}

/// pacerd's page, generated from its own command line (a test in `tests/` keeps this copy
/// current), so that `pacer man` installs it beside pacer's.
const PACERD_PAGE: &[u8] = include_bytes!("../assets/man/pacerd.1");

/// Writes `pacer.1`, one page per subcommand (`pacer-status.1`, …) and `pacerd.1` into
/// `dir/man1/`, the section directory `man` looks in: `MANPATH=DIR man pacer-status` then
/// finds them (as does `man pacer-status` with DIR on the default path, e.g.
/// `~/.local/share/man`).
pub fn man_pages(command: clap::Command, dir: &Path) -> anyhow::Result<ExitCode> {
    let section = dir.join("man1");
    std::fs::create_dir_all(&section)
        .with_context(|| format!("cannot create {}", section.display()))?;
    write_man_pages(command, &section)?;
    let pacerd = section.join("pacerd.1");
    std::fs::write(&pacerd, PACERD_PAGE)
        .with_context(|| format!("cannot write {}", pacerd.display()))?;
    eprintln!(
        "wrote the man pages into {}: `MANPATH={} man pacer-status` shows one",
        section.display(),
        dir.display()
    );
    Ok(ExitCode::SUCCESS)
}

/// Writes the man pages of `command` and its subcommands into `dir`.
pub fn write_man_pages(command: clap::Command, dir: &Path) -> anyhow::Result<()> {
    clap_mangen::generate_to(command, dir)
        .with_context(|| format!("cannot write man pages into {}", dir.display()))
}

/// Standard output, ending quietly if its reader went away (`| head`).
fn write_stdout(bytes: &[u8]) -> anyhow::Result<ExitCode> {
    match std::io::stdout().lock().write_all(bytes) {
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => {
            Err(e).context("cannot write to standard output")
        }
        _ => Ok(ExitCode::SUCCESS),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::commands::Args;
    use clap::CommandFactory;

    /// Where the packaging's copies are committed (`cargo deb` ships them).
    fn assets() -> std::path::PathBuf {
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("assets")
    }

    fn completion(shell: Shell) -> Vec<u8> {
        let mut script = Vec::new();
        clap_complete::generate(shell, &mut Args::command(), "pacer", &mut script);
        script
    }

    /// The committed man pages and completion scripts are what the command line generates now
    /// (`PACER_BLESS=1 cargo test -p pacer-cli completions` writes them again).
    #[test]
    fn the_committed_man_pages_and_completions_are_not_stale() {
        let generated = tempfile::tempdir().unwrap();
        write_man_pages(Args::command(), generated.path()).unwrap();
        let mut files: Vec<(String, Vec<u8>)> = std::fs::read_dir(generated.path())
            .unwrap()
            .map(|e| {
                let path = e.unwrap().path();
                let name = format!("man/{}", path.file_name().unwrap().to_string_lossy());
                (name, std::fs::read(path).unwrap())
            })
            .collect();
        files.push(("completions/pacer.bash".into(), completion(Shell::Bash)));
        files.push(("completions/_pacer".into(), completion(Shell::Zsh)));
        files.push(("completions/pacer.fish".into(), completion(Shell::Fish)));
        let bless = std::env::var_os("PACER_BLESS").is_some();
        for (name, bytes) in files {
            let path = assets().join(&name);
            if bless {
                std::fs::create_dir_all(path.parent().unwrap()).unwrap();
                std::fs::write(&path, &bytes).unwrap();
            }
            let committed = std::fs::read(&path).unwrap_or_default();
            assert!(
                committed == bytes,
                "{name} is stale: PACER_BLESS=1 cargo test -p pacer-cli completions writes it again"
            );
        }
    }

    #[test]
    fn every_shell_gets_a_script() {
        for shell in [
            Shell::Bash,
            Shell::Zsh,
            Shell::Fish,
            Shell::Elvish,
            Shell::PowerShell,
        ] {
            let script = String::from_utf8(completion(shell)).unwrap();
            assert!(script.contains("statusline"), "{shell}");
        }
    }
}
