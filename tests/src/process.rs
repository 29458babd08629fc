//! The real `pacerd` binary as a process, and the real `pacer` command.

use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};

use crate::binary;

/// A real `pacerd` process; killed when dropped.
pub struct Pacerd {
    child: Child,
    socket: PathBuf,
    /// The directory it lives in, when the fixture made it.
    dir: Option<tempfile::TempDir>,
}

impl Pacerd {
    /// `pacerd`, isolated in `dir`: its state, logs and configuration are looked for there, and
    /// none of the user's `PACER_*` settings reach it.
    pub fn command(dir: &Path) -> Command {
        let mut command = Command::new(binary("pacerd"));
        command
            .env("XDG_STATE_HOME", dir)
            .env("XDG_CONFIG_HOME", dir)
            .env_remove("PACER_CONFIG")
            .env_remove("PACER_SOCKET")
            .env_remove("PACER_GATEWAY")
            .env_remove("PACER_UPSTREAM")
            .env_remove("PACER_STATE")
            .env_remove("PACER_LOG_DIR")
            .env_remove("RUST_LOG");
        command
    }

    /// Starts `pacerd` on `dir/pacer.sock` with `args`, and waits until it answers. The gateway
    /// gets an ephemeral port unless `args` choose (`--gateway ADDR` or `--no-gateway`).
    pub fn start(dir: &Path, args: &[&str]) -> Pacerd {
        Self::start_at(dir, &dir.join("pacer.sock"), args)
    }

    /// Like [`Pacerd::start`], in a temporary directory of its own (removed when dropped).
    pub fn start_in_temp_dir(args: &[&str]) -> Pacerd {
        let dir = tempfile::tempdir().expect("temp dir");
        let mut daemon = Self::start(dir.path(), args);
        daemon.dir = Some(dir);
        daemon
    }

    /// Like [`Pacerd::start_in_temp_dir`], with `config_toml` as its configuration file.
    pub fn start_configured(config_toml: &str, args: &[&str]) -> Pacerd {
        let dir = tempfile::tempdir().expect("temp dir");
        let config = dir.path().join("config.toml");
        std::fs::write(&config, config_toml).expect("write the configuration");
        let config = config.to_str().expect("a UTF-8 temp path").to_owned();
        let args: Vec<&str> = ["--config", config.as_str()]
            .into_iter()
            .chain(args.iter().copied())
            .collect();
        let mut daemon = Self::start(dir.path(), &args);
        daemon.dir = Some(dir);
        daemon
    }

    /// Like [`Pacerd::start`], on the socket `socket`.
    pub fn start_at(dir: &Path, socket: &Path, args: &[&str]) -> Pacerd {
        let mut command = Self::command(dir);
        command.arg("--socket").arg(socket);
        if !args
            .iter()
            .any(|a| *a == "--gateway" || *a == "--no-gateway")
        {
            command.args(["--gateway", "127.0.0.1:0"]);
        }
        command.args(args);
        Self::spawn(command, socket)
    }

    /// Starts a prepared `pacerd` command (see [`Pacerd::command`]) that listens on `socket`,
    /// and waits until it answers.
    pub fn spawn(mut command: Command, socket: &Path) -> Pacerd {
        let child = command.stderr(Stdio::null()).spawn().expect("start pacerd");
        let daemon = Pacerd::adopt(child, socket);
        daemon.wait_until_serving();
        daemon
    }

    /// Takes charge of a `pacerd` started some other way (socket activation).
    pub fn adopt(child: Child, socket: &Path) -> Pacerd {
        Pacerd {
            child,
            socket: socket.to_owned(),
            dir: None,
        }
    }

    fn wait_until_serving(&self) {
        #[cfg(unix)]
        {
            use std::time::{Duration, Instant};
            let deadline = Instant::now() + Duration::from_secs(10);
            while std::os::unix::net::UnixStream::connect(&self.socket).is_err() {
                assert!(Instant::now() < deadline, "pacerd did not come up");
                std::thread::sleep(Duration::from_millis(20));
            }
        }
    }

    pub fn socket(&self) -> &Path {
        &self.socket
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The gateway's base URL (`http://127.0.0.1:PORT`), as the daemon tells it; `None` when it
    /// runs without one. (Asked from a thread of its own, so async callers may use it too.)
    pub fn gateway_url(&self) -> Option<String> {
        let socket = self.socket.clone();
        std::thread::spawn(move || {
            let client = pacer_client::blocking::Client::with(
                pacer_client::Client::builder()
                    .endpoint(socket)
                    .fail_mode(pacer_client::FailMode::Closed),
            )
            .expect("connect to pacerd");
            client.gateway_info().expect("gateway info").listen
        })
        .join()
        .expect("the gateway-info thread")
        .map(|addr| format!("http://{addr}"))
    }

    /// Everything the daemon logged so far (its daily files), when it runs in a directory the
    /// fixture made ([`Pacerd::start_in_temp_dir`], [`Pacerd::start_configured`]).
    pub fn logs(&self) -> String {
        self.dir
            .as_ref()
            .map(|dir| crate::read_logs(&dir.path().join("pacer").join("logs")))
            .unwrap_or_default()
    }

    /// The daemon's resident memory, from /proc (Linux).
    pub fn rss_kib(&self) -> Option<u64> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid())).ok()?;
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
    }

    /// Asks the daemon to stop (SIGTERM; where there are no signals, it is killed) and waits
    /// for it.
    pub fn stop(&mut self) -> ExitStatus {
        #[cfg(unix)]
        self.signal(libc::SIGTERM);
        #[cfg(not(unix))]
        let _ = self.child.kill();
        self.wait()
    }

    /// Sends a signal to the daemon.
    #[cfg(unix)]
    pub fn signal(&self, signal: i32) {
        // SAFETY: signalling our own child process.
        assert_eq!(unsafe { libc::kill(self.child.id() as i32, signal) }, 0);
    }

    /// Kills it outright (SIGKILL): it gets no chance to save anything.
    pub fn kill(&mut self) {
        self.child.kill().expect("kill pacerd");
        self.child.wait().expect("reap pacerd");
    }

    /// Waits for it to exit.
    pub fn wait(&mut self) -> ExitStatus {
        self.child.wait().expect("wait for pacerd")
    }

    /// Runs `pacer ARGS` against this daemon with `api_key` in `$ANTHROPIC_API_KEY`.
    pub fn pacer(&self, args: &[&str], api_key: &str) -> Output {
        pacer(&self.socket, args, api_key)
    }

    /// `pacer status --json`.
    pub fn status(&self) -> Value {
        let out = self.pacer(&["status", "--json"], "k");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice(&out.stdout).expect("status JSON")
    }
}

impl Drop for Pacerd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Runs the real `pacer ARGS` against the daemon at `socket`, with `api_key` in
/// `$ANTHROPIC_API_KEY`.
pub fn pacer(socket: &Path, args: &[&str], api_key: &str) -> Output {
    Command::new(binary("pacer"))
        .args(args)
        .env("PACER_SOCKET", socket)
        .env("ANTHROPIC_API_KEY", api_key)
        .env_remove("ANTHROPIC_BASE_URL")
        .env_remove("CLAUDE_CODE_USE_BEDROCK")
        .env_remove("CLAUDE_CODE_USE_VERTEX")
        .output()
        .expect("run pacer")
}
