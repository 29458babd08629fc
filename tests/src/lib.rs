//! Fixtures for pacer's integration and end-to-end tests.
//!
//! - [`TestDaemon`] runs a real daemon in this process, on a socket in a temporary directory
//!   (the way pueue's tests do), so tests can reach it through the real socket protocol.
//! - [`binary`] finds the real `pacerd` and `pacer` executables, for tests that run them as
//!   processes.
//! - [`wait_until`] waits for a condition with a deadline instead of sleeping.
//! - [`mock`]: a mock of the Anthropic Messages API (also the `mock-upstream` binary).

pub mod bench;
pub mod mock;

use std::future::Future;
use std::path::{Path, PathBuf};
use std::time::Duration;

use pacer_client::{Client, FailMode};
use pacer_daemon::Config;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// A daemon running in this process on a private socket.
pub struct TestDaemon {
    /// Holds the socket's directory for the daemon's lifetime.
    dir: tempfile::TempDir,
    socket: PathBuf,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<()>>,
}

impl TestDaemon {
    /// Starts a daemon with the given TOML configuration (may be empty), its gateway on an
    /// ephemeral port.
    pub async fn start(config_toml: &str) -> TestDaemon {
        Self::start_with(config_toml, |_| {}).await
    }

    /// Starts a daemon with the given configuration, changed by `edit` (after the gateway is
    /// moved to an ephemeral port).
    pub async fn start_with(config_toml: &str, edit: impl FnOnce(&mut Config)) -> TestDaemon {
        let dir = tempfile::tempdir().expect("temp dir");
        let socket = dir.path().join("pacer.sock");
        let mut config =
            Config::parse(config_toml, &dir.path().join("config.toml")).expect("valid config");
        if config.gateway.listen.is_some() {
            config.gateway.listen = Some("127.0.0.1:0".parse().expect("address"));
        }
        config.state_file = Some(dir.path().join("state"));
        config.log.dir = None;
        edit(&mut config);
        let listener = pacer_daemon::listener::bind(&socket)
            .await
            .expect("bind the test socket");
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            let shutdown = async {
                let _ = stopped.await;
            };
            pacer_daemon::run(config, listener, shutdown)
                .await
                .expect("daemon runs");
        });
        TestDaemon {
            dir,
            socket,
            stop: Some(stop),
            task: Some(task),
        }
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
        let info = self
            .client()
            .await
            .gateway_info()
            .await
            .expect("gateway info");
        format!("http://{}", info.listen.expect("the gateway is enabled"))
    }

    /// Stops the daemon as SIGTERM would, and waits until it has.
    pub async fn stop(mut self) {
        self.stop.take().map(|tx| tx.send(()));
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

/// Polls `condition` until it holds or `deadline` passes; returns whether it held.
pub async fn wait_until<F, Fut>(deadline: Duration, mut condition: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let end = tokio::time::Instant::now() + deadline;
    loop {
        if condition().await {
            return true;
        }
        if tokio::time::Instant::now() >= end {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The path of one of the workspace's executables (`pacerd`, `pacer`), built by `cargo test`
/// alongside the tests (the daemon and client crates have integration tests, which makes cargo
/// build their binaries first).
pub fn binary(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("test executable path");
    // target/<profile>/deps/<test> → target/<profile>/<name>
    let dir = exe
        .parent()
        .and_then(Path::parent)
        .expect("test executable lives in target/<profile>/deps");
    let path = dir.join(format!("{name}{}", std::env::consts::EXE_SUFFIX));
    assert!(
        path.exists(),
        "{} is missing: run the tests with `cargo test --workspace`, which builds it",
        path.display()
    );
    path
}
