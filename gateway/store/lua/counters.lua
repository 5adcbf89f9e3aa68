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

-- Cost: besides its redis.call()s, a call costs mostly what it allocates
-- (every table and function made here is garbage after the call) and every
-- number it prints. So the script defines no functions, makes no table per op
-- and passes numbers to redis.call as numbers: Redis prints them exactly
-- (%.17g) below 2^53, microsecond times included. Lua's own tostring (%.14g)
-- is exact below 10^14: enough for bucket numbers and milliseconds.
local call, tonumber, floor, ceil, sub = redis.call, tonumber, math.floor, math.ceil, string.sub

local now_us
if ARGV[2] ~= '' then
  now_us = tonumber(ARGV[2])
else
  local t = call('TIME')
  now_us = tonumber(t[1]) * 1000000 + tonumber(t[2])
end
local now_ms = floor(now_us / 1000)
local peek = ARGV[1] == 'peek'
local nonce = ARGV[3]
local day_start = tonumber(ARGV[4])
local day = floor((now_ms - day_start) / DAY_MS)
local day_end_ms = (day + 1) * DAY_MS + day_start
local last = #ARGV

-- Op j is ARGV[i .. i + 4] with i = 5 * j: name, key index, a, b, c.

-- A retry of an admitted place (see gateway/reliability/idempotency.py) is
-- let through uncounted, before anything else is read.
if not peek then
  for i = 5, last, 5 do
    if ARGV[i] == 'I' then
      local key = KEYS[tonumber(ARGV[i + 1])]
      local used = tonumber(call('GET', key))
      if used and used < tonumber(ARGV[i + 3]) then
        call('SET', key, used + 1, 'KEEPTTL')
        return { 3, now_us, i / 5, used + 1 }
      end
    end
  end
end

