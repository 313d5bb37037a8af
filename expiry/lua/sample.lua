#!lua flags=no-writes,allow-stale
local now = tonumber(ARGV[#ARGV])
local r = redis.call('SCAN', ARGV[1], 'COUNT', ARGV[2])
local out = {r[1], #r[2]}
for _, k in ipairs(r[2]) do
  local s = redis.call('PEXPIRETIME', k)
  if s >= 0 and now > s - SHIFT then out[#out+1] = k end
end
return out
