//! The mock Anthropic API as a process: `mock-upstream [--listen ADDR] [--rpm N] [--itpm N]
//! [--otpm N] [--latency-ms MS] [--output-tokens N] [--event-gap-ms MS] [--organization KEY=ORG]…
//! [--subscription-5h N] [--base-path /PREFIX] [--session-wall BURST,REFILL_S,BLOCK_S]
//! [--no-prompt-cache]`. Prints its base URL on the first line of stdout, then serves until
//! killed.

use std::io::Write;
use std::net::SocketAddr;
use std::time::Duration;

use clap::Parser;
use pacer_tests::mock::{MockConfig, MockUpstream, Plan, SessionWall};

#[derive(Parser)]
struct Args {
    #[arg(long, default_value = "127.0.0.1:0")]
    listen: SocketAddr,
    #[arg(long, default_value_t = 120)]
    rpm: u64,
    #[arg(long, default_value_t = 100_000)]
    itpm: u64,
    #[arg(long, default_value_t = 100_000)]
    otpm: u64,
    #[arg(long, default_value_t = 0)]
    latency_ms: u64,
    #[arg(long, default_value_t = 16)]
    output_tokens: u64,
    #[arg(long, default_value_t = 0)]
    event_gap_ms: u64,
    /// A key of an organization shared with other keys: `KEY=ORGANIZATION-ID` (repeatable).
    #[arg(long, value_name = "KEY=ORG")]
    organization: Vec<String>,
    /// Serve OAuth tokens (`Bearer sk-ant-oat…`) as one subscription whose 5-hour window allows
    /// this many requests.
    #[arg(long, value_name = "N")]
    subscription_5h: Option<u64>,
    /// A path prefix every request must carry (`/anthropic`), as behind a company gateway.
    #[arg(long, default_value = "")]
    base_path: String,
    /// Claude Code sessions starting together meet the API's bare 429: BURST starts at once,
    /// one more every REFILL_S seconds, a refused session (and its retries) refused for BLOCK_S.
    #[arg(long, value_name = "BURST,REFILL_S,BLOCK_S", value_parser = parse_wall)]
    session_wall: Option<SessionWall>,
    /// Cache no prompt: every byte of `system` and `tools` counts as input, every time.
    #[arg(long)]
    no_prompt_cache: bool,
}

fn parse_wall(text: &str) -> Result<SessionWall, String> {
    let parts: Vec<&str> = text.split(',').map(str::trim).collect();
    let [burst, refill, block] = parts.as_slice() else {
        return Err(format!("expected BURST,REFILL_S,BLOCK_S, got `{text}`"));
    };
    let seconds = |s: &str| {
        s.parse::<f64>()
            .ok()
            .and_then(|n| Duration::try_from_secs_f64(n).ok())
            .filter(|d| !d.is_zero())
            .ok_or_else(|| format!("`{s}` is not a number of seconds above zero"))
    };
    Ok(SessionWall {
        burst: burst
            .parse()
            .map_err(|_| format!("`{burst}` is not a count of sessions"))?,
        refill: seconds(refill)?,
        block: seconds(block)?,
    })
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let config = MockConfig {
        rpm: args.rpm,
        itpm: args.itpm,
        otpm: args.otpm,
        latency: Duration::from_millis(args.latency_ms),
        output_tokens: args.output_tokens,
        event_gap: Duration::from_millis(args.event_gap_ms),
        organizations: args
            .organization
            .iter()
            .filter_map(|pair| pair.split_once('='))
            .map(|(key, org)| (key.to_owned(), org.to_owned()))
            .collect(),
        workspaces: Vec::new(),
        subscription: args.subscription_5h.map(|n| Plan {
            five_hour: n,
            ..Plan::default()
        }),
        base_path: args.base_path,
        known_keys: None,
        known_models: None,
        session_wall: args.session_wall,
        prompt_cache: !args.no_prompt_cache,
    };
    let mock = MockUpstream::start_on(args.listen, config).await?;
    println!("{}", mock.url());
    std::io::stdout().flush()?;
    std::future::pending::<()>().await;
    Ok(())
}
