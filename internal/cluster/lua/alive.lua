-- KEYS[1] leases zset, ARGV[1] node. Returns 1 if its lease is unexpired.
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local score = redis.call('ZSCORE', KEYS[1], ARGV[1])
if score and tonumber(score) >= now then
  return 1
end
return 0
