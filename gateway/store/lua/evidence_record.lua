-- Record which accounts were seen with one device id or IP address, and say
-- when more of them than the threshold share it within the window.
--
-- KEYS[1]  the sorted set of accounts (score: last seen, Redis time in ms)
-- KEYS[2]  the count at which a suspicion was last raised (same hash tag)
-- ARGV[1]  window in ms
-- ARGV[2]  the most accounts kept (the newest; bounds the set)
-- ARGV[3]  threshold: more accounts than this raise a suspicion
-- ARGV[4..] the accounts seen now
--
-- A suspicion is raised once per growth: again only when the count exceeds
-- the count of the last one (which is forgotten after a window).
-- Returns { count, raised (0/1), now_ms, [account, last_seen, ...] (if raised, newest first) }.

local t = redis.call('TIME')
local now_ms = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local window = tonumber(ARGV[1])
local keep = tonumber(ARGV[2])
local threshold = tonumber(ARGV[3])

local function int(n) return string.format('%.0f', n) end

for i = 4, #ARGV do
  redis.call('ZADD', KEYS[1], int(now_ms), ARGV[i])
end
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', '(' .. int(now_ms - window))
local count = redis.call('ZCARD', KEYS[1])
if count > keep then
  redis.call('ZREMRANGEBYRANK', KEYS[1], 0, count - keep - 1)
  count = keep
end
redis.call('PEXPIRE', KEYS[1], window)

local last = tonumber(redis.call('GET', KEYS[2]) or '0')
if threshold > 0 and count > threshold and count > last then
  redis.call('SET', KEYS[2], count, 'PX', window)
  local seen = redis.call('ZREVRANGE', KEYS[1], 0, -1, 'WITHSCORES')
  return { count, 1, int(now_ms), seen }
end
return { count, 0, int(now_ms) }
