//! Small helpers shared by the benchmark binaries: percentiles, fairness, tables, the daemon.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The `q`-quantile (0..=1) of `samples`, which it sorts; zero for no samples.
pub fn percentile(samples: &mut [Duration], q: f64) -> Duration {
    if samples.is_empty() {
        return Duration::ZERO;
    }
    samples.sort_unstable();
    let rank = ((samples.len() as f64 - 1.0) * q).round() as usize;
    samples[rank.min(samples.len() - 1)]
}

/// Jain's fairness index of per-client throughput: 1 when everyone got the same, 1/n when one
/// client got everything.
pub fn jain(counts: &[u64]) -> f64 {
    let sum: f64 = counts.iter().map(|&c| c as f64).sum();
    let squares: f64 = counts.iter().map(|&c| (c as f64).powi(2)).sum();
    if squares == 0.0 {
        return 1.0;
    }
    sum * sum / (counts.len() as f64 * squares)
}

/// Formats a table with a header row, columns padded to their widest cell.
pub fn table(header: &[&str], rows: &[Vec<String>]) -> String {
    let widths: Vec<usize> = (0..header.len())
        .map(|i| {
            rows.iter()
                .map(|r| r[i].len())
                .chain([header[i].len()])
                .max()
                .unwrap_or(0)
        })
        .collect();
    let line = |cells: Vec<&str>| {
        let padded: Vec<String> = cells
            .iter()
            .zip(&widths)
            .enumerate()
            .map(|(i, (cell, w))| {
                if i == 0 {
                    format!("{cell:<w$}")
                } else {
                    format!("{cell:>w$}")
                }
            })
            .collect();
        padded.join("  ").trim_end().to_owned() + "\n"
    };
    let mut out = line(header.to_vec());
    for row in rows {
        out.push_str(&line(row.iter().map(String::as_str).collect()));
    }
    out
}

pub fn ms(d: Duration) -> String {
    format!("{:.1}", d.as_secs_f64() * 1e3)
}

pub fn us(d: Duration) -> String {
    format!("{:.1}", d.as_secs_f64() * 1e6)
}

/// A `pacerd` process started for a benchmark, stopped when dropped.
pub struct DaemonProcess {
    child: Child,
    pub socket: PathBuf,
    pub gateway: Option<String>,
    _dir: tempfile::TempDir,
}

impl DaemonProcess {
    /// Starts the `pacerd` beside the running executable, with `config` as its configuration.
    pub fn start(config: &str, gateway: bool) -> anyhow::Result<DaemonProcess> {
        let dir = tempfile::tempdir()?;
        let socket = dir.path().join("pacer.sock");
        let config_path = dir.path().join("config.toml");
        std::fs::write(&config_path, config)?;
        let mut command = Command::new(sibling("pacerd")?);
        command
            .arg("--socket")
            .arg(&socket)
            .arg("--config")
            .arg(&config_path)
            .env("XDG_STATE_HOME", dir.path())
            .env("RUST_LOG", "warn")
            .stderr(Stdio::null());
        if gateway {
            command.args(["--gateway", "127.0.0.1:0"]);
        } else {
            command.arg("--no-gateway");
        }
        let child = command.spawn()?;
        let deadline = Instant::now() + Duration::from_secs(10);
        let mut daemon = DaemonProcess {
            child,
            socket,
            gateway: None,
            _dir: dir,
        };
        loop {
            let socket = daemon.socket.clone();
            let info = std::thread::spawn(move || {
                let runtime = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()?;
                runtime.block_on(async {
                    let client = pacer_client::Client::builder()
                        .endpoint(socket)
                        .fail_mode(pacer_client::FailMode::Closed)
                        .connect()
                        .await?;
                    anyhow::Ok(client.gateway_info().await?)
                })
            })
            .join()
            .map_err(|_| anyhow::anyhow!("probe thread panicked"))?;
            match info {
                Ok(info) => {
                    daemon.gateway = info.listen.map(|addr| format!("http://{addr}"));
                    return Ok(daemon);
                }
                Err(_) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(20))
                }
                Err(e) => anyhow::bail!("pacerd did not come up: {e}"),
            }
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The daemon's resident memory, from /proc (Linux).
    pub fn rss_kib(&self) -> Option<u64> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid())).ok()?;
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
    }
}

impl Drop for DaemonProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// An executable built beside the running one (`target/<profile>/<name>`).
pub fn sibling(name: &str) -> anyhow::Result<PathBuf> {
    let exe = std::env::current_exe()?;
    let dir = exe.parent().map(Path::to_path_buf).unwrap_or_default();
    // Benchmarks run from target/<profile>; tests from target/<profile>/deps.
    for candidate in [
        dir.join(name),
        dir.parent().map(|d| d.join(name)).unwrap_or_default(),
    ] {
        if candidate.is_file() {
            return Ok(candidate);
        }
    }
    anyhow::bail!(
        "{name} is not built next to {} (cargo build --release --workspace)",
        exe.display()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles() {
        let mut samples: Vec<Duration> = (1..=100).map(Duration::from_millis).collect();
        assert_eq!(percentile(&mut samples, 0.5), Duration::from_millis(51));
        assert_eq!(percentile(&mut samples, 0.99), Duration::from_millis(99));
        assert_eq!(percentile(&mut [], 0.5), Duration::ZERO);
    }

    #[test]
    fn fairness() {
        assert!((jain(&[5, 5, 5, 5]) - 1.0).abs() < 1e-9);
        assert!((jain(&[20, 0, 0, 0]) - 0.25).abs() < 1e-9);
    }

    #[test]
    fn tables_align() {
        let t = table(&["name", "n"], &[vec!["a".into(), "100".into()]]);
        assert_eq!(t, "name    n\na     100\n");
    }
}
