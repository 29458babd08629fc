//! Turning the operating system's stop signals into a future the server can wait on.

use std::future::Future;
use std::io;

/// Completes when SIGINT or SIGTERM arrives (Ctrl-C or Ctrl-Break on Windows).
#[cfg(unix)]
pub fn shutdown() -> io::Result<impl Future<Output = ()>> {
    use signal_hook::consts::{SIGINT, SIGTERM};
    use signal_hook::iterator::Signals;

    let mut signals = Signals::new([SIGINT, SIGTERM])?;
    let (tx, rx) = tokio::sync::oneshot::channel();
    std::thread::Builder::new()
        .name("pacerd-signals".into())
        .spawn(move || {
            if let Some(signal) = signals.forever().next() {
                tracing::info!(signal, "stop signal received");
                let _ = tx.send(());
            }
        })?;
    Ok(async move {
        let _ = rx.await;
    })
}

/// Completes when SIGINT or SIGTERM arrives (Ctrl-C or Ctrl-Break on Windows).
#[cfg(windows)]
pub fn shutdown() -> io::Result<impl Future<Output = ()>> {
    Ok(async {
        let _ = tokio::signal::ctrl_c().await;
        tracing::info!("stop signal received");
    })
}
