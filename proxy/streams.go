package proxy

import (
	"bytes"
	"math"
	"strconv"
	"time"

	"github.com/raftproxy/raftproxy/resp"
)

// Stream commands whose effect redis takes from its own clock are rewritten
// at proposal into EVALs of the trusted scripts below (like SPOP in
// random.go: they are not wrapped in the user-script prelude), with the
// proposing node's clock (ms) in the log. See "Streams" under
// "Determinism" in docs/ARCHITECTURE.md.

// luaClock is shared by the scripts that store or compare delivery times.
// nowMs is the node's clock as redis's mstime() sees it. settle waits
// (bounded) until this node's clock has reached the proposal time: XCLAIM
// stores a TIME later than the node's own now as now, so a node whose
// clock lags the proposer's would store a different delivery time.
//
// XPENDING gives only idle = now - delivery time. pending reads PEL entries
// with the node's clock read before (t1) and after (t2), which bounds each
// delivery time to [t1 - idle, t2 - idle]; idleAt decides whether an entry
// was idle for at least minidle at the proposal time ms from those bounds,
// and only when they straddle the threshold re-reads that one entry until
// the clock reads the same millisecond before and after, which gives its
// delivery time exactly. The decision is then the same on every node.
const luaClock = `local function nowMs() local t = redis.call('TIME') return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000) end
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
`

// xaddScript is XADD with "*": the ID is <ms>-* with ms the larger of the
// proposal time (ARGV[1]) and the stream's last generated ID's time, so the
// ID is the same on every node and a proposer clock behind the stream's
// top never fails. ARGV[2] is the position of "*" in the rest of ARGV (the
// original arguments after the key). Arguments are left to XADD itself, so
// redis's errors (syntax first, then WRONGTYPE) come as redis gives them.
const xaddScript = `local function gt(a, b) if #a ~= #b then return #a > #b end return a > b end
local function incr(s) local i = #s while i > 0 and s:sub(i, i) == '9' do i = i - 1 end
if i == 0 then return '1' .. string.rep('0', #s) end
return s:sub(1, i - 1) .. string.char(s:byte(i) + 1) .. string.rep('0', #s - i) end
local ms = ARGV[1]
local args = {}
for i = 3, #ARGV do args[#args + 1] = ARGV[i] end
local info = redis.pcall('XINFO', 'STREAM', KEYS[1])
if type(info) == 'table' and not info.err then
for i = 1, #info, 2 do
if info[i] == 'last-generated-id' then
local lms, lseq = string.match(info[i + 1], '^(%d+)-(%d+)$')
if lms and not gt(ms, lms) then
ms = lms
if lseq == '18446744073709551615' then
if lms == lseq then return redis.error_reply('ERR The stream has exhausted the last possible ID, unable to add more items') end
ms = incr(lms)
end
end
end
end
end
args[tonumber(ARGV[2])] = ms .. '-*'
return redis.pcall('XADD', KEYS[1], unpack(args))`

// rewriteXadd turns XADD with an auto-generated ID into an EVAL of
// xaddScript. Other forms (explicit IDs, <ms>-*) are already the same on
// every node and are left alone.
func rewriteXadd(args [][]byte, nowMs int64) [][]byte {
	pos := xaddIDPos(args)
	if pos < 0 || string(args[pos]) != "*" {
		return args
	}
	out := [][]byte{[]byte("EVAL"), []byte(xaddScript), []byte("1"), args[1],
		strconv.AppendInt(nil, nowMs, 10), strconv.AppendInt(nil, int64(pos-1), 10)}
	return append(out, args[2:]...)
}

// xaddIDPos finds XADD's ID argument, skipping the options as redis parses
// them; -1 if there is none.
func xaddIDPos(args [][]byte) int {
	i := 2
	for i < len(args) {
		switch {
		case bytes.EqualFold(args[i], []byte("nomkstream")):
			i++
		case bytes.EqualFold(args[i], []byte("maxlen")), bytes.EqualFold(args[i], []byte("minid")):
			if i+1 < len(args) && (string(args[i+1]) == "=" || string(args[i+1]) == "~") {
				i += 3
			} else {
				i += 2
			}
		case bytes.EqualFold(args[i], []byte("limit")):
			i += 2
		default:
			return i
		}
	}
	return -1
}

