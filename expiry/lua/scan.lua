#!lua flags=no-writes,allow-stale
local now = tonumber(ARGV[#ARGV])
local r = redis.pcall('SCAN', unpack(ARGV, 1, #ARGV - 1))
if r.err then return r end
local out = {}
for _, k in ipairs(r[2]) do
  local s = redis.call('PEXPIRETIME', k)
  if not (s >= 0 and now > s - SHIFT) then out[#out+1] = k end
end
return {r[1], out}
