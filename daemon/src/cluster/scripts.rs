//! The Lua scripts that keep the shared budgets in Redis, each one atomic, all on Redis's own
//! clock (`TIME`), so that the hosts' clocks do not matter. Loaded once and called by SHA
//! (`EVALSHA`, loading them again if Redis was restarted).
//!
//! A budget is a hash: `l0 l1 l2` the levels of its requests, input-token and output-token
//! buckets, `t` when they were last brought up to date (ms), `m0 m1 m2` their limits per
//! minute, `mf` its in-flight cap, `tk` every request ever taken (bounds a refund), `p` and `pr`
//! its pause's end and reason, `pb` when its first call went out, `mg` when it merged into its
//! account's (a key's). Beside it, a sorted set of the leases holding its in-flight
//! slots, each scored with when it expires unless renewed, and the budget's turns: a sorted set
//! of the daemons refused capacity, scored with when they were first refused, and a hash of when
//! each is due back and for what cost, and of what each has had of the budget lately.

use std::sync::LazyLock;

use redis::Script;

/// How late a daemon refused capacity may come back and still have its turn (ms): its retry's
/// jitter and a round trip, with room to spare.
pub const TURN_GRACE_MS: u64 = 250;

/// How quickly what a daemon had of a budget is forgotten, for its turns (ms).
pub const TURN_HALF_LIFE_MS: u64 = 60_000;

mod pauses;
mod prelude;

pub use pauses::{EXTEND_KEY, LIFT, PAUSE};
pub use prelude::PRELUDE;
use prelude::REFILL;

