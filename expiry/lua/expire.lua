local now = tonumber(ARGV[#ARGV])
local n = 0
for _, k in ipairs(KEYS) do
  local s = redis.call('PEXPIRETIME', k)
  if s >= 0 and now > s - SHIFT then redis.call('DEL', k) n = n + 1 end
end
return n
