package apply

import (
	"fmt"
	"strings"
	"testing"

	"github.com/raftproxy/raftproxy/entry"
	"github.com/raftproxy/raftproxy/fsm"
	"github.com/raftproxy/raftproxy/slotmap"
)

// heldRedis is fakeRedis holding the keys in held (for KeyDeadlines).
type heldRedis struct {
	fakeRedis
	held map[string]bool
}

func (h *heldRedis) KeyDeadlines(_ int, keys [][]byte) ([]int64, error) {
	out := make([]int64, len(keys))
	for i, k := range keys {
		out[i] = -2
		if h.held[string(k)] {
			out[i] = -1
		}
	}
	return out, nil
}

// TestMovingSlotGate: while a slot moves, the source runs a command whose
// keys it all holds, answers -ASK (naming the target shard) for one whose
// keys it holds none of and -TRYAGAIN for a mix; the target runs the
// slot's commands only when they came after ASKING, so a command proposed
// to it before the move turned around cannot write beside the keys coming
// back. Both decide from their own log, as every node of the shard does.
func TestMovingSlotGate(t *testing.T) {
	shards := []slotmap.Shard{{ID: "a", Members: []uint64{1}}, {ID: "b", Index: 1, Members: []uint64{1}}}
	var rt slotmap.Map
	if _, err := rt.Apply(slotmap.Change{Op: slotmap.OpInit, Shards: shards}); err != nil {
		t.Fatal(err)
	}
	var keys []string
	for i := 0; len(keys) < 2; i++ {
		if k := fmt.Sprintf("k%d", i); rt.Owner(slotmap.KeySlot([]byte(k))) == "a" {
			keys = append(keys, k)
		}
	}
	held, gone := keys[0], keys[1]
	mv := slotmap.Move{ID: 1, Range: slotmap.Range{First: 0, Last: 8191}, From: "a", To: "b", Epoch: 1}
	machine := func(self string) (*Machine, *heldRedis) {
		r := &heldRedis{held: map[string]bool{}}
		if self == "a" {
			r.held[held] = true
		}
		m := New(r, firstArgKeys{}, nil)
		m.SetShard(func() string { return self })
		var a, b string
		if err := m.Apply([]fsm.Command{routeCmd(t, slotmap.Change{Op: slotmap.OpInit, Shards: shards}, &a),
			routeCmd(t, slotmap.Change{Op: slotmap.OpSyncMove, State: &mv}, &b)}); err != nil || a != "+OK\r\n" || b != "+OK\r\n" {
			t.Fatalf("%s: init %q, sync %q, %v", self, a, b, err)
		}
		return m, r
	}
	run := func(m *Machine, cmds ...fsm.Command) []string {
		out := make([]string, len(cmds))
		for i := range cmds {
			cmds[i].Reply = func(raw []byte) { out[i] = string(raw) }
		}
		if err := m.Apply(cmds); err != nil {
			t.Fatal(err)
		}
		return out
	}
	set := func(k string, asking bool) fsm.Command {
		return fsm.Command{Args: [][]byte{[]byte("SET"), []byte(k), []byte("1")}, Asking: asking}
	}
	src, srcRedis := machine("a")
	got := run(src, set(held, false), set(gone, false),
		fsm.Command{Op: entry.OpTx, Tx: [][][]byte{{[]byte("SET"), []byte(held), []byte("2")}, {[]byte("SET"), []byte(gone), []byte("2")}}})
	wantAsk := fmt.Sprintf("-ASK %d b\r\n", slotmap.KeySlot([]byte(gone)))
	if got[0] != "+OK\r\n" || got[1] != wantAsk || got[2] != string(errRehashing) {
		t.Errorf("source: %q, want +OK, %q, %q", got, wantAsk, errRehashing)
	}
	if ran := strings.Join(srcRedis.ran, "|"); ran != "SET "+held+" 1" {
		t.Errorf("the source's redis ran %q", ran)
	}
	// A key being copied (locked by an export) is still read here, but not
	// written: the write would be lost with the key's drop.
	src.locks = map[lockKey]uint64{{0, held}: mv.ID}
	get := fsm.Command{Args: [][]byte{[]byte("GET"), []byte(held)}}
	if got := run(src, set(held, false), get); got[0] != string(errLocked) || got[1] != "+OK\r\n" {
		t.Errorf("source, with %s locked: SET and GET answered %q, want %q and the GET run", held, got, errLocked)
	}
	if ran := strings.Join(srcRedis.ran, "|"); ran != "SET "+held+" 1|GET "+held {
		t.Errorf("the source's redis ran %q", ran)
	}

	dst, dstRedis := machine("b")
	got = run(dst, set(gone, false), set(gone, true))
	if !strings.HasPrefix(got[0], "-TRYAGAIN slot ") || got[1] != "+OK\r\n" {
		t.Errorf("target: %q, want -TRYAGAIN without ASKING and +OK after it", got)
	}
	if ran := strings.Join(dstRedis.ran, "|"); ran != "SET "+gone+" 1" {
		t.Errorf("the target's redis ran %q", ran)
	}
}
