#!lua flags=no-writes,allow-stale
local now = tonumber(ARGV[#ARGV])
local r = redis.pcall('KEYS', ARGV[1])
if r.err then return r end
local out = {}
for _, k in ipairs(r) do
  local s = redis.call('PEXPIRETIME', k)
  if not (s >= 0 and now > s - SHIFT) then out[#out+1] = k end
end
return out
