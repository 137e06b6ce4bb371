-- Releases a persister's lease only if it is still ours (compare and delete).
-- KEYS[1] lease   ARGV[1] node id
-- Reply: 1 released | 0 not ours (expired, or taken over by another node).
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
