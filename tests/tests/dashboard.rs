//! The committed Grafana dashboard (`docs/grafana/pacer-dashboard.json`) queries only series
//! that pacerd's `/metrics` exports: every metric name in its panels' expressions is a family
//! a running daemon serves.

use std::collections::BTreeSet;
use std::time::Duration;

use pacer_tests::TestDaemon;
use pacer_tests::mock::{MockConfig, MockUpstream, Plan};
use serde_json::{Value, json};

fn exprs(value: &Value, out: &mut Vec<String>) {
    match value {
        Value::Object(map) => {
            for (key, value) in map {
                match (key.as_str(), value) {
                    ("expr" | "definition", Value::String(expr)) => out.push(expr.clone()),
                    ("query", Value::String(expr)) if expr.contains("pacer_") => {
                        out.push(expr.clone())
                    }
                    _ => exprs(value, out),
                }
            }
        }
        Value::Array(items) => items.iter().for_each(|v| exprs(v, out)),
        _ => {}
    }
}

/// The metric names an expression queries: `pacer_…` words.
fn names(expr: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut rest = expr;
    while let Some(at) = rest.find("pacer_") {
        let tail = &rest[at..];
        let end = tail
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .unwrap_or(tail.len());
        out.push(tail[..end].to_owned());
        rest = &tail[end..];
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dashboard_queries_only_series_pacerd_exports() {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../docs/grafana/pacer-dashboard.json");
    let dashboard: Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    let mut queries = Vec::new();
    exprs(&dashboard, &mut queries);
    let queried: BTreeSet<String> = queries.iter().flat_map(|e| names(e)).collect();
    assert!(queried.len() > 20, "{queried:?}");

    // A daemon with a little of everything: a subscription's windows, a client, a budget.
    let mock = MockUpstream::start(MockConfig {
        subscription: Some(Plan::default()),
        ..MockConfig::default()
    })
    .await;
    let daemon = TestDaemon::in_front_of(
        &mock.url(),
        "[limits.sonnet]\nmax_in_flight = 8\n",
        Duration::from_secs(5),
    )
    .await;
    let base = daemon.gateway_url().await;
    let http = reqwest::Client::new();
    let response = http
        .post(format!("{base}/v1/messages"))
        .header("authorization", "Bearer sk-ant-oat01-dashboard")
        .json(&json!({"model": "claude-sonnet-4-5", "max_tokens": 16,
                      "messages": [{"role": "user", "content": "hi"}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let metrics = http
        .get(format!("{base}/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let mut exported = BTreeSet::new();
    for line in metrics.lines() {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let mut words = rest.split_whitespace();
            let (name, kind) = (words.next().unwrap(), words.next().unwrap());
            match kind {
                "counter" => {
                    // The TYPE line names the family with or without `_total`, by encoder.
                    exported.insert(name.to_owned());
                    if !name.ends_with("_total") {
                        exported.insert(format!("{name}_total"));
                    }
                }
                "histogram" => {
                    for suffix in ["_bucket", "_sum", "_count"] {
                        exported.insert(format!("{name}{suffix}"));
                    }
                }
                _ => {
                    exported.insert(name.to_owned());
                }
            }
        }
    }
    let missing: Vec<&String> = queried.difference(&exported).collect();
    assert!(
        missing.is_empty(),
        "the dashboard queries {missing:?}, which /metrics does not export"
    );
}
