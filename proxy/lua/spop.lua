local m = redis.pcall('SMEMBERS', KEYS[1])
if m.err then return m end
local withCount = ARGV[2] ~= nil
if #m == 0 then if withCount then return {} end return false end
local n = 1
if withCount then n = tonumber(ARGV[2]) end
if n > #m then n = #m end
if n == 0 then return {} end
table.sort(m)
math.randomseed(tonumber(ARGV[1]))
local out = {}
for i = 1, n do local j = math.random(i, #m) m[i], m[j] = m[j], m[i] out[i] = m[i] end
if n == #m then redis.call('DEL', KEYS[1]) else
for i = 1, n, 1000 do redis.call('SREM', KEYS[1], unpack(out, i, math.min(i + 999, n))) end end
if withCount then return out end
return out[1]