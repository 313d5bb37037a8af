package proxy

import (
	"bytes"
	_ "embed"
	"strconv"

	"github.com/raftproxy/raftproxy/resp"
)

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
//
//go:embed lua/xread_resolve.lua
var xreadResolveScript string

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
