//! `pacer probe`: one minimal request to see the key's current rate limits, as the API reports
//! them in its headers, and teach them to the daemon — through its gateway (to the upstream it
//! is configured with, paced like any call), or with `--upstream` straight to an API under a
//! permit.

use std::process::ExitCode;
use std::time::{Duration, SystemTime};

use anyhow::Context;
use pacer_api::ratelimit::{RateLimitHeaders, Window};
use pacer_client::{AcquireRequest, Client, outcome};
use serde_json::{Value, json};

use crate::args::KeyArgs;

#[derive(Debug, clap::Args)]
pub struct ProbeArgs {
    /// The model to ask (its class's limits are shown).
    #[arg(long, default_value = "claude-haiku-4-5")]
    model: String,
    /// The API to probe directly (under a permit) [default: through pacerd's gateway, to the
    /// upstream pacerd is configured with; without a gateway, https://api.anthropic.com].
    #[arg(long, env = "PACER_UPSTREAM", value_name = "URL")]
    upstream: Option<String>,
    #[command(flatten)]
    key: KeyArgs,
}

/// Where the probe goes.
enum Target {
    /// Through pacerd's gateway, which paces and settles it like any call.
    Gateway { base: String, upstream: String },
    /// Straight to an API, under a permit taken here.
    Direct(String),
}

async fn target(client: &Client, upstream: Option<String>) -> anyhow::Result<Target> {
    if let Some(upstream) = upstream {
        return Ok(Target::Direct(upstream));
    }
    let info = client.gateway_info().await?;
    Ok(match info.listen {
        Some(listen) => Target::Gateway {
            base: format!("http://{listen}"),
            upstream: info.upstream,
        },
        None => Target::Direct("https://api.anthropic.com".into()),
    })
}

pub async fn probe(client: &Client, args: ProbeArgs) -> anyhow::Result<ExitCode> {
    let key = args.key.value()?;
    let target = target(client, args.upstream.clone()).await?;
    let (base, permit) = match &target {
        Target::Gateway { base, upstream } => {
            eprintln!("pacer: probing {upstream} through pacerd's gateway");
            (base.clone(), None)
        }
        Target::Direct(upstream) => {
            let permit = client
                .acquire(
                    AcquireRequest::new(&key, &args.model)
                        .input_tokens(8)
                        .output_tokens(1)
                        .max_tokens(1)
                        .timeout(Duration::from_secs(60)),
                )
                .await?;
            (upstream.clone(), Some(permit))
        }
    };
    let url = format!("{}/v1/messages", base.trim_end_matches('/'));
    let body = json!({
        "model": args.model,
        "max_tokens": 1,
        "messages": [{"role": "user", "content": "hi"}],
    });
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(60))
        .build()?;
    let response = http
        .post(&url)
        .header("x-api-key", &key)
        .header("anthropic-version", "2023-06-01")
        .header("content-type", "application/json")
        .body(body.to_string())
        .send()
        .await;
    let response = match response {
        Ok(response) => response,
        Err(e) => {
            if let Some(permit) = permit {
                permit.release().await.ok();
            }
            return Err(e).with_context(|| format!("cannot reach {url}"));
        }
    };
    let status = response.status();
    let headers = response.headers().clone();
    let text = response.text().await.unwrap_or_default();
    let json: Option<Value> = serde_json::from_str(&text).ok();
    if let Some(permit) = permit {
        permit
            .report(outcome::from_response(
                status.as_u16(),
                &headers,
                json.as_ref(),
            ))
            .await?;
    }

    let pairs = headers
        .iter()
        .filter_map(|(n, v)| Some((n.as_str(), v.to_str().ok()?)));
    let limits = RateLimitHeaders::parse(pairs, SystemTime::now());
    crate::outln!(
        "{} {} ({})",
        status.as_u16(),
        status.canonical_reason().unwrap_or(""),
        args.model
    );
    crate::out!("{}", table(&limits));
    if let Some(wait) = limits.retry_after {
        crate::outln!(
            "retry-after: {}",
            humantime::format_duration(Duration::from_secs(wait.as_secs()))
        );
    }
    if !status.is_success() {
        let message = json
            .as_ref()
            .and_then(outcome::error_message)
            .unwrap_or_else(|| text.chars().take(200).collect());
        eprintln!("pacer: the API answered {status}: {message}");
        if status.as_u16() != 429 {
            return Ok(ExitCode::FAILURE);
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn table(limits: &RateLimitHeaders) -> String {
    let row = |kind: &str, window: &Window| {
        let cell = |v: Option<u64>| v.map_or("-".to_owned(), |v| v.to_string());
        let reset = window.reset_in.map_or("-".to_owned(), |d| {
            format!(
                "in {}",
                humantime::format_duration(Duration::from_secs(d.as_secs()))
            )
        });
        format!(
            "{kind:<14} {:>10} {:>10}  {reset}\n",
            cell(window.limit),
            cell(window.remaining)
        )
    };
    let mut out = format!(
        "{:<14} {:>10} {:>10}  {}\n",
        "LIMIT", "PER MIN", "REMAINING", "FULL AGAIN"
    );
    out.push_str(&row("requests", &limits.requests));
    out.push_str(&row("input tokens", &limits.input_tokens));
    out.push_str(&row("output tokens", &limits.output_tokens));
    if limits.tokens != Window::default() {
        out.push_str(&row("tokens", &limits.tokens));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_table_shows_each_limit() {
        let limits = RateLimitHeaders::parse(
            [
                ("anthropic-ratelimit-requests-limit", "50"),
                ("anthropic-ratelimit-requests-remaining", "49"),
                ("anthropic-ratelimit-input-tokens-limit", "30000"),
            ],
            SystemTime::now(),
        );
        let table = table(&limits);
        let lines: Vec<&str> = table.lines().collect();
        assert!(
            lines[1].starts_with("requests") && lines[1].contains("50") && lines[1].contains("49")
        );
        assert!(lines[2].contains("30000"));
        assert!(lines[3].starts_with("output tokens") && lines[3].contains('-'));
        assert_eq!(lines.len(), 4, "no tokens row without tokens headers");
    }
}