// xreadgroupScript runs XREADGROUP (ARGV[4..], the original arguments;
// ARGV[2] and ARGV[3] are the group and consumer), then gives every delivered entry that still exists the proposal time
// (ARGV[1]) as its delivery time: redis stamps deliveries with each node's
// own clock. XCLAIM ... JUSTID to the same consumer changes nothing else
// (not the delivery count); without FORCE it leaves NOACK reads (not in the
// PEL) alone. With BLOCK it runs non-blocking (redis blocks no script).
const xreadgroupScript = luaClock + xreadgroupRun

// xreadgroupWaitedScript is xreadgroupScript for an XREADGROUP ... BLOCK
// attempt after a wait: redis 7.0 ends a blocked XREADGROUP with an error
// when one of its streams is deleted (or becomes another type) or its
// group destroyed, which the script tells from the keys as it finds them.
const xreadgroupWaitedScript = luaClock + `for _, k in ipairs(KEYS) do
if redis.call('TYPE', k).ok ~= 'stream' then return redis.error_reply('UNBLOCKED the stream key no longer exists') end
local found = false
for _, g in ipairs(redis.call('XINFO', 'GROUPS', k)) do if g[2] == ARGV[2] then found = true end end
if not found then return redis.error_reply('NOGROUP the consumer group this client was blocked on no longer exists') end
end
` + xreadgroupRun

const xreadgroupRun = `local ms = tonumber(ARGV[1])
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
return r`

// rewriteXreadgroup turns XREADGROUP into an EVAL of script
// (xreadgroupScript or xreadgroupWaitedScript). Forms redis refuses (no
// GROUP, no or unbalanced STREAMS, an unknown option) are left alone:
// redis refuses them before reading anything.
//
// Redis refuses BLOCK in scripts, so the script runs XREADGROUP without
// it: the same outside a wait (in MULTI, or an attempt, redis does not
// block either). A BLOCK whose timeout redis refuses is left to redis.
func rewriteXreadgroup(args [][]byte, nowMs int64, script string) [][]byte {
	r := parseStreamRead(args)
	if r.streams == 0 || r.group == 0 || (len(args)-r.streams)%2 != 0 {
		return args
	}
	var drop map[int]bool
	for _, b := range r.blocks {
		if _, ok := streamTimeout(args[b+1], nowMs); !ok {
			return args
		}
		if drop == nil {
			drop = map[int]bool{}
		}
		drop[b], drop[b+1] = true, true
	}
	keys := args[r.streams : r.streams+(len(args)-r.streams)/2]
	out := [][]byte{[]byte("EVAL"), []byte(script), strconv.AppendInt(nil, int64(len(keys)), 10)}
	out = append(out, keys...)
	out = append(out, strconv.AppendInt(nil, nowMs, 10), args[r.group], args[r.group+1])
	for i, a := range args[1:] {
		if !drop[i+1] {
			out = append(out, a)
		}
	}
	return out
}

// streamTimeout reads BLOCK's timeout as redis does: an integer of
// milliseconds, not negative, that added to now does not overflow; 0 is
// forever.
func streamTimeout(arg []byte, nowMs int64) (time.Duration, bool) {
	ms, ok := redisInt(arg)
	if !ok || ms < 0 || ms > math.MaxInt64-nowMs {
		return 0, false
	}
	// Beyond ~290 years a Duration overflows: that is forever.
	if ms >= 9e12 {
		return 0, true
	}
	return time.Duration(ms) * time.Millisecond, true
}

// streamRead is where XREAD/XREADGROUP's parts are, found as redis parses
// the options: streams is the index after STREAMS, group of the group
// name (0 if absent); block of BLOCK's last timeout (0 if absent), blocks
// of every BLOCK; noack whether NOACK came (XREADGROUP's only).
type streamRead struct {
	streams, group, block int
	blocks                []int
	noack                 bool
}