/// Takes a cost from one budget, or a workspace's and its organization's, all or none.
///
/// Daemons take turns: one refused capacity joins the budget's turns. When capacity is not
/// enough for two, it is kept for the daemon due back now (within [`TURN_GRACE_MS`] of when it
/// was told) that has had least of the budget lately (its takes, each worth its share of the
/// tightest limit, halving every [`TURN_HALF_LIFE_MS`]), the first refused among equals. So with
/// the same demand, daemons get the same share, whoever's host or network is quicker, and a
/// burst won by the quickest is made up afterwards; a daemon that does not come back loses its
/// turn.
///
/// KEYS: the class's overload key, the owner's lockout key (every class), the owner's lockout
/// key for the class, then per budget its hash and its leases, then the first budget's turns
/// (the sorted set, and a hash of `d:<daemon>` when each is due back and for what cost, and
/// `g:<daemon>` what each has had lately).
/// ARGV: the number of budgets, the cost (requests, input, output), the lease's name, the
/// lease's time to live (ms), then per budget the limits this daemon knows (0 for unknown) and
/// its in-flight cap (0 for none), then this daemon's id, the turns' grace and half-life (ms).
/// Returns `{'ok', taken_before, l0, l1, l2, m0, m1, m2}`, `{'wait', ms, m0, m1, m2}` or
/// `{'locked', ms, reason}` (levels and limits as strings, '' where there is none).
pub static TAKE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(&format!(
        "{REFILL}{}",
        r#"
local now = now_ms()
for i = 2, 3 do
  local left = redis.call('PTTL', KEYS[i])
  if left > 0 then
    local reason = string.sub(redis.call('GET', KEYS[i]) or '', 1, 1024)
    return {'locked', tostring(math.min(left, MAX_WAIT)), reason}
  end
end
local n = tonumber(ARGV[1])
local cost = {tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4])}
local member, ttl = ARGV[5], tonumber(ARGV[6])
local wait = 0
local overload = redis.call('PTTL', KEYS[1])
if overload > 0 then wait = math.min(overload, MAX_OVERLOAD) end
local repaired = 0
local state = {}
for b = 1, n do
  local h, l = KEYS[2 + 2 * b], KEYS[3 + 2 * b]
  local base = 6 + 4 * (b - 1)
  local f = redis.call('HMGET', h, 'l0', 'l1', 'l2', 't', 'm0', 'm1', 'm2', 'tk', 'p', 'mf',
    'u0', 'u1', 'u2', 'pb', 'mg')
  -- Every value is checked as it is read; one that is not valid is dropped (and counted),
  -- and what it stood for is rebuilt.
  local function checked(i, lo, hi)
    local x = sane(f[i], lo, hi)
    if x == nil and f[i] then repaired = repaired + 1 end
    return x
  end
  local lim, levels = {}, {}
  local last = checked(4, 0, now) or now
  local known = false
  for k = 1, 3 do
    local told = sane(ARGV[base + k], 1, MAX_LIMIT)
    local stored = checked(4 + k, 1, MAX_LIMIT)
    if told then
      lim[k] = told
      redis.call('HSET', h, 'm' .. (k - 1), told)
    else
      lim[k] = stored
      if stored == nil and f[4 + k] then redis.call('HDEL', h, 'm' .. (k - 1)) end
    end
    if lim[k] then
      known = true
      local level, from = checked(k, -lim[k], lim[k]), last
      if level == nil then
        -- A limit just learned (or a level rebuilt): what went out before it was known counts
        -- against it.
        level = lim[k] - (checked(10 + k, 0, 1e12) or 0)
        redis.call('HDEL', h, 'u' .. (k - 1))
        from = now
      end
      levels[k] = refill(level, lim[k], from, now)
      local need = math.min(cost[k], lim[k])
      if levels[k] < need then
        wait = math.max(wait, math.ceil((need - levels[k]) * 60000 / lim[k]))
      end
    end
  end
  -- A key's budget merged into its account's moments ago: a daemon still taking from it has
  -- not heard of the link yet (it will within milliseconds, and take from the account's). Its
  -- levels are gone, and rebuilding them full would spend the key's calls twice.
  local merged = checked(15, 0, now)
  if merged and now - merged < MERGE_QUIET then wait = math.max(wait, 250) end
  if not known and b == 1 then
    -- First contact, for every daemon at once: one call goes out, the others wait for the
    -- limits its answer teaches (at most 5 s).
    local probe = checked(14, 0, now)
    if probe and now - probe < 5000 then wait = math.max(wait, probe + 5000 - now) end
  end
  local cap = sane(ARGV[base + 4], 1, 1e6)
  if cap then redis.call('HSET', h, 'mf', cap) else cap = checked(10, 1, 1e6) end
  local busy = 0
  if cap then
    redis.call('ZREMRANGEBYSCORE', l, '-inf', now)
    busy = redis.call('ZCARD', l)
    if busy >= cap then wait = math.max(wait, 250) end
  end
  local pause = checked(9, 0, now + MAX_WAIT)
  if pause == nil and f[9] then redis.call('HDEL', h, 'p', 'pr') end
  if pause and pause > now then wait = math.max(wait, pause - now) end
  state[b] = {h = h, l = l, lim = lim, levels = levels, cap = cap, busy = busy,
    tk = checked(8, 0, 1e15) or 0}
end
if repaired > 0 then
  -- Write the rebuilt levels back now, so that the next take finds them whole.
  for b = 1, n do
    local s = state[b]
    for k = 1, 3 do
      if s.levels[k] then redis.call('HSET', s.h, 'l' .. (k - 1), num(s.levels[k])) end
    end
    redis.call('HSET', s.h, 't', now, 'tk', s.tk)
  end
end
-- Turns: among the daemons refused before and due back now, the one that has had least of
-- the budget lately goes first.
local tz, tx = KEYS[4 + 2 * n], KEYS[5 + 2 * n]
local me = ARGV[7 + 4 * n]
local grace = tonumber(ARGV[8 + 4 * n])
local half_life = tonumber(ARGV[9 + 4 * n])
local function had(d)
  local g, at = string.match(redis.call('HGET', tx, 'g:' .. d) or '', '^([^:]+):([^:]+)$')
  g, at = sane(g, 0, 1e9), sane(at, 0, now)
  if g == nil or at == nil then return 0 end
  if now <= at then return g end
  return g * math.pow(0.5, (now - at) / half_life)
end
local mine = had(me)
local my_turn = redis.call('ZSCORE', tz, me)
my_turn = my_turn and tonumber(my_turn)
local rival = nil
local queue = redis.call('ZRANGE', tz, 0, -1, 'WITHSCORES')
for i = 1, #queue, 2 do
  local d, since = queue[i], tonumber(queue[i + 1])
  if d ~= me then
    local back, c1, c2, c3 = string.match(redis.call('HGET', tx, 'd:' .. d) or '',
      '^([^:]+):([^:]+):([^:]+):([^:]+)$')
    back = sane(back, 0, now + MAX_WAIT)
    if back == nil or now > back + grace then
      redis.call('ZREM', tz, d)
      redis.call('HDEL', tx, 'd:' .. d)
    elseif back <= now + grace then
      local g = had(d)
      if g < mine or (g == mine and (my_turn == nil or since < my_turn)) then
        if rival == nil or g < rival.g then
          rival = {g = g, back = back,
            cost = {sane(c1, 0, 1e12) or 0, sane(c2, 0, 1e12) or 0, sane(c3, 0, 1e12) or 0}}
        end
      end
    end
  end
end
if wait == 0 and rival then
  -- Keep what that one needs unless there is enough for both.
  local s = state[1]
  local short = s.cap and s.cap > 0 and s.busy + 2 > s.cap
  for k = 1, 3 do
    if s.lim[k] and s.levels[k] < math.min(rival.cost[k], s.lim[k]) + math.min(cost[k], s.lim[k]) then
      short = true
    end
  end
  if short then wait = math.max(10, math.min(grace, rival.back + grace - now)) end
end
if wait > 0 then
  redis.call('ZADD', tz, 'NX', now, me)
  redis.call('HSET', tx, 'd:' .. me,
    (now + wait) .. ':' .. cost[1] .. ':' .. cost[2] .. ':' .. cost[3])
else
  redis.call('ZREM', tz, me)
  redis.call('HDEL', tx, 'd:' .. me)
  -- What this take is worth: its share of the budget's tightest limit.
  local share = 0
  for k = 1, 3 do
    local lim = state[1].lim[k]
    if lim and lim > 0 then share = math.max(share, cost[k] / lim) end
  end
  if share > 0 then
    redis.call('HSET', tx, 'g:' .. me, num(mine + share) .. ':' .. now)
    if redis.call('HLEN', tx) > 256 then
      -- Forget the daemons that have had nothing for long.
      local all = redis.call('HGETALL', tx)
      for i = 1, #all, 2 do
        local d = string.match(all[i], '^g:(.*)$')
        if d and had(d) < 0.001 then redis.call('HDEL', tx, all[i]) end
      end
    end
  end
end
redis.call('PEXPIRE', tz, 3600000)
redis.call('PEXPIRE', tx, 3600000)
local function limits(s)
  local out = {}
  for k = 1, 3 do out[k] = s.lim[k] and tostring(s.lim[k]) or '' end
  return out
end
if wait > 0 then
  local m = limits(state[1])
  local out = {'wait', tostring(math.min(wait, MAX_WAIT)), m[1], m[2], m[3]}
  if repaired > 0 then out[6] = 'repaired' end
  return out
end
for b = 1, n do
  local s = state[b]
  redis.call('HSET', s.h, 't', now, 'tk', s.tk + cost[1])
  local any = false
  for k = 1, 3 do
    if s.lim[k] then
      any = true
      s.levels[k] = debit(s.levels[k], cost[k], s.lim[k])
      redis.call('HSET', s.h, 'l' .. (k - 1), num(s.levels[k]))
    else
      redis.call('HINCRBYFLOAT', s.h, 'u' .. (k - 1), cost[k])
    end
  end
  if not any then redis.call('HSET', s.h, 'pb', now) end
  redis.call('PEXPIRE', s.h, 86400000)
  if s.cap and s.cap > 0 then
    redis.call('ZADD', s.l, now + ttl, member)
    redis.call('PEXPIRE', s.l, 86400000)
  end
end
local s = state[1]
local out = {'ok', tostring(s.tk)}
for k = 1, 3 do out[2 + k] = s.levels[k] and num(s.levels[k]) or '' end
local m = limits(s)
for k = 1, 3 do out[5 + k] = m[k] end
if repaired > 0 then out[9] = 'repaired' end
return out
"#
    ))
});

