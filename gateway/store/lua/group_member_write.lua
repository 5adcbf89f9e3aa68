-- Link an account into a group, or unlink it, and publish the change, atomically.
-- The same record format and announcement as flag_write.lua, with one guard:
-- a link never moves an account out of another group, and an unlink only
-- removes the account from the group the caller saw it in.
--
-- KEYS[1]  the account's membership record (pt:grpm:{<account>})
-- ARGV[1]  pub/sub channel
-- ARGV[2]  flag kind (as in the key), ARGV[3] account id
-- ARGV[4]  "link" or "unlink"
-- ARGV[5]  the group id
-- ARGV[6]  reason, ARGV[7] actor (for "link")
--
-- Returns { ok (1/0), group held before ("" when none), old_flat_hash, new_flat_hash, version }.
-- Not ok: nothing changed (linked elsewhere, or not in that group).

local key = KEYS[1]
local group = ARGV[5]
local old = redis.call('HGETALL', key)
local held = ''
local old_version = 0
for i = 1, #old, 2 do
  if old[i] == 'group' then held = old[i + 1] end
  if old[i] == 'version' then old_version = tonumber(old[i + 1]) end
end

local function int(n) return string.format('%.0f', n) end

if ARGV[4] == 'link' then
  if held ~= '' and held ~= group then return { 0, held, old, {}, '0' } end
else
  if held ~= group then return { 0, held, old, {}, '0' } end
end

local t = redis.call('TIME')
local now_us = tonumber(t[1]) * 1000000 + tonumber(t[2])
local version = now_us
if version <= old_version then version = old_version + 1 end

local new = {}
if ARGV[4] == 'link' then
  new = { 'group', group, 'reason', ARGV[6], 'actor', ARGV[7],
          'updated_ms', int(math.floor(now_us / 1000)), 'expires_ms', '0',
          'version', int(version) }
  redis.call('DEL', key)
  redis.call('HSET', key, unpack(new))
else
  redis.call('DEL', key)
end

local message = { k = ARGV[2], id = ARGV[3], v = int(version) }
if ARGV[4] == 'link' then
  local fields = {}
  for i = 1, #new, 2 do fields[new[i]] = new[i + 1] end
  message.f = fields
end
redis.call('PUBLISH', ARGV[1], cjson.encode(message))
return { 1, held, old, new, int(version) }
