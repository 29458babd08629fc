//! A daemon running in this process, through the same entry point as `pacerd`.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use pacer_client::{Client, FailMode};
use pacer_daemon::Config;
use pacer_daemon::service::{self, Controller, Setup};
use tokio::task::JoinHandle;

/// A daemon running in this process on a private socket.
pub struct TestDaemon {
    /// Holds the socket's directory (and the state file) for the daemon's lifetime.
    dir: tempfile::TempDir,
    /// What it runs with, for [`TestDaemon::restart`].
    config: Config,
    socket: PathBuf,
    gateway: Option<SocketAddr>,
    controller: Controller,
    task: Option<JoinHandle<()>>,
}

impl TestDaemon {
    /// Starts a daemon with the given TOML configuration (may be empty), its gateway on an
    /// ephemeral port.
    pub async fn start(config_toml: &str) -> TestDaemon {
        Self::start_with(config_toml, |_| {}).await
    }

    /// Starts a daemon with the given configuration, changed by `edit` (after the gateway is
    /// moved to an ephemeral port), and returns once it serves.
    pub async fn start_with(config_toml: &str, edit: impl FnOnce(&mut Config)) -> TestDaemon {
        let dir = tempfile::tempdir().expect("temp dir");
        let mut config =
            Config::parse(config_toml, &dir.path().join("config.toml")).expect("valid config");
        if config.gateway.listen.is_some() {
            config.gateway.listen = Some("127.0.0.1:0".parse().expect("address"));
        }
        config.state_file = Some(dir.path().join("state"));
        config.log.dir = None;
        edit(&mut config);
        Self::launch(dir, config).await
    }

    /// A daemon whose gateway forwards to `upstream` (the mock API), with extra TOML
    /// configuration, holding requests for the budget up to `max_hold` (as `[gateway] max_hold`
    /// does).
    pub async fn in_front_of(upstream: &str, toml: &str, max_hold: Duration) -> TestDaemon {
        let upstream = upstream.parse().expect("an upstream URL");
        Self::start_with(toml, |config| {
            config.gateway.upstream = upstream;
            config.gateway.max_hold = max_hold;
            config.broker.max_hold = max_hold;
        })
        .await
    }

    async fn launch(dir: tempfile::TempDir, config: Config) -> TestDaemon {
        let socket = dir.path().join("pacer.sock");
        let (controller, control) = service::control();
        let setup = Setup::new(config.clone(), Some(socket.clone()));
        let task = tokio::spawn(async move {
            pacer_daemon::run(setup, control)
                .await
                .expect("daemon runs");
        });
        let ready = controller.ready().await.expect("the test daemon starts");
        TestDaemon {
            dir,
            config,
            socket,
            gateway: ready.gateway,
            controller,
            task: Some(task),
        }
    }

    /// Stops the daemon as SIGTERM would and starts a new one on the same socket, state file
    /// and configuration (its gateway on a new ephemeral port).
    pub async fn restart(mut self) -> TestDaemon {
        self.controller.stop().await;
        if let Some(task) = self.task.take() {
            task.await.expect("daemon task");
        }
        let dir = std::mem::replace(&mut self.dir, tempfile::tempdir().expect("temp dir"));
        Self::launch(dir, self.config.clone()).await
    }

    pub fn socket(&self) -> &Path {
        &self.socket
    }

    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// A client that fails closed (tests want to know when the daemon is not there).
    pub async fn client(&self) -> Client {
        self.client_named("test-client").await
    }

    /// A client with its own identity for fair turns.
    pub async fn client_named(&self, id: &str) -> Client {
        Client::builder()
            .endpoint(&self.socket)
            .fail_mode(FailMode::Closed)
            .client_id(id)
            .connect()
            .await
            .expect("connect to the test daemon")
    }

    /// The gateway's base URL, `http://127.0.0.1:PORT`.
    pub async fn gateway_url(&self) -> String {
        format!("http://{}", self.gateway.expect("the gateway is enabled"))
    }

    /// Stops the daemon as SIGTERM would, and waits until it has.
    pub async fn stop(mut self) {
        self.controller.stop().await;
        if let Some(task) = self.task.take() {
            task.await.expect("daemon task");
        }
    }
}

impl Drop for TestDaemon {
    fn drop(&mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}