/// Settles a lease: the reservation refunded down to what the call used, or charged beyond
/// it (into debt), and its in-flight slot freed. A request given back unused is refunded only
/// up to what the bucket would hold had it never been taken.
///
/// KEYS: per budget its hash and its leases.
/// ARGV: the number of budgets, the lease's name, reserved (requests, input, output), used
/// (the same), the requests taken before it ('' if not given back unused), a message to
/// publish when a slot frees ('' for none), the channel.
pub static SETTLE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(&format!(
        "{REFILL}{}",
        r#"
local now = now_ms()
local n = tonumber(ARGV[1])
local member = ARGV[2]
local reserved = {tonumber(ARGV[3]), tonumber(ARGV[4]), tonumber(ARGV[5])}
local used = {tonumber(ARGV[6]), tonumber(ARGV[7]), tonumber(ARGV[8])}
local taken_before = tonumber(ARGV[9])
local freed = 0
for b = 1, n do
  local h, l = KEYS[2 * b - 1], KEYS[2 * b]
  local f = redis.call('HMGET', h, 'l0', 'l1', 'l2', 't', 'm0', 'm1', 'm2', 'tk')
  local last = sane(f[4], 0, now) or now
  local tk = sane(f[8], 0, 1e15) or 0
  for k = 1, 3 do
    local lim = sane(f[4 + k], 1, MAX_LIMIT)
    if lim then
      local level = refill(sane(f[k], -lim, lim), lim, last, now)
      local back = reserved[k] - used[k]
      if back > 0 and k == 1 and taken_before then
        level = give_back(level, back, lim, tk, taken_before)
      elseif back > 0 then
        level = credit(level, back, lim)
      else
        level = debit(level, -back, lim)
      end
      redis.call('HSET', h, 'l' .. (k - 1), num(level))
    end
  end
  redis.call('HSET', h, 't', now)
  freed = freed + redis.call('ZREM', l, member)
end
if freed > 0 and ARGV[10] ~= '' then redis.call('PUBLISH', ARGV[11], ARGV[10]) end
return freed
"#
    ))
});

