// Package expiry takes key expiry out of redis's hands and gives it to the
// log.
//
// A stock redis expires a key when its own clock passes the key's deadline:
// lazily when a command touches it, and in the background. Nodes whose
// clocks disagree (a skewed VM, a node applying old entries late) would then
// hold different data. So every deadline is stored in redis Shift
// milliseconds (about 557 years) later than it is: redis's clock never
// reaches one, and redis never expires a key by itself. Whether a key has
// expired is decided instead by the log's time (raftnode's effective entry
// time, the leader's clock), the same on every node:
//
//   - Before a command runs, its keys that expired by its entry's time are
//     deleted (ExpireScript), so it sees what redis would at that time.
//   - Reads check their keys against the read's time, taken by the leader
//     when it confirms the read index (CheckScript).
//   - The leader samples keys and proposes the deletion of expired ones
//     (SampleScript), as redis's active expiry would.
//   - Commands that show deadlines (TTL, PTTL, EXPIRETIME, PEXPIRETIME) and
//     that list keys (KEYS, SCAN, RANDOMKEY) run as scripts that translate
//     and filter by the log's time.
//
// Rewrite turns every relative or absolute deadline a command sets into its
// stored form, at apply time, from the entry's time.
package expiry

import (
	"bytes"
	"math"
	"strconv"
)

// Shift is how much later than the real deadline redis stores a key's.
const Shift int64 = 1 << 44

// Store is the value redis keeps for deadline d (unix milliseconds). A
// deadline so far away that it would overflow is kept at the largest value:
// it is never reached either way.
func Store(d int64) int64 {
	if d > math.MaxInt64-Shift {
		return math.MaxInt64
	}
	return d + Shift
}

// Deadline is the deadline redis's stored value s stands for; a negative s
// (-1 no deadline, -2 no key) is returned as is.
func Deadline(s int64) int64 {
	if s < 0 {
		return s
	}
	return s - Shift
}

// Expired reports whether a key with stored deadline s has expired at now:
// redis's own rule, "now > when".
func Expired(s, now int64) bool { return s >= 0 && now > s-Shift }

// Rewrite returns args (of the command name, lower case) with every
// deadline it sets in stored form: relative times become absolute from now,
// the entry's time. Arguments redis would refuse are left alone, so redis
// answers them with its own error, the same on every node. The result may
// share elements with args; args is not modified.
func Rewrite(name string, args [][]byte, now int64) [][]byte {
	switch name {
	case "expire", "pexpire", "expireat", "pexpireat":
		if len(args) < 3 {
			return args
		}
		d, ok := expireDeadline(args[2], name == "expire" || name == "expireat", name == "expire" || name == "pexpire", now)
		if !ok {
			return args
		}
		out := make([][]byte, 0, len(args))
		out = append(out, cmdPExpireAt, args[1], stored(d))
		return append(out, args[3:]...)
	case "setex", "psetex":
		if len(args) != 4 {
			return args
		}
		d, ok := setDeadline(args[2], name == "setex", true, now)
		if !ok {
			return args
		}
		return [][]byte{cmdSet, args[1], args[3], optPXAT, stored(d)}
	case "set":
		return rewriteOption(args, 3, now)
	case "getex":
		return rewriteOption(args, 2, now)
	case "restore", "restore-asking":
		return rewriteRestore(args, now)
	}
	return args
}

// BlindWrite reports whether a command replaces its keys whatever they
// hold, with a reply that does not depend on them: SET without NX, XX, GET
// or KEEPTTL, SETEX, PSETEX, MSET. Whether one of its keys had expired
// changes nothing, so it needs no expiry check first.
func BlindWrite(args [][]byte) bool {
	if len(args) == 0 {
		return false
	}
	n := args[0]
	switch {
	case bytes.EqualFold(n, []byte("set")):
		for _, a := range args[min(3, len(args)):] {
			for _, o := range [][]byte{[]byte("NX"), []byte("XX"), []byte("GET"), []byte("KEEPTTL")} {
				if bytes.EqualFold(a, o) {
					return false
				}
			}
		}
		return true
	case bytes.EqualFold(n, []byte("setex")), bytes.EqualFold(n, []byte("psetex")), bytes.EqualFold(n, []byte("mset")):
		return true
	}
	return false
}

