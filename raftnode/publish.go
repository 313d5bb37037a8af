package raftnode

import (
	"bytes"

	"github.com/raftproxy/raftproxy/entry"
	"github.com/raftproxy/raftproxy/resp"
)

// Pub/Sub. PUBLISH and SPUBLISH are ordinary commands in the log, but the
// applier never sends them to redis (the local redis has no subscribers:
// clients subscribe at the proxy). Instead it hands each one, in log order,
// to Config.Publish, which delivers it to this node's subscribers; the
// proposing client gets the number of this node's clients that received
// it, as in redis cluster. Only entries applied live are delivered: a
// replay (restart, redis rebuild) passes live=false, and a chunk applied
// again after a failed Apply is not delivered twice (a.published).

// publishArgs reports whether args is PUBLISH or SPUBLISH with its two
// arguments (another arity goes to redis, which answers with its error).
func publishArgs(args [][]byte) (channel, message []byte, sharded, ok bool) {
	if len(args) != 3 {
		return nil, nil, false, false
	}
	switch {
	case bytes.EqualFold(args[0], []byte("publish")):
		return args[1], args[2], false, true
	case bytes.EqualFold(args[0], []byte("spublish")):
		return args[1], args[2], true, true
	}
	return nil, nil, false, false
}

// publishOnly delivers the PUBLISHes of request r of the entry at index.
// It reports whether r is done without the state machine (a PUBLISH
// outside a transaction), having answered c.Reply if not nil. Inside a
// transaction the PUBLISHes still run on redis (where they reach nobody and
// answer 0), so that EXEC's reply keeps its shape; their places in the
// reply get this node's counts.
func (a *applier) publishOnly(index uint64, live bool, r entry.Request, c *Command) bool {
	deliver := a.n.cfg.Publish
	if deliver == nil {
		return false
	}
	fresh := live && index > a.published
	if len(r.Tx) > 0 {
		if !fresh {
			return false
		}
		var counts map[int]int64
		for i, cmd := range r.Tx {
			if ch, msg, sh, ok := publishArgs(cmd); ok {
				if counts == nil {
					counts = map[int]int64{}
				}
				counts[i] = deliver(index, ch, msg, sh)
			}
		}
		if counts != nil && c.Reply != nil {
			reply := c.Reply
			c.Reply = func(raw []byte) { reply(spliceCounts(raw, counts)) }
		}
		return false
	}
	ch, msg, sh, ok := publishArgs(r.Args)
	if !ok {
		return false
	}
	if fresh {
		n := deliver(index, ch, msg, sh)
		if c.Reply != nil {
			c.Reply(resp.AppendInt(nil, n))
		}
	}
	return true
}

// spliceCounts replaces the elements of EXEC's reply at the positions of
// counts with those integers. A reply that is not an array (an aborted
// transaction) is returned as it is.
func spliceCounts(raw []byte, counts map[int]int64) []byte {
	return resp.MapArray(raw, func(k int, elem []byte) []byte {
		if n, ok := counts[k]; ok && elem[0] == ':' {
			return resp.AppendInt(nil, n)
		}
		return elem
	})
}

// CommitIndex returns the highest log index this node knows to be
// committed. A subscription made now receives only messages of entries
// after it: what was published before it, it must not see (e.g. entries a
// restarted node applies again).
func (n *Node) CommitIndex() uint64 {
	c := n.commit.Load()
	if a := n.applier.applied.Load(); a > c {
		c = a
	}
	if hs, _, err := n.storage.InitialState(); err == nil && hs.GetCommit() > c {
		c = hs.GetCommit()
	}
	return c
}
