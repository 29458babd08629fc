//! Finding the `pacerd` executable, and where a daemon that `pacer` starts writes its output.

use std::path::PathBuf;

use anyhow::Context;

/// `pacerd` next to this `pacer`, else on `PATH`; always an absolute path.
pub fn path() -> anyhow::Result<PathBuf> {
    let name = format!("pacerd{}", std::env::consts::EXE_SUFFIX);
    let beside = std::env::current_exe()?.with_file_name(&name);
    if beside.exists() {
        return Ok(beside);
    }
    std::env::var_os("PATH")
        .into_iter()
        .flat_map(|path| std::env::split_paths(&path).collect::<Vec<_>>())
        .map(|dir| dir.join(&name))
        .find(|candidate| candidate.is_file())
        .context(
            "cannot find pacerd next to pacer or on PATH \
             (install it with `cargo install --path daemon`)",
        )
}

/// Where a daemon started by `pacer run` writes its output: `pacerd.log` in pacer's state
/// directory (`$XDG_STATE_HOME/pacer`, else `~/.local/state/pacer`), opened for appending.
pub fn start_log() -> Option<(PathBuf, std::fs::File)> {
    let dir = pacer_protocol::endpoint::state_dir()?;
    std::fs::create_dir_all(&dir).ok()?;
    let path = dir.join("pacerd.log");
    let file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&path)
        .ok()?;
    Some((path, file))
}