func parseStreamRead(args [][]byte) streamRead {
	var r streamRead
	for i := 1; i < len(args); i++ {
		more := len(args) - 1 - i
		switch {
		case more > 0 && bytes.EqualFold(args[i], []byte("block")):
			r.block = i + 1
			r.blocks = append(r.blocks, i)
			i++
		case more > 0 && bytes.EqualFold(args[i], []byte("count")):
			i++
		case more > 0 && bytes.EqualFold(args[i], []byte("streams")):
			r.streams = i + 1
			return r
		case more >= 2 && bytes.EqualFold(args[i], []byte("group")):
			r.group = i + 1
			i += 2
		case bytes.EqualFold(args[i], []byte("noack")):
			r.noack = true
		default:
			return r // redis: syntax error
		}
	}
	return r
}

// xclaimScript is XCLAIM with the min-idle-time check made at the proposal
// time (ARGV[1]) from the stored delivery times instead of each node's
// clock, and the new delivery time explicit (ARGV[6+n], computed at
// proposal from IDLE/TIME). ARGV: ms, group, consumer, min-idle, n, n IDs,
// delivery time, FORCE (1/0), the other options. XCLAIM then runs with
// min-idle-time 0 on the IDs that qualify (and those whose entry was
// deleted, which redis drops from the PEL whatever their idle time). When
// none does, it runs with a min-idle-time no entry reaches, so that LASTID
// still applies and errors still come from redis.
const xclaimScript = luaClock + `local key, ms, group, consumer = KEYS[1], tonumber(ARGV[1]), ARGV[2], ARGV[3]
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
return redis.pcall('XCLAIM', unpack(a))`

// rewriteXclaim parses XCLAIM as redis does and turns it into an EVAL of
// xclaimScript. A bad min-idle-time is left alone: redis refuses it on
// every node before looking at the IDs. Any other form it cannot parse, or
// one without IDs, becomes an EVAL of xclaimCheckScript.
func rewriteXclaim(args [][]byte, nowMs int64) [][]byte {
	if len(args) < 6 {
		return args
	}
	minidle, ok := redisInt(args[4])
	if !ok {
		return args
	}
	out, ok := parseXclaim(args, minidle, nowMs)
	if !ok || out == nil {
		flag := []byte("0")
		if !ok {
			flag = []byte("1")
		}
		out = [][]byte{[]byte("EVAL"), []byte(xclaimCheckScript), []byte("1"), args[1], flag, args[2], args[3], []byte("9223372036854775807")}
		return append(out, args[5:]...)
	}
	return out
}

// xclaimCheckScript runs XCLAIM with a min-idle-time no entry reaches and
// without FORCE (which would create PEL entries stamped with the node's
// clock): it claims nothing, so it is the same on every node, yet applies
// LASTID and gives redis's own errors. ARGV[1] is 1 when raftproxy could
// not parse the arguments: if redis took them, it says so rather than
// claim with each node's clock.
const xclaimCheckScript = `local a = {}
for i = 2, #ARGV do if i < 5 or string.lower(ARGV[i]) ~= 'force' then a[#a + 1] = ARGV[i] end end
local r = redis.pcall('XCLAIM', KEYS[1], unpack(a))
if ARGV[1] == '0' or (type(r) == 'table' and r.err) then return r end
return redis.error_reply('ERR raftproxy could not parse these XCLAIM arguments as redis does, so it claimed nothing')`

