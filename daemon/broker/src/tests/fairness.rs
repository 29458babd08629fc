//! Fair by cost, on the fake clock: clients whose calls differ in size by a thousand times
//! share a budget's limit by what their calls cost of it (see `queue`).
//!
//! - Clients that keep the queue busy each get an equal share of the limit over time: over
//!   five minutes, every one is within two of the largest calls of the mean.
//! - A client's call waits at most until its share has come round (every client served as
//!   much as the call costs) and one call of every client, a quarter more for the calls that go
//!   out of turn.
//! - Nothing is served past the limit: over any window, what was granted is within what a
//!   bucket of the limit allows (a full bucket, its refill, and one call in debt).
//! - Small calls at a steady pace never wait behind large ones at the same priority.

use proptest::prelude::*;

use super::*;

/// A client that keeps `queued` calls of `size` input tokens waiting, reporting each as it is
/// granted (its usage what it reserved), and the record of what it got.
struct Client {
    size: u64,
    /// Its calls waiting: ticket and when it asked.
    waiting: Vec<(Ticket, Duration)>,
    granted_tokens: u64,
    /// Every grant: when, and how long it waited.
    grants: Vec<(Duration, Duration)>,
}

/// Runs `clients` (sizes, each keeping `queued` calls waiting, asking again the moment one is
/// granted) against an input-token limit of `itpm`, its bucket spent, for `minutes`, from
/// wakeup to wakeup.
fn run(itpm: u64, sizes: &[u64], queued: usize, minutes: u64) -> Vec<Client> {
    let mut h = Harness::with_limits(
        "sonnet",
        LimitSet {
            itpm: Some(itpm),
            ..Default::default()
        },
    );
    let mut clients: Vec<Client> = sizes
        .iter()
        .map(|&size| Client {
            size,
            waiting: Vec::new(),
            granted_tokens: 0,
            grants: Vec::new(),
        })
        .collect();
    // The bucket is spent when they start: what they get is what they share, not the first
    // come's pick of a full bucket.
    let spend = h.acquire(999, |r| {
        r.input_tokens = Some(itpm);
        r.output_tokens = Some(0);
    });
    h.success(h.lease(spend).expect("a full bucket"), itpm, 0);
    h.answers.clear();
    let end = h.t0 + secs(60.0 * minutes as f64);
    let mut answers = std::collections::HashMap::new();
    loop {
        for (i, client) in clients.iter_mut().enumerate() {
            while client.waiting.len() < queued {
                let size = client.size;
                let ticket = h.acquire(i as u64, |r| {
                    r.input_tokens = Some(size);
                    r.output_tokens = Some(0);
                });
                client.waiting.push((ticket, h.elapsed()));
            }
        }
        // The answers so far, taken out of the harness (which looks them up one by one).
        for (at, ticket, response) in h.answers.drain(..) {
            if let Response::Granted(granted) = response {
                answers.insert(ticket, (at, granted.lease));
            }
        }
        let mut granted = false;
        for client in &mut clients {
            let mut still = Vec::new();
            for (ticket, asked) in std::mem::take(&mut client.waiting) {
                match answers.remove(&ticket) {
                    Some((at, lease)) => {
                        granted = true;
                        client.granted_tokens += client.size;
                        client.grants.push((at, at - asked));
                        h.success(lease, client.size, 0);
                    }
                    None => still.push((ticket, asked)),
                }
            }
            client.waiting = still;
        }
        if granted {
            // Ask again at once.
            continue;
        }
        match h.broker.next_wakeup(h.now) {
            Some(wake) if wake <= end => {
                h.now = wake.max(h.now);
                let out = h.broker.tick(h.now);
                h.collect(out);
            }
            _ => break,
        }
    }
    clients
}

