//! `pacer mcp`: an MCP server over stdio (`claude mcp add pacer -- pacer mcp`), so that the
//! agents doing the work can read their account's windows and plan around them. Three tools,
//! each answered from pacerd in milliseconds (one local connection per call), saying so
//! plainly when pacerd is away:
//!
//! - `pacer_windows`: the windows and budgets of the account this session's calls go to —
//!   found by `CLAUDE_CODE_SESSION_ID` (Claude Code gives it to stdio servers), else by the key
//!   in `ANTHROPIC_API_KEY` / `ANTHROPIC_AUTH_TOKEN` / `CLAUDE_CODE_OAUTH_TOKEN`;
//! - `pacer_fanout_fits`: whether N calls or N subagents at a priority fit now, and if not,
//!   when;
//! - `pacer_held`: what is held, paused or locked out now, and why.
//!
//! stdout is the protocol's: nothing else is ever written there.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::SystemTime;

use anyhow::Context;
use rmcp::model::{
    CallToolRequestParams, CallToolResponse, CallToolResult, ContentBlock, Implementation,
    ListToolsResult, PaginatedRequestParams, ServerCapabilities, ServerConfig, Tool, object,
};
use rmcp::service::RequestContext;
use rmcp::{ErrorData, RoleServer, ServerHandler, ServiceExt};
use serde_json::{Map, Value, json};

use crate::quota;
use crate::settings::{self, Settings};

mod answers;

/// How long a tool call may wait for pacerd.
const ANSWER_WITHIN: std::time::Duration = std::time::Duration::from_secs(3);

#[derive(Debug, clap::Args)]
pub struct McpArgs {
    /// Register `pacer mcp` in Claude Code's user settings (`mcpServers` in ~/.claude.json,
    /// after a backup) instead of serving, as `claude mcp add --scope user pacer -- pacer mcp`
    /// would.
    #[arg(long)]
    install: bool,
    /// The file to install into [default: ~/.claude.json].
    #[arg(long, value_name = "PATH", requires = "install")]
    config: Option<PathBuf>,
}

pub async fn mcp(socket: Option<PathBuf>, args: McpArgs) -> anyhow::Result<ExitCode> {
    if args.install {
        return install(args.config);
    }
    let server = Server { socket };
    let service = server
        .serve(rmcp::transport::stdio())
        .await
        .context("the MCP client did not complete the handshake")?;
    service.waiting().await.context("the MCP session failed")?;
    Ok(ExitCode::SUCCESS)
}

#[derive(Clone)]
struct Server {
    socket: Option<PathBuf>,
}

fn schema(value: Value) -> Arc<Map<String, Value>> {
    Arc::new(object(value))
}

fn tools() -> Vec<Tool> {
    vec![
        Tool::new(
            "pacer_windows",
            "Your account's Anthropic usage windows (5-hour, weekly) and per-minute budgets, \
             as pacer sees them now: utilization in percent (with your calls in flight), when \
             each window resets, the forecast at the current burn rate, and how far each \
             priority (interactive, normal, batch) may take it and whether it is held. Call it \
             before planning long or parallel work. No arguments.",
            schema(json!({"type": "object", "properties": {}})),
        ),
        Tool::new(
            "pacer_fanout_fits",
            "Whether a fan-out would fit in your account's windows now: N API calls, or N \
             subagents (each about calls_per_subagent calls), at a priority. Answers yes, or \
             how many fit and when the rest would (a window's reset).",
            schema(json!({
                "type": "object",
                "properties": {
                    "count": {"type": "integer", "minimum": 1,
                              "description": "How many calls or subagents (1 or more)."},
                    "unit": {"type": "string", "enum": ["calls", "subagents"],
                             "description": "What count counts (default: subagents)."},
                    "priority": {"type": "string", "enum": ["interactive", "normal", "batch"],
                                 "description": "Their priority (default: normal)."},
                    "calls_per_subagent": {"type": "integer", "minimum": 1,
                                           "description": "API calls one subagent makes \
                                                           (default: 20)."}
                },
                "required": ["count"]
            })),
        ),
        Tool::new(
            "pacer_held",
            "What pacer holds, pauses or locks out now, and why: budgets paused after a 429 or \
             by hand (until when), accounts locked out, priorities held by a window's ceiling, \
             clients past their cap, calls waiting. No arguments.",
            schema(json!({"type": "object", "properties": {}})),
        ),
    ]
}

