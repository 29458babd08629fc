//! The scripts of pauses, backoffs and lockouts: extend-only, published when news, lifted
//! together.

use super::*;

/// Pauses a budget until `now + ms` unless it already is for longer (extend-only), drains the
/// named buckets, and publishes the event when the pause is news.
///
/// KEYS: the budget's hash. ARGV: ms, the reason, the buckets to drain ('' none, 'all', or
/// indices such as '0'), the message, the channel. Returns 1 when extended.
pub static PAUSE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(&format!(
        "{REFILL}{}",
        r#"
local now = now_ms()
local h = KEYS[1]
local untl = now + math.min(tonumber(ARGV[1]), MAX_WAIT)
local drain = ARGV[3]
if drain ~= '' then
  local f = redis.call('HMGET', h, 'l0', 'l1', 'l2', 't', 'm0', 'm1', 'm2')
  local last = sane(f[4], 0, now) or now
  for k = 1, 3 do
    local lim = sane(f[4 + k], 1, MAX_LIMIT)
    if lim and (drain == 'all' or string.find(drain, tostring(k - 1), 1, true)) then
      local level = refill(sane(f[k], -lim, lim), lim, last, now)
      redis.call('HSET', h, 'l' .. (k - 1), num(math.min(level, 0)))
    end
  end
  redis.call('HSET', h, 't', now)
end
local current = sane(redis.call('HGET', h, 'p'), 0, now + MAX_WAIT)
if current and current >= untl then return 0 end
redis.call('HSET', h, 'p', untl, 'pr', ARGV[2])
redis.call('PEXPIRE', h, 86400000)
redis.call('PUBLISH', ARGV[5], ARGV[4])
return 1
"#
    ))
});

/// Sets a key that expires by itself (an overload backoff, a lockout) unless it is already set
/// for longer, and publishes the event when that is news.
///
/// KEYS: the key. ARGV: ms, the value, the message, the channel. Returns 1 when set.
pub static EXTEND_KEY: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r#"
local left = redis.call('PTTL', KEYS[1])
if left >= tonumber(ARGV[1]) then return 0 end
redis.call('SET', KEYS[1], ARGV[2], 'PX', ARGV[1])
redis.call('PUBLISH', ARGV[4], ARGV[3])
return 1
"#,
    )
});

/// Lifts a budget's pause, its class's backoff and its owner's lockouts, and publishes it.
///
/// KEYS: the budget's hash, the overload key, the lockout keys. ARGV: the message, the channel.
pub static LIFT: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r#"
redis.call('HDEL', KEYS[1], 'p', 'pr')
redis.call('DEL', KEYS[2], KEYS[3], KEYS[4])
redis.call('PUBLISH', ARGV[2], ARGV[1])
return 1
"#,
    )
});
