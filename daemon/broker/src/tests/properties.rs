//! Properties of the broker over generated histories: acquires, reports of every kind (real
//! usage, 429s with and without a usable wait, failures), releases, disconnects, administrator
//! pauses and the clock moving on, in any order. Whatever happens:
//!
//! - calls that went out (granted and not given back) never exceed what a token bucket of the
//!   limit allows over any window: `rpm × (1 + window / 60 s)`;
//! - nothing is granted while the budget is paused (until an administrator lifts the pause);
//! - no more calls are in flight than `max_in_flight`.

use proptest::prelude::*;

use super::*;

#[derive(Debug, Clone)]
enum Op {
    Acquire {
        conn: u64,
    },
    /// Move the clock on by this many tenths of a second.
    Wait(u16),
    Success {
        pick: usize,
        input: u64,
        output: u64,
    },
    RateLimited {
        pick: usize,
        retry_after: Option<u16>,
    },
    Failed {
        pick: usize,
    },
    Release {
        pick: usize,
    },
    Disconnect {
        conn: u64,
    },
    Pause {
        tenths: u16,
    },
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => (0u64..6).prop_map(|conn| Op::Acquire { conn }),
        3 => (0u16..200).prop_map(Op::Wait),
        2 => (any::<usize>(), 0u64..5_000, 0u64..2_000)
            .prop_map(|(pick, input, output)| Op::Success { pick, input, output }),
        1 => (any::<usize>(), prop::option::of(0u16..40))
            .prop_map(|(pick, retry_after)| Op::RateLimited { pick, retry_after }),
        1 => any::<usize>().prop_map(|pick| Op::Failed { pick }),
        1 => any::<usize>().prop_map(|pick| Op::Release { pick }),
        1 => (0u64..6).prop_map(|conn| Op::Disconnect { conn }),
        1 => (0u16..300).prop_map(|tenths| Op::Pause { tenths }),
    ]
}

/// What the history did, as the checks need it.
#[derive(Default)]
struct Record {
    /// When each call that went out was granted (released ones are taken off).
    sent: Vec<(Duration, LeaseId)>,
    /// Stretches during which the budget was paused, from the status after each change.
    paused: Vec<(Duration, Duration)>,
}

fn run(limits: LimitSet, ops: &[Op]) -> (Harness, Record) {
    let mut h = Harness::with_limits("sonnet", limits);
    let mut record = Record::default();
    // Leases held, with their connection.
    let mut held: Vec<(LeaseId, u64)> = Vec::new();
    let mut seen_answers = 0;
    for op in ops {
        match *op {
            Op::Acquire { conn } => {
                h.acquire(conn, |r| {
                    r.input_tokens = Some(500);
                    r.output_tokens = Some(200);
                });
            }
            Op::Wait(tenths) => h.run_until(h.elapsed() + secs(f64::from(tenths) / 10.0)),
            Op::Success {
                pick,
                input,
                output,
            } if !held.is_empty() => {
                let (lease, _) = held.remove(pick % held.len());
                h.success(lease, input, output);
            }
            Op::RateLimited { pick, retry_after } if !held.is_empty() => {
                let (lease, _) = held.remove(pick % held.len());
                let settlement = Settlement::RateLimited {
                    retry_after: retry_after.map(|s| secs(f64::from(s))),
                    message: None,
                    rejection: None,
                };
                h.report(lease, settlement);
            }
            Op::Failed { pick } if !held.is_empty() => {
                let (lease, _) = held.remove(pick % held.len());
                h.report(lease, Settlement::Failed);
            }
            Op::Release { pick } if !held.is_empty() => {
                let (lease, _) = held.remove(pick % held.len());
                let out = h.broker.release(h.now, lease).expect("held");
                h.collect(out);
                record.sent.retain(|(_, l)| *l != lease);
            }
            Op::Disconnect { conn } => {
                held.retain(|(_, c)| *c != conn);
                let out = h.broker.disconnect(h.now, ConnId(conn));
                h.collect(out);
            }
            Op::Pause { tenths } => {
                // An administrator's pause replaces the one in force (`--for 0` lifts it).
                let now = h.elapsed();
                for (_, end) in &mut record.paused {
                    *end = (*end).min(now);
                }
                let until = h.now + secs(f64::from(tenths) / 10.0);
                let out = h.broker.pause(h.now, key("k"), SONNET, until);
                h.collect(out);
            }
            _ => {}
        }
        // New grants: note them, and hold them.
        for (at, ticket, response) in &h.answers[seen_answers..] {
            if let Response::Granted(granted) = response {
                record.sent.push((*at, granted.lease));
                held.push((granted.lease, ticket.conn.0));
            }
        }
        seen_answers = h.answers.len();
        if let Some(status) = h
            .broker
            .status(h.now)
            .into_iter()
            .find(|s| s.budget.model_class == "sonnet")
        {
            if let Some(until) = status.paused_until {
                let until = h.broker.time_base().to_instant(until) - h.t0;
                record.paused.push((h.elapsed(), until));
            }
            if let Some(cap) = limits.max_in_flight {
                assert!(
                    status.in_flight <= cap,
                    "{} in flight, cap {cap}",
                    status.in_flight
                );
            }
        }
    }
    (h, record)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(300))]

    #[test]
    fn grants_never_exceed_the_bucket_and_never_come_during_a_pause(
        rpm in 1u64..40,
        max_in_flight in prop::option::of(1u32..6),
        ops in prop::collection::vec(op(), 1..160),
    ) {
        let limits = LimitSet { rpm: Some(rpm), max_in_flight, ..Default::default() };
        let (_, record) = run(limits, &ops);
        let times: Vec<f64> = record.sent.iter().map(|(at, _)| at.as_secs_f64()).collect();
        for i in 0..times.len() {
            for j in i..times.len() {
                let calls = (j - i + 1) as f64;
                let allowed = rpm as f64 * (1.0 + (times[j] - times[i]) / 60.0);
                prop_assert!(
                    calls <= allowed + 1e-6,
                    "{calls} calls between {:.3}s and {:.3}s; a bucket of {rpm}/min allows {allowed:.3}",
                    times[i], times[j]
                );
            }
        }
        for (at, _) in &record.sent {
            for (from, until) in &record.paused {
                prop_assert!(
                    !(at > from && at < until),
                    "granted at {at:?}, inside a pause from {from:?} to {until:?}"
                );
            }
        }
    }
}

/// The case the property found: two permits taken at once and given back unused half a minute
/// later, after the refill went to another call. Without them the bucket (2 a minute) would
/// have been full all along and let 2 calls through at 30 s, not 3.
#[test]
fn permits_given_back_late_do_not_count_the_refill_twice() {
    let mut h = Harness::with_limits("sonnet", rpm(2));
    let early: Vec<_> = (0..2).map(|i| h.acquire(i, |_| {})).collect();
    let waiting: Vec<_> = (0..3).map(|i| h.acquire(10 + i, |_| {})).collect();
    h.run_until(secs(30.0));
    assert_eq!(h.granted_at(waiting[0]), Some(secs(30.0)));
    for ticket in early {
        let lease = h.lease(ticket).unwrap();
        let out = h.broker.release(h.now, lease).unwrap();
        h.collect(out);
    }
    // One more call goes at 30 s (2 in all at that moment), not two.
    assert_eq!(h.granted_at(waiting[1]), Some(secs(30.0)));
    assert_eq!(h.granted_at(waiting[2]), None);
}
