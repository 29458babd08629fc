//! `pacer acquire`, `report`, `release` and `pause`: permits for shell scripts.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, SystemTime};

use anyhow::Context;
use pacer_client::{
    AcquireRequest, Client, Error, KeyFingerprint, LeaseId, Outcome, Priority, outcome,
};
use pacer_protocol::{BudgetOwner, Throttle};

use crate::args::{KeyArgs, parse_duration};

#[derive(Debug, clap::Args)]
pub struct AcquireArgs {
    /// The model the call will use (its class selects the budget).
    #[arg(long)]
    model: String,
    /// Estimated input tokens of the call.
    #[arg(long, value_name = "N")]
    input_tokens: Option<u64>,
    /// Estimated output tokens of the call.
    #[arg(long, value_name = "N")]
    output_tokens: Option<u64>,
    /// The call's max_tokens (caps the output estimate).
    #[arg(long, value_name = "N")]
    max_tokens: Option<u64>,
    /// interactive, normal or batch.
    #[arg(long, default_value = "normal")]
    priority: Priority,
    /// Give up after waiting this long (seconds, or 30s, 2m…); exit status 2.
    #[arg(long, value_name = "S", value_parser = parse_duration)]
    timeout: Option<Duration>,
    /// Settle the permit as "unknown outcome" if not reported within this long.
    #[arg(long, value_name = "S", value_parser = parse_duration, default_value = "600")]
    ttl: Duration,
    /// Identity for fair turns between clients [default: pacer-<parent pid>].
    #[arg(long, value_name = "ID")]
    client_id: Option<String>,
    /// Cap this client's use of each subscription window at this share of it, per window
    /// (10%, 0.1): past it, the acquire waits (or times out) until the window resets.
    #[arg(long, value_name = "SHARE", value_parser = pacer_protocol::gateway::parse_max_share)]
    max_share: Option<u16>,
    /// Exit with an error if pacerd is unreachable, instead of printing lease 0 (unpaced).
    #[arg(long)]
    pub fail_closed: bool,
    #[command(flatten)]
    key: KeyArgs,
}

pub async fn acquire(client: &Client, args: AcquireArgs) -> anyhow::Result<ExitCode> {
    let mut request = AcquireRequest::for_key(args.key.fingerprint()?, &args.model)
        .priority(args.priority)
        .detached(args.ttl)
        .client_id(args.client_id.unwrap_or_else(default_client_id));
    if let Some(n) = args.input_tokens {
        request = request.input_tokens(n);
    }
    if let Some(n) = args.output_tokens {
        request = request.output_tokens(n);
    }
    if let Some(n) = args.max_tokens {
        request = request.max_tokens(n);
    }
    if let Some(timeout) = args.timeout {
        request = request.timeout(timeout);
    }
    if let Some(bp) = args.max_share {
        request = request.max_share(f64::from(bp) / 10_000.0);
    }
    match client.acquire(request).await {
        Ok(permit) => {
            // The permit is detached: it lives on in the daemon after this process exits.
            let lease = permit.detach().map_or(0, |l| l.0);
            crate::outln!("{lease}");
            Ok(ExitCode::SUCCESS)
        }
        Err(e @ Error::TimedOut { .. }) => {
            eprintln!("pacer: {e}");
            Ok(ExitCode::from(2))
        }
        Err(e) => Err(e.into()),
    }
}

/// Shell scripts run each `pacer acquire` as a new process; the script (the parent) is the
/// client that should take turns with others.
fn default_client_id() -> String {
    #[cfg(unix)]
    {
        format!("pacer-{}", std::os::unix::process::parent_id())
    }
    #[cfg(not(unix))]
    {
        format!("pacer-{}", std::process::id())
    }
}

#[derive(Debug, clap::Args)]
pub struct ReportArgs {
    /// The lease id printed by `pacer acquire` (0, an unpaced permit, is accepted and ignored).
    #[arg(value_parser = parse_lease)]
    lease: u64,
    /// The call's HTTP status [default: the status line of --headers-file].
    #[arg(long, value_name = "CODE")]
    status: Option<u16>,
    /// The retry-after of a 429 or 529 (seconds, or 30s, 2m…) [default: from the headers].
    #[arg(long, value_name = "S", value_parser = parse_duration)]
    retry_after: Option<Duration>,
    /// Input tokens the call used [default: from --body-file].
    #[arg(long, value_name = "N")]
    input_tokens: Option<u64>,
    /// Output tokens the call used [default: from --body-file].
    #[arg(long, value_name = "N")]
    output_tokens: Option<u64>,
    /// Cache-write input tokens the call used (they count toward the input limit).
    #[arg(long, value_name = "N")]
    cache_creation_tokens: Option<u64>,
    /// Response headers as `name: value` lines, as `curl -D FILE` writes them.
    #[arg(long, value_name = "FILE")]
    headers_file: Option<PathBuf>,
    /// The JSON response body, for its `usage` (or its error message, on a 429).
    #[arg(long, value_name = "FILE")]
    body_file: Option<PathBuf>,
}

