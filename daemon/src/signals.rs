//! What the operating system tells the daemon: stop (SIGTERM, SIGINT) or reload its
//! configuration (SIGHUP).

use std::io;

use tokio::sync::mpsc;

/// An instruction from outside.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Signal {
    /// Stop gracefully.
    Stop,
    /// Read the configuration file again.
    Reload,
}

/// Starts listening for signals; they arrive on the returned channel.
#[cfg(unix)]
pub fn listen() -> io::Result<mpsc::Receiver<Signal>> {
    use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};
    use signal_hook::iterator::Signals;

    let mut signals = Signals::new([SIGINT, SIGTERM, SIGHUP])?;
    let (tx, rx) = mpsc::channel(8);
    std::thread::Builder::new()
        .name("pacerd-signals".into())
        .spawn(move || {
            for signal in signals.forever() {
                let signal = match signal {
                    SIGHUP => Signal::Reload,
                    _ => Signal::Stop,
                };
                if tx.blocking_send(signal).is_err() {
                    return;
                }
            }
        })?;
    Ok(rx)
}

/// Starts listening for Ctrl-C / Ctrl-Break (Windows has no SIGHUP: restart to reload).
#[cfg(windows)]
pub fn listen() -> io::Result<mpsc::Receiver<Signal>> {
    let (tx, rx) = mpsc::channel(8);
    tokio::spawn(async move {
        while tokio::signal::ctrl_c().await.is_ok() {
            if tx.send(Signal::Stop).await.is_err() {
                return;
            }
        }
    });
    Ok(rx)
}
