//! The broker core under a deep queue: the cost of one settle-and-grant with 10, 1,000 and
//! 10,000 waiters must not grow linearly with the queue.
//!
//! `cargo bench -p pacer-daemon --bench broker`
//!
//! Each iteration settles the lease in flight (`max_in_flight = 1`), which grants the head of the
//! queue, and queues one new waiter so the depth stays constant: a report, a grant, an acquire.

use std::hint::black_box;
use std::time::{Duration, Instant, SystemTime};

use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};
use pacer_api::ratelimit::RateLimitHeaders;
use pacer_broker::{Broker, BrokerConfig, ConnId, LimitSet, Output, Settlement, Ticket, TimeBase};
use pacer_protocol::message::{Acquire, Response, Usage};
use pacer_protocol::{KeyFingerprint, Priority};

fn acquire(client: usize) -> Acquire {
    Acquire {
        key: KeyFingerprint::of("sk-bench"),
        model: "claude-sonnet-4-5".into(),
        priority: Priority::Normal,
        client_id: format!("client-{}", client % 100),
        input_tokens: Some(100),
        output_tokens: Some(50),
        max_tokens: Some(1024),
        deadline: Some(Duration::from_secs(3600)),
        detached_ttl: None,
        max_share_bp: None,
    }
}

fn granted(outputs: &[Output]) -> Option<pacer_protocol::message::LeaseId> {
    outputs.iter().find_map(|o| match o {
        Output::Answer {
            response: Response::Granted(g),
            ..
        } => Some(g.lease),
        _ => None,
    })
}

fn settle_and_grant(c: &mut Criterion) {
    let mut group = c.benchmark_group("settle_and_grant");
    for waiters in [10usize, 1_000, 10_000] {
        let mut config = BrokerConfig::default();
        config.limits.per_class.insert(
            "sonnet".into(),
            LimitSet {
                max_in_flight: Some(1),
                rpm: Some(1_000_000_000_000),
                itpm: Some(1_000_000_000_000),
                otpm: Some(1_000_000_000_000),
            },
        );
        let start = Instant::now();
        let now = start;
        let base = TimeBase {
            instant: now,
            wall: SystemTime::now(),
        };
        let mut broker = Broker::new(config, base, 1);
        let mut next = 0u64;
        let ticket = |next: &mut u64| {
            *next += 1;
            Ticket {
                conn: ConnId(*next % 1000),
                request: *next,
            }
        };
        let first = broker.acquire(now, ticket(&mut next), &acquire(0));
        let mut lease = granted(&first).expect("the first acquire is granted");
        for i in 0..waiters {
            broker.acquire(now, ticket(&mut next), &acquire(i));
        }
        let headers = RateLimitHeaders::default();
        let usage = Usage {
            input_tokens: 90,
            output_tokens: 40,
            ..Default::default()
        };
        let mut now = now;
        group.bench_function(BenchmarkId::from_parameter(waiters), |b| {
            b.iter(|| {
                // Time moves on, so the buckets refill as they would.
                now += Duration::from_micros(10);
                let (outputs, _) = broker
                    .report(now, lease, Settlement::Success { usage }, &headers)
                    .expect("the lease is held");
                lease =
                    granted(&outputs).unwrap_or_else(|| panic!("the head is granted: {outputs:?}"));
                let queued = broker.acquire(now, ticket(&mut next), &acquire(next as usize));
                black_box(queued);
            })
        });
    }
    group.finish();
}

criterion_group!(benches, settle_and_grant);
criterion_main!(benches);