impl ServerHandler for Server {
    fn get_info(&self) -> ServerConfig {
        ServerConfig::new(ServerCapabilities::builder().enable_tools().build())
            .with_server_info(Implementation::new("pacer", env!("CARGO_PKG_VERSION")))
            .with_instructions(
                "pacer shares this machine's Anthropic rate limits and subscription windows \
                 between sessions. Ask pacer_windows before long or parallel work, and \
                 pacer_fanout_fits before starting several subagents.",
            )
    }

    async fn list_tools(
        &self,
        _request: Option<PaginatedRequestParams>,
        _context: RequestContext<RoleServer>,
    ) -> Result<ListToolsResult, ErrorData> {
        Ok(ListToolsResult::with_all_items(tools()))
    }

    async fn call_tool(
        &self,
        request: CallToolRequestParams,
        _context: RequestContext<RoleServer>,
    ) -> Result<CallToolResponse, ErrorData> {
        let args = request.arguments.unwrap_or_default();
        let name = request.name.as_ref();
        let fanout = match name {
            "pacer_windows" | "pacer_held" => None,
            "pacer_fanout_fits" => match answers::Fanout::read(&args) {
                Ok(fanout) => Some(fanout),
                Err(e) => return Ok(CallToolResult::error(vec![ContentBlock::text(e)]).into()),
            },
            other => {
                return Err(ErrorData::invalid_params(
                    format!(
                        "unknown tool `{other}`: pacer has pacer_windows, pacer_fanout_fits and pacer_held"
                    ),
                    None,
                ));
            }
        };
        let answer = tokio::time::timeout(ANSWER_WITHIN, self.ask(name, fanout)).await;
        let result = match answer {
            Ok(Ok(text)) => CallToolResult::success(vec![ContentBlock::text(text)]),
            Ok(Err(text)) => CallToolResult::error(vec![ContentBlock::text(text)]),
            Err(_) => CallToolResult::error(vec![ContentBlock::text(format!(
                "pacerd did not answer within {} s; it may be overloaded or stuck",
                ANSWER_WITHIN.as_secs()
            ))]),
        };
        Ok(result.into())
    }
}

impl Server {
    async fn ask(&self, tool: &str, fanout: Option<answers::Fanout>) -> Result<String, String> {
        let Some(client) = quota::connect(self.socket.clone(), "pacer-mcp").await else {
            return Err(
                "pacerd is not running (nothing answers on its socket), so pacer knows nothing \
                 of the windows now. Start it with `pacer service install` (or run `pacerd`)."
                    .into(),
            );
        };
        let session = std::env::var("CLAUDE_CODE_SESSION_ID")
            .ok()
            .filter(|s| !s.trim().is_empty());
        let (found, status) = quota::find(&client, session.as_deref(), quota::key_from_env())
            .await
            .map_err(|e| format!("pacerd did not answer: {e}"))?;
        let now = SystemTime::now();
        Ok(match (tool, fanout) {
            ("pacer_windows", _) => answers::windows(found.as_ref(), &status, now),
            ("pacer_fanout_fits", Some(fanout)) => match &found {
                Some(found) => fanout.fits(found, now),
                None => answers::no_account(&status),
            },
            _ => answers::held(found.as_ref(), &status, now),
        })
    }
}

/// Adds `"pacer": {"type": "stdio", "command": "pacer", "args": ["mcp"]}` to the user's
/// `mcpServers` in `~/.claude.json`, keeping everything else.
fn install(config: Option<PathBuf>) -> anyhow::Result<ExitCode> {
    let path = settings::in_home(config, ".claude.json", "--config")?;
    let mut settings = Settings::read(&path)?;
    let mut servers = settings.get("mcpServers").unwrap_or_else(|| json!({}));
    let Some(list) = servers.as_object_mut() else {
        anyhow::bail!(
            "`mcpServers` in {} is not an object; fix it first (nothing was changed)",
            path.display()
        );
    };
    let command = crate::statusline::command_for("mcp");
    let (program, _) = command.rsplit_once(' ').unwrap_or((&command, ""));
    list.insert(
        "pacer".into(),
        json!({"type": "stdio", "command": program, "args": ["mcp"], "env": {}}),
    );
    let change = settings.set("mcpServers", &servers)?;
    settings.save(
        &change,
        "Claude Code already has the pacer MCP server",
        &format!(
            "Claude Code now starts `{program} mcp` as its MCP server `pacer`; `claude mcp list` \
             shows it"
        ),
    )?;
    Ok(ExitCode::SUCCESS)
}
