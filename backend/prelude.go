package backend

import (
	"bytes"
	"strconv"
	"strings"

	"github.com/raftproxy/raftproxy/expiry"
)

// Every script and function library that reaches the log runs behind a Lua
// prelude, so that it cannot make nodes diverge:
//
//   - It shadows the global redis with a local table whose call and pcall
//     refuse commands whose result is random or depends on the node's
//     internals (COMMAND INFO tip nondeterministic_output; XADD only with
//     an auto-generated ID), and sort the replies whose order depends on
//     each redis process's hash seed (tip nondeterministic_output_order), as
//     redis did for scripts before 5.0.
//   - It runs by the log's time, not redis's clock (see package expiry):
//     the applier appends the entry's time to ARGV (to a function's args),
//     the prelude takes it off, and call and pcall answer TIME with it, set
//     deadlines shifted from it (expiry.Rewrite's rules), answer TTL, PTTL,
//     EXPIRETIME and PEXPIRETIME by it, and leave out of KEYS the keys
//     expired by it.
//   - It shadows tostring, which shows table and function addresses.
//   - It reseeds math.random with 0 at every call: redis 7 does not (for
//     EVAL nor FCALL), so each node would draw different numbers.
//
// The prelude is one line placed in front of the user's first line (after
// a "#!" line if there is one), so redis's error line numbers stay the
// user's. It starts with preludeStart and ends with preludeEnd, which
// appear nowhere else in it, so it can be stripped again (registry shas,
// FUNCTION LIST WITHCODE) whatever the user's code contains, and replaced
// by the current one when an entry proposed by an older version applies.
const (
	preludeStart = "local redis, tostring = (function() "
	preludeEnd   = " end)() --[[raftproxy]] "
)

