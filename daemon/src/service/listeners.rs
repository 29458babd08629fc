//! Claiming what the daemon listens on: the protocol's socket and the gateway's TCP port —
//! bound here, or handed over by the service manager (socket activation, Unix only).

use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::Context;
use tokio::net::TcpListener;

use super::Setup;
use super::process::{self, Caps};
use crate::config::GatewayConfig;
use crate::server::listener::{self, Listener};

/// What the daemon serves on.
pub struct Listeners {
    pub socket: Listener,
    /// The socket's path for messages, or "(from systemd)".
    pub socket_name: String,
    /// The path pacerd bound (not set for a socket systemd holds).
    pub socket_path: Option<PathBuf>,
    pub gateway: Option<TcpListener>,
    /// How many connections each serves at once.
    pub caps: Caps,
}

/// Binds (or adopts) the socket, then the gateway.
pub async fn claim(setup: &mut Setup) -> anyhow::Result<Listeners> {
    let caps = Caps::for_limit(process::raise_limit());
    let config = &setup.config.gateway;
    if let Some(addr) = config.listen {
        check_loopback(addr, config)?;
    }
    let (socket, socket_name, socket_path) = claim_socket(setup).await?;
    let gateway = match (setup.inherited.gateway.take(), setup.config.gateway.listen) {
        (Some(inherited), _) => {
            let listener = TcpListener::from_std(inherited)?;
            check_loopback(listener.local_addr()?, &setup.config.gateway)?;
            Some(listener)
        }
        (None, Some(addr)) => Some(bind_gateway(addr).await?),
        (None, None) => None,
    };
    Ok(Listeners {
        socket,
        socket_name,
        socket_path,
        gateway,
        caps,
    })
}

/// The gateway has no authentication: whoever reaches it spends the keys sent through it and
/// sees the answers. It listens beyond loopback only when the configuration says so.
fn check_loopback(addr: SocketAddr, config: &GatewayConfig) -> anyhow::Result<()> {
    if addr.ip().is_loopback() {
        return Ok(());
    }
    if !config.allow_non_loopback {
        anyhow::bail!(
            "refusing to serve the HTTP gateway on {addr}, which is not a loopback address:              the gateway has no authentication, so anyone who can reach {addr} could use it.              Listen on 127.0.0.1 (or ::1), or set `allow_non_loopback = true` under [gateway]              if the network is yours alone"
        );
    }
    tracing::warn!(
        "the HTTP gateway listens on {addr}, beyond loopback ([gateway] allow_non_loopback):          anyone who can reach it can send requests through it"
    );
    Ok(())
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
