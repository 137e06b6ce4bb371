-- The back-office changed a template: reconcile stock and move its status, atomically.
--
-- KEYS[1] meta, KEYS[2] changed marker
-- ARGV[1] new stock_total  ARGV[2] new status  ARGV[3] template updated_at (epoch ms)
-- ARGV[4] marker lifetime (ms)
--
-- Reply: 1 applied to the loaded hot state | 0 not loaded (marker written instead).
--
-- A status never goes back to "active" once ended or terminated, so a late, reordered
-- notification cannot reopen a template. When the template is not loaded, the change is
-- remembered as a marker holding its updated_at: a concurrent loader holding an older copy
-- of the template is refused by load.lua instead of loading stale stock or status.

if redis.call('EXISTS', KEYS[1]) == 1 then
  -- Stock moves by the growth of stock_total since the total this state last saw, so a
  -- repeated or reordered notification never adds twice (totals only grow).
  local total = tonumber(redis.call('HGET', KEYS[1], 'stock_total') or '0')
  local new_total = tonumber(ARGV[1])
  if new_total > total then
    redis.call('HINCRBY', KEYS[1], 'stock', new_total - total)
    redis.call('HSET', KEYS[1], 'stock_total', new_total)
  end
  local cur = redis.call('HGET', KEYS[1], 'status')
  if cur == 'active' or not cur then
    redis.call('HSET', KEYS[1], 'status', ARGV[2])
  end
  return 1
end
local prev = tonumber(redis.call('GET', KEYS[2]) or '0')
if tonumber(ARGV[3]) > prev then
  redis.call('SET', KEYS[2], ARGV[3], 'PX', ARGV[4])
end
return 0
