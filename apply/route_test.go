package apply

import (
	"context"
	"encoding/json"
	"fmt"
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

// firstArgKeys says a command's key is its second argument, which only
// GET does not write.
type firstArgKeys struct{}

func (firstArgKeys) WriteKeys(args [][]byte) ([][]byte, bool) {
	if len(args) > 0 && strings.EqualFold(string(args[0]), "get") {
		return nil, false
	}
	return firstArgKeys{}.AccessedKeys(args), false
}
func (firstArgKeys) Modified([][]byte, []byte) bool { return true }
func (firstArgKeys) AccessedKeys(args [][]byte) [][]byte {
	if len(args) < 2 {
		return nil
	}
	return args[1:2]
}

// TestShardServesOwnSlots: once a shard's log holds the routing data, its
// machine runs a command, a transaction or a watch only on slots the shard
// owns, and answers the others -TRYAGAIN without sending them to redis:
// the check is the log's, at the command's place in it, on every node of
// the shard alike (a command proposed before its slot changed hands). A
// cluster without routing data, or a machine that does not know its shard
// yet, runs everything.
func TestShardServesOwnSlots(t *testing.T) {
	r := &fakeRedis{}
	m := New(r, firstArgKeys{}, nil)
	self := "a"
	m.SetShard(func() string { return self })
	keyOf := func(owner string, rt *slotmap.Map) string {
		for i := 0; ; i++ {
			k := fmt.Sprintf("k%d", i)
			if rt.Owner(slotmap.KeySlot([]byte(k))) == owner {
				return k
			}
		}
	}
	var init string
	if err := m.Apply([]fsm.Command{cmd(1, 0, true, "SET anything 1"), routeCmd(t, slotmap.Change{Op: slotmap.OpInit,
		Shards: []slotmap.Shard{{ID: "a", Members: []uint64{1}}, {ID: "b", Index: 1, Members: []uint64{1}}}}, &init)}); err != nil || init != "+OK\r\n" {
		t.Fatalf("init: %q %v", init, err)
	}
	rt := m.Routing()
	mine, theirs := keyOf("a", rt), keyOf("b", rt)
	replies := make([]string, 4)
	reply := func(i int) func([]byte) { return func(raw []byte) { replies[i] = string(raw) } }
	cmds := []fsm.Command{
		{Args: [][]byte{[]byte("SET"), []byte(mine), []byte("1")}, Reply: reply(0)},
		{Args: [][]byte{[]byte("SET"), []byte(theirs), []byte("1")}, Reply: reply(1)},
		{Op: entry.OpTx, Tx: [][][]byte{{[]byte("SET"), []byte(mine), []byte("2")}, {[]byte("SET"), []byte(theirs), []byte("2")}}, Reply: reply(2)},
		{Op: entry.OpWatch, Watch: 7, Args: [][]byte{[]byte(theirs)}, Reply: reply(3)},
	}
	if err := m.Apply(cmds); err != nil {
		t.Fatal(err)
	}
	if replies[0] != "+OK\r\n" || !strings.HasPrefix(replies[1], "-TRYAGAIN slot ") || !strings.HasPrefix(replies[2], "-TRYAGAIN") ||
		!strings.HasPrefix(replies[3], "-TRYAGAIN") {
		t.Errorf("replies %q", replies)
	}
	if got := strings.Join(r.ran, "|"); got != "SET anything 1|SET "+mine+" 1" {
		t.Errorf("redis ran %q: only the shard's own keys may reach it", got)
	}
	// Before the shard knows itself, nothing is refused.
	self = ""
	var later string
	if err := m.Apply([]fsm.Command{{Args: [][]byte{[]byte("SET"), []byte(theirs), []byte("3")}, Reply: func(raw []byte) { later = string(raw) }}}); err != nil || later != "+OK\r\n" {
		t.Errorf("with the shard unknown: %q %v", later, err)
	}
}
