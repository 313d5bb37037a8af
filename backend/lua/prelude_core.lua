local deny = {randomkey=1, spop=1, srandmember=1, hrandfield=1, zrandmember=1, scan=1, sscan=1, hscan=1, zscan=1, dump=1, object=1, xinfo=1, xpending=1, xclaim=1, xautoclaim=1, xreadgroup=1, info=1, lastsave=1, memory=1, slowlog=1, migrate=1, latency=1, client=1, command=1}
local order = {smembers=1, sinter=1, sunion=1, sdiff=1, keys=1, hkeys=1, hvals=1, hgetall=2}
local now = 0
local SH = SHIFT
local function check(n, ...)
if type(n) ~= 'string' then return nil end
local c = string.lower(n)
local bad = deny[c]
if c == 'xadd' then
local a = {...} local i = 2
while a[i] do local o = string.lower(a[i])
if o == 'nomkstream' then i = i + 1
elseif o == 'maxlen' or o == 'minid' then if a[i+1] == '=' or a[i+1] == '~' then i = i + 3 else i = i + 2 end
elseif o == 'limit' then i = i + 2
else break end end
bad = a[i] == '*' n = 'xadd *' end
if bad then return 'ERR raftproxy: \'' .. string.upper(n) .. '\' has a random or clock-dependent result and cannot run inside a script (it would differ between nodes)' end
return nil end
local function fix(n, r)
if type(r) ~= 'table' or r.err or r.ok or type(n) ~= 'string' then return r end
local k = order[string.lower(n)]
if k == 1 then table.sort(r) elseif k == 2 then
local p = {} for i = 1, #r, 2 do p[#p+1] = {r[i], r[i+1]} end
table.sort(p, function(x, y) return x[1] < y[1] end)
for i, v in ipairs(p) do r[2*i-1], r[2*i] = v[1], v[2] end end
return r end
local function int(v) if type(v) == 'number' then if v == math.floor(v) then return v end return nil end
if type(v) ~= 'string' or #v > 16 or not string.match(v, '^%-?%d+$') then return nil end return tonumber(v) end
local function far(n) return n > 4e15 or n < -4e15 end
local function at(n) return string.format('%d', n + SH) end
local function copy(a) local b = {} for i = 1, #a do b[i] = a[i] end return b end
local function conv(c, a)
if c == 'expire' or c == 'pexpire' or c == 'expireat' or c == 'pexpireat' then
local n = int(a[3]) if n == nil then return a end
if c == 'expire' or c == 'expireat' then n = n * 1000 end
if c == 'expire' or c == 'pexpire' then n = n + now end
if far(n) then return a end
local b = {'PEXPIREAT', a[2], at(n)} for i = 4, #a do b[#b+1] = a[i] end return b end
if c == 'setex' or c == 'psetex' then
if #a ~= 4 then return a end
local n = int(a[3]) if n == nil or n <= 0 then return a end
if c == 'setex' then n = n * 1000 end
n = n + now if far(n) then return a end
return {'SET', a[2], a[4], 'PXAT', at(n)} end
if c == 'restore' then
local n = int(a[3]) if n == nil or n <= 0 or #a < 4 then return a end
local abs = false for i = 5, #a do if type(a[i]) == 'string' and string.upper(a[i]) == 'ABSTTL' then abs = true end end
if not abs then n = n + now end
if far(n) then return a end
local b = copy(a) b[3] = at(n) if not abs then b[#b+1] = 'ABSTTL' end return b end
local from = 3 if c == 'set' then from = 4 end
for i = from, #a - 1 do
local o = a[i] if type(o) == 'string' then o = string.upper(o) end
if o == 'EX' or o == 'PX' or o == 'EXAT' or o == 'PXAT' then
local n = int(a[i+1]) if n == nil or n <= 0 then return a end
if o == 'EX' or o == 'EXAT' then n = n * 1000 end
if o == 'EX' or o == 'PX' then n = n + now end
if far(n) then return a end
local b = copy(a) b[i] = 'PXAT' b[i+1] = at(n) return b end end
return a end
local timed = {expire=1, pexpire=1, expireat=1, pexpireat=1, setex=1, psetex=1, set=1, getex=1, restore=1}
local shows = {ttl=1, pttl=1, expiretime=1, pexpiretime=1}
local function expired(f, k) local s = f('PEXPIRETIME', k) return type(s) == 'number' and s >= 0 and now > s - SH end
local function run(f, n, ...)
if type(n) ~= 'string' then return f(n, ...) end
local c = string.lower(n)
if shows[c] and select('#', ...) == 1 then
local s = f('PEXPIRETIME', ...)
if type(s) ~= 'number' or s < 0 then return s end
local d = s - SH
if now > d then return -2 end
if c == 'pexpiretime' then return d end
if c == 'expiretime' then return math.floor((d + 500) / 1000) end
if c == 'pttl' then return d - now end
return math.floor((d - now + 500) / 1000) end
if c == 'time' and select('#', ...) == 0 then return {string.format('%d', math.floor(now / 1000)), string.format('%d', (now % 1000) * 1000)} end
if timed[c] then return f(unpack(conv(c, {n, ...}))) end
local r = f(n, ...)
if c == 'keys' and type(r) == 'table' and not r.err then
local o = {} for _, k in ipairs(r) do if not expired(f, k) then o[#o+1] = k end end r = o end
return r end
local t = {}
t.call = function(...) local e = check(...) if e then error({err=e}) end return fix(..., run(redis.call, ...)) end
t.pcall = function(...) local e = check(...) if e then return {err=e} end return fix(..., run(redis.pcall, ...)) end
local ts = function(v) local k = type(v) if k == 'table' or k == 'function' or k == 'userdata' or k == 'thread' then return k end return tostring(v) end
