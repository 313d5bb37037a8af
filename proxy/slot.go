package proxy

import "github.com/raftproxy/raftproxy/slotmap"

// numSlots is Redis Cluster's fixed number of hash slots.
const numSlots = slotmap.NumSlots

// redirectSlot is the slot a -MOVED names for a command: that of its first
// key by redis's key specs; a command without keys names slot 0. It runs
// only on the redirect path, so it may look the command up again.
func (t table) redirectSlot(args [][]byte) int {
	if len(args) == 0 {
		return 0
	}
	sp, _ := t.lookup(args)
	if sp == nil {
		return 0
	}
	var pos [8]int
	first := -1
	for _, ks := range sp.keySpecs {
		idx, ok := ks.keys(args, pos[:0])
		if !ok {
			continue
		}
		for _, i := range idx {
			if first < 0 || i < first {
				first = i
			}
		}
	}
	if first < 1 || first >= len(args) {
		return 0
	}
	return slotmap.KeySlot(args[first])
}
