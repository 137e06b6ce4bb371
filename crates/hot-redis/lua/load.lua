-- Loads (part of) a template's hot state, only while its meta is still absent.
--
-- Large claim histories arrive in several calls: every call but the last carries a chunk of
-- per-user counts and keyed coupons; the last one (ARGV[1] == "1") also writes the meta,
-- which is what opens the template to claims. Each call re-checks that the meta is absent, so
-- a slow loader can never overwrite counts that claims have already moved.
--
-- KEYS[1] meta, KEYS[2] users, KEYS[3] keys, KEYS[4] changed marker (see changed.lua)
--
-- ARGV[1] final ("1" writes the meta)     ARGV[2] template updated_at (epoch ms)
-- ARGV[3] status   ARGV[4] claim_start_ms  ARGV[5] claim_end_ms  ARGV[6] per_user_limit
-- ARGV[7] stock    ARGV[8] shop_id         ARGV[9] number of user pairs (n)
-- ARGV[10] stock_total (restocks reconcile against it, see changed.lua)
-- ARGV[11 .. 10+2n] user_id, count pairs
-- ARGV[11+2n ..]    key field, encoded coupon pairs
--
-- Reply: 1 written | 0 already loaded (nothing written) | -1 the template changed after the
-- version being loaded (the caller must load a fresher template).

if redis.call('EXISTS', KEYS[1]) == 1 then
  return 0
end
local changed = redis.call('GET', KEYS[4])
if changed and tonumber(changed) > tonumber(ARGV[2]) then
  return -1
end

local n = tonumber(ARGV[9])
local i = 11
local last_user = 10 + 2 * n
while i < last_user do
  local user, count = ARGV[i], tonumber(ARGV[i + 1])
  -- Counts only grow; two loaders reading the system of record at different times keep
  -- the larger (newer) count.
  local cur = tonumber(redis.call('HGET', KEYS[2], user) or '0')
  if count > cur then
    redis.call('HSET', KEYS[2], user, count)
  end
  i = i + 2
end
while i < #ARGV do
  redis.call('HSETNX', KEYS[3], ARGV[i], ARGV[i + 1])
  i = i + 2
end

if ARGV[1] == '1' then
  redis.call('HSET', KEYS[1], 'status', ARGV[3], 'claim_start_ms', ARGV[4], 'claim_end_ms', ARGV[5],
    'per_user_limit', ARGV[6], 'stock', ARGV[7], 'shop_id', ARGV[8], 'stock_total', ARGV[10])
  redis.call('DEL', KEYS[4])
end
return 1
