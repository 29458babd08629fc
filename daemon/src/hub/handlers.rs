//! One function per request: translate it for the broker and say what to answer. Socket
//! connections and the gateway's sessions both come through here.
//!
//! A handler returns `None` when the answer comes later from the broker (an acquire that waits).

use std::time::SystemTime;

use pacer_api::outcome::input_bound;
use pacer_api::ratelimit::RateLimitHeaders;
use pacer_protocol::Throttle;
use pacer_protocol::codec;
use pacer_protocol::message::{
    Acquire, Calibrate, ErrorKind, ErrorReply, EstimateInput, LeaseId, Outcome, Pause,
    RegisterRoute, Release, Report, Reported, Response, ResponseFrame, SessionQuery,
    StatusSnapshot,
};
use pacer_protocol::text::{MAX_MESSAGE, bounded};

use super::Hub;
use pacer_api::Answer;
use pacer_broker::{BrokerError, MAX_NAME_LEN, Settlement, Ticket};

pub const DAEMON_VERSION: &str = env!("CARGO_PKG_VERSION");

pub fn acquire(hub: &Hub, ticket: Ticket, acquire: &Acquire) -> Option<Response> {
    hub.update(|broker, now| (broker.acquire(now, ticket, acquire), ()));
    None
}

pub fn report(hub: &Hub, report: Report) -> Response {
    let (settlement, headers) = settlement(report.outcome, None, SystemTime::now());
    settle(hub, report.lease, settlement, &headers)
}

/// Bare 429s are logged at most once a minute, with the count of the rest.
static BARE: crate::throttle::Throttle =
    crate::throttle::Throttle::new(std::time::Duration::from_secs(60));

/// Settles a lease with what the broker needs of its outcome; answers what a 429 was taken
/// for.
pub fn settle(
    hub: &Hub,
    lease: LeaseId,
    settlement: Settlement,
    headers: &RateLimitHeaders,
) -> Response {
    let answer = hub.update(
        |broker, now| match broker.report(now, lease, settlement, headers) {
            Ok((outputs, reported)) => (outputs, Response::Reported(reported)),
            Err(e) => (Vec::new(), refused(e)),
        },
    );
    if let Response::Reported(Reported {
        throttle: Some(Throttle::Bare),
        ..
    }) = answer
    {
        // Nothing else tells of it: it pauses nobody.
        crate::info_throttled!(
            BARE,
            "bare 429 (the API's request-scoped throttle: no retry-after, no limit named): that \
             request is held and sent again on its own; nothing else is paused"
        );
    }
    answer
}

pub use pacer_api::outcome::message_of_body;

/// The input tokens a body of the given size is estimated to count, by the gateway's
/// calibration (bounded by [`MAX_NAME_LEN`] for the client's name, as the gateway's are).
pub fn estimate(hub: &Hub, estimate: &EstimateInput) -> Response {
    let bytes = usize::try_from(estimate.body_bytes).unwrap_or(usize::MAX);
    Response::Estimate(hub.estimate_input(&client_name(&estimate.client_id), bytes))
}

/// Learns from a call a client made itself; a count beyond what the body could hold is not
/// believed (the same bound the gateway applies to its answers).
pub fn calibrate(hub: &Hub, calibrate: &Calibrate) -> Response {
    let bytes = usize::try_from(calibrate.body_bytes).unwrap_or(usize::MAX);
    let counted = calibrate.counted_input.min(input_bound(bytes));
    hub.calibrate(&client_name(&calibrate.client_id), bytes, counted);
    Response::Ack
}

fn client_name(id: &str) -> String {
    bounded(id, MAX_NAME_LEN)
}

pub fn release(hub: &Hub, release: Release) -> Response {
    hub.update(|broker, now| match broker.release(now, release.lease) {
        Ok(outputs) => (outputs, Response::Ack),
        Err(e) => (Vec::new(), refused(e)),
    })
}

/// How many budgets, and how many accounts, one status page holds: a page stays far below the
/// frame cap even for accounts with many keys.
pub const STATUS_PAGE_LEN: usize = 500;