/// Whether the grants (time, tokens), sorted, stay within a bucket of `itpm` over every window
/// of `window`: a full bucket, its refill, and `debt` more.
fn within_the_limit(grants: &[(Duration, u64)], itpm: u64, window: Duration, debt: f64) -> bool {
    let rate = itpm as f64 / 60.0;
    let mut prefix = vec![0u64];
    for (_, size) in grants {
        prefix.push(prefix.last().unwrap() + size);
    }
    (0..grants.len()).all(|i| {
        let end = grants.partition_point(|(at, _)| *at <= grants[i].0 + window);
        let sum = prefix[end] - prefix[i];
        sum as f64 <= itpm as f64 + rate * window.as_secs_f64() + debt
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(12))]

    #[test]
    fn clients_of_different_sizes_share_the_limit_and_never_wait_long(
        sizes in prop::collection::vec(prop::sample::select(vec![20u64, 200, 2_000, 20_000]), 2..=5),
        queued in 1usize..=2,
    ) {
        let itpm = 60_000u64;
        let rate = itpm as f64 / 60.0;
        let clients = run(itpm, &sizes, queued, 5);
        let largest = *sizes.iter().max().unwrap() as f64;
        let total: u64 = clients.iter().map(|c| c.granted_tokens).sum();
        let mean = total as f64 / clients.len() as f64;
        for c in &clients {
            prop_assert!(
                (c.granted_tokens as f64 - mean).abs() <= 2.0 * largest,
                "size {} got {} tokens, mean {mean} ({sizes:?}, {queued} queued)",
                c.size,
                c.granted_tokens
            );
        }
        // The limit: at most a full bucket, the refill, and one call in debt, over any window.
        let mut grants: Vec<(Duration, u64)> = clients
            .iter()
            .flat_map(|c| c.grants.iter().map(move |(at, _)| (*at, c.size)))
            .collect();
        grants.sort();
        for window in [0.0, 1.0, 10.0, 60.0, 300.0] {
            prop_assert!(within_the_limit(&grants, itpm, secs(window), largest), "{window} s");
        }
        // A call waits at most for its client's share of the limit to come round — every
        // client as much as its call costs — and for one call of every client (start-time
        // fair queueing's delay bound), a quarter more for calls out of turn, times the calls
        // its client has queued.
        let k = sizes.len() as f64;
        let every: u64 = sizes.iter().sum();
        for c in &clients {
            let bound =
                1.25 * (k * c.size as f64 + every as f64) / rate * queued as f64 + 1.0;
            for (_, waited) in &c.grants {
                prop_assert!(
                    waited.as_secs_f64() <= bound,
                    "a call of {} waited {waited:?} (bound {bound} s, {sizes:?})",
                    c.size
                );
            }
        }
    }
}

#[test]
fn small_calls_at_a_steady_pace_never_wait_behind_large_ones() {
    // The scenario: 100k input tokens a minute, ten sessions of ~29k-token calls that
    // keep asking, two sessions of 22-token calls once a second, all at normal priority.
    let mut h = Harness::with_limits(
        "sonnet",
        LimitSet {
            itpm: Some(100_000),
            ..Default::default()
        },
    );
    let mut large: Vec<Option<Ticket>> = vec![None; 10];
    let mut large_done = [0u32; 10];
    let mut small_waits = Vec::new();
    let mut small: Vec<(Ticket, Duration)> = Vec::new();
    let end = secs(300.0);
    let mut next_small = Duration::ZERO;
    while h.elapsed() < end {
        for (i, slot) in large.iter_mut().enumerate() {
            match slot {
                Some(ticket) if h.granted_at(*ticket).is_some() => {
                    let lease = h.lease(*ticket).unwrap();
                    h.success(lease, 29_000, 0);
                    large_done[i] += 1;
                    *slot = None;
                }
                Some(_) => {}
                None => {
                    *slot = Some(h.acquire(100 + i as u64, |r| {
                        r.input_tokens = Some(29_000);
                        r.output_tokens = Some(0);
                    }));
                }
            }
        }
        if h.elapsed() >= next_small {
            for conn in [1, 2] {
                let ticket = h.acquire(conn, |r| {
                    r.input_tokens = Some(22);
                    r.output_tokens = Some(0);
                });
                small.push((ticket, h.elapsed()));
            }
            next_small += secs(1.0);
        }
        small.retain(|&(ticket, asked)| match h.granted_at(ticket) {
            Some(at) => {
                small_waits.push(at - asked);
                false
            }
            None => true,
        });
        h.run_until(h.elapsed() + secs(0.05));
    }
    let slowest = small_waits.iter().max().copied().unwrap_or_default();
    assert!(
        slowest <= secs(1.0),
        "the slowest small call waited {slowest:?}"
    );
    assert!(
        small_waits.len() >= 590,
        "{} small calls",
        small_waits.len()
    );
    // Every large session is served, and about equally: 100k a minute over 5 minutes is
    // about 17 calls of 29k each, between ten sessions.
    assert!(large_done.iter().all(|&n| n >= 1), "{large_done:?}");
    let (least, most) = (
        large_done.iter().min().unwrap(),
        large_done.iter().max().unwrap(),
    );
    assert!(most - least <= 1, "{large_done:?}");
}
