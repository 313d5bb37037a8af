package proxy

import (
	"bytes"
	"math"
	"strconv"
)

// absoluteTimes rewrites relative expiry times into absolute ones, taken
// from the proposing node's clock, so that every node that replays the
// entry (now or after a restart) sets the same deadline. Arguments that do
// not parse are left alone: redis then rejects them the same way everywhere.
func absoluteTimes(name string, args [][]byte, nowMs int64) [][]byte {
	switch name {
	case "expire", "pexpire":
		if len(args) < 3 {
			return args
		}
		at, ok := deadline(args[2], name == "expire", nowMs)
		if !ok {
			return args
		}
		out := append([][]byte{[]byte("PEXPIREAT"), args[1], at}, args[3:]...)
		return out
	case "setex", "psetex":
		if len(args) != 4 {
			return args
		}
		n, err := strconv.ParseInt(string(args[2]), 10, 64)
		if err != nil || n <= 0 {
			return args
		}
		at, ok := deadline(args[2], name == "setex", nowMs)
		if !ok {
			return args
		}
		return [][]byte{[]byte("SET"), args[1], args[3], []byte("PXAT"), at}
	case "set":
		return rewriteOption(args, 3, nowMs)
	case "getex":
		return rewriteOption(args, 2, nowMs)
	case "restore":
		if len(args) < 4 {
			return args
		}
		for _, a := range args[4:] {
			if bytes.EqualFold(a, []byte("ABSTTL")) {
				return args
			}
		}
		ttl, err := strconv.ParseInt(string(args[2]), 10, 64)
		if err != nil || ttl <= 0 || ttl > math.MaxInt64-nowMs {
			return args
		}
		out := append([][]byte{}, args...)
		out[2] = strconv.AppendInt(nil, nowMs+ttl, 10)
		return append(out, []byte("ABSTTL"))
	}
	return args
}

// rewriteOption turns an EX or PX option (searched from index from) into PXAT.
func rewriteOption(args [][]byte, from int, nowMs int64) [][]byte {
	for i := from; i+1 < len(args); i++ {
		ex := bytes.EqualFold(args[i], []byte("EX"))
		if !ex && !bytes.EqualFold(args[i], []byte("PX")) {
			continue
		}
		n, err := strconv.ParseInt(string(args[i+1]), 10, 64)
		if err != nil || n <= 0 {
			return args
		}
		at, ok := deadline(args[i+1], ex, nowMs)
		if !ok {
			return args
		}
		out := append([][]byte{}, args...)
		out[i] = []byte("PXAT")
		out[i+1] = at
		return out
	}
	return args
}

// deadline is now plus a relative time in seconds or milliseconds, as the
// decimal bytes of a unix time in milliseconds.
func deadline(rel []byte, seconds bool, nowMs int64) ([]byte, bool) {
	n, err := strconv.ParseInt(string(rel), 10, 64)
	if err != nil {
		return nil, false
	}
	if seconds {
		if n > math.MaxInt64/1000 || n < math.MinInt64/1000 {
			return nil, false
		}
		n *= 1000
	}
	if n > 0 && n > math.MaxInt64-nowMs {
		return nil, false
	}
	return strconv.AppendInt(nil, nowMs+n, 10), true
}
