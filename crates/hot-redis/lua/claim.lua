-- One claim, atomically: stock, the per-user count and the claim log move together or not at all. All keys share the hash tag {tpl:<id>}.
--
-- KEYS[1] meta   hash: status, claim_start_ms, claim_end_ms, per_user_limit, stock, shop_id
-- KEYS[2] users  hash: user_id -> coupons of the template the user holds
-- KEYS[3] keys   hash: claim_key .. "\31" .. user_id -> encoded coupon
-- KEYS[4] log    stream: the template's claim log
-- KEYS[5] pending hash (optional): the user's acknowledged coupons not yet in MySQL (coupon
--                 id -> encoded coupon), written here so a claim is one round trip. It hashes
--                 to the user's slot, not the template's: on one Redis it is passed; on a
--                 Redis Cluster (one slot per script) it is not, and the caller writes it
--                 right after the script.
--
-- ARGV[1]  now (epoch ms)
-- ARGV[2]  user id
-- ARGV[3]  idempotency field in KEYS[3] ("" when the claim carries no key)
-- ARGV[4]  claim key as sent ("" when none)
-- ARGV[5]  coupon id
-- ARGV[6]  template id
-- ARGV[7]  shop id
-- ARGV[8]  valid_from (epoch ms)
-- ARGV[9]  valid_until (epoch ms)
-- ARGV[10] claimed_at (epoch ms)
-- ARGV[11..15] refusal codes (ClaimRefusal::as_code): not started, ended, terminated,
--              sold out, limit reached
-- ARGV[16] TTL of the pending hash (ms), renewed by every claim of the user
-- ARGV[17] the claim request's W3C traceparent ("" when none), kept in the log entry for the
--          coupon.claimed event
--
-- Reply: {0} not loaded | {1, seq, stream id} claimed | {2, encoded coupon} replay |
--        {3, refusal code} refused.
-- Ids stay strings throughout: Lua numbers are doubles and would round 64-bit ids.

local meta = redis.call('HMGET', KEYS[1], 'status', 'claim_start_ms', 'claim_end_ms', 'per_user_limit', 'stock')
if not meta[1] then
  return {0}
end

local keyed = ARGV[3] ~= ''
if keyed then
  local prev = redis.call('HGET', KEYS[3], ARGV[3])
  if prev then
    return {2, prev}
  end
end

local status = meta[1]
if status == 'terminated' then
  return {3, tonumber(ARGV[13])}
end
if status == 'ended' then
  return {3, tonumber(ARGV[12])}
end
local now = tonumber(ARGV[1])
if now < tonumber(meta[2]) then
  return {3, tonumber(ARGV[11])}
end
if now >= tonumber(meta[3]) then
  return {3, tonumber(ARGV[12])}
end
local held = tonumber(redis.call('HGET', KEYS[2], ARGV[2]) or '0')
if held >= tonumber(meta[4]) then
  return {3, tonumber(ARGV[15])}
end
if tonumber(meta[5]) <= 0 then
  return {3, tonumber(ARGV[14])}
end

local seq = redis.call('HINCRBY', KEYS[2], ARGV[2], 1)
redis.call('HINCRBY', KEYS[1], 'stock', -1)
-- Same layout as the Rust codec (codec.rs): id,user,template,shop,seq,from,until,claimed,origin,status
local encoded = table.concat({ARGV[5], ARGV[2], ARGV[6], ARGV[7], seq, ARGV[8], ARGV[9], ARGV[10], 'claim', 'unused'}, ',')
local fields = {'c', ARGV[5], 'u', ARGV[2], 's', seq, 'sh', ARGV[7],
  'vf', ARGV[8], 'vu', ARGV[9], 'ca', ARGV[10]}
if keyed then
  fields[#fields + 1] = 'k'
  fields[#fields + 1] = ARGV[4]
end
if ARGV[17] and ARGV[17] ~= '' then
  fields[#fields + 1] = 't'
  fields[#fields + 1] = ARGV[17]
end
local id = redis.call('XADD', KEYS[4], '*', unpack(fields))
if keyed then
  redis.call('HSET', KEYS[3], ARGV[3], encoded)
end
if KEYS[5] then
  redis.call('HSET', KEYS[5], ARGV[5], encoded)
  redis.call('PEXPIRE', KEYS[5], ARGV[16])
end
return {1, seq, id}
