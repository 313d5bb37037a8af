local key, ms, group, consumer = KEYS[1], tonumber(ARGV[1]), ARGV[2], ARGV[3]
local minidle, n = tonumber(ARGV[4]), tonumber(ARGV[5])
local ids = {}
for i = 1, n do ids[i] = ARGV[5 + i] end
local dt, force = ARGV[6 + n], ARGV[7 + n] == '1'
local opts = {}
for i = 8 + n, #ARGV do opts[#opts + 1] = ARGV[i] end
local function never()
local a = {key, group, consumer, '9223372036854775807'}
for _, id in ipairs(ids) do a[#a + 1] = id end
for _, o in ipairs(opts) do a[#a + 1] = o end
return redis.pcall('XCLAIM', unpack(a))
end
local s = redis.pcall('XPENDING', key, group)
if type(s) ~= 'table' or s.err then return never() end
local pick, seen = {}, {}
for _, id in ipairs(ids) do
if seen[id] then
-- Repeated: redis checks it again after claiming it, with its new time.
if minidle == 0 or ms - tonumber(dt) >= minidle then pick[#pick + 1] = id end
else
local p = pending(key, group, id, id, 1)
if #p == 0 or #redis.call('XRANGE', key, id, id, 'COUNT', 1) == 0 or idleAt(key, group, p[1], ms, minidle) then
pick[#pick + 1] = id
seen[id] = true
end
end
end
if #pick == 0 then return never() end
settle(ms)
local a = {key, group, consumer, '0'}
for _, id in ipairs(pick) do a[#a + 1] = id end
a[#a + 1] = 'TIME' a[#a + 1] = dt
if force then a[#a + 1] = 'FORCE' end
for _, o in ipairs(opts) do a[#a + 1] = o end
return redis.pcall('XCLAIM', unpack(a))