/// Page `page` of the status snapshot (`Status` is page 0): budgets and accounts from
/// `page × STATUS_PAGE_LEN` on. Routes and clients come with the first page.
pub fn status(hub: &Hub, page: u32) -> Response {
    // A read: it leaves the state clean, so `pacer status` never makes the saver write.
    let (budgets, accounts, clients, sessions) = hub.read(|broker, now| {
        let (clients, sessions) = if page == 0 {
            (broker.clients(now), broker.sessions(now))
        } else {
            (Vec::new(), Vec::new())
        };
        (broker.status(now), broker.accounts(now), clients, sessions)
    });
    let from = (page as usize).saturating_mul(STATUS_PAGE_LEN);
    let to = from.saturating_add(STATUS_PAGE_LEN);
    let more = budgets.len() > to || accounts.len() > to;
    let starts = if page == 0 {
        hub.read(|broker, _| broker.starts())
    } else {
        Vec::new()
    };
    let snapshot = StatusSnapshot {
        starts,
        daemon_version: DAEMON_VERSION.to_owned(),
        budgets: page_of(budgets, from),
        accounts: page_of(accounts, from),
        routes: if page == 0 { hub.routes() } else { Vec::new() },
        next_page: more.then(|| page + 1),
        clients,
        daemon: hub.daemon_status(),
        cluster: hub.cluster().status(),
        sessions,
        truncated: None,
    };
    Response::Status(fit_in_a_frame(snapshot))
}

/// Keeps a status page within one frame: if it would not cross the wire (checked as the
/// client's decoder will read it, [`codec::fits`]), the longest lists are halved — sessions,
/// clients, routes, then accounts and budgets — until it does, and the page says what was
/// left out (with room for that note).
fn fit_in_a_frame(mut snapshot: StatusSnapshot) -> StatusSnapshot {
    let fits = |s: &StatusSnapshot| {
        let mut framed = ResponseFrame {
            // The longest id a frame can carry, and room for the note added below.
            id: u64::MAX,
            response: Response::Status(s.clone()),
        };
        if let Response::Status(s) = &mut framed.response {
            s.truncated = Some("x".repeat(1024));
        }
        codec::fits(&framed)
    };
    let mut left_out = Vec::new();
    while !fits(&snapshot) {
        let lists: [(&str, usize); 5] = [
            ("sessions", snapshot.sessions.len()),
            ("clients", snapshot.clients.len()),
            ("routes", snapshot.routes.len()),
            ("accounts", snapshot.accounts.len()),
            ("budgets", snapshot.budgets.len()),
        ];
        let Some(&(name, len)) = lists
            .iter()
            .filter(|(_, len)| *len > 0)
            .max_by_key(|(_, len)| *len)
        else {
            break;
        };
        let keep = len / 2;
        match name {
            "sessions" => snapshot.sessions.truncate(keep),
            "clients" => snapshot.clients.truncate(keep),
            "routes" => snapshot.routes.truncate(keep),
            "accounts" => snapshot.accounts.truncate(keep),
            _ => snapshot.budgets.truncate(keep),
        }
        left_out.push(format!("{} of {len} {name}", len - keep));
    }
    if !left_out.is_empty() {
        snapshot.truncated = Some(format!(
            "left out to fit one frame: {}",
            left_out.join(", ")
        ));
    }
    snapshot
}

fn page_of<T>(all: Vec<T>, from: usize) -> Vec<T> {
    all.into_iter().skip(from).take(STATUS_PAGE_LEN).collect()
}

/// A Claude Code session's account and budget, for `pacer statusline`.
pub fn session(hub: &Hub, query: SessionQuery) -> Response {
    Response::Session(Box::new(
        hub.read(|broker, now| broker.session_view(&query, now)),
    ))
}

pub fn register_route(hub: &Hub, request: RegisterRoute) -> Response {
    match hub.register_route(&request.upstream, &request.client) {
        Ok(info) => Response::Route(info),
        Err(refused) => error(ErrorKind::InvalidRequest, refused.to_string()),
    }
}

pub fn gateway_info(hub: &Hub) -> Response {
    Response::Gateway(hub.gateway_info().clone())
}

pub fn pause(hub: &Hub, pause: Pause) -> Response {
    if pause.model.trim().is_empty() {
        return error(ErrorKind::InvalidRequest, "the model name is empty".into());
    }
    hub.update(|broker, now| {
        let until = broker.time_base().to_instant(pause.until);
        let outputs = broker.pause(now, pause.key, &pause.model, until);
        (outputs, Response::Ack)
    })
}

