-- Renew a node's lease and report what was found before renewing.
-- KEYS[1] leases zset (member node, score expiry ms), KEYS[2] dead zset
-- (tombstones), KEYS[3] the node's cleanup lock, KEYS[4] incarnations hash
-- (node → token of the process that holds or last held the lease).
-- ARGV[1] node, ARGV[2] ttl ms, ARGV[3] this process's incarnation token,
-- ARGV[4] "1" if this process has not held the lease yet.
-- Returns 0 held, 1 lost (expired or absent), 2 revoked, 3 cleaning,
-- 4 previous (an earlier incarnation's lease, expired now for its cleanup),
-- 5 superseded (a later incarnation holds the lease).
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local node = ARGV[1]
local exp = now + tonumber(ARGV[2])
local inc = ARGV[3]
local cur = redis.call('HGET', KEYS[4], node) or ''
if redis.call('ZSCORE', KEYS[2], node) then
  redis.call('ZREM', KEYS[2], node)
  redis.call('ZADD', KEYS[1], exp, node)
  if cur == inc then
    return 2
  end
  -- An earlier incarnation was declared dead and cleaned up: start afresh.
  redis.call('HSET', KEYS[4], node, inc)
  return 1
end
local score = redis.call('ZSCORE', KEYS[1], node)
if score and cur ~= inc then
  if ARGV[4] ~= '1' then
    return 5
  end
  if redis.call('EXISTS', KEYS[3]) == 1 then
    return 3
  end
  -- The earlier process is gone (this one has its node ID): expire its
  -- lease so that its cleanup can start now rather than after the TTL.
  if tonumber(score) >= now then
    redis.call('ZADD', KEYS[1], now - 1, node)
  end
  return 4
end
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
redis.call('HSET', KEYS[4], node, inc)
return 1