// preludeCore is the part shared by scripts and libraries. It looks the
// global redis up when called, not when built: a library is loaded with a
// restricted redis (no call, no setmetatable) and runs with the full one.
// The line has no comments: one would end it.
var preludeCore = joinLua(
	`local deny = {randomkey=1, spop=1, srandmember=1, hrandfield=1, zrandmember=1, scan=1, sscan=1, hscan=1, zscan=1, dump=1, object=1, xinfo=1, xpending=1, xclaim=1, xautoclaim=1, xreadgroup=1, info=1, lastsave=1, memory=1, slowlog=1, migrate=1, latency=1, client=1, command=1}`,
	`local order = {smembers=1, sinter=1, sunion=1, sdiff=1, keys=1, hkeys=1, hvals=1, hgetall=2}`,
	`local now = 0`,
	`local SH = `+strconv.FormatInt(expiry.Shift, 10),
	`local function check(n, ...)`,
	`if type(n) ~= 'string' then return nil end`,
	`local c = string.lower(n)`,
	`local bad = deny[c]`,
	`if c == 'xadd' then`,
	`local a = {...} local i = 2`,
	`while a[i] do local o = string.lower(a[i])`,
	`if o == 'nomkstream' then i = i + 1`,
	`elseif o == 'maxlen' or o == 'minid' then if a[i+1] == '=' or a[i+1] == '~' then i = i + 3 else i = i + 2 end`,
	`elseif o == 'limit' then i = i + 2`,
	`else break end end`,
	`bad = a[i] == '*' n = 'xadd *' end`,
	`if bad then return 'ERR raftproxy: \'' .. string.upper(n) .. '\' has a random or clock-dependent result and cannot run inside a script (it would differ between nodes)' end`,
	`return nil end`,
	`local function fix(n, r)`,
	`if type(r) ~= 'table' or r.err or r.ok or type(n) ~= 'string' then return r end`,
	`local k = order[string.lower(n)]`,
	`if k == 1 then table.sort(r) elseif k == 2 then`,
	`local p = {} for i = 1, #r, 2 do p[#p+1] = {r[i], r[i+1]} end`,
	`table.sort(p, function(x, y) return x[1] < y[1] end)`,
	`for i, v in ipairs(p) do r[2*i-1], r[2*i] = v[1], v[2] end end`,
	`return r end`,
	`local function int(v) if type(v) == 'number' then if v == math.floor(v) then return v end return nil end`,
	`if type(v) ~= 'string' or #v > 16 or not string.match(v, '^%-?%d+$') then return nil end return tonumber(v) end`,
	`local function far(n) return n > 4e15 or n < -4e15 end`,
	`local function at(n) return string.format('%d', n + SH) end`,
	`local function copy(a) local b = {} for i = 1, #a do b[i] = a[i] end return b end`,
	`local function conv(c, a)`,
	`if c == 'expire' or c == 'pexpire' or c == 'expireat' or c == 'pexpireat' then`,
	`local n = int(a[3]) if n == nil then return a end`,
	`if c == 'expire' or c == 'expireat' then n = n * 1000 end`,
	`if c == 'expire' or c == 'pexpire' then n = n + now end`,
	`if far(n) then return a end`,
	`local b = {'PEXPIREAT', a[2], at(n)} for i = 4, #a do b[#b+1] = a[i] end return b end`,
	`if c == 'setex' or c == 'psetex' then`,
	`if #a ~= 4 then return a end`,
	`local n = int(a[3]) if n == nil or n <= 0 then return a end`,
	`if c == 'setex' then n = n * 1000 end`,
	`n = n + now if far(n) then return a end`,
	`return {'SET', a[2], a[4], 'PXAT', at(n)} end`,
	`if c == 'restore' then`,
	`local n = int(a[3]) if n == nil or n <= 0 or #a < 4 then return a end`,
	`local abs = false for i = 5, #a do if type(a[i]) == 'string' and string.upper(a[i]) == 'ABSTTL' then abs = true end end`,
	`if not abs then n = n + now end`,
	`if far(n) then return a end`,
	`local b = copy(a) b[3] = at(n) if not abs then b[#b+1] = 'ABSTTL' end return b end`,
	`local from = 3 if c == 'set' then from = 4 end`,
	`for i = from, #a - 1 do`,
	`local o = a[i] if type(o) == 'string' then o = string.upper(o) end`,
	`if o == 'EX' or o == 'PX' or o == 'EXAT' or o == 'PXAT' then`,
	`local n = int(a[i+1]) if n == nil or n <= 0 then return a end`,
	`if o == 'EX' or o == 'EXAT' then n = n * 1000 end`,
	`if o == 'EX' or o == 'PX' then n = n + now end`,
	`if far(n) then return a end`,
	`local b = copy(a) b[i] = 'PXAT' b[i+1] = at(n) return b end end`,
	`return a end`,
	`local timed = {expire=1, pexpire=1, expireat=1, pexpireat=1, setex=1, psetex=1, set=1, getex=1, restore=1}`,
	`local shows = {ttl=1, pttl=1, expiretime=1, pexpiretime=1}`,
	`local function expired(f, k) local s = f('PEXPIRETIME', k) return type(s) == 'number' and s >= 0 and now > s - SH end`,
	`local function run(f, n, ...)`,
	`if type(n) ~= 'string' then return f(n, ...) end`,
	`local c = string.lower(n)`,
	`if shows[c] and select('#', ...) == 1 then`,
	`local s = f('PEXPIRETIME', ...)`,
	`if type(s) ~= 'number' or s < 0 then return s end`,
	`local d = s - SH`,
	`if now > d then return -2 end`,
	`if c == 'pexpiretime' then return d end`,
	`if c == 'expiretime' then return math.floor((d + 500) / 1000) end`,
	`if c == 'pttl' then return d - now end`,
	`return math.floor((d - now + 500) / 1000) end`,
	`if c == 'time' and select('#', ...) == 0 then return {string.format('%d', math.floor(now / 1000)), string.format('%d', (now % 1000) * 1000)} end`,
	`if timed[c] then return f(unpack(conv(c, {n, ...}))) end`,
	`local r = f(n, ...)`,
	`if c == 'keys' and type(r) == 'table' and not r.err then`,
	`local o = {} for _, k in ipairs(r) do if not expired(f, k) then o[#o+1] = k end end r = o end`,
	`return r end`,
	`local t = {}`,
	`t.call = function(...) local e = check(...) if e then error({err=e}) end return fix(..., run(redis.call, ...)) end`,
	`t.pcall = function(...) local e = check(...) if e then return {err=e} end return fix(..., run(redis.pcall, ...)) end`,
	`local ts = function(v) local k = type(v) if k == 'table' or k == 'function' or k == 'userdata' or k == 'thread' then return k end return tostring(v) end`,
)

