-- Take (or extend) the cleanup lock of an expired node.
-- KEYS[1] leases zset, KEYS[2] the node's lock. ARGV[1] node, ARGV[2] holder,
-- ARGV[3] ttl ms. Returns 1 if holder has the lock now.
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local score = redis.call('ZSCORE', KEYS[1], ARGV[1])
if not score or tonumber(score) >= now then
  return 0
end
local h = redis.call('GET', KEYS[2])
if h and h ~= ARGV[2] then
  return 0
end
redis.call('SET', KEYS[2], ARGV[2], 'PX', ARGV[3])
return 1
