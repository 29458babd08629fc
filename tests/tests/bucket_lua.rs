//! The token bucket is written twice: in Rust (`pacer_broker::Bucket`, what one daemon keeps)
//! and in Lua (the scripts that keep shared budgets in Redis). This runs the scripts' own
//! functions (`refill`, `debit`, `credit`, `give_back`, from the prelude every script starts
//! with) on a real `redis-server`, and the Rust bucket, through the same random sequences of
//! takes, charges, refunds and refills at the same instants, and checks that they hold the same
//! level after every step. The scripts read the clock with Redis `TIME`; here the instants are
//! passed in, to both.
#![cfg(unix)]

use std::time::{Duration, Instant};

use pacer_broker::Bucket;
use pacer_daemon::cluster::scripts::PRELUDE;
use pacer_tests::redis::RedisServer;
use proptest::prelude::*;

/// Applies `ARGV[1]` (the limit) and then, four arguments each, steps of (instant in ms, op,
/// amount, taken_before), returning the level after each step.
const STEPS: &str = r#"
local lim = tonumber(ARGV[1])
local level, last, tk = nil, 0, 0
local out = {}
for i = 2, #ARGV, 4 do
  local now, op, amount = tonumber(ARGV[i]), ARGV[i + 1], tonumber(ARGV[i + 2])
  level = refill(level, lim, last, now)
  if now > last then last = now end
  if op == 'take' then
    level = debit(level, amount, lim)
    tk = tk + amount
  elseif op == 'charge' then
    level = debit(level, amount, lim)
  elseif op == 'credit' then
    level = credit(level, amount, lim)
  elseif op == 'give_back' then
    level = give_back(level, amount, lim, tk, tonumber(ARGV[i + 3]))
  end
  out[#out + 1] = num(level)
end
return out
"#;

#[derive(Debug, Clone, Copy)]
enum Op {
    Take,
    Charge,
    Credit,
    GiveBack,
}

impl Op {
    fn name(self) -> &'static str {
        match self {
            Op::Take => "take",
            Op::Charge => "charge",
            Op::Credit => "credit",
            Op::GiveBack => "give_back",
        }
    }
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        Just(Op::Take),
        Just(Op::Charge),
        Just(Op::Credit),
        Just(Op::GiveBack)
    ]
}

/// Runs `steps` (ms since the last step, op, amount, which earlier total of takes a give-back
/// refers to) through the Rust bucket; returns the levels and the arguments for the script.
fn rust_levels(limit: u64, steps: &[(u64, Op, u64, f64)]) -> (Vec<f64>, Vec<String>) {
    let start = Instant::now();
    let mut bucket = Bucket::full(limit, start);
    let mut args = vec![limit.to_string()];
    let mut levels = Vec::new();
    let mut at_ms = 0;
    for &(gap_ms, op, amount, before_fraction) in steps {
        at_ms += gap_ms;
        let now = start + Duration::from_millis(at_ms);
        let taken_before = (bucket.taken() * before_fraction).floor();
        match op {
            Op::Take => bucket.take(amount, now),
            Op::Charge => bucket.charge(amount, now),
            Op::Credit => bucket.give(amount, now),
            Op::GiveBack => bucket.give_back(amount, taken_before, now),
        }
        levels.push(bucket.level_at(now));
        args.extend([
            at_ms.to_string(),
            op.name().to_owned(),
            amount.to_string(),
            taken_before.to_string(),
        ]);
    }
    (levels, args)
}

fn lua_levels(server: &RedisServer, args: &[String]) -> Vec<f64> {
    let script = format!("{PRELUDE}{STEPS}");
    let mut cli: Vec<&str> = vec!["EVAL", &script, "0"];
    cli.extend(args.iter().map(String::as_str));
    let out = server.cli(&cli);
    out.lines()
        .map(|line| {
            line.trim()
                .parse()
                .unwrap_or_else(|_| panic!("the script answered {out}"))
        })
        .collect()
}

#[test]
#[cfg_attr(
    not(pacer_redis),
    ignore = "needs redis-server (apt-get install redis-server)"
)]
fn the_lua_and_rust_buckets_hold_the_same_levels() {
    let server = RedisServer::start();
    let config = ProptestConfig {
        cases: 200,
        failure_persistence: None,
        ..ProptestConfig::default()
    };
    let step = (0u64..90_000, op(), 0u64..300_000, 0.0f64..=1.0);
    proptest!(config, |(limit in 1u64..200_000, steps in prop::collection::vec(step, 1..40))| {
        let (rust, args) = rust_levels(limit, &steps);
        let lua = lua_levels(&server, &args);
        prop_assert_eq!(lua.len(), rust.len());
        for (i, (l, r)) in lua.iter().zip(&rust).enumerate() {
            let tolerance = 1e-6 * (limit as f64).max(1.0);
            prop_assert!(
                (l - r).abs() <= tolerance,
                "step {} ({:?}): Lua {} vs Rust {} (limit {})", i, steps[i], l, r, limit
            );
        }
    });
}
