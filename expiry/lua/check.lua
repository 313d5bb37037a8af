#!lua flags=no-writes,allow-stale
local now = tonumber(ARGV[#ARGV])
local out = {}
for _, k in ipairs(KEYS) do
  local s = redis.call('PEXPIRETIME', k)
  if s >= 0 and now > s - SHIFT then out[#out+1] = k end
end
return out