// SetsDeadline reports whether the command (name in lower case) may give a
// key a deadline: SET and GETEX only with a time option, RESTORE only with
// a TTL, the others always.
func SetsDeadline(name string, args [][]byte) bool {
	switch name {
	case "set", "getex":
		from := 3
		if name == "getex" {
			from = 2
		}
		for _, a := range args[min(from, len(args)):] {
			if len(a) == 2 || len(a) == 4 {
				for _, o := range [][]byte{[]byte("EX"), []byte("PX"), []byte("EXAT"), []byte("PXAT")} {
					if bytes.EqualFold(a, o) {
						return true
					}
				}
			}
		}
		return false
	case "restore", "restore-asking":
		return len(args) < 3 || string(args[2]) != "0"
	}
	return true
}

var (
	cmdPExpireAt = []byte("PEXPIREAT")
	cmdSet       = []byte("SET")
	optPXAT      = []byte("PXAT")
	optABSTTL    = []byte("ABSTTL")
)

func stored(d int64) []byte { return strconv.AppendInt(nil, Store(d), 10) }

// expireDeadline follows redis's expireGenericCommand: any integer, checked
// for overflow by the unit conversion and by adding the base time.
func expireDeadline(arg []byte, seconds, relative bool, now int64) (int64, bool) {
	n, err := strconv.ParseInt(string(arg), 10, 64)
	if err != nil {
		return 0, false
	}
	if seconds {
		if n > math.MaxInt64/1000 || n < math.MinInt64/1000 {
			return 0, false
		}
		n *= 1000
	}
	return fromNow(n, relative, now)
}

// fromNow adds now to a relative deadline n, false if that overflows.
func fromNow(n int64, relative bool, now int64) (int64, bool) {
	if relative {
		if n > math.MaxInt64-now {
			return 0, false
		}
		n += now
	}
	return n, true
}

// setDeadline follows redis's getExpireMillisecondsOrReply (SET, SETEX,
// GETEX): a positive integer, checked for overflow.
func setDeadline(arg []byte, seconds, relative bool, now int64) (int64, bool) {
	n, err := strconv.ParseInt(string(arg), 10, 64)
	if err != nil || n <= 0 || (seconds && n > math.MaxInt64/1000) {
		return 0, false
	}
	if seconds {
		n *= 1000
	}
	return fromNow(n, relative, now)
}

// rewriteOption turns an EX, PX, EXAT or PXAT option (searched from index
// from) into PXAT with the stored deadline.
func rewriteOption(args [][]byte, from int, now int64) [][]byte {
	for i := from; i+1 < len(args); i++ {
		var seconds, relative bool
		switch {
		case bytes.EqualFold(args[i], []byte("EX")):
			seconds, relative = true, true
		case bytes.EqualFold(args[i], []byte("PX")):
			relative = true
		case bytes.EqualFold(args[i], []byte("EXAT")):
			seconds = true
		case bytes.EqualFold(args[i], []byte("PXAT")):
		default:
			continue
		}
		d, ok := setDeadline(args[i+1], seconds, relative, now)
		if !ok {
			return args
		}
		out := append([][]byte(nil), args...)
		out[i] = optPXAT
		out[i+1] = stored(d)
		return out
	}
	return args
}

// rewriteRestore stores RESTORE's TTL as an absolute deadline (ABSTTL).
func rewriteRestore(args [][]byte, now int64) [][]byte {
	if len(args) < 4 {
		return args
	}
	ttl, err := strconv.ParseInt(string(args[2]), 10, 64)
	if err != nil || ttl <= 0 {
		return args // 0: no deadline; negative: redis's error
	}
	abs := false
	for _, a := range args[4:] {
		if bytes.EqualFold(a, optABSTTL) {
			abs = true
		}
	}
	d := ttl
	if !abs {
		if ttl > math.MaxInt64-now {
			return args
		}
		d = now + ttl
	}
	out := append([][]byte(nil), args...)
	out[2] = stored(d)
	if !abs {
		out = append(out, optABSTTL)
	}
	return out
}
