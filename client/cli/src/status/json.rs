//! `pacer status --json`: the documented shape scripts read.

use pacer_client::StatusSnapshot;
use pacer_protocol::BudgetOwner;
use pacer_protocol::message::{
    AccountStatus, BudgetStatus, ClientStatus, PauseCause, WindowStatus,
};
use serde_json::{Value, json};

use crate::clock::rfc3339;

/// `"key"` and `"account"` of an owner: one of them is null.
fn owner_fields(owner: &BudgetOwner) -> (Value, Value) {
    match owner {
        BudgetOwner::Key(key) => (json!(key.to_string()), Value::Null),
        BudgetOwner::Account(label) => (Value::Null, json!(label)),
    }
}

pub fn status(snapshot: &StatusSnapshot) -> Value {
    let budgets: Vec<Value> = snapshot.budgets.iter().map(budget).collect();
    let accounts: Vec<Value> = snapshot.accounts.iter().map(account).collect();
    let routes: Vec<Value> = snapshot
        .routes
        .iter()
        .map(|r| {
            json!({"id": r.id, "upstream": r.upstream, "clients": r.clients,
                   "last_used": rfc3339(Some(r.last_used))})
        })
        .collect();
    let clients: Vec<Value> = snapshot.clients.iter().map(client).collect();
    let daemon = &snapshot.daemon;
    json!({
        "daemon_version": snapshot.daemon_version,
        "daemon": {
            "started_at": rfc3339(daemon.started_at),
            "connections": daemon.connections,
            "refused_connections": daemon.refused_connections,
            "state_saves": daemon.state_saves,
        },
        "cluster": snapshot.cluster.as_ref().map(|c| json!({
            "redis": c.redis,
            "connected": c.connected,
            "daemon_id": c.daemon_id,
            "daemons": c.daemons,
            "local_share": c.local_share,
            "problem": c.problem,
        })),
        "budgets": budgets,
        "accounts": accounts,
        "routes": routes,
        "clients": clients,
        "sessions": snapshot.sessions.iter().map(|s| json!({
            "id": s.id,
            "account": s.owner.as_ref().map(ToString::to_string),
            "calls_last_hour": s.calls_last_hour,
            "share_last_hour": s.share_last_hour,
            "last_seen": rfc3339(Some(s.last_seen)),
        })).collect::<Vec<Value>>(),
        "starts": snapshot.starts.iter().map(|s| json!({
            "account": s.account.as_ref().map(ToString::to_string),
            "per_minute": s.per_minute,
            "waiting": s.waiting,
            "next_start": rfc3339(s.next_start),
            "last_wall": rfc3339(Some(s.last_wall)),
        })).collect::<Vec<Value>>(),
        "truncated": snapshot.truncated,
    })
}

fn budget(b: &BudgetStatus) -> Value {
    let (key, account) = owner_fields(&b.budget.owner);
    json!({
        "key": key,
        "account": account,
        "model_class": b.budget.model_class,
        "limits": {
            "rpm": b.limits.rpm,
            "itpm": b.limits.itpm,
            "otpm": b.limits.otpm,
            "max_in_flight": b.limits.max_in_flight,
        },
        "available": {
            "requests": b.available.requests,
            "input_tokens": b.available.input_tokens,
            "output_tokens": b.available.output_tokens,
        },
        "in_flight": b.in_flight,
        "waiting": b.waiting,
        "waiting_by_priority": {
            "interactive": b.waiting_by_priority[0],
            "normal": b.waiting_by_priority[1],
            "batch": b.waiting_by_priority[2],
        },
        "drain_seconds": b.drain_estimate.map(|d| d.as_secs_f64()),
        "paused_until": rfc3339(b.paused_until),
        "pause_reason": b.pause_reason,
        "pause_cause": b.pause_cause.map(PauseCause::as_str),
        "overloaded_until": rfc3339(b.overloaded_until),
        "granted": b.granted,
        "rate_limited": b.rate_limited,
        "throttled": {
            "per_minute": b.throttled.per_minute,
            "window": b.throttled.window,
            "spend_cap": b.throttled.spend_cap,
            "bare": b.throttled.bare,
        },
        "overloaded": b.overloaded,
        "refused": b.refused,
        "input_tokens": b.input_tokens,
        "output_tokens": b.output_tokens,
        "waits": {"count": b.waits.count(), "sum_seconds": b.waits.sum_seconds},
    })
}

fn client(c: &ClientStatus) -> Value {
    json!({
        "id": c.id,
        "priority": c.priority.to_string(),
        "budget": c.budget.as_ref().map(ToString::to_string),
        "granted": c.granted,
        "input_tokens": c.input_tokens,
        "output_tokens": c.output_tokens,
        "waiting": c.waiting,
        "longest_wait_seconds": c.longest_wait.map(|d| d.as_secs_f64()),
        "waited_seconds": c.waited_total.as_secs_f64(),
        "refused": c.refused,
        "last_seen": rfc3339(Some(c.last_seen)),
        "max_share": c.max_share,
        "window_use": c.window_use,
        "capped": c.capped,
    })
}

fn account(a: &AccountStatus) -> Value {
    let (key, account) = owner_fields(&a.owner);
    let keys: Vec<String> = a.keys.iter().map(ToString::to_string).collect();
    let windows: Vec<Value> = a.windows.iter().map(window).collect();
    let lockouts: Vec<Value> = a
        .lockouts
        .iter()
        .map(|l| json!({"model_class": l.model_class, "until": rfc3339(Some(l.until)), "reason": l.reason}))
        .collect();
    json!({
        "account": account,
        "key": key,
        "parent": a.parent.as_ref().map(ToString::to_string),
        "keys": keys,
        "unified_status": a.unified_status,
        "overage": a.overage,
        "overage_in_use": a.overage_in_use,
        "windows": windows,
        "lockouts": lockouts,
    })
}

pub fn window(w: &WindowStatus) -> Value {
    let ceilings: serde_json::Map<String, Value> = w
        .ceilings
        .iter()
        .map(|c| {
            (
                c.priority.to_string(),
                json!({"ceiling": c.ceiling, "held": c.held, "refused": c.refused}),
            )
        })
        .collect();
    json!({
        "name": w.name,
        "status": w.status,
        "utilization": w.utilization,
        "reset": rfc3339(w.reset),
        "estimated": w.estimated,
        "share": w.share,
        "ceilings": ceilings,
        "burn_per_hour": w.burn_per_hour,
        "runs_out": rfc3339(w.runs_out),
    })
}
