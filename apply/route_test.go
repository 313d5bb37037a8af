package apply

import (
	"context"
	"encoding/json"
	"strings"
	"testing"

	"github.com/raftproxy/raftproxy/entry"
	"github.com/raftproxy/raftproxy/fsm"
	"github.com/raftproxy/raftproxy/slotmap"
)

func routeCmd(t *testing.T, ch slotmap.Change, reply *string) fsm.Command {
	t.Helper()
	b, err := json.Marshal(ch)
	if err != nil {
		t.Fatal(err)
	}
	return fsm.Command{Op: entry.OpRoute, Args: [][]byte{b}, Live: true, Reply: func(raw []byte) { *reply = string(raw) }}
}

// TestRouting: routing changes apply in log order between the commands
// around them (never sent to redis), answer +OK, a begun move's id, or the
// refusal (which changes nothing); the data travels in the snapshot state
// and is gone after an empty Reset, as everything the log made.
func TestRouting(t *testing.T) {
	r := &fakeRedis{}
	m := New(r, nil, nil)
	if m.Routing() != nil {
		t.Fatal("routing data before any change")
	}
	var r1, r2, r3, r4 string
	two := []slotmap.Shard{{ID: "a", Members: []uint64{1}}, {ID: "b", Members: []uint64{1}}}
	err := m.Apply([]fsm.Command{
		cmd(1, 0, true, "SET k 1"),
		routeCmd(t, slotmap.Change{Op: slotmap.OpInit, Shards: two}, &r1),
		routeCmd(t, slotmap.Change{Op: slotmap.OpBeginMove, Range: slotmap.Range{First: 0, Last: 9}, Shard: "b"}, &r2),
		routeCmd(t, slotmap.Change{Op: slotmap.OpBeginMove, Range: slotmap.Range{First: 5, Last: 20}, Shard: "b"}, &r3),
		{Op: entry.OpRoute, Args: [][]byte{[]byte("{nope")}, Reply: func(raw []byte) { r4 = string(raw) }},
		cmd(1, 1, true, "SET k 2"),
	})
	if err != nil {
		t.Fatal(err)
	}
	if got := strings.Join(r.ran, "|"); got != "SET k 1|SET k 2" {
		t.Errorf("redis ran %q", got)
	}
	if r1 != "+OK\r\n" || r2 != ":1\r\n" || !strings.HasPrefix(r3, "-ERR some of the slots are already being moved") ||
		!strings.HasPrefix(r4, "-ERR invalid routing change") {
		t.Errorf("replies %q %q %q %q", r1, r2, r3, r4)
	}
	rt := m.Routing()
	if rt == nil || rt.Owner(0) != "a" || rt.Owner(16383) != "b" || len(rt.Moves()) != 1 {
		t.Fatalf("routing after the changes: %+v", rt)
	}
	raw, err := m.MachineState()
	if err != nil {
		t.Fatal(err)
	}
	m2 := New(&fakeRedis{}, nil, nil)
	if err := m2.RestoreMachineState(context.Background(), raw); err != nil {
		t.Fatal(err)
	}
	a, _ := json.Marshal(m.Routing())
	b, _ := json.Marshal(m2.Routing())
	if string(a) != string(b) {
		t.Errorf("restored routing differs:\n%s\n%s", a, b)
	}
	if err := m2.Reset(context.Background(), nil, 0); err != nil || m2.Routing() != nil {
		t.Errorf("after an empty Reset: routing %v, %v", m2.Routing(), err)
	}
	// A map handed out is never changed by later changes.
	var r5 string
	if err := m.Apply([]fsm.Command{routeCmd(t, slotmap.Change{Op: slotmap.OpEndMove, Move: 1}, &r5)}); err != nil || r5 != "+OK\r\n" {
		t.Fatalf("end-move: %q %v", r5, err)
	}
	if rt.Owner(0) != "a" || m.Routing().Owner(0) != "b" {
		t.Errorf("the map handed out changed (%q), or the new one did not (%q)", rt.Owner(0), m.Routing().Owner(0))
	}
}
