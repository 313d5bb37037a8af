#!lua flags=no-writes,allow-stale
local now = tonumber(ARGV[#ARGV])
local s = redis.call('PEXPIRETIME', KEYS[1])
if s < 0 then return s end
local d = s - SHIFT
if now > d then return -2 end
local m = ARGV[1]
if m == 'pexpiretime' then return d end
if m == 'expiretime' then return math.floor((d + 500) / 1000) end
local t = d - now
if m == 'pttl' then return t end
return math.floor((t + 500) / 1000)
