-- Renew a node's lease and report what was found before renewing.
-- KEYS[1] leases zset (member node, score expiry ms), KEYS[2] dead zset
-- (tombstones), KEYS[3] the node's cleanup lock. ARGV[1] node, ARGV[2] ttl ms.
-- Returns 0 held, 1 lost (expired or absent), 2 revoked, 3 cleaning.
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local node = ARGV[1]
local exp = now + tonumber(ARGV[2])
if redis.call('ZSCORE', KEYS[2], node) then
  redis.call('ZREM', KEYS[2], node)
  redis.call('ZADD', KEYS[1], exp, node)
  return 2
end
local score = redis.call('ZSCORE', KEYS[1], node)
if score and tonumber(score) >= now then
  redis.call('ZADD', KEYS[1], exp, node)
  return 0
end
-- A janitor is orphaning this node's connections: coming back now would race
-- it, so stay expired until it is done (then the node learns "revoked").
if score and redis.call('EXISTS', KEYS[3]) == 1 then
  return 3
end
redis.call('ZADD', KEYS[1], exp, node)
return 1