impl ReportArgs {
    /// Lease 0 is what `pacer acquire` prints when it failed open: there is nothing to settle.
    pub fn is_unbrokered(&self) -> bool {
        self.lease == 0
    }
}

/// Reports a lease; `client` is `None` for lease 0, whose report is checked but goes nowhere.
pub async fn report(client: Option<&Client>, args: ReportArgs) -> anyhow::Result<ExitCode> {
    let (status_line, headers) = match &args.headers_file {
        Some(path) => read_headers_file(path)?,
        None => (None, Vec::new()),
    };
    let status = args.status.or(status_line).context(
        "the call's HTTP status is needed: pass --status CODE, or a --headers-file with a status line",
    )?;
    let body = match &args.body_file {
        Some(path) => Some(read_json(path)?),
        None => None,
    };
    let mut outcome = outcome::from_response(status, headers, body.as_ref());
    match &mut outcome {
        Outcome::Success { usage, .. } => {
            if let Some(n) = args.input_tokens {
                usage.input_tokens = n;
            }
            if let Some(n) = args.output_tokens {
                usage.output_tokens = n;
            }
            if let Some(n) = args.cache_creation_tokens {
                usage.cache_creation_input_tokens = n;
            }
        }
        Outcome::RateLimited { retry_after, .. } | Outcome::Overloaded { retry_after } => {
            *retry_after = args.retry_after.or(*retry_after);
        }
        Outcome::Failed
        | Outcome::Unknown
        | Outcome::ClientError { .. }
        | Outcome::SpendCapped { .. } => {}
    }
    let said = describe_outcome(&outcome);
    match client {
        Some(client) => {
            let reported = client.report(LeaseId(args.lease), outcome).await?;
            let said = match reported.throttle {
                Some(kind) => describe_throttle(kind, reported.until),
                None => said,
            };
            eprintln!("pacer: reported lease {}: {said}", args.lease);
        }
        None => eprintln!("pacer: lease 0 is unpaced: nothing to report ({said})"),
    }
    Ok(ExitCode::SUCCESS)
}

/// What pacerd took a 429 for, and what it holds: `429 (per-minute limit): every peer on the
/// budget pauses until 14:03:12`, `429 (bare): …`.
fn describe_throttle(kind: Throttle, until: Option<SystemTime>) -> String {
    let now = SystemTime::now();
    let until = until
        .map(|at| format!(" until {}", crate::clock::local(at, now)))
        .unwrap_or_default();
    match kind {
        Throttle::PerMinute => {
            format!("429 (a per-minute limit): every peer on the budget pauses{until}")
        }
        Throttle::Window => {
            format!("429 (a spent subscription window): the account is locked out{until}")
        }
        Throttle::SpendCap => {
            format!("429 (the spend cap): the account's calls fail at once{until}")
        }
        Throttle::Bare => "429 (bare: no retry-after, no limit named): the API throttled this \
                           request alone; nothing else is paused — send it again in tens of \
                           seconds, not at once"
            .into(),
    }
}

/// `ok, 120 input + 40 output tokens`, `429, retry after 12s`, …
fn describe_outcome(outcome: &Outcome) -> String {
    match outcome {
        Outcome::Success { usage, .. } => format!(
            "ok, {} input + {} output tokens",
            usage.counted_input_tokens(),
            usage.output_tokens
        ),
        Outcome::RateLimited { retry_after, .. } => match retry_after {
            Some(wait) => format!(
                "429, every peer pauses for {}",
                humantime::format_duration(Duration::from_secs(wait.as_secs_f64().ceil() as u64))
            ),
            None => "429, every peer pauses (the wait comes from the headers)".into(),
        },
        Outcome::Overloaded { .. } => "529, the model class backs off".into(),
        Outcome::Failed => "failed".into(),
        Outcome::Unknown => "outcome unknown".into(),
        Outcome::ClientError { status } => {
            format!("{status}, the request was refused as invalid: its tokens are given back")
        }
        Outcome::SpendCapped { .. } => "429, the spend cap".into(),
    }
}