// parseXclaim is rewriteXclaim for a valid min-idle-time; it returns false
// for arguments it cannot parse, nil when there are no IDs.
func parseXclaim(args [][]byte, minidle, nowMs int64) ([][]byte, bool) {
	minidle = max(minidle, 0)
	j := 5
	for j < len(args) && isStrictStreamID(args[j]) {
		j++
	}
	ids := args[5:j]
	dt := nowMs
	force := false
	var opts [][]byte
	for ; j < len(args); j++ {
		more := j+1 < len(args)
		switch {
		case bytes.EqualFold(args[j], []byte("force")):
			force = true
		case bytes.EqualFold(args[j], []byte("justid")):
			opts = append(opts, args[j])
		case more && bytes.EqualFold(args[j], []byte("idle")):
			j++
			idle, ok := redisInt(args[j])
			if !ok {
				return nil, false
			}
			// redis: now - idle, and now for a time in the future.
			dt = nowMs
			if idle >= 0 && idle <= nowMs {
				dt = nowMs - idle
			}
		case more && bytes.EqualFold(args[j], []byte("time")):
			j++
			t, ok := redisInt(args[j])
			if !ok {
				return nil, false
			}
			dt = nowMs
			if t >= 0 && t <= nowMs {
				dt = t
			}
		case more && bytes.EqualFold(args[j], []byte("retrycount")):
			if _, ok := redisInt(args[j+1]); !ok {
				return nil, false
			}
			opts = append(opts, args[j], args[j+1])
			j++
		case more && bytes.EqualFold(args[j], []byte("lastid")):
			if !isStrictStreamID(args[j+1]) {
				return nil, false
			}
			opts = append(opts, args[j], args[j+1])
			j++
		default:
			return nil, false
		}
	}
	if len(ids) == 0 {
		return nil, true
	}
	f := []byte("0")
	if force {
		f = []byte("1")
	}
	out := [][]byte{[]byte("EVAL"), []byte(xclaimScript), []byte("1"), args[1],
		strconv.AppendInt(nil, nowMs, 10), args[2], args[3], strconv.AppendInt(nil, minidle, 10),
		strconv.AppendInt(nil, int64(len(ids)), 10)}
	out = append(out, ids...)
	out = append(out, strconv.AppendInt(nil, dt, 10), f)
	return append(out, opts...), true
}

// xautoclaimScript is XAUTOCLAIM done as redis 7.0 does it, with the
// min-idle-time check made at the proposal time (ARGV[1]) from the stored
// delivery times: scan the PEL from start, at most count*10 entries; an
// entry whose stream entry was deleted leaves the PEL and counts; an idle
// enough one is claimed (delivery time: the proposal time) and counts; stop
// when count is reached. The cursor is the next PEL entry, or 0-0. ARGV: ms,
// group, consumer, min-idle, start, count, JUSTID (1/0), and the original
// arguments after the key, for redis's own errors.
const xautoclaimScript = luaClock + `local key, ms, group, consumer = KEYS[1], tonumber(ARGV[1]), ARGV[2], ARGV[3]
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
return {cursor, claimed, deleted}`

// rewriteXautoclaim parses XAUTOCLAIM as redis does and turns it into an
// EVAL of xautoclaimScript; a form redis refuses is left alone.
func rewriteXautoclaim(args [][]byte, nowMs int64) [][]byte {
	if len(args) < 6 {
		return args
	}
	minidle, ok := redisInt(args[4])
	if !ok {
		return args
	}
	minidle = max(minidle, 0)
	count := int64(100)
	justid := []byte("0")
	for j := 6; j < len(args); j++ {
		switch {
		case bytes.EqualFold(args[j], []byte("count")) && j+1 < len(args):
			n, ok := redisInt(args[j+1])
			// redis 7.0 refuses counts above LONG_MAX/16 ("COUNT must be >
			// 0"): left to it. Below, it allocates count IDs, which may fail
			// for lack of memory (on some nodes only); the script does not,
			// and no PEL holds 2^40 entries, so larger counts scan alike.
			if !ok || n < 1 || n > math.MaxInt64/16 {
				return args
			}
			count = min(n, 1<<40)
			j++
		case bytes.EqualFold(args[j], []byte("justid")):
			justid = []byte("1")
		default:
			return args
		}
	}
	out := [][]byte{[]byte("EVAL"), []byte(xautoclaimScript), []byte("1"), args[1],
		strconv.AppendInt(nil, nowMs, 10), args[2], args[3], strconv.AppendInt(nil, minidle, 10),
		args[5], strconv.AppendInt(nil, count, 10), justid}
	return append(out, args[2:]...)
}

// isStrictStreamID reports whether redis's strict stream ID parser takes
// b: <ms> or <ms>-<seq>, split at the first '-', each part as redis's
// string2ull reads it (C's strtoull: leading spaces, a sign, a negative
// value wrapping around), at most 127 bytes, not "-" or "+". It must take
// no less than redis does: XCLAIM's IDs end at the first argument that is
// not one.
func isStrictStreamID(b []byte) bool {
	if len(b) > 127 || string(b) == "-" || string(b) == "+" {
		return false
	}
	ms, seq, dash := bytes.Cut(b, []byte("-"))
	return cStrtoull(ms) && (!dash || cStrtoull(seq))
}

