local function nowMs() local t = redis.call('TIME') return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000) end
local function settle(ms) local t0 = nowMs() local t = t0 while t < ms and t - t0 < 500 do t = nowMs() end end
local function pending(key, group, a, b, n)
local t1 = nowMs()
local p = redis.call('XPENDING', key, group, a, b, n)
local t2 = nowMs()
for _, e in ipairs(p) do e.lo, e.hi = t1 - e[3], t2 - e[3] end
return p
end
local function idleAt(key, group, e, ms, minidle)
if minidle == 0 or ms - e.hi >= minidle then return true end
if ms - e.lo < minidle then return false end
for _ = 1, 1000 do
local p = pending(key, group, e[1], e[1], 1)
if #p == 0 then return false end
if p[1].lo == p[1].hi then return ms - p[1].lo >= minidle end
end
error({err = 'ERR raftproxy: the clock moved during every XPENDING read'})
end
