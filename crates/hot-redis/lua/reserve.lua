-- Reserves one coupon for each user of a distribution batch, atomically with claims (same
-- meta and users keys as claim.lua), and stores the answer so a retried batch gets it again.
-- All keys share the hash tag {tpl:<id>}.
--
-- KEYS[1] meta    hash: status, claim_start_ms, claim_end_ms, per_user_limit, stock, shop_id
-- KEYS[2] users   hash: user_id -> coupons of the template the user holds
-- KEYS[3] answer  string: the stored answer of this batch (task, first row)
--
-- ARGV[1]    now (epoch ms)
-- ARGV[2]    replay only ("1": give back a stored answer, never reserve anew)
-- ARGV[3]    answer lifetime (ms)
-- ARGV[4..7] refusal codes (ClaimRefusal::as_code): ended, terminated, sold out, limit reached
-- ARGV[8..]  the batch's user ids in file order (repeats allowed)
--
-- Reply: {0} not loaded | {1} nothing stored (replay only) | {2, answer} the stored answer |
--        {3, answer} reserved now.
-- The answer has one comma-separated entry per user, in order: a positive number is the
-- user's seq of the reserved coupon, a negative one the refusal code negated ("" for no users).
-- Ids stay strings throughout: Lua numbers are doubles and would round 64-bit ids.
--
-- claim_start is not checked: a distribution may push coupons before the sale opens.

local stored = redis.call('GET', KEYS[3])
if stored then
  return {2, stored}
end
if ARGV[2] == '1' then
  return {1}
end

local meta = redis.call('HMGET', KEYS[1], 'status', 'claim_end_ms', 'per_user_limit', 'stock')
if not meta[1] then
  return {0}
end

local first = 8
local n = #ARGV - first + 1
local out = {}
local status = meta[1]
local refuse_all
if status == 'terminated' then
  refuse_all = ARGV[5]
elseif status == 'ended' or tonumber(ARGV[1]) >= tonumber(meta[2]) then
  refuse_all = ARGV[4]
end

if refuse_all then
  local code = '-' .. refuse_all
  for i = 1, n do
    out[i] = code
  end
else
  local limit = tonumber(meta[3])
  local start_stock = tonumber(meta[4])
  local stock = start_stock
  local limit_code, sold_code = '-' .. ARGV[7], '-' .. ARGV[6]
  for i = 1, n do
    local user = ARGV[first + i - 1]
    -- Read per user (not cached): a user repeated in the batch sees the count just moved.
    local held = tonumber(redis.call('HGET', KEYS[2], user) or '0')
    if held >= limit then
      out[i] = limit_code
    elseif stock <= 0 then
      out[i] = sold_code
    else
      out[i] = tostring(redis.call('HINCRBY', KEYS[2], user, 1))
      stock = stock - 1
    end
  end
  if stock ~= start_stock then
    redis.call('HINCRBY', KEYS[1], 'stock', stock - start_stock)
  end
end

local answer = table.concat(out, ',')
redis.call('SET', KEYS[3], answer, 'PX', ARGV[3])
return {3, answer}
