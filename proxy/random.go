package proxy

import (
	_ "embed"
	"math/rand/v2"
	"strconv"
)

// spopScript is SPOP made deterministic: the members in a node-independent
// order (sorted: SMEMBERS order depends on each redis process's hash seed),
// then a partial Fisher-Yates shuffle with redis's own PRNG seeded from
// ARGV[1], which the proposer drew and the log carries. Replies have SPOP's
// shapes: a bulk or nil without a count, an array with one.
//
// Sorting uses Lua's string order (strcoll): every node's redis needs the
// same LC_COLLATE, as SORT ALPHA does (the supervised redis runs with C).
//
//go:embed lua/spop.lua
var spopScript string

// rewriteSpop turns SPOP key [count] into an EVAL of spopScript with a
// fresh seed. Forms redis refuses (bad count, extra arguments) are left as
// they are: redis refuses them alike on every node, before any randomness.
func rewriteSpop(args [][]byte) [][]byte {
	if len(args) != 2 && len(args) != 3 {
		return args
	}
	seed := strconv.AppendInt(nil, int64(rand.Int32N(1<<31-1)), 10)
	out := [][]byte{[]byte("EVAL"), []byte(spopScript), []byte("1"), args[1], seed}
	if len(args) == 3 {
		if _, ok := redisCount(args[2]); !ok {
			return args
		}
		out = append(out, args[2])
	}
	return out
}

// redisCount parses a non-negative integer as redis's string2ll does: no
// sign, no leading zeros, no spaces, within int64.
func redisCount(b []byte) (int64, bool) {
	if len(b) == 0 || (len(b) > 1 && b[0] == '0') {
		return 0, false
	}
	for _, c := range b {
		if c < '0' || c > '9' {
			return 0, false
		}
	}
	n, err := strconv.ParseInt(string(b), 10, 64)
	return n, err == nil
}
