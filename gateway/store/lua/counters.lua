-- Check and consume every counter one order-entry call touches, atomically.
--
-- All keys belong to one counting subject (one {hash tag}, one cluster slot).
-- Phase 1 reads only and decides; phase 2 writes only if every check passed,
-- so a refused call leaves every key exactly as it was, and an accepted one
-- consumes every counter it touches.
--
-- KEYS     every key the plan refers to, by index
-- ARGV[1]  "consume" or "peek" (peek: decide nothing, write nothing, report all)
-- ARGV[2]  "" (use Redis TIME) or a pinned time in microseconds (tests only)
-- ARGV[3]  nonce, unique per call (sliding-log member)
-- ARGV[4]  start of the counting day, ms after 00:00 UTC
-- ARGV[5..] the plan: ops of 5 fields (op, key index, a, b, c)
--
--   O  -, order-id record key index or 0, client-id record key index or 0
--        read what is remembered of the order (admission ms, large flag)
--   M  -, min resting ms                  refuse if the order is younger
--   W  key, limit, window ms, "" or "L"   sliding window, kept as a log ("L":
--                                          only for a large order, as remembered)
--   B  key, limit, window ms, "" or "L"   sliding window, kept in buckets
--   D  key, limit, field                  daily cap on a field of the day hash
--   R  key, min orders, ratio num, den    cancels/orders ratio (day hash)
--   T  key, field                         on accept: add 1 to a day field
--   S  key, ttl ms, large "0"/"1"         on accept: remember this order
--   U  key, ttl ms, large "0"/"1"         on accept: update (or create) a record
--   I  key, window ms, free retries       a place with a client order id: if the
--                                          key holds n < free retries, this is a
--                                          retry of an admitted place: store n + 1,
--                                          decide nothing, consume nothing (status 3);
--                                          on accept: store 0 for the window
--
-- Windows (the caller picks; see gateway/counters/plan.py): W, a sliding log,
-- a sorted set of admission times in microseconds (exact; memory grows with
-- the limit); B, BUCKETS sub-windows in a hash (never more than the limit in
-- any window; may refuse up to two buckets early; memory bounded).
--
-- Returns { status, now_us, ... } where status is
--   1 accepted: then pairs  { op index, remaining }  for every W, B and D op
--   0 refused:  then quads  { op index, count, limit, delay ms } per failed check
--   2 peek:     then quads  { op index, count, limit, delay ms or 0 } per check
--   3 retry:    then { op index, retries used } (nothing else was read or written)

local BUCKETS = 500
local DAY_MS = 86400000
local HOUR_MS = 3600000

local function int(n) return string.format('%.0f', n) end

local now_us
if ARGV[2] ~= '' then
  now_us = tonumber(ARGV[2])
else
  local t = redis.call('TIME')
  now_us = tonumber(t[1]) * 1000000 + tonumber(t[2])
end
local now_ms = math.floor(now_us / 1000)
local mode = ARGV[1]
local nonce = ARGV[3]
local day_start = tonumber(ARGV[4])
local day = math.floor((now_ms - day_start) / DAY_MS)
local day_end_ms = (day + 1) * DAY_MS + day_start

-- ---------------------------------------------------------------------------
-- sliding log

local function log_count(key, window_ms)
  return redis.call('ZCOUNT', key, '(' .. int(now_us - window_ms * 1000), '+inf')
end

local function log_delay(key, limit, window_ms, count)
  -- The (count - limit + 1) oldest live entries must leave; the last of them
  -- is at rank count - limit. An entry at t counts while t > now - window:
  -- it leaves at now = t + window.
  local window_us = window_ms * 1000
  local entry = redis.call('ZRANGEBYSCORE', key, '(' .. int(now_us - window_us), '+inf',
    'WITHSCORES', 'LIMIT', count - limit, 1)
  local delay_us = tonumber(entry[2]) + window_us - now_us
  return math.ceil(delay_us / 1000)
end

