-- Gives back the stock of coupons reserved for a distribution batch (reserve.lua) that the
-- system of record refused, at most once per batch. All keys share the hash tag {tpl:<id>}.
--
-- KEYS[1] meta   hash: see claim.lua
-- KEYS[2] guard  string: present once this batch's stock went back
--
-- ARGV[1] n, the coupons to give back (> 0)
-- ARGV[2] guard lifetime (ms)
--
-- Reply: 1 returned | 0 already returned by an earlier call (nothing changed) |
--        -1 not loaded (nothing to give back to; the guard is set all the same).
--
-- When the meta is missing the hot state was lost after the reservation: the next load reads
-- the stock from the system of record, which never took these coupons off. The guard is still
-- set, so a repeated call after that load does not add them a second time.

if not redis.call('SET', KEYS[2], '1', 'NX', 'PX', ARGV[2]) then
  return 0
end
if redis.call('EXISTS', KEYS[1]) == 0 then
  return -1
end
redis.call('HINCRBY', KEYS[1], 'stock', ARGV[1])
return 1
