package proxy

import (
	"bytes"
	_ "embed"
	"math"
	"strconv"
	"time"

	"github.com/raftproxy/raftproxy/resp"
)

// Stream commands whose effect redis takes from its own clock are rewritten
// at proposal into EVALs of the trusted scripts below (like SPOP in
// random.go: they are not wrapped in the user-script prelude), with the
// proposing node's clock (ms) in the log. See "Streams" under
// "Determinism" in docs/SEMANTICS.md.

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
//
//go:embed lua/lua_clock.lua
var luaClock string

// xaddScript is XADD with "*": the ID is <ms>-* with ms the larger of the
// proposal time (ARGV[1]) and the stream's last generated ID's time, so the
// ID is the same on every node and a proposer clock behind the stream's
// top never fails. ARGV[2] is the position of "*" in the rest of ARGV (the
// original arguments after the key). Arguments are left to XADD itself, so
// redis's errors (syntax first, then WRONGTYPE) come as redis gives them.
//
//go:embed lua/xadd.lua
var xaddScript string

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
var xreadgroupScript = luaClock + xreadgroupRun

// xreadgroupWaitedScript is xreadgroupScript for an XREADGROUP ... BLOCK
// attempt after a wait: redis 7.0 ends a blocked XREADGROUP with an error
// when one of its streams is deleted (or becomes another type) or its
// group destroyed, which the script tells from the keys as it finds them.
var xreadgroupWaitedScript = luaClock + xreadgroupWaitedLua + xreadgroupRun

//go:embed lua/xreadgroup_run.lua
var xreadgroupRun string

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
var xclaimScript = luaClock + xclaimLua

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
//
//go:embed lua/xclaim_check.lua
var xclaimCheckScript string

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
var xautoclaimScript = luaClock + xautoclaimLua

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
// clock, as for relative expiry times (expiry.Rewrite).
func streamNow() int64 { return time.Now().UnixMilli() }