pub async fn release(client: &Client, lease: u64) -> anyhow::Result<ExitCode> {
    client.release(LeaseId(lease)).await?;
    eprintln!("pacer: released lease {lease}: what it reserved is given back");
    Ok(ExitCode::SUCCESS)
}

#[derive(Debug, clap::Args)]
pub struct PauseArgs {
    /// A model name or model class (opus, sonnet, haiku…).
    #[arg(long)]
    model: String,
    /// How long (seconds, or 30s, 2m…); 0 lifts the pause.
    #[arg(long = "for", value_name = "DURATION", value_parser = parse_duration)]
    duration: Duration,
    #[command(flatten)]
    key: KeyArgs,
}

pub async fn pause(client: &Client, args: PauseArgs) -> anyhow::Result<ExitCode> {
    let now = SystemTime::now();
    let until = now + args.duration;
    let key = args.key.fingerprint()?;
    client.pause(key, &args.model, until).await?;
    // The budget the key draws on: its account's once linked (`org-…/sonnet`), else its own.
    let budget = budget_of(client, key, &args.model)
        .await
        .unwrap_or_else(|| format!("{key}'s {}", args.model));
    if args.duration.is_zero() {
        eprintln!("pacer: lifted the pause (and any 529 backoff or lockout) on {budget}");
    } else {
        eprintln!(
            "pacer: paused {budget} until {} ({}): every peer on it waits",
            crate::clock::local(until, now),
            crate::clock::remaining(until, now)
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// The budget `key` draws on for `model` (a model or a class name), as `owner/class`.
async fn budget_of(client: &Client, key: KeyFingerprint, model: &str) -> Option<String> {
    let status = client.status().await.ok()?;
    let owner = status
        .accounts
        .iter()
        .find(|a| matches!(a.owner, BudgetOwner::Account(_)) && a.keys.contains(&key))
        .map_or(BudgetOwner::Key(key), |a| a.owner.clone());
    let class = status
        .budgets
        .iter()
        .filter(|b| b.budget.owner == owner)
        .map(|b| b.budget.model_class.clone())
        .find(|class| class == model || model.to_ascii_lowercase().contains(class.as_str()))?;
    Some(format!("{owner}/{class}"))
}

/// A lease id as `pacer acquire` prints it.
pub fn parse_lease(text: &str) -> Result<u64, crate::args::BadValue> {
    text.trim()
        .parse()
        .map_err(|_| crate::args::BadValue::Lease(text.to_owned()))
}

/// Reads response headers as `curl -D` writes them. When the file holds several responses (a
/// `100 Continue`, redirects), the last one counts. Returns its status code and headers.
/// A response's status code (if the text has a status line) and its headers.
type StatusAndHeaders = (Option<u16>, Vec<(String, String)>);

fn read_headers_file(path: &Path) -> anyhow::Result<StatusAndHeaders> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read headers file {}", path.display()))?;
    Ok(parse_headers(&text))
}

fn parse_headers(text: &str) -> StatusAndHeaders {
    let mut status = None;
    let mut headers = Vec::new();
    for line in text.lines() {
        let line = line.trim_end_matches('\r');
        if line.starts_with("HTTP/") {
            status = line.split_whitespace().nth(1).and_then(|s| s.parse().ok());
            headers.clear();
        } else if let Some((name, value)) = line.split_once(':') {
            headers.push((name.trim().to_owned(), value.trim().to_owned()));
        }
    }
    (status, headers)
}

fn read_json(path: &Path) -> anyhow::Result<serde_json::Value> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read body file {}", path.display()))?;
    serde_json::from_str(&text).with_context(|| format!("body file {} is not JSON", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_last_response_in_a_curl_headers_file_counts() {
        let text = "HTTP/1.1 100 Continue\r\n\r\nHTTP/2 429 \r\nretry-after: 34\r\nx-ratelimit-limit-requests: 1000\r\n\r\n";
        let (status, headers) = parse_headers(text);
        assert_eq!(status, Some(429));
        assert_eq!(
            headers,
            vec![
                ("retry-after".to_owned(), "34".to_owned()),
                ("x-ratelimit-limit-requests".to_owned(), "1000".to_owned())
            ]
        );
    }
}
