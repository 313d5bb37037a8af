package expiry

import (
	_ "embed"
	"strconv"
	"strings"
)

// The scripts below run on a node's own redis. The time they decide expiry
// by (unix milliseconds) is their last argument: the applier appends its
// entry's time to every script it runs (ScriptTime), and a read passes its
// read time.

// shiftLua is Shift as a Lua literal; the deadlines redis returns (about
// 1.9e13) are exact in Lua's double numbers.
var shiftLua = strconv.FormatInt(Shift, 10)

// lua is a script's source as redis runs it: SHIFT stands for Shift, and
// the file's final newline is dropped so that the text, and so the SHA
// redis caches it by, stays the same across versions.
func lua(src string) string {
	return strings.ReplaceAll(strings.TrimSuffix(src, "\n"), "SHIFT", shiftLua)
}

var (
	//go:embed lua/expire.lua
	expireLua string
	//go:embed lua/check.lua
	checkLua string
	//go:embed lua/ttl.lua
	ttlLua string
	//go:embed lua/keys.lua
	keysLua string
	//go:embed lua/scan.lua
	scanLua string
	//go:embed lua/random_key.lua
	randomKeyLua string
	//go:embed lua/sample.lua
	sampleLua string
	//go:embed lua/shift.lua
	shiftScriptLua string
)

// ExpireScript deletes the keys among KEYS that expired by its time, and
// returns how many it deleted. The applier runs it before each command
// that names keys of a database that may hold deadlines; the leader
// proposes it for the keys its sampling found expired.
var ExpireScript = lua(expireLua)

// CheckScript returns the keys among KEYS that expired by its time, and
// changes nothing: a read that finds one has them deleted through the log
// before it runs, so what it reports expired stays expired for every later
// command, whatever the clock of the leader that orders it.
var CheckScript = lua(checkLua)

// TTLScript answers TTL, PTTL, EXPIRETIME or PEXPIRETIME (ARGV[1], lower
// case) for KEYS[1] at its time, with redis's rounding.
var TTLScript = lua(ttlLua)

// KeysScript answers KEYS ARGV[1] without the keys expired at its time.
var KeysScript = lua(keysLua)

// ScanScript answers SCAN with the arguments ARGV[1..n-1] without the keys
// expired at its time.
var ScanScript = lua(scanLua)

// RandomKeyScript answers RANDOMKEY, trying up to 100 keys for one that has
// not expired at its time (redis tries as many).
var RandomKeyScript = lua(randomKeyLua)

// SampleScript takes one SCAN step from cursor ARGV[1], COUNT ARGV[2], and
// returns the next cursor, how many keys it saw, the soonest deadline not
// reached at its time among them (-1: none), then the keys it saw that
// expired at its time: {cursor, seen, soonest, key...}.
var SampleScript = lua(sampleLua)

// ShiftScript converts the current database of a redis that holds real
// deadlines (loaded from a snapshot of a version that let redis expire
// keys by its clock): every deadline is stored Shift later. It walks the
// whole database in one run, sent down a replication stream (no reply).
var ShiftScript = lua(shiftScriptLua)

// ShowsDeadline reports whether the command (lower case) shows a deadline
// and so runs as TTLScript.
func ShowsDeadline(name string) bool {
	switch name {
	case "ttl", "pttl", "expiretime", "pexpiretime":
		return true
	}
	return false
}

// Script returns the script that stands in for a command that shows
// deadlines or lists keys, with its arguments but not the time, and true;
// or false for any other command. Commands with the wrong number of
// arguments stay as they are, for redis's own error.
func Script(name string, args [][]byte) (script string, keys, argv [][]byte, ok bool) {
	switch {
	case ShowsDeadline(name) && len(args) == 2:
		return TTLScript, args[1:2], [][]byte{[]byte(name)}, true
	case name == "keys" && len(args) == 2:
		return KeysScript, nil, args[1:2], true
	case name == "scan" && len(args) >= 2:
		return ScanScript, nil, args[1:], true
	case name == "randomkey" && len(args) == 1:
		return RandomKeyScript, nil, nil, true
	}
	return "", nil, nil, false
}

// Eval is the EVAL command running script with keys and argv, then now.
func Eval(script string, keys, argv [][]byte, now int64) [][]byte {
	out := make([][]byte, 0, 3+len(keys)+len(argv)+1)
	out = append(out, cmdEval, []byte(script), strconv.AppendInt(nil, int64(len(keys)), 10))
	out = append(out, keys...)
	out = append(out, argv...)
	return append(out, strconv.AppendInt(nil, now, 10))
}

var cmdEval = []byte("EVAL")