/// Charges what a daemon spent from its local share while Redis was away (into debt if need
/// be). KEYS: the budget's hash. ARGV: requests, input, output.
pub static CHARGE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(&format!(
        "{REFILL}{}",
        r#"
local now = now_ms()
local h = KEYS[1]
local f = redis.call('HMGET', h, 'l0', 'l1', 'l2', 't', 'm0', 'm1', 'm2', 'tk')
local last = sane(f[4], 0, now) or now
for k = 1, 3 do
  local lim = sane(f[4 + k], 1, MAX_LIMIT)
  if lim then
    local level = debit(refill(sane(f[k], -lim, lim), lim, last, now), tonumber(ARGV[k]), lim)
    redis.call('HSET', h, 'l' .. (k - 1), num(level))
  end
end
redis.call('HSET', h, 't', now, 'tk', (sane(f[8], 0, 1e15) or 0) + tonumber(ARGV[1]))
return 1
"#
    ))
});

/// A key's budget joins its account's (its responses named the account): what the key took is
/// charged to the account, so that the first call of a key nobody knew — made against the
/// key's own budget — counts in the account's too. Where the account's limit is known, its
/// level is lowered to the key's if that is lower, and the key's untracked takes come off it;
/// where it is not, the key's untracked takes are added to the account's (they come off when
/// its limit is learned). A recent first contact carries over. The key's budget is emptied.
///
/// KEYS: the key's budget hash, the account's budget hash.
pub static MERGE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(&format!(
        "{REFILL}{}",
        r#"
local now = now_ms()
local fields = {'l0', 'l1', 'l2', 't', 'm0', 'm1', 'm2', 'u0', 'u1', 'u2', 'pb', 'tk'}
local from = redis.call('HMGET', KEYS[1], unpack(fields))
local into = redis.call('HMGET', KEYS[2], unpack(fields))
local from_last = sane(from[4], 0, now) or now
local into_last = sane(into[4], 0, now) or now
for k = 1, 3 do
  local from_lim, into_lim = sane(from[4 + k], 1, MAX_LIMIT), sane(into[4 + k], 1, MAX_LIMIT)
  local untracked = sane(from[7 + k], 0, 1e12) or 0
  local into_level = into_lim and sane(into[k], -into_lim, into_lim)
  if into_level then
    local level = refill(into_level, into_lim, into_last, now)
    local from_level = from_lim and sane(from[k], -from_lim, from_lim)
    if from_level then level = math.min(level, refill(from_level, from_lim, from_last, now)) end
    redis.call('HSET', KEYS[2], 'l' .. (k - 1), num(debit(level, untracked, into_lim)))
  elseif untracked > 0 then
    redis.call('HINCRBYFLOAT', KEYS[2], 'u' .. (k - 1), untracked)
  end
end
redis.call('HSET', KEYS[2], 't', now,
  'tk', (sane(into[12], 0, 1e15) or 0) + (sane(from[12], 0, 1e15) or 0))
local probe = sane(from[11], 0, now)
if probe and (sane(into[11], 0, now) or 0) < probe then redis.call('HSET', KEYS[2], 'pb', probe) end
redis.call('PEXPIRE', KEYS[2], 86400000)
redis.call('HDEL', KEYS[1], 'l0', 'l1', 'l2', 'u0', 'u1', 'u2', 'pb')
redis.call('HSET', KEYS[1], 'mg', now)
return 1
"#
    ))
});

/// Renews leases: each one's expiry moved to `now + ttl` (only those still there).
///
/// KEYS: the leases' sets, one per lease. ARGV: the ttl (ms), then the lease names.
pub static RENEW: LazyLock<Script> = LazyLock::new(|| {
    Script::new(&format!(
        "{REFILL}{}",
        r#"
local now = now_ms()
local ttl = tonumber(ARGV[1])
local renewed = 0
for i = 1, #KEYS do
  renewed = renewed + redis.call('ZADD', KEYS[i], 'XX', 'CH', now + ttl, ARGV[i + 1])
end
return renewed
"#
    ))
});

/// Records this daemon in the heartbeat set and counts the daemons seen within the window.
///
/// KEYS: the set. ARGV: this daemon's id, the window (ms). Returns the count.
pub static HEARTBEAT: LazyLock<Script> = LazyLock::new(|| {
    Script::new(&format!(
        "{REFILL}{}",
        r#"
local now = now_ms()
redis.call('ZADD', KEYS[1], now, ARGV[1])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - tonumber(ARGV[2]))
redis.call('PEXPIRE', KEYS[1], tonumber(ARGV[2]) * 10)
return redis.call('ZCARD', KEYS[1])
"#
    ))
});
