//! Claiming what the daemon listens on: the protocol's socket and the gateway's TCP port —
//! bound here, or handed over by the service manager (socket activation, Unix only).

use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::Context;
use tokio::net::TcpListener;

use super::Setup;
use crate::server::listener::{self, Listener};

/// What the daemon serves on.
pub struct Listeners {
    pub socket: Listener,
    /// The socket's path for messages, or "(from systemd)".
    pub socket_name: String,
    /// The path pacerd bound (not set for a socket systemd holds).
    pub socket_path: Option<PathBuf>,
    pub gateway: Option<TcpListener>,
}

/// Binds (or adopts) the socket, then the gateway.
pub async fn claim(setup: &mut Setup) -> anyhow::Result<Listeners> {
    let (socket, socket_name, socket_path) = claim_socket(setup).await?;
    let gateway = match (setup.inherited.gateway.take(), setup.config.gateway.listen) {
        (Some(inherited), _) => Some(TcpListener::from_std(inherited)?),
        (None, Some(addr)) => Some(bind_gateway(addr).await?),
        (None, None) => None,
    };
    Ok(Listeners {
        socket,
        socket_name,
        socket_path,
        gateway,
    })
}

#[cfg(unix)]
async fn claim_socket(setup: &mut Setup) -> anyhow::Result<(Listener, String, Option<PathBuf>)> {
    if let Some(fd) = setup.inherited.socket.take() {
        let listener =
            listener::from_fd(fd).context("cannot use the socket systemd handed over")?;
        return Ok((listener, "(from systemd)".to_owned(), None));
    }
    bind_socket(setup).await
}

#[cfg(not(unix))]
async fn claim_socket(setup: &mut Setup) -> anyhow::Result<(Listener, String, Option<PathBuf>)> {
    bind_socket(setup).await
}

async fn bind_socket(setup: &Setup) -> anyhow::Result<(Listener, String, Option<PathBuf>)> {
    let path = setup
        .socket
        .clone()
        .unwrap_or_else(pacer_protocol::endpoint::default_endpoint);
    let listener = listener::bind(&path).await?;
    Ok((listener, path.display().to_string(), Some(path)))
}

async fn bind_gateway(addr: SocketAddr) -> anyhow::Result<TcpListener> {
    TcpListener::bind(addr).await.with_context(|| {
        format!(
            "cannot listen on {addr} for the HTTP gateway \
             (choose another address with --gateway ADDR, or run with --no-gateway)"
        )
    })
}

/// Sockets inherited from the service manager.
#[derive(Debug, Default)]
pub struct Inherited {
    /// The pacer protocol's Unix socket.
    #[cfg(unix)]
    pub socket: Option<std::os::fd::OwnedFd>,
    /// The HTTP gateway's TCP socket.
    pub gateway: Option<std::net::TcpListener>,
}
