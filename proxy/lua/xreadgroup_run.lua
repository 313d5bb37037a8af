local ms = tonumber(ARGV[1])
local args = {}
for i = 4, #ARGV do args[#args + 1] = ARGV[i] end
local r = redis.pcall('XREADGROUP', unpack(args))
if type(r) ~= 'table' or r.err then return r end
local group, consumer = ARGV[2], ARGV[3]
settle(ms)
for _, s in ipairs(r) do
local ids = {}
for _, e in ipairs(s[2]) do if e[2] then ids[#ids + 1] = e[1] end end
for i = 1, #ids, 1000 do
local a = {s[1], group, consumer, '0'}
for k = i, math.min(i + 999, #ids) do a[#a + 1] = ids[k] end
a[#a + 1] = 'TIME' a[#a + 1] = ARGV[1] a[#a + 1] = 'JUSTID'
redis.call('XCLAIM', unpack(a))
end
end
return r