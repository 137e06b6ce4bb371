-- Flow control: GCRA token buckets, all of a request's checks decided at once.
-- KEYS[i]: the bucket of check i (its theoretical arrival time, microseconds).
-- ARGV[2i-1]: microseconds per token; ARGV[2i]: burst.
-- Returns {0, 0} when every bucket had a token (one taken from each), else
-- {i, retry_after_us} for the first bucket that had none (nothing taken from any).
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local new = {}
for i = 1, #KEYS do
  local interval = tonumber(ARGV[2 * i - 1])
  local burst = tonumber(ARGV[2 * i])
  local tat = tonumber(redis.call('GET', KEYS[i]) or now) or now
  if tat < now then tat = now end
  local next_tat = tat + interval
  local allow_at = next_tat - interval * burst
  if allow_at > now then
    return {i, math.ceil(allow_at - now)}
  end
  new[i] = next_tat
end
for i = 1, #KEYS do
  -- The bucket is full again (and may go) once its arrival time has passed.
  local ttl_ms = math.ceil((new[i] - now) / 1000) + 1
  redis.call('SET', KEYS[i], string.format('%d', new[i]), 'PX', ttl_ms)
end
return {0, 0}