// cStrtoull reports whether redis's string2ull takes b: string2ll first
// (refusing negative values), else C's strtoull(b, &end, 10) consuming all
// of a non-empty b without a range error.
func cStrtoull(b []byte) bool {
	if n, ok := redisInt(b); ok {
		return n >= 0
	}
	b = bytes.TrimLeft(b, " \t\n\v\f\r")
	if len(b) > 0 && (b[0] == '+' || b[0] == '-') {
		b = b[1:]
	}
	if len(b) == 0 {
		return false
	}
	for _, c := range b {
		if c < '0' || c > '9' {
			return false
		}
	}
	_, err := strconv.ParseUint(string(b), 10, 64)
	return err == nil
}

// determinizeStream is determinize for the stream commands (see the
// rewrites above); nowMs is the proposing node's clock.
func determinizeStream(name string, args [][]byte, nowMs int64, resp3 bool) ([][]byte, fixer, *op) {
	switch name {
	case "xadd":
		return rewriteXadd(args, nowMs), nil, nil
	case "xread", "xreadgroup":
		// With BLOCK outside MULTI they block (streamBlock); here, queued
		// in MULTI, they run non-blocking as in redis.
		if name == "xread" {
			return args, nil, nil
		}
		out := rewriteXreadgroup(args, nowMs, xreadgroupScript)
		if string(out[0]) != "EVAL" {
			return args, nil, nil // left for redis to refuse
		}
		return out, xreadgroupFix(resp3), nil
	case "xclaim":
		return rewriteXclaim(args, nowMs), nil, nil
	case "xautoclaim":
		return rewriteXautoclaim(args, nowMs), nil, nil
	}
	return args, nil, nil
}

// xreadgroupFix gives XREADGROUP's reply, returned through Lua, redis's own
// shape: Lua turns a null array into a null bulk (the reply when nothing
// is read, and a deleted entry's fields), and the per-stream pairs into an
// array where RESP3 has a map.
func xreadgroupFix(resp3 bool) fixer {
	return func(raw []byte) []byte {
		if len(raw) == 0 || raw[0] != '*' {
			if !resp3 && bytes.Equal(raw, []byte("$-1\r\n")) {
				return resp.AppendNullArray(nil, false)
			}
			return raw
		}
		if resp3 {
			// *N of [*2 key entries]: %N of key entries.
			v, rest, err := resp.Parse(raw)
			if err != nil || len(rest) != 0 {
				return raw
			}
			out := resp.AppendMapLen(nil, len(v.Elems), true)
			body := raw[bytes.Index(raw, []byte("\r\n"))+2:]
			for range v.Elems {
				i := bytes.Index(body, []byte("\r\n"))
				if i < 0 || string(body[:i]) != "*2" {
					return raw
				}
				body = body[i+2:]
				_, after, err := resp.Parse(body)
				if err != nil {
					return raw
				}
				_, after, err = resp.Parse(after)
				if err != nil {
					return raw
				}
				out = append(out, body[:len(body)-len(after)]...)
				body = after
			}
			return out
		}
		out, rest, ok := nullBulksToArrays(nil, raw, 0)
		if !ok || len(rest) != 0 {
			return raw
		}
		return out
	}
}

// nullBulksToArrays copies one RESP2 value with every null bulk made a
// null array.
func nullBulksToArrays(dst, raw []byte, depth int) ([]byte, []byte, bool) {
	return rewriteBulks(dst, raw, func(dst, bulk []byte, null bool) []byte {
		if null {
			return resp.AppendNullArray(dst, false)
		}
		return resp.AppendBulk(dst, bulk)
	}, depth)
}

// streamNow is the proposal time of stream rewrites: the proposing node's
// clock, as for relative expiry times (rewrite.go).
func streamNow() int64 { return time.Now().UnixMilli() }

