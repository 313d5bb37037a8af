package apply

import (
	"bytes"

	"github.com/raftproxy/raftproxy/fsm"
	"github.com/raftproxy/raftproxy/resp"
)

// Pub/Sub. PUBLISH and SPUBLISH are ordinary commands in the log, but the
// apply layer never sends them to redis (the local redis has no
// subscribers: clients subscribe at the proxy). Instead it hands each one,
// in log order, to the Publisher, which delivers it to this node's
// subscribers; the proposing client gets the number of this node's clients
// that received it, as in redis cluster. Only commands applied live are
// delivered, and a chunk applied again after a failed Apply is not
// delivered twice (m.published).

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

// publishOnly delivers the PUBLISHes of c. It reports whether c is done
// without redis (a PUBLISH outside a transaction), having answered it. Inside a
// transaction the PUBLISHes still run on redis (where they reach nobody and
// answer 0), so that EXEC's reply keeps its shape; their places in the
// reply get this node's counts.
func (m *Machine) publishOnly(c *fsm.Command) bool {
	if m.pub == nil {
		return false
	}
	index := c.Index
	fresh := c.Live && (index > m.published || index == m.publishing)
	if fresh {
		m.published, m.publishing = index, index
	}
	deliver := m.pub.Publish
	if len(c.Tx) > 0 {
		if !fresh {
			return false
		}
		var counts map[int]int64
		for i, cmd := range c.Tx {
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
	ch, msg, sh, ok := publishArgs(c.Args)
	if !ok {
		return false
	}
	if fresh {
		answer(c, resp.AppendInt(nil, deliver(index, ch, msg, sh)))
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
