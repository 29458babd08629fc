//! Whose limits a request draws on, as the real API decides it: the organization of its key
//! (several keys may share one, and `anthropic-organization-id` names it on every answer), a
//! workspace with lower limits of its own, or — for OAuth tokens (`Authorization: Bearer
//! sk-ant-oat…`) — a subscription whose 5-hour and weekly windows are reported in
//! `anthropic-ratelimit-unified-*` headers. Every token belongs to the subscription, as a
//! Claude Code session's token does across refreshes.

use std::time::{Duration, SystemTime};

use http::{HeaderMap, HeaderName, HeaderValue};

use super::MockConfig;

/// A workspace: its keys share its (lower) request limit, and the organization's.
#[derive(Debug, Clone)]
pub struct Workspace {
    pub id: String,
    pub keys: Vec<String>,
    pub rpm: u64,
}

/// A Claude Pro/Max subscription, for OAuth tokens.
#[derive(Debug, Clone)]
pub struct Plan {
    /// The organization the API names for it.
    pub organization: String,
    /// Requests allowed in the 5-hour window and in the weekly one.
    pub five_hour: u64,
    pub seven_day: u64,
    /// When the windows reset, counted from the mock's start.
    pub five_hour_reset: Duration,
    pub seven_day_reset: Duration,
    /// What the windows had used before the mock started (so a test can start at 20 %).
    pub five_hour_used: u64,
    pub seven_day_used: u64,
    /// A weekly window of the opus models only (`7d_opus`): its requests allowed, if any.
    pub seven_day_opus: Option<u64>,
    /// Extra usage: when allowed, a spent window still serves (`overage-status: allowed`,
    /// `overage-in-use: true` once spending); otherwise (`rejected`) a spent window refuses.
    pub overage: bool,
}

impl Default for Plan {
    fn default() -> Self {
        Self {
            organization: "0b9e6f0e-5b0a-4c1e-9d7a-5e5b5b5b5b5b".into(),
            five_hour: 1000,
            seven_day: 10_000,
            five_hour_reset: Duration::from_secs(2 * 3600),
            seven_day_reset: Duration::from_secs(5 * 24 * 3600),
            five_hour_used: 0,
            seven_day_used: 0,
            seven_day_opus: None,
            overage: false,
        }
    }
}

/// Who a request is from, as the API sees it.
pub(super) struct Caller {
    /// What its limits are filed under: the organization.
    pub organization: String,
    pub workspace: Option<Workspace>,
    /// An OAuth token of the subscription.
    pub subscriber: bool,
}

/// The organization the mock names for a key nobody configured: one of its own.
fn own_organization(key: &str) -> String {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    key.hash(&mut h);
    let n = h.finish();
    format!(
        "{:08x}-{:04x}-4{:03x}-8{:03x}-{:012x}",
        n >> 32,
        (n >> 16) & 0xffff,
        n & 0xfff,
        (n >> 4) & 0xfff,
        n & 0xffff_ffff_ffff
    )
}

pub(super) fn caller(config: &MockConfig, headers: &HeaderMap) -> (String, Caller) {
    let bearer = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    let key = headers
        .get("x-api-key")
        .and_then(|v| v.to_str().ok())
        .or(bearer)
        .unwrap_or("")
        .to_owned();
    if let (Some(token), Some(subscription)) = (bearer, &config.subscription)
        && token.starts_with("sk-ant-oat")
    {
        let caller = Caller {
            organization: subscription.organization.clone(),
            workspace: None,
            subscriber: true,
        };
        return (key, caller);
    }
    let organization = config
        .organizations
        .iter()
        .find(|(k, _)| *k == key)
        .map_or_else(|| own_organization(&key), |(_, org)| org.clone());
    let workspace = config
        .workspaces
        .iter()
        .find(|w| w.keys.contains(&key))
        .cloned();
    let caller = Caller {
        organization,
        workspace,
        subscriber: false,
    };
    (key, caller)
}