// scriptPrelude is for EVAL: the script runs at once, with the full redis,
// and the last ARGV is the entry's time.
var scriptPrelude = preludeStart + joinLua(
	`math.randomseed(0)`,
	preludeCore,
	`now = tonumber(table.remove(ARGV) or '') or 0`,
	`return setmetatable(t, {__index = redis}), ts`,
) + preludeEnd

// libraryPrelude is for FUNCTION LOAD: while the library loads, only
// register_function, log and a few constants exist, so the table gets its
// metatable (and math its seed) when a registered function is called,
// which takes the entry's time off its args.
var libraryPrelude = preludeStart + joinLua(
	preludeCore,
	`local up = false`,
	`local function w(f) if f == nil then return nil end return function(keys, args) if not up then up = true setmetatable(t, {__index = redis}) end now = tonumber(table.remove(args) or '') or 0 math.randomseed(0) return f(keys, args) end end`,
	`t.register_function = function(a, b) if b == nil and a ~= nil and a.callback ~= nil then a.callback = w(a.callback) return redis.register_function(a) end return redis.register_function(a, w(b)) end`,
	`t.log = function(...) return redis.log(...) end`,
	`t.LOG_DEBUG, t.LOG_VERBOSE, t.LOG_NOTICE, t.LOG_WARNING, t.REDIS_VERSION, t.REDIS_VERSION_NUM = redis.LOG_DEBUG, redis.LOG_VERBOSE, redis.LOG_NOTICE, redis.LOG_WARNING, redis.REDIS_VERSION, redis.REDIS_VERSION_NUM`,
	`return t, ts`,
) + preludeEnd

func joinLua(lines ...string) string { return strings.Join(lines, " ") }

// WrapScript returns an EVAL body with the prelude in front of its first
// line of code (after a "#!" shebang line, which redis requires first).
func WrapScript(body []byte) []byte { return wrap(body, scriptPrelude) }

// WrapLibrary returns FUNCTION LOAD code with the library prelude after its
// "#!lua name=..." line. Code without that line is left as it is: redis
// refuses it anyway.
func WrapLibrary(code []byte) []byte {
	if !bytes.HasPrefix(code, []byte("#!")) {
		return code
	}
	return wrap(code, libraryPrelude)
}

func wrap(code []byte, prelude string) []byte {
	head, rest := splitShebang(code)
	if len(head) > 0 && head[len(head)-1] != '\n' {
		return code
	}
	out := make([]byte, 0, len(code)+len(prelude))
	out = append(out, head...)
	out = append(out, prelude...)
	return append(out, rest...)
}

// splitShebang splits off a first line starting with "#!", newline included.
func splitShebang(code []byte) (head, rest []byte) {
	if !bytes.HasPrefix(code, []byte("#!")) {
		return nil, code
	}
	i := bytes.IndexByte(code, '\n')
	if i < 0 {
		// Only a shebang: no code to guard, and the prelude must not
		// become part of the shebang's flags.
		return code, nil
	}
	return code[:i+1], code[i+1:]
}

// Unwrap strips the prelude from a wrapped script or library; ok is false
// when code does not start with one (after its shebang line).
func Unwrap(code []byte) (orig []byte, ok bool) {
	head, rest := splitShebang(code)
	if !bytes.HasPrefix(rest, []byte(preludeStart)) {
		return code, false
	}
	i := bytes.Index(rest, []byte(preludeEnd))
	if i < 0 {
		return code, false
	}
	rest = rest[i+len(preludeEnd):]
	out := make([]byte, 0, len(head)+len(rest))
	return append(append(out, head...), rest...), true
}
