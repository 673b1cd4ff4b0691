-- Forget an expired node and tombstone it.
-- KEYS[1] leases zset, KEYS[2] dead zset, KEYS[3] the node's lock,
-- KEYS[4] incarnations hash (kept while the tombstone is: it says which
-- incarnation was declared dead).
-- ARGV[1] node, ARGV[2] how long tombstones are kept, ms.
-- Returns 0 (and changes nothing) if the lease is current again.
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local score = redis.call('ZSCORE', KEYS[1], ARGV[1])
if score and tonumber(score) >= now then
  return 0
end
redis.call('ZREM', KEYS[1], ARGV[1])
redis.call('DEL', KEYS[3])
redis.call('ZADD', KEYS[2], now, ARGV[1])
local cutoff = '(' .. (now - tonumber(ARGV[2]))
local old = redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', cutoff)
for _, n in ipairs(old) do
  if not redis.call('ZSCORE', KEYS[1], n) then
    redis.call('HDEL', KEYS[4], n)
  end
end
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', cutoff)
return 1
