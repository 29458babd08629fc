//! What every script starts with: the bucket's refill and debt, refunds, and checks on the
//! numbers read from Redis (anyone who can write to Redis can write anything).

/// Refills a bucket (levels are floats, written back with all their digits).
pub(super) const REFILL: &str = r#"
local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end
local function refill(level, limit, last, now)
  if level == nil then return limit end
  if now > last then
    return math.min(limit, level + (now - last) * limit / 60000)
  end
  return level
end
local function num(x) return string.format('%.17g', x) end
-- A number read from Redis, if it is one and within [lo, hi] (not nan, not inf): anyone who can
-- write to Redis can write anything, and one bad level must not jam a budget on every daemon.
local function sane(x, lo, hi)
  x = tonumber(x)
  if x == nil or x ~= x or x < lo or x > hi then return nil end
  return x
end
local MAX_LIMIT = 1e10
local MAX_WAIT = 691200000  -- 8 days (ms): the longest wait any daemon believes
local MAX_OVERLOAD = 32000  -- the longest 529 backoff (ms)
local MERGE_QUIET = 10000  -- after a key's budget merged into its account's, takes from it wait (ms)
-- Takes `amount` from `level`, into debt if need be but never deeper than a whole bucket below
-- zero (as the daemon's own buckets do).
local function debit(level, amount, limit)
  return math.max(level - amount, math.min(-limit, level))
end
-- Gives `amount` back, never above the limit.
local function credit(level, amount, limit)
  return math.min(limit, level + amount)
end
-- Gives back `back` taken when the budget's running total of takes was `taken_before` (a call
-- that never went out), no more than the bucket would hold had it never been taken: it would
-- have filled sooner and lost refill to its limit, so the most it comes to is the limit less
-- what was taken since (`tk` is the running total now).
local function give_back(level, back, limit, tk, taken_before)
  local since = math.max(0, tk - taken_before - back)
  return math.max(level, math.min(level + back, limit - since, limit))
end
"#;

/// The functions every script shares — `refill`, `debit`, `credit`, `give_back`, `sane` —
/// and nothing that runs by itself: the differential test runs them against the daemon's own
/// bucket (`pacer_broker`'s `Bucket`), with instants it chooses instead of Redis `TIME`.
pub const PRELUDE: &str = REFILL;
