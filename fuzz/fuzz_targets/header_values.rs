//! Whatever values an answer's headers and body carry, a budget stays usable: the headers are
//! fed to the broker for a granted call (as the gateway does when they arrive) and the call is
//! settled with usage read from the body; afterwards every level is within the limit's reach
//! (finite, no deeper than a bucket below zero), and the gateway's reading of a request path
//! and its identity headers never panics.
#![no_main]

use std::time::{Duration, Instant, SystemTime};

use libfuzzer_sys::fuzz_target;
use pacer_api::ratelimit::RateLimitHeaders;
use pacer_broker::{Broker, BrokerConfig, ConnId, Output, Settlement, Ticket, TimeBase};
use pacer_daemon::gateway::route::{RequestPath, escaping_segment, identity};
use pacer_protocol::message::{Acquire, Response, Usage};
use pacer_protocol::{KeyFingerprint, Priority};

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let (head, body) = text.split_once("\n\n").unwrap_or((&text, ""));
    let mut lines = head.lines();
    let path = lines.next().unwrap_or("/");
    let headers: Vec<(&str, &str)> = lines.filter_map(|l| l.split_once(':')).collect();

    let route = RequestPath::parse(&http::Method::POST, path);
    let _ = escaping_segment(path);
    let mut map = http::HeaderMap::new();
    for (name, value) in &headers {
        if let (Ok(name), Ok(value)) = (
            http::HeaderName::from_bytes(name.trim().as_bytes()),
            http::HeaderValue::from_str(value.trim()),
        ) {
            map.append(name, value);
        }
    }
    let _ = identity(&route, &map);

    let now = Instant::now();
    let wall = SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000);
    let mut broker = Broker::new(BrokerConfig::default(), TimeBase { instant: now, wall }, 1);
    let acquire = Acquire {
        key: KeyFingerprint::of("fuzz"),
        model: "claude-sonnet-4-5".into(),
        priority: Priority::Normal,
        client_id: "fuzz".into(),
        input_tokens: Some(100),
        output_tokens: None,
        max_tokens: Some(1000),
        deadline: None,
        detached_ttl: None,
        max_share_bp: None,
    };
    let granted = broker
        .acquire(
            now,
            Ticket {
                conn: ConnId(1),
                request: 1,
            },
            &acquire,
        )
        .into_iter()
        .find_map(|output| match output {
            Output::Answer {
                response: Response::Granted(g),
                ..
            } => Some(g.lease),
            _ => None,
        });
    let Some(lease) = granted else { return };
    let parsed = RateLimitHeaders::parse(headers.iter().copied(), wall);
    let _ = broker.observe(now, lease, &parsed);
    let usage = serde_json::from_str::<serde_json::Value>(body)
        .ok()
        .and_then(|v| v.get("usage").cloned())
        .and_then(|u| serde_json::from_value::<pacer_protocol::message::ApiUsage>(u).ok())
        .map(|api| {
            let mut usage = Usage::default();
            api.apply_to(&mut usage);
            usage
        })
        .unwrap_or_default();
    let _ = broker.report(now, lease, Settlement::Success { usage }, &parsed);
    for budget in broker.status(now) {
        let limits = [budget.limits.rpm, budget.limits.itpm, budget.limits.otpm];
        let levels = [
            budget.available.requests,
            budget.available.input_tokens,
            budget.available.output_tokens,
        ];
        for (limit, level) in limits.into_iter().zip(levels) {
            if let (Some(limit), Some(level)) = (limit, level) {
                assert!(
                    level >= -(limit as i64) - 1 && level <= limit as i64,
                    "{level} of {limit}"
                );
            }
        }
    }
    let _ = broker.tick(now + Duration::from_secs(60));
});