local function log_add(key, window_ms)
  redis.call('ZREMRANGEBYSCORE', key, '-inf', int(now_us - window_ms * 1000))
  redis.call('ZADD', key, int(now_us), nonce)
  redis.call('PEXPIRE', key, window_ms + 1000)
end

-- ---------------------------------------------------------------------------
-- bucketed window: hash fields n (total), lo, hi (stored bucket range), b<i>

local function geometry(window_ms)
  local g = math.ceil(window_ms / BUCKETS)
  local k = math.ceil(window_ms / g)
  return g, k, math.floor(now_ms / g)
end

-- Sum of the stored buckets in [from, to] (a range of at most about BUCKETS).
local function bucket_sum(key, from, to)
  if to < from then return 0, {} end
  local fields = {}
  for b = from, to do fields[#fields + 1] = 'b' .. int(b) end
  local counts = redis.call('HMGET', key, unpack(fields))
  local sum = 0
  for i = 1, #counts do
    if counts[i] then
      counts[i] = tonumber(counts[i])
      sum = sum + counts[i]
    else
      counts[i] = 0
    end
  end
  return sum, counts
end

-- Live count and what eviction would drop: { count, n, lo, hi, stale, here }
-- (here: the current bucket's count, read along with n, lo and hi).
local function bucket_state(key, window_ms)
  local g, k, cur = geometry(window_ms)
  local meta = redis.call('HMGET', key, 'n', 'lo', 'hi', 'b' .. int(cur))
  local n = tonumber(meta[1]) or 0
  if n == 0 then return { count = 0, n = 0 } end
  local lo, hi, here = tonumber(meta[2]), tonumber(meta[3]), tonumber(meta[4]) or 0
  local first_live = cur - k
  if hi < first_live then return { count = 0, n = 0, all_stale = true } end
  if lo >= first_live then return { count = n, n = n, lo = lo, hi = hi, here = here } end
  local stale_to = first_live - 1
  if stale_to - lo > 4 * BUCKETS then
    -- Only after the clock went backwards: recount from the stored fields.
    local all = redis.call('HGETALL', key)
    local live = 0
    for i = 1, #all, 2 do
      local name = all[i]
      if string.sub(name, 1, 1) == 'b' and tonumber(string.sub(name, 2)) >= first_live then
        live = live + tonumber(all[i + 1])
      end
    end
    return { count = live, n = n, lo = lo, hi = hi, recount = true }
  end
  local stale = bucket_sum(key, lo, stale_to)
  return { count = n - stale, n = n, lo = lo, hi = hi, stale = stale, here = here }
end

local function bucket_delay(key, limit, window_ms, state)
  local g, k, cur = geometry(window_ms)
  local from = math.max(state.lo, cur - k)
  local _, counts = bucket_sum(key, from, state.hi)
  local need = state.count - limit + 1
  local freed = 0
  for i = 1, #counts do
    freed = freed + counts[i]
    if freed >= need then
      local b = from + i - 1
      return (b + k + 1) * g - now_ms
    end
  end
  return (state.hi + k + 1) * g - now_ms
end

-- The hash expires a bucket and a second after its newest bucket (hi) leaves
-- the window (at hi + k + 1 buckets), so its TTL changes only when hi does or
-- the hash is new: most calls write the current bucket and n in one HSET.
local function bucket_add(key, window_ms, state)
  local g, k, cur = geometry(window_ms)
  local n, lo, hi = state.n, state.lo, state.hi
  local field = 'b' .. int(cur)
  if n == 0 or state.recount then
    if state.recount then
      -- Rare: rebuild from the live fields.
      local all = redis.call('HGETALL', key)
      redis.call('DEL', key)
      n, lo, hi = 0, cur, cur
      for i = 1, #all, 2 do
        local name = all[i]
        if string.sub(name, 1, 1) == 'b' then
          local b = tonumber(string.sub(name, 2))
          if b >= cur - k then
            redis.call('HSET', key, name, all[i + 1])
            n = n + tonumber(all[i + 1])
            lo, hi = math.min(lo, b), math.max(hi, b)
          end
        end
      end
    else
      redis.call('DEL', key)
      lo, hi = cur, cur
    end
    redis.call('HINCRBY', key, field, 1)
    redis.call('HSET', key, 'n', n + 1, 'lo', int(math.min(lo, cur)), 'hi', int(math.max(hi, cur)))
    redis.call('PEXPIRE', key, (math.max(hi, cur) + k + 2) * g + 1000 - now_ms)
    return
  end
  local old_lo = lo
  if lo < cur - k then
    local fields = {}
    for b = lo, cur - k - 1 do fields[#fields + 1] = 'b' .. int(b) end
    redis.call('HDEL', key, unpack(fields))
    n = n - state.stale
    lo = cur - k
  end
  lo = math.min(lo, cur)
  if cur > hi then
    redis.call('HSET', key, field, state.here + 1, 'n', n + 1, 'lo', int(lo), 'hi', int(cur))
    redis.call('PEXPIRE', key, (cur + k + 2) * g + 1000 - now_ms)
  elseif lo ~= old_lo then
    redis.call('HSET', key, field, state.here + 1, 'n', n + 1, 'lo', int(lo))
  else
    redis.call('HSET', key, field, state.here + 1, 'n', n + 1)
  end
end

-- ---------------------------------------------------------------------------
-- day hash: field "day" holds the day the other fields count

-- Fields a and b (b may be nil) of a day hash, 0 unless it counts today; the
-- first read of a key reads "day" along with them.
local day_current = {}
local function day_get(key, a, b)
  local current, got = day_current[key], nil
  if current == nil then
    if b then got = redis.call('HMGET', key, 'day', a, b)
    else got = redis.call('HMGET', key, 'day', a) end
    current = tonumber(got[1]) == day
    day_current[key] = current
    got[1], got[2] = got[2], got[3]
  elseif current then
    if b then got = redis.call('HMGET', key, a, b)
    else got = redis.call('HMGET', key, a) end
  end
  if not current then return 0, 0 end
  return tonumber(got[1]) or 0, tonumber(got[2]) or 0
end

-- On accept: a day hash is made today's (once), counted, and given its TTL
-- once per call.
local day_ready = {}
local function day_incr(key, field)
  local first = not day_ready[key]
  if first then
    local current = day_current[key]
    if current == nil then current = tonumber(redis.call('HGET', key, 'day')) == day end
    if not current then
      redis.call('DEL', key)
      redis.call('HSET', key, 'day', int(day))
    end
    day_ready[key] = true
  end
  redis.call('HINCRBY', key, field, 1)
  -- Relative, so a pinned clock (tests) expires keys like the real one.
  if first then redis.call('PEXPIRE', key, int(day_end_ms + HOUR_MS - now_ms)) end
end

-- ---------------------------------------------------------------------------
-- phase 1: decide (reads only)

local rec_ms, rec_large = nil, false
local function read_record(index)
  if index == 0 then return false end
  local value = redis.call('GET', KEYS[index])
  if not value then return false end
  local sep = string.find(value, '|', 1, true)
  rec_ms = tonumber(string.sub(value, 1, sep - 1))
  rec_large = string.sub(value, sep + 1) == '1'
  return true
end

local ops = {}
for i = 5, #ARGV, 5 do
  ops[#ops + 1] = { ARGV[i], tonumber(ARGV[i + 1]), ARGV[i + 2], ARGV[i + 3], ARGV[i + 4] }
end

-- A retry of an admitted place (see gateway/reliability/idempotency.py) is
-- let through uncounted, before anything else is read.
if mode ~= 'peek' then
  for i, op in ipairs(ops) do
    if op[1] == 'I' then
      local used = tonumber(redis.call('GET', KEYS[op[2]]))
      if used and used < tonumber(op[4]) then
        redis.call('SET', KEYS[op[2]], int(used + 1), 'KEEPTTL')
        return { 3, int(now_us), i, int(used + 1) }
      end
    end
  end
end

local checks = {}   -- { op index, count, limit, delay, failed }
local states = {}   -- op index -> window state, or a D op's count (for phase 2)
local failed = false

for i, op in ipairs(ops) do
  local name, key = op[1], KEYS[op[2]]
  if name == 'O' then
    if not read_record(tonumber(op[3])) then read_record(tonumber(op[4])) end
  elseif name == 'M' then
    local min_ms = tonumber(op[3])
    if rec_ms and rec_ms > 0 then
      local age = now_ms - rec_ms
      local bad = age < min_ms
      checks[#checks + 1] = { i, age, min_ms, bad and (rec_ms + min_ms - now_ms) or 0, bad }
      failed = failed or bad
    end
  elseif name == 'W' or name == 'B' then
    if op[5] ~= 'L' or rec_large then
      local limit, window_ms = tonumber(op[3]), tonumber(op[4])
      local count, delay, state
      if name == 'W' then
        count = log_count(key, window_ms)
        state = { log = true, count = count }
      else
        state = bucket_state(key, window_ms)
        count = state.count
      end
      local bad = count + 1 > limit
      if bad then
        if state.log then delay = log_delay(key, limit, window_ms, count)
        else delay = bucket_delay(key, limit, window_ms, state) end
      end
      states[i] = state
      checks[#checks + 1] = { i, count, limit, delay or 0, bad }
      failed = failed or bad
    end
  elseif name == 'D' then
    local limit = tonumber(op[3])
    local count = day_get(key, op[4])
    local bad = count + 1 > limit
    states[i] = count
    checks[#checks + 1] = { i, count, limit, bad and (day_end_ms - now_ms) or 0, bad }
    failed = failed or bad
  elseif name == 'R' then
    local min_orders, num, den = tonumber(op[3]), tonumber(op[4]), tonumber(op[5])
    local orders, cancels = day_get(key, 'orders', 'cancels')
    local bad = orders >= min_orders and (cancels + 1) * den > num * orders
    checks[#checks + 1] = { i, cancels, orders, bad and (day_end_ms - now_ms) or 0, bad }
    failed = failed or bad
  end
end

local out
if mode == 'peek' then
  out = { 2, int(now_us) }
  for _, c in ipairs(checks) do
    out[#out + 1] = c[1]; out[#out + 1] = c[2]; out[#out + 1] = c[3]; out[#out + 1] = c[4]
  end
  return out
end

if failed then
  out = { 0, int(now_us) }
  for _, c in ipairs(checks) do
    if c[5] then
      out[#out + 1] = c[1]; out[#out + 1] = c[2]; out[#out + 1] = c[3]; out[#out + 1] = c[4]
    end
  end
  return out
end

-- ---------------------------------------------------------------------------
-- phase 2: consume (every check passed)

out = { 1, int(now_us) }
for i, op in ipairs(ops) do
  local name, key = op[1], KEYS[op[2]]
  if (name == 'W' or name == 'B') and states[i] then
    local limit, window_ms = tonumber(op[3]), tonumber(op[4])
    local state = states[i]
    if state.log then log_add(key, window_ms) else bucket_add(key, window_ms, state) end
    out[#out + 1] = i; out[#out + 1] = limit - state.count - 1
  elseif name == 'D' then
    local limit = tonumber(op[3])
    day_incr(key, op[4])
    out[#out + 1] = i; out[#out + 1] = limit - states[i] - 1
  elseif name == 'T' then
    day_incr(key, op[3])
  elseif name == 'S' then
    redis.call('SET', key, int(now_ms) .. '|' .. op[4], 'PX', op[3])
  elseif name == 'I' then
    redis.call('SET', key, '0', 'PX', op[3])
  elseif name == 'U' then
    local value = redis.call('GET', key)
    if value then
      local sep = string.find(value, '|', 1, true)
      redis.call('SET', key, string.sub(value, 1, sep - 1) .. '|' .. op[4], 'KEEPTTL')
    elseif op[4] == '1' then
      redis.call('SET', key, '0|1', 'PX', op[3])
    end
  end
end
return out
