local r = {}
for i, k in ipairs(KEYS) do
local id = ARGV[i]
if id == '$' then
local t = redis.call('TYPE', k).ok
if t == 'none' then id = '0-0'
elseif t == 'stream' then
local info = redis.call('XINFO', 'STREAM', k)
for j = 1, #info, 2 do if info[j] == 'last-generated-id' then id = info[j + 1] end end
end
end
r[i] = id
end
return r