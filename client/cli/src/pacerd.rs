//! Reaching pacerd, and starting it in the background when none runs (the client crate's
//! [`pacer_client::autostart`] does the starting).

use std::path::{Path, PathBuf};

use pacer_client::{Client, FailMode};

/// `pacerd` next to this `pacer`, else on `PATH`; always an absolute path.
pub fn path() -> anyhow::Result<PathBuf> {
    Ok(pacer_client::autostart::pacerd_path()?)
}

fn builder(socket: Option<&Path>) -> pacer_client::ClientBuilder {
    let builder = Client::builder()
        .fail_mode(FailMode::Closed)
        .client_name("pacer run");
    match socket {
        Some(path) => builder.endpoint(path),
        None => builder,
    }
}

/// Connects to the daemon, starting `pacerd` in the background if none answers.
pub async fn ensure_daemon(socket: Option<PathBuf>) -> anyhow::Result<Client> {
    let (client, started) =
        pacer_client::autostart::connect_or_start(builder(socket.as_deref())).await?;
    if let Some(started) = started {
        eprintln!(
            "pacer: started pacerd (pid {}) in the background",
            started.pid
        );
    }
    Ok(client)
}
