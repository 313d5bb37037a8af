#!lua flags=no-writes,allow-stale
local now = tonumber(ARGV[#ARGV])
local k
for i = 1, 100 do
  k = redis.call('RANDOMKEY')
  if not k then return false end
  local s = redis.call('PEXPIRETIME', k)
  if not (s >= 0 and now > s - SHIFT) then return k end
end
return k
