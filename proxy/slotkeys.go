package proxy

import (
	"strconv"

	"github.com/raftproxy/raftproxy/resp"
	"github.com/raftproxy/raftproxy/slotmap"
)

// CLUSTER COUNTKEYSINSLOT and GETKEYSINSLOT. A redis outside cluster mode
// keeps no index of keys by slot, so they run as this shard's KEYS * (a
// linearizable read like any other, without the keys expired by the read's
// time) and keep the keys of the slot. They cost O(keys in the shard), not
// Redis Cluster's O(1) and O(log n); like Redis Cluster, each node answers
// for the keys its own shard holds, so during a move both sides count
// theirs.

// slotKeys answers CLUSTER COUNTKEYSINSLOT <slot> and GETKEYSINSLOT <slot>
// <count> (sub is which; the table checked their arity), with redis's
// replies to bad arguments.
func (c *conn) slotKeys(sub string, args [][]byte) *op {
	slot, err := strconv.ParseInt(string(args[2]), 10, 64)
	if err != nil {
		return errReply("ERR value is not an integer or out of range")
	}
	max := int64(-1)
	if sub == "getkeysinslot" {
		if max, err = strconv.ParseInt(string(args[3]), 10, 64); err != nil {
			return errReply("ERR value is not an integer or out of range")
		}
		if slot < 0 || slot >= slotmap.NumSlots || max < 0 {
			return errReply("ERR Invalid slot or number of keys")
		}
	} else if slot < 0 || slot >= slotmap.NumSlots {
		return errReply("ERR Invalid slot")
	}
	keys := [][]byte{[]byte("KEYS"), []byte("*")}
	sp, _ := c.s.table.lookup(keys)
	if sp == nil || sp.unknown {
		return errReply("ERR this redis has no KEYS command")
	}
	o := c.data(sp, keys)
	if o.kind != opRead && o.kind != opLogRead {
		return o // refused, or an error
	}
	inner := o.fix
	o.fix = func(raw []byte) []byte {
		if inner != nil {
			raw = inner(raw)
		}
		return keysInSlot(raw, int(slot), max)
	}
	return o
}

// keysInSlot keeps, of a KEYS reply, the keys that hash to slot: their
// count when max is -1, else at most max of them. An error reply passes.
func keysInSlot(raw []byte, slot int, max int64) []byte {
	v, _, err := resp.Parse(raw)
	if err != nil || v.IsError() {
		return raw
	}
	var keys [][]byte
	for _, e := range v.Elems {
		if slotmap.KeySlot(e.Str) == slot {
			if max >= 0 && int64(len(keys)) >= max {
				break
			}
			keys = append(keys, e.Str)
		}
	}
	if max < 0 {
		return resp.AppendInt(nil, int64(len(keys)))
	}
	out := resp.AppendArrayLen(nil, len(keys))
	for _, k := range keys {
		out = resp.AppendBulk(out, k)
	}
	return out
}
