package proxy

import "github.com/raftproxy/raftproxy/slotmap"

// numSlots is Redis Cluster's fixed number of hash slots.
const numSlots = slotmap.NumSlots

// redirectSlot is the slot a -MOVED names for a command: that of its keys
// by redis's key specs (commandSlot); a command without keys names slot 0.
// It runs only on the redirect path, so it may look the command up again.
func (t table) redirectSlot(args [][]byte) int {
	if len(args) == 0 {
		return 0
	}
	sp, _ := t.lookup(args)
	if sp == nil {
		return 0
	}
	slot, _, _ := t.commandSlot(sp, args)
	return slot
}
