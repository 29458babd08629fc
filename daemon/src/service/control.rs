//! How the outside world steers a running daemon: stop, reload, and hearing when it is ready.
//!
//! [`control`] makes a pair: the [`Control`] goes to [`super::run`], the [`Controller`] stays
//! with whoever steers — `pacerd`'s signal handlers ([`forward_signals`]: SIGTERM and SIGINT
//! stop, SIGHUP reloads; Ctrl-C on Windows), or a test.

use std::io;
use std::net::SocketAddr;
use std::path::PathBuf;

use tokio::sync::{mpsc, watch};

/// An instruction for a running daemon.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Command {
    /// Stop gracefully.
    Stop,
    /// Read the configuration file again.
    Reload,
}

/// What a daemon serves on, once it does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ready {
    /// The socket (or "(from systemd)" when the service manager handed it over).
    pub socket: String,
    /// The socket's path, when pacerd bound it itself.
    pub socket_path: Option<PathBuf>,
    /// Where the HTTP gateway listens, if it runs.
    pub gateway: Option<SocketAddr>,
    /// Where the gateway forwards to.
    pub upstream: String,
}

/// The daemon's end: commands arrive here, readiness is announced from here.
pub struct Control {
    commands: mpsc::Receiver<Command>,
    ready: watch::Sender<Option<Ready>>,
}

/// The steering end; cheap to clone.
#[derive(Clone)]
pub struct Controller {
    commands: mpsc::Sender<Command>,
    ready: watch::Receiver<Option<Ready>>,
}

/// A new control pair.
pub fn control() -> (Controller, Control) {
    let (commands_tx, commands) = mpsc::channel(8);
    let (ready_tx, ready) = watch::channel(None);
    (
        Controller {
            commands: commands_tx,
            ready,
        },
        Control {
            commands,
            ready: ready_tx,
        },
    )
}

impl Control {
    /// The next command; `None` once every controller is gone (which stops the daemon too).
    pub(super) async fn next(&mut self) -> Option<Command> {
        self.commands.recv().await
    }

    pub(super) fn announce(&self, ready: Ready) {
        self.ready.send_replace(Some(ready));
    }
}

impl Controller {
    /// Asks the daemon to stop; [`super::run`] returns once it has.
    pub async fn stop(&self) {
        let _ = self.commands.send(Command::Stop).await;
    }

    /// Asks the daemon to read its configuration file again.
    pub async fn reload(&self) {
        let _ = self.commands.send(Command::Reload).await;
    }

    /// Waits until the daemon serves; `None` if it ended before it did.
    pub async fn ready(&self) -> Option<Ready> {
        let mut ready = self.ready.clone();
        ready
            .wait_for(Option::is_some)
            .await
            .ok()
            .and_then(|ready| ready.clone())
    }

    #[cfg(unix)]
    fn blocking_send(&self, command: Command) -> bool {
        self.commands.blocking_send(command).is_ok()
    }
}

/// Turns the process's signals into commands for `controller`, from a thread of its own.
#[cfg(unix)]
pub fn forward_signals(controller: Controller) -> io::Result<()> {
    use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};
    use signal_hook::iterator::Signals;

    let mut signals = Signals::new([SIGINT, SIGTERM, SIGHUP])?;
    std::thread::Builder::new()
        .name("pacerd-signals".into())
        .spawn(move || {
            for signal in signals.forever() {
                let command = match signal {
                    SIGHUP => Command::Reload,
                    _ => Command::Stop,
                };
                if !controller.blocking_send(command) {
                    return;
                }
            }
        })?;
    Ok(())
}

/// Turns the console's events — Ctrl-C, Ctrl-Break, the window closing, logoff, shutdown —
/// into a stop, so the state is saved (Windows has no SIGHUP: restart to reload). Must be
/// called within a tokio runtime.
#[cfg(windows)]
pub fn forward_signals(controller: Controller) -> io::Result<()> {
    use tokio::signal::windows;
    let (mut c, mut brk) = (windows::ctrl_c()?, windows::ctrl_break()?);
    let (mut close, mut logoff) = (windows::ctrl_close()?, windows::ctrl_logoff()?);
    let mut shutdown = windows::ctrl_shutdown()?;
    tokio::spawn(async move {
        loop {
            let event = tokio::select! {
                e = c.recv() => e,
                e = brk.recv() => e,
                e = close.recv() => e,
                e = logoff.recv() => e,
                e = shutdown.recv() => e,
            };
            if event.is_none() {
                return;
            }
            controller.stop().await;
        }
    });
    Ok(())
}
