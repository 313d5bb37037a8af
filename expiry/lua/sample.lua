#!lua flags=no-writes,allow-stale
local now = tonumber(ARGV[#ARGV])
local r = redis.call('SCAN', ARGV[1], 'COUNT', ARGV[2])
local out = {r[1], #r[2], -1}
for _, k in ipairs(r[2]) do
  local s = redis.call('PEXPIRETIME', k)
  if s >= 0 then
    local d = s - SHIFT
    if now > d then
      out[#out+1] = k
    elseif out[3] < 0 or d < out[3] then
      out[3] = d
    end
  end
end
return out
