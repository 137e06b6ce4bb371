-- Takes (or renews) a persister's lease on one template's claim log.
-- KEYS[1] lease   ARGV[1] node id   ARGV[2] lease time (ms)
-- Reply: 1 the lease is ours (taken or renewed) | 0 another node holds it.
local holder = redis.call('GET', KEYS[1])
if not holder then
  redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
  return 1
end
if holder == ARGV[1] then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  return 1
end
return 0