// streamBlock prepares XREAD/XREADGROUP ... BLOCK ms for blockWait. Each
// attempt goes through the log as a one-command transaction, like the
// other blocking commands: XREADGROUP is a write anyway, and for XREAD it
// keeps one mechanism, gives each attempt a place in the log after the
// "$" it resolved, and lets redis parse every argument and give its own
// errors (MULTI makes BLOCK non-blocking). Forms redis refuses keep
// wait false: the first attempt answers redis's error.
func streamBlock(b *blockCall, name string, args [][]byte, resp3 bool) {
	r := parseStreamRead(args)
	if r.streams == 0 || r.block == 0 || (len(args)-r.streams)%2 != 0 {
		return
	}
	n := (len(args) - r.streams) / 2
	b.keys = args[r.streams : r.streams+n]
	for _, i := range r.blocks {
		if _, ok := streamTimeout(args[i+1], streamNow()); !ok {
			return // redis refuses it
		}
	}
	b.timeout, b.wait = streamTimeout(args[r.block], streamNow())
	if name == "xread" {
		if r.group != 0 || r.noack {
			b.wait = false // redis refuses them
			return
		}
		b.reader = true
		ids := r.streams + n
		for _, id := range args[ids:] {
			if b.wait && string(id) == "$" {
				eval := [][]byte{[]byte("EVAL"), []byte(xreadResolveScript), strconv.AppendInt(nil, int64(n), 10)}
				eval = append(eval, args[r.streams:]...)
				b.resolve = &xreadResolve{b: b, ids: ids, eval: eval}
				break
			}
		}
		return
	}
	if r.group == 0 {
		return
	}
	// The consumers of one group compete for its entries; other groups'
	// get their own copy.
	b.line = "group:" + string(args[r.group])
	b.fix = xreadgroupFix(resp3)
	b.attempt = func(waited bool) [][]byte {
		// A fresh proposal time for each attempt: it stamps the deliveries.
		if waited {
			return rewriteXreadgroup(args, streamNow(), xreadgroupWaitedScript)
		}
		return rewriteXreadgroup(args, streamNow(), xreadgroupScript)
	}
}

// xreadResolveScript answers XREAD's IDs (ARGV, one per key) with each "$"
// replaced by its stream's last generated ID, or 0-0 for a missing key, as
// redis reads "$" when the command arrives. A key of another type keeps
// "$": the attempt then answers redis's WRONGTYPE.
const xreadResolveScript = `local r = {}
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
return r`

// xreadResolve is XREAD's "$" resolved once, at the place in the log of a
// proposal of xreadResolveScript, so that entries added after the command
// arrived, even on other nodes while it waits, are returned.
type xreadResolve struct {
	b    *blockCall
	ids  int // where the IDs start in b.args
	eval [][]byte
}

// apply puts the resolved IDs into the blocked command; it reports whether
// every ID was a "$" now resolved: then the first attempt would find
// nothing (the waiter was registered before the resolution, so no later
// write goes unnoticed). On any surprise it changes nothing and the
// attempts answer as redis would with "$" (never blocking past it).
func (x *xreadResolve) apply(raw []byte) bool {
	v, rest, err := resp.Parse(raw)
	old := x.b.args[x.ids:]
	if err != nil || len(rest) != 0 || v.Kind != '*' || len(v.Elems) != len(old) {
		return false
	}
	args := append([][]byte(nil), x.b.args...)
	all := true
	for i, e := range v.Elems {
		if e.Kind != '$' || e.Null {
			return false
		}
		args[x.ids+i] = e.Str
		all = all && string(old[i]) == "$" && string(e.Str) != "$"
	}
	x.b.args = args
	return all
}

// quietStreamScript reports whether an applied command is one of the
// blocking stream reads' scripts that modified no data: the "$"
// resolution, or an XREADGROUP attempt that delivered nothing (it may have
// created the consumer, which gives no waiter anything). Waking waiters on
// them would make idle waiters propose each other's attempts forever.
func quietStreamScript(args [][]byte, null bool) bool {
	if len(args) < 2 || !bytes.EqualFold(args[0], []byte("eval")) {
		return false
	}
	switch string(args[1]) {
	case xreadResolveScript:
		return true
	case xreadgroupScript, xreadgroupWaitedScript:
		return null
	}
	return false
}
