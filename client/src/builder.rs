//! [`ClientBuilder`]: where the daemon is, what to do when it is away, who is asking.

use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::client::{Client, DEFAULT_RECONNECT_WINDOW, Settings};
use crate::error::Error;
use crate::fail_mode::FailMode;

/// Configures a [`Client`].
#[derive(Debug, Clone, Default)]
pub struct ClientBuilder {
    endpoint: Option<PathBuf>,
    fail_mode: FailMode,
    reconnect_window: Option<Duration>,
    client_id: Option<String>,
    client_name: Option<String>,
}

impl ClientBuilder {
    /// The daemon's socket (default: [`pacer_protocol::endpoint::default_endpoint`]).
    pub fn endpoint(mut self, path: impl Into<PathBuf>) -> Self {
        self.endpoint = Some(path.into());
        self
    }

    pub fn fail_mode(mut self, mode: FailMode) -> Self {
        self.fail_mode = mode;
        self
    }

    /// How long a request keeps trying to reach a daemon that went away under it (a restart)
    /// before the fail mode applies (default 30 s).
    pub fn reconnect_window(mut self, window: Duration) -> Self {
        self.reconnect_window = Some(window);
        self
    }

    /// The identity this client's acquires are queued under: clients of one priority take turns
    /// (default: the program name and process id).
    pub fn client_id(mut self, id: impl Into<String>) -> Self {
        self.client_id = Some(id.into());
        self
    }

    /// The name the daemon logs for this client (default: the program name).
    pub fn client_name(mut self, name: impl Into<String>) -> Self {
        self.client_name = Some(name.into());
        self
    }

    pub(crate) fn mode(&self) -> FailMode {
        self.fail_mode
    }

    /// The socket named with [`ClientBuilder::endpoint`], if any.
    pub fn socket(&self) -> Option<&Path> {
        self.endpoint.as_deref()
    }

    /// Connects. With [`FailMode::Closed`] an unreachable daemon is an error; with
    /// [`FailMode::Open`] the client is returned anyway and connects when the daemon appears.
    pub async fn connect(self) -> Result<Client, Error> {
        let program = std::env::args()
            .next()
            .and_then(|arg0| {
                Path::new(&arg0)
                    .file_name()
                    .map(|n| n.to_string_lossy().into_owned())
            })
            .unwrap_or_else(|| "pacer-client".to_owned());
        // A socket someone named is used as it is; the per-user default must be the user's own.
        let (endpoint, verify_owner) = match self.endpoint {
            Some(path) => (path, false),
            None => {
                let (path, chosen) = pacer_protocol::endpoint::resolve_default();
                (path, !chosen)
            }
        };
        Client::start(Settings {
            endpoint,
            verify_owner,
            fail_mode: self.fail_mode,
            reconnect_window: self.reconnect_window.unwrap_or(DEFAULT_RECONNECT_WINDOW),
            client_id: self
                .client_id
                .unwrap_or_else(|| format!("{program}-{}", std::process::id())),
            client_name: self.client_name.unwrap_or(program),
        })
        .await
    }
}

impl Client {
    /// Connects to the daemon at the default endpoint, failing open.
    pub async fn connect() -> Result<Client, Error> {
        Client::builder().connect().await
    }

    /// Connects to the daemon at `path`, failing open.
    pub async fn connect_to(path: impl Into<PathBuf>) -> Result<Client, Error> {
        Client::builder().endpoint(path).connect().await
    }

    pub fn builder() -> ClientBuilder {
        ClientBuilder::default()
    }
}