-- ---------------------------------------------------------------------------
-- phase 1: decide (reads only)
--
-- Sliding log (W): a sorted set of admission times in microseconds; an entry
-- at t counts while t > now - window, i.e. from now - window + 1 on.
-- Bucketed window (B): a hash of n (total), lo, hi (the stored bucket range)
-- and b<i> (bucket i's count), buckets of g ms, k of them per window.
-- Day hash (D, R, T): field "day" holds the day the other fields count.

local res, r = { 1, now_us, false, false, false, false, false, false }, 2  -- accepted: j, remaining
local rep           -- refused or peek: j, count, limit, delay
local failed = false
local todo, x = nil, 0  -- what phase 2 needs of each checked B op, in op order (made on first need)
local rec_ms, rec_large = nil, false
local day_current   -- day key -> whether it holds today's counts (made on first need)

for i = 5, last, 5 do
  local j, name = i / 5, ARGV[i]
  local count, limit, bad, delay  -- set when the op checks something
  if name == 'W' or name == 'B' then
    if ARGV[i + 4] ~= 'L' or rec_large then
      local key, window_ms = KEYS[tonumber(ARGV[i + 1])], tonumber(ARGV[i + 3])
      limit = tonumber(ARGV[i + 2])
      if name == 'W' then
        local from = now_us - window_ms * 1000 + 1
        count = call('ZCOUNT', key, from, '+inf')
        bad = count >= limit
        if bad then
          -- The (count - limit + 1) oldest live entries must leave; the last of
          -- them is at rank count - limit. An entry at t leaves at t + window.
          local entry = call('ZRANGEBYSCORE', key, from, '+inf', 'WITHSCORES', 'LIMIT',
            count - limit, 1)
          delay = ceil((tonumber(entry[2]) + window_ms * 1000 - now_us) / 1000)
        end
      else
        local g = ceil(window_ms / BUCKETS)
        local k = ceil(window_ms / g)
        local cur = floor(now_ms / g)
        local first_live = cur - k
        local field = 'b' .. cur
        local meta = call('HMGET', key, 'n', 'lo', 'hi', field)
        local n, lo, hi = tonumber(meta[1]) or 0, tonumber(meta[2]), tonumber(meta[3])
        local stale, recount = 0, false
        if n == 0 or hi < first_live then
          n, count = 0, 0  -- nothing live: start afresh
        elseif lo >= first_live then
          count = n
        elseif first_live - 1 - lo > 4 * BUCKETS then
          -- Only after the clock went backwards: recount from the stored fields.
          local all = call('HGETALL', key)
          count, recount = 0, true
          for a = 1, #all, 2 do
            local f = all[a]
            if sub(f, 1, 1) == 'b' and tonumber(sub(f, 2)) >= first_live then
              count = count + tonumber(all[a + 1])
            end
          end
        else
          local fields = {}
          for b = lo, first_live - 1 do fields[#fields + 1] = 'b' .. b end
          local got = call('HMGET', key, unpack(fields))
          for a = 1, #got do stale = stale + (tonumber(got[a]) or 0) end
          count = n - stale
        end
        bad = count >= limit
        if bad then
          -- Leaves as whole buckets: the oldest live ones, until enough are freed.
          local from = math.max(lo, first_live)
          delay = (hi + k + 1) * g - now_ms
          -- Stored buckets reaching far past now (the clock went backwards): the
          -- newest one leaving is the answer, never shorter than the truth.
          if hi >= from and hi - from <= 4 * BUCKETS then
            local fields = {}
            for b = from, hi do fields[#fields + 1] = 'b' .. b end
            local got = call('HMGET', key, unpack(fields))
            local need, freed = count - limit + 1, 0
            for a = 1, #got do
              freed = freed + (tonumber(got[a]) or 0)
              if freed >= need then
                delay = (from + a + k) * g - now_ms  -- bucket from + a - 1 leaves
                break
              end
            end
          end
        end
        todo = todo or { false, false, false, false, false, false, false }
        todo[x + 1], todo[x + 2], todo[x + 3], todo[x + 4] = n, lo, hi, tonumber(meta[4]) or 0
        todo[x + 5], todo[x + 6], todo[x + 7] = stale, recount, field
        x = x + 7
      end
    end
  elseif name == 'O' then
    -- What is remembered of the order: by order id, else by client order id.
    for a = i + 2, i + 3 do
      local index = tonumber(ARGV[a])
      local value = index ~= 0 and call('GET', KEYS[index])
      if value then
        local sep = string.find(value, '|', 1, true)
        rec_ms = tonumber(sub(value, 1, sep - 1))
        rec_large = sub(value, sep + 1) == '1'
        break
      end
    end
  elseif name == 'M' then
    if rec_ms and rec_ms > 0 then
      count, limit = now_ms - rec_ms, tonumber(ARGV[i + 2])
      bad = count < limit
      delay = rec_ms + limit - now_ms
    end
  elseif name == 'D' or name == 'R' then
    -- The day's fields count only if "day" is today's; read with the first of them.
    local key = KEYS[tonumber(ARGV[i + 1])]
    day_current = day_current or {}
    local current, got = day_current[key], nil
    if current == nil then
      if name == 'D' then got = call('HMGET', key, 'day', ARGV[i + 3])
      else got = call('HMGET', key, 'day', 'orders', 'cancels') end
      current = tonumber(got[1]) == day
      day_current[key] = current
      got[1], got[2] = got[2], got[3]
    elseif current then
      if name == 'D' then got = call('HMGET', key, ARGV[i + 3])
      else got = call('HMGET', key, 'orders', 'cancels') end
    end
    if name == 'D' then
      count, limit = current and tonumber(got[1]) or 0, tonumber(ARGV[i + 2])
      bad = count >= limit
    else
      local orders, cancels = current and tonumber(got[1]) or 0, current and tonumber(got[2]) or 0
      local num, den = tonumber(ARGV[i + 3]), tonumber(ARGV[i + 4])
      count, limit = cancels, orders
      bad = orders >= tonumber(ARGV[i + 2]) and (cancels + 1) * den > num * orders
    end
    delay = day_end_ms - now_ms
  end
  if count then
    if bad then failed = true end
    if bad or peek then
      rep = rep or { 0, now_us }
      local o = #rep
      rep[o + 1], rep[o + 2], rep[o + 3], rep[o + 4] = j, count, limit, bad and delay or 0
    end
    if name == 'W' or name == 'B' or name == 'D' then
      res[r + 1], res[r + 2] = j, limit - count - 1
      r = r + 2
    end
  end
end

if peek then
  rep = rep or { 0, now_us }
  rep[1] = 2
  return rep
end
if failed then return rep end

-- ---------------------------------------------------------------------------
-- phase 2: consume (every check passed)

local day_ready   -- day key -> already made current and given its TTL in this call
local c = 3       -- res[c]: the next op checked in phase 1 among W, B and D
x = 0
for i = 5, last, 5 do
  local j, name = i / 5, ARGV[i]
  local key = KEYS[tonumber(ARGV[i + 1])]
  local checked = res[c] == j
  if checked then c = c + 2 end
  if name == 'W' or name == 'B' then
    if checked then
      local window_ms = tonumber(ARGV[i + 3])
      if name == 'W' then
        call('ZREMRANGEBYSCORE', key, '-inf', now_us - window_ms * 1000)
        call('ZADD', key, now_us, nonce)
        call('PEXPIRE', key, window_ms + 1000)
      else
        local g = ceil(window_ms / BUCKETS)
        local k = ceil(window_ms / g)
        local cur = floor(now_ms / g)
        local first_live = cur - k
        local n, lo, hi, here = todo[x + 1], todo[x + 2], todo[x + 3], todo[x + 4]
        local stale, recount, field = todo[x + 5], todo[x + 6], todo[x + 7]
        x = x + 7
        if n == 0 or recount then
          local all = recount and call('HGETALL', key)
          call('DEL', key)
          n, lo, hi, here = 0, cur, cur, 0
          if recount then
            -- Rare: keep the live fields only.
            for a = 1, #all, 2 do
              local f = all[a]
              if sub(f, 1, 1) == 'b' then
                local b = tonumber(sub(f, 2))
                if b >= first_live then
                  local kept = tonumber(all[a + 1])
                  if b == cur then here = kept else call('HSET', key, f, kept) end
                  n = n + kept
                  lo, hi = math.min(lo, b), math.max(hi, b)
                end
              end
            end
          end
          call('HSET', key, field, here + 1, 'n', n + 1, 'lo', lo, 'hi', hi)
          call('PEXPIRE', key, (hi + k + 2) * g + 1000 - now_ms)
        else
          local old_lo = lo
          if lo < first_live then
            local fields = {}
            for b = lo, first_live - 1 do fields[#fields + 1] = 'b' .. b end
            call('HDEL', key, unpack(fields))
            n, lo = n - stale, first_live
          end
          if cur < lo then lo = cur end
          if cur > hi then
            -- The hash expires a bucket and a second after its newest bucket (hi)
            -- leaves the window, at hi + k + 1 buckets: so its TTL changes only
            -- when hi does (or the hash is new).
            call('HSET', key, field, here + 1, 'n', n + 1, 'lo', lo, 'hi', cur)
            call('PEXPIRE', key, (cur + k + 2) * g + 1000 - now_ms)
          elseif lo ~= old_lo then
            call('HSET', key, field, here + 1, 'n', n + 1, 'lo', lo)
          else
            call('HSET', key, field, here + 1, 'n', n + 1)
          end
        end
      end
    end
  elseif name == 'D' or name == 'T' then
    day_ready = day_ready or {}
    local fresh = false  -- the hash was made anew for today by this op
    if not day_ready[key] then
      local current = day_current and day_current[key]
      if current == nil then current = tonumber(call('HGET', key, 'day')) == day end
      if not current then
        call('DEL', key)
        call('HSET', key, 'day', day)
        fresh = true
      end
      day_ready[key] = true
    end
    call('HINCRBY', key, name == 'D' and ARGV[i + 3] or ARGV[i + 2], 1)
    -- The hash lives until an hour past the end of its day: a TTL set once, when the
    -- day's hash is made (only this script writes day hashes). Relative, so a pinned
    -- clock (tests) expires keys like the real one.
    if fresh then call('PEXPIRE', key, day_end_ms + HOUR_MS - now_ms) end
  elseif name == 'S' then
    call('SET', key, now_ms .. '|' .. ARGV[i + 3], 'PX', ARGV[i + 2])
  elseif name == 'I' then
    call('SET', key, '0', 'PX', ARGV[i + 2])
  elseif name == 'U' then
    local value = call('GET', key)
    if value then
      local sep = string.find(value, '|', 1, true)
      call('SET', key, sub(value, 1, sep - 1) .. '|' .. ARGV[i + 3], 'KEEPTTL')
    elseif ARGV[i + 3] == '1' then
      call('SET', key, '0|1', 'PX', ARGV[i + 2])
    end
  end
end
res[r + 1] = nil  -- the reply ends at the first nil
return res