/// The windows' use so far (from the mock's start; what came before is the subscription's).
#[derive(Debug, Default, Clone, Copy)]
pub(super) struct WindowUse {
    pub five_hour: u64,
    pub seven_day: u64,
    pub seven_day_opus: u64,
}

/// The unified headers of an answer to a subscriber, for a request of `model`, and whether the
/// request is refused.
pub(super) fn unified_headers(
    subscription: &Plan,
    used: WindowUse,
    started: SystemTime,
    model: &str,
) -> (HeaderMap, bool) {
    let five_hour_reset = started + subscription.five_hour_reset;
    let seven_day_reset = started + subscription.seven_day_reset;
    let five_hour = (subscription.five_hour_used + used.five_hour) as f64
        / subscription.five_hour.max(1) as f64;
    let seven_day = (subscription.seven_day_used + used.seven_day) as f64
        / subscription.seven_day.max(1) as f64;
    let opus = subscription
        .seven_day_opus
        .map(|allowed| used.seven_day_opus as f64 / allowed.max(1) as f64);
    let overage = subscription.overage;
    let spent_five = five_hour >= 1.0;
    let spent_seven = seven_day >= 1.0;
    let spent_opus = opus.is_some_and(|u| u >= 1.0) && model.contains("opus");
    let in_use = overage && (spent_five || spent_seven);
    let status = |spent: bool, utilization: f64| {
        if spent && !overage {
            "rejected"
        } else if utilization >= 0.8 {
            "allowed_warning"
        } else {
            "allowed"
        }
    };
    let epoch = |at: SystemTime| {
        at.duration_since(SystemTime::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs())
            .to_string()
    };
    let (claim, reset) = if spent_seven || (!spent_five && seven_day > five_hour) {
        ("seven_day", seven_day_reset)
    } else {
        ("five_hour", five_hour_reset)
    };
    let overall = status(spent_five || spent_seven, five_hour.max(seven_day));
    let mut headers = HeaderMap::new();
    let mut set = |name: &str, value: String| {
        headers.insert(
            HeaderName::from_bytes(format!("anthropic-ratelimit-unified-{name}").as_bytes())
                .expect("a header name"),
            HeaderValue::from_str(&value).expect("a header value"),
        );
    };
    // Spent with extra usage allowed: still served, over 100 %.
    let shown = |u: f64| if overage { u } else { u.min(1.0) };
    set("status", overall.into());
    set("reset", epoch(reset));
    set("representative-claim", claim.into());
    set("fallback-percentage", "0.5".into());
    if overage {
        set("overage-status", "allowed".into());
        set("overage-in-use", in_use.to_string());
    } else {
        set("overage-status", "rejected".into());
        set("overage-disabled-reason", "org_level_disabled".into());
    }
    set("5h-status", status(spent_five, five_hour).into());
    set("5h-utilization", format!("{:.2}", shown(five_hour)));
    set("5h-reset", epoch(five_hour_reset));
    set("7d-status", status(spent_seven, seven_day).into());
    set("7d-utilization", format!("{:.2}", shown(seven_day)));
    set("7d-reset", epoch(seven_day_reset));
    if let Some(opus) = opus {
        set("7d_opus-status", status(spent_opus, opus).into());
        set("7d_opus-utilization", format!("{:.2}", shown(opus)));
        set("7d_opus-reset", epoch(seven_day_reset));
    }
    let refused = !overage && (spent_five || spent_seven || spent_opus);
    (headers, refused)
}

/// Seconds until the spent window resets.
pub(super) fn retry_after(subscription: &Plan, used: WindowUse, started: SystemTime) -> u64 {
    let reset = if subscription.seven_day_used + used.seven_day >= subscription.seven_day {
        started + subscription.seven_day_reset
    } else {
        started + subscription.five_hour_reset
    };
    reset
        .duration_since(SystemTime::now())
        .map_or(1, |d| d.as_secs().max(1))
}