/// Splits a reported outcome into what the broker settles and the parsed response headers.
/// `answer` is the API's answer itself, when the caller kept it (the gateway does): a lockout
/// replays it. Without it, the API's error shape with the reported message stands in.
pub fn settlement(
    outcome: Outcome,
    answer: Option<Answer>,
    now: SystemTime,
) -> (Settlement, RateLimitHeaders) {
    let parse = |headers: &[(String, String)]| {
        RateLimitHeaders::parse(headers.iter().map(|(n, v)| (n.as_str(), v.as_str())), now)
    };
    match outcome {
        Outcome::Success { usage, headers } => (Settlement::Success { usage }, parse(&headers)),
        Outcome::RateLimited {
            retry_after,
            headers,
            message,
        } => {
            let message = message.map(|m| bounded(&m, MAX_MESSAGE));
            let parsed = parse(&headers);
            let rejection = answer.unwrap_or_else(|| stand_in(headers, &message));
            let settlement = Settlement::RateLimited {
                retry_after,
                message,
                rejection: Some(rejection),
            };
            (settlement, parsed)
        }
        Outcome::SpendCapped { headers, message } => {
            let message = message.map(|m| bounded(&m, MAX_MESSAGE));
            let parsed = parse(&headers);
            let rejection = answer.unwrap_or_else(|| stand_in(headers, &message));
            let settlement = Settlement::SpendCapped {
                message,
                rejection: Some(rejection),
            };
            (settlement, parsed)
        }
        Outcome::Overloaded { retry_after } => (
            Settlement::Overloaded { retry_after },
            RateLimitHeaders::default(),
        ),
        Outcome::Failed => (Settlement::Failed, RateLimitHeaders::default()),
        Outcome::Unknown => (Settlement::Unknown, RateLimitHeaders::default()),
        Outcome::ClientError { status } => (
            Settlement::ClientError { status },
            RateLimitHeaders::default(),
        ),
    }
}

/// The API's 429 as a socket client reported it (no body): its error shape with the message,
/// to replay if it causes a lockout.
fn stand_in(headers: Vec<(String, String)>, message: &Option<String>) -> Answer {
    let body = serde_json::json!({
        "type": "error",
        "error": {"type": "rate_limit_error", "message": message.clone().unwrap_or_default()},
    });
    Answer::bounded(429, headers, body.to_string().into_bytes())
}

fn refused(e: BrokerError) -> Response {
    match e {
        BrokerError::UnknownLease(_) => error(ErrorKind::UnknownLease, e.to_string()),
    }
}

pub fn error(kind: ErrorKind, message: String) -> Response {
    Response::Error(ErrorReply { kind, message })
}

#[cfg(test)]
mod tests {
    use super::*;
    use pacer_protocol::status::{BudgetId, ClientStatus, DaemonStatus, SessionStatus};
    use pacer_protocol::{BudgetOwner, KeyFingerprint, Priority};
    use std::time::Duration;

    #[test]
    fn a_status_too_large_for_a_frame_is_cut_to_one_the_client_can_read() {
        let owner = BudgetOwner::Account("org-3f9a61c2d8e4".into());
        let now = SystemTime::now();
        // More than a daemon keeps (10,000 sessions): each integer claims more of the
        // decoder's limit than it takes on the wire.
        let sessions = (0..20_000u64)
            .map(|i| SessionStatus {
                id: format!("{i:08x}-6d1c-4a7e-9a52-{:012x}", i * 7919),
                owner: Some(owner.clone()),
                last_seen: now,
                calls_last_hour: i % 100,
                share_last_hour: Some(0.5),
            })
            .collect();
        let clients = (0..5_000u64)
            .map(|i| ClientStatus {
                id: format!("farm-worker-{i}"),
                priority: Priority::Batch,
                budget: Some(BudgetId {
                    owner: BudgetOwner::Key(KeyFingerprint::of("k")),
                    model_class: "sonnet".into(),
                }),
                granted: i,
                input_tokens: i,
                output_tokens: i,
                waiting: 0,
                longest_wait: Some(Duration::from_millis(i)),
                waited_total: Duration::from_millis(i),
                refused: i,
                last_seen: now,
                max_share: Some(0.1),
                window_use: Some(0.05),
                capped: i % 2 == 0,
            })
            .collect();
        let snapshot = StatusSnapshot {
            daemon_version: "test".into(),
            budgets: Vec::new(),
            accounts: Vec::new(),
            routes: Vec::new(),
            next_page: None,
            clients,
            daemon: DaemonStatus::default(),
            cluster: None,
            sessions,
            starts: Vec::new(),
            truncated: None,
        };
        let cut = fit_in_a_frame(snapshot);
        let note = cut.truncated.clone().expect("says what was left out");
        assert!(note.contains("sessions"), "{note}");
        let frame = ResponseFrame {
            id: 7,
            response: Response::Status(cut),
        };
        let bytes = codec::encode_to_vec(&frame).unwrap();
        let (read, _) = codec::decode::<ResponseFrame>(&bytes)
            .expect("the client's decoder reads it")
            .unwrap();
        let Response::Status(read) = read.response else {
            unreachable!()
        };
        assert!(read.sessions.len() >= 5_000, "{}", read.sessions.len());
    }
}
