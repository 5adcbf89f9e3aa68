-- Write (or delete) one flag record and publish the change, atomically.
--
-- KEYS[1]  the record's hash key
-- ARGV[1]  pub/sub channel
-- ARGV[2]  flag kind (as in the key), ARGV[3] record id
-- ARGV[4]  ttl in ms ("0": no expiry)
-- ARGV[5]  "set" or "del"
-- ARGV[6..] field, value, field, value ... (for "set")
--
-- The version is Redis server time in microseconds, forced above the previous
-- version of the same key, so every reader can order writes of one key.
-- Returns { old_flat_hash, new_flat_hash, version }.

local key = KEYS[1]
local t = redis.call('TIME')
local now_us = tonumber(t[1]) * 1000000 + tonumber(t[2])
local now_ms = math.floor(now_us / 1000)
local old = redis.call('HGETALL', key)

local old_version = 0
for i = 1, #old, 2 do
  if old[i] == 'version' then old_version = tonumber(old[i + 1]) end
end
local version = now_us
if version <= old_version then version = old_version + 1 end

-- Integers beyond 1e14 print with exponents through tostring/cjson: format them.
local function int(n) return string.format('%.0f', n) end

local ttl = tonumber(ARGV[4])
local new = {}
if ARGV[5] == 'del' then
  redis.call('DEL', key)
else
  for i = 6, #ARGV, 2 do
    new[#new + 1] = ARGV[i]
    new[#new + 1] = ARGV[i + 1]
  end
  new[#new + 1] = 'updated_ms'
  new[#new + 1] = int(now_ms)
  new[#new + 1] = 'expires_ms'
  if ttl > 0 then new[#new + 1] = int(now_ms + ttl) else new[#new + 1] = '0' end
  new[#new + 1] = 'version'
  new[#new + 1] = int(version)
  redis.call('DEL', key)
  redis.call('HSET', key, unpack(new))
  if ttl > 0 then redis.call('PEXPIRE', key, ttl) end
end

local fields = {}
for i = 1, #new, 2 do fields[new[i]] = new[i + 1] end
local message = { k = ARGV[2], id = ARGV[3], v = int(version) }
if ARGV[5] ~= 'del' then message.f = fields end
redis.call('PUBLISH', ARGV[1], cjson.encode(message))
return { old, new, int(version) }
