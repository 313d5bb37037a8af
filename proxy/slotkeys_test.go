package proxy

import (
	"testing"

	"github.com/raftproxy/raftproxy/resp"
	"github.com/raftproxy/raftproxy/slotmap"
)

// TestKeysInSlot: of a KEYS reply, COUNTKEYSINSLOT keeps the count of the
// keys in the slot, GETKEYSINSLOT at most count of them; errors pass.
func TestKeysInSlot(t *testing.T) {
	keys := []string{"{a}1", "{a}2", "b", "{a}3", "c"}
	raw := resp.AppendArrayLen(nil, len(keys))
	for _, k := range keys {
		raw = resp.AppendBulkString(raw, k)
	}
	slot := slotmap.KeySlot([]byte("a"))
	if got := string(keysInSlot(raw, slot, -1)); got != ":3\r\n" {
		t.Errorf("count: %q", got)
	}
	if got := string(keysInSlot(raw, slot, 2)); got != "*2\r\n$4\r\n{a}1\r\n$4\r\n{a}2\r\n" {
		t.Errorf("get 2: %q", got)
	}
	if got := string(keysInSlot(raw, slot, 0)); got != "*0\r\n" {
		t.Errorf("get 0: %q", got)
	}
	if got := string(keysInSlot(raw, (slot+1)%slotmap.NumSlots, -1)); got != ":0\r\n" {
		t.Errorf("count of another slot: %q", got)
	}
	if got := string(keysInSlot([]byte("-ERR x\r\n"), slot, -1)); got != "-ERR x\r\n" {
		t.Errorf("error reply: %q", got)
	}
}
