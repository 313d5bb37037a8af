local key, ms, group, consumer = KEYS[1], tonumber(ARGV[1]), ARGV[2], ARGV[3]
local minidle, count, justid = tonumber(ARGV[4]), tonumber(ARGV[6]), ARGV[7] == '1'
local function raw()
local a = {}
for i = 8, #ARGV do a[#a + 1] = ARGV[i] end
return redis.pcall('XAUTOCLAIM', key, unpack(a))
end
local s = redis.pcall('XPENDING', key, group)
if type(s) ~= 'table' or s.err then return raw() end
local attempts = count * 10
local p = redis.pcall('XPENDING', key, group, ARGV[5], '+', 1)
if type(p) ~= 'table' or p.err then return raw() end
p = pending(key, group, ARGV[5], '+', attempts + 1)
local claim, deleted = {}, {}
local i = 1
while i <= attempts and count > 0 and p[i] do
local id = p[i][1]
if #redis.call('XRANGE', key, id, id, 'COUNT', 1) == 0 then
deleted[#deleted + 1] = id
count = count - 1
elseif idleAt(key, group, p[i], ms, minidle) then
claim[#claim + 1] = id
count = count - 1
end
i = i + 1
end
local cursor = '0-0'
if p[i] then cursor = p[i][1] end
settle(ms)
for j = 1, #deleted, 1000 do redis.call('XACK', key, group, unpack(deleted, j, math.min(j + 999, #deleted))) end
local claimed = {}
for j = 1, #claim, 1000 do
local a = {key, group, consumer, '0'}
for k = j, math.min(j + 999, #claim) do a[#a + 1] = claim[k] end
a[#a + 1] = 'TIME' a[#a + 1] = ARGV[1]
if justid then a[#a + 1] = 'JUSTID' end
for _, e in ipairs(redis.call('XCLAIM', unpack(a))) do claimed[#claimed + 1] = e end
end
return {cursor, claimed, deleted}