//! Prometheus metrics, read from the hub at each scrape (`GET /metrics` on the gateway's
//! address): per budget, per subscription window, per client (the busiest few by name, the rest
//! as `other`), and the process. Owners are account labels or key fingerprints — never a key.
//!
//! Encoded by `prometheus-client` (a collector: nothing is kept between scrapes beyond what the
//! broker already counts) in the Prometheus text format, version 0.0.4.

use std::sync::Arc;
use std::time::SystemTime;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric, NoLabelSet};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::registry::Registry;

use pacer_protocol::Throttle;
use pacer_protocol::message::{
    AccountStatus, BudgetStatus, ClientStatus, ClusterStatus, DaemonStatus,
};
use pacer_protocol::status::WAIT_BUCKETS;

use crate::hub::Hub;

mod clients;
mod windows;

/// The `Content-Type` of the answer.
pub const CONTENT_TYPE: &str = prometheus_client::encoding::prometheus_text::CONTENT_TYPE;
/// How many clients get a label of their own; the others are summed as `other`.
pub const TOP_CLIENTS: usize = 20;
/// How many budgets (and accounts' windows) get series of their own: the busiest. A daemon
/// tracking 10,000 budgets would otherwise answer every scrape with tens of megabytes;
/// `pacer_budgets` says how many there are in all.
pub const TOP_BUDGETS: usize = 200;

/// Renders the metrics as of now; `buffered` is what the gateway's request bodies hold.
pub fn render(hub: &Arc<Hub>, buffered: usize) -> String {
    let mut registry = Registry::default();
    registry.register_collector(Box::new(Scrape {
        hub: hub.clone(),
        buffered,
    }));
    let mut out = String::new();
    prometheus_client::encoding::prometheus_text::encode(&mut out, &registry)
        .expect("writing to a String cannot fail");
    out
}

#[derive(Debug)]
struct Scrape {
    hub: Arc<Hub>,
    buffered: usize,
}

impl std::fmt::Debug for Hub {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Hub")
    }
}

/// What one scrape reads, all at once.
struct Snapshot {
    /// The busiest [`TOP_BUDGETS`] budgets.
    budgets: Vec<BudgetStatus>,
    /// How many budgets there are in all.
    all_budgets: usize,
    /// Bytes the gateway's request bodies hold.
    buffered: usize,
    /// The shared store, when budgets are shared through Redis.
    cluster: Option<ClusterStatus>,
    accounts: Vec<AccountStatus>,
    clients: Vec<ClientStatus>,
    daemon: DaemonStatus,
    now: SystemTime,
}

impl Collector for Scrape {
    fn encode(&self, mut encoder: DescriptorEncoder) -> std::fmt::Result {
        let (budgets, accounts, clients) = self.hub.read(|broker, now| {
            (
                broker.status(now),
                broker.accounts(now),
                broker.clients(now),
            )
        });
        let all_budgets = budgets.len();
        let snapshot = Snapshot {
            budgets: busiest(budgets),
            accounts: accounts
                .into_iter()
                .filter(|a| !a.windows.is_empty())
                .take(TOP_BUDGETS)
                .collect(),
            all_budgets,
            buffered: self.buffered,
            cluster: self.hub.cluster().status(),
            clients,
            daemon: self.hub.daemon_status(),
            now: SystemTime::now(),
        };
        encode_budgets(&mut encoder, &snapshot)?;
        windows::encode(&mut encoder, &snapshot)?;
        clients::encode(&mut encoder, &snapshot)?;
        encode_process(&mut encoder, &snapshot)
    }
}

/// The [`TOP_BUDGETS`] busiest budgets: those with calls waiting or in flight, or paused, first,
/// then those that granted most.
fn busiest(mut budgets: Vec<BudgetStatus>) -> Vec<BudgetStatus> {
    if budgets.len() > TOP_BUDGETS {
        budgets.sort_by_key(|b| {
            let busy = b.waiting + b.in_flight + u32::from(b.paused_until.is_some());
            std::cmp::Reverse((busy, b.granted))
        });
        budgets.truncate(TOP_BUDGETS);
        budgets.sort_by(|a, b| {
            (a.budget.owner.to_string(), &a.budget.model_class)
                .cmp(&(b.budget.owner.to_string(), &b.budget.model_class))
        });
    }
    budgets
}

type Labels = Vec<(&'static str, String)>;

fn budget_labels(b: &BudgetStatus) -> Labels {
    vec![
        ("owner", b.budget.owner.to_string()),
        ("model_class", b.budget.model_class.clone()),
    ]
}

fn with(mut labels: Labels, name: &'static str, value: &str) -> Labels {
    labels.push((name, value.to_owned()));
    labels
}

/// One gauge family: a value per label set.
fn gauges(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    samples: impl IntoIterator<Item = (Labels, f64)>,
) -> std::fmt::Result {
    let mut family = encoder.encode_descriptor(name, help, None, MetricType::Gauge)?;
    for (labels, value) in samples {
        ConstGauge::new(value).encode(family.encode_family(&labels)?)?;
    }
    Ok(())
}

/// One counter family (the name without `_total`, which the encoder adds).
fn counters(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    samples: impl IntoIterator<Item = (Labels, f64)>,
) -> std::fmt::Result {
    let mut family = encoder.encode_descriptor(name, help, None, MetricType::Counter)?;
    for (labels, value) in samples {
        ConstCounter::new(value).encode(family.encode_family(&labels)?)?;
    }
    Ok(())
}

const KINDS: [&str; 3] = ["requests", "input_tokens", "output_tokens"];

fn encode_budgets(encoder: &mut DescriptorEncoder, s: &Snapshot) -> std::fmt::Result {
    let budgets = &s.budgets;
    let per_kind = |values: fn(&BudgetStatus) -> [Option<f64>; 3]| {
        budgets.iter().flat_map(move |b| {
            KINDS
                .iter()
                .zip(values(b))
                .filter_map(move |(kind, value)| {
                    Some((with(budget_labels(b), "kind", kind), value?))
                })
        })
    };
    gauges(
        encoder,
        "pacer_budget_limit_per_minute",
        "The limit in force (configured, else learned from response headers)",
        per_kind(|b| [b.limits.rpm, b.limits.itpm, b.limits.otpm].map(|l| l.map(|l| l as f64))),
    )?;
    gauges(
        encoder,
        "pacer_budget_available",
        "What the bucket holds now (negative while in debt)",
        per_kind(|b| {
            let a = b.available;
            [a.requests, a.input_tokens, a.output_tokens].map(|l| l.map(|l| l as f64))
        }),
    )?;
    gauges(
        encoder,
        "pacer_budget_max_in_flight",
        "The cap on calls at once, where one is configured",
        budgets
            .iter()
            .filter_map(|b| Some((budget_labels(b), f64::from(b.limits.max_in_flight?)))),
    )?;
    gauges(
        encoder,
        "pacer_budget_in_flight",
        "Calls granted and not yet settled",
        budgets
            .iter()
            .map(|b| (budget_labels(b), f64::from(b.in_flight))),
    )?;
    gauges(
        encoder,
        "pacer_budget_waiting",
        "Acquires waiting in the queue, per priority",
        budgets.iter().flat_map(|b| {
            ["interactive", "normal", "batch"]
                .into_iter()
                .zip(b.waiting_by_priority)
                .map(|(priority, n)| (with(budget_labels(b), "priority", priority), f64::from(n)))
        }),
    )?;
    let pause_left = |b: &BudgetStatus| {
        b.paused_until
            .and_then(|until| until.duration_since(s.now).ok())
            .map_or(0.0, |left| left.as_secs_f64())
    };
    gauges(
        encoder,
        "pacer_budget_paused",
        "1 while every peer waits out a 429, a manual pause or a lockout",
        budgets
            .iter()
            .map(|b| (budget_labels(b), f64::from(u8::from(pause_left(b) > 0.0)))),
    )?;
    gauges(
        encoder,
        "pacer_budget_pause_remaining_seconds",
        "Seconds until the pause ends (0 when not paused)",
        budgets.iter().map(|b| (budget_labels(b), pause_left(b))),
    )?;
    let count = |name, help, value: fn(&BudgetStatus) -> u64, encoder: &mut DescriptorEncoder| {
        counters(
            encoder,
            name,
            help,
            budgets.iter().map(|b| (budget_labels(b), value(b) as f64)),
        )
    };
    count(
        "pacer_budget_grants",
        "Permits granted",
        |b| b.granted,
        encoder,
    )?;
    counters(
        encoder,
        "pacer_budget_upstream_429",
        "429 answers from the API, by kind: per-minute (every peer pauses), window (a spent \
         subscription window: locked out), spend-cap, bare (the request alone was throttled)",
        budgets.iter().flat_map(|b| {
            Throttle::ALL.map(|kind| {
                let labels = with(budget_labels(b), "kind", kind.as_str());
                (labels, b.throttled.get(kind) as f64)
            })
        }),
    )?;
    count(
        "pacer_budget_upstream_529",
        "529 (overloaded) answers from the API",
        |b| b.overloaded,
        encoder,
    )?;
    count(
        "pacer_budget_refused",
        "Acquires refused or timed out by pacer itself",
        |b| b.refused,
        encoder,
    )?;
    counters(
        encoder,
        "pacer_budget_tokens",
        "Tokens settled calls used (input as counted against the limit)",
        budgets.iter().flat_map(|b| {
            [("input", b.input_tokens), ("output", b.output_tokens)]
                .map(|(kind, n)| (with(budget_labels(b), "kind", kind), n as f64))
        }),
    )?;
    let mut family = encoder.encode_descriptor(
        "pacer_budget_queue_wait_seconds",
        "How long granted acquires waited in the queue",
        None,
        MetricType::Histogram,
    )?;
    for b in budgets {
        let counts = &b.waits.counts;
        let buckets: Vec<(f64, u64)> = WAIT_BUCKETS
            .iter()
            .copied()
            .chain([f64::INFINITY])
            .zip(counts.iter().copied().chain(std::iter::repeat(0)))
            .collect();
        let labels = budget_labels(b);
        family
            .encode_family(&labels)?
            .encode_histogram::<NoLabelSet>(b.waits.sum_seconds, b.waits.count(), &buckets, None)?;
    }
    Ok(())
}

fn encode_process(encoder: &mut DescriptorEncoder, s: &Snapshot) -> std::fmt::Result {
    let d = &s.daemon;
    let uptime = d
        .started_at
        .and_then(|at| s.now.duration_since(at).ok())
        .map_or(0.0, |up| up.as_secs_f64());
    let none = || Vec::new();
    gauges(
        encoder,
        "pacer_connections",
        "Socket connections open now",
        [(none(), f64::from(d.connections))],
    )?;
    gauges(
        encoder,
        "pacer_uptime_seconds",
        "Seconds since pacerd started",
        [(none(), uptime)],
    )?;
    gauges(
        encoder,
        "pacer_budgets",
        "Budgets (account × model class) pacerd tracks; the busiest have series of their own",
        [(none(), s.all_budgets as f64)],
    )?;
    gauges(
        encoder,
        "pacer_clients",
        "Clients seen in the last 10 minutes",
        [(none(), s.clients.len() as f64)],
    )?;
    gauges(
        encoder,
        "pacer_gateway_buffered_bytes",
        "Bytes the gateway's request bodies hold now (bounded by [gateway] max_buffered)",
        [(none(), s.buffered as f64)],
    )?;
    counters(
        encoder,
        "pacer_state_saves",
        "Times the state file was written",
        [(none(), d.state_saves as f64)],
    )?;
    counters(
        encoder,
        "pacer_refused_connections",
        "Connections and requests turned away before reaching a budget",
        [(none(), d.refused_connections as f64)],
    )?;
    // The families are there without Redis too (with no samples), so that a dashboard's queries
    // always name series pacerd has.
    let cluster = |value: fn(&ClusterStatus) -> f64| {
        s.cluster
            .iter()
            .map(move |c| (vec![("redis", c.redis.clone())], value(c)))
    };
    gauges(
        encoder,
        "pacer_cluster_connected",
        "1 while Redis answers (budgets are shared), 0 while this daemon serves alone",
        cluster(|c| f64::from(u8::from(c.connected))),
    )?;
    gauges(
        encoder,
        "pacer_cluster_daemons",
        "Daemons seen sharing the budgets through Redis (this one included)",
        cluster(|c| f64::from(c.daemons)),
    )?;
    gauges(
        encoder,
        "pacer_cluster_local_share",
        "While Redis is away: the share of every limit this daemon serves from",
        cluster(|c| c.local_share.unwrap_or(0.0)),
    )?;
    gauges(
        encoder,
        "pacer_info",
        "pacerd's version",
        [(vec![("version", env!("CARGO_PKG_VERSION").to_owned())], 1.0)],
    )?;
    Ok(())
}
