package slotmap

import (
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"reflect"
	"slices"
	"testing"
)

func shard(id string, members ...uint64) Shard { return Shard{ID: id, Members: members} }

func mustApply(t *testing.T, m *Map, c Change) uint64 {
	t.Helper()
	id, err := m.Apply(c)
	if err != nil {
		t.Fatalf("%+v: %v", c, err)
	}
	return id
}

// TestInitSplitsEvenly: INIT SHARDS n gives each shard one range, in the
// given order, sizes differing by at most one, every slot owned once.
func TestInitSplitsEvenly(t *testing.T) {
	var m Map
	mustApply(t, &m, Change{Op: OpInit, Shards: []Shard{shard("c", 1, 2, 3), shard("a", 1, 2, 3), shard("b", 1, 2, 3)}})
	want := []Assignment{{Range{0, 5461}, "c"}, {Range{5462, 10922}, "a"}, {Range{10923, 16383}, "b"}}
	if got := m.Assignments(); !reflect.DeepEqual(got, want) {
		t.Fatalf("Assignments() = %v, want %v", got, want)
	}
	if m.Owner(0) != "c" || m.Owner(16383) != "b" || m.Owner(-1) != "" || m.Owner(NumSlots) != "" {
		t.Errorf("owners: %q %q %q %q", m.Owner(0), m.Owner(16383), m.Owner(-1), m.Owner(NumSlots))
	}
	if got := m.Shards(); len(got) != 3 || got[0].ID != "a" || got[2].ID != "c" {
		t.Errorf("Shards() = %v, want by id", got)
	}
	if _, err := m.Apply(Change{Op: OpInit, Shards: []Shard{shard("d", 1)}}); !errors.Is(err, ErrNotEmpty) {
		t.Errorf("a second init: %v", err)
	}
	var one Map
	mustApply(t, &one, Change{Op: OpInit, Shards: []Shard{shard("only", 7)}})
	if got := one.Assignments(); len(got) != 1 || got[0].Range != (Range{0, 16383}) {
		t.Errorf("one shard: %v", got)
	}
}

// TestMoves: a move is begun only for slots wholly owned by one shard that
// no other move holds; the source owns them until the move ends, then the
// target does; a cancelled move leaves them with the source; refused
// changes leave the Map as it was.
func TestMoves(t *testing.T) {
	var m Map
	mustApply(t, &m, Change{Op: OpInit, Shards: []Shard{shard("s1", 1, 2, 3), shard("s2", 1, 2, 3)}})
	mustApply(t, &m, Change{Op: OpAddShard, Shards: []Shard{shard("s0", 4, 5, 6)}})
	before, _ := json.Marshal(&m)
	for _, tc := range []struct {
		c    Change
		want error
	}{
		{Change{Op: OpBeginMove, Range: Range{8190, 8194}, Shard: "s0"}, ErrSplitOwner},
		{Change{Op: OpBeginMove, Range: Range{10, 5}, Shard: "s0"}, ErrBadRange},
		{Change{Op: OpBeginMove, Range: Range{0, NumSlots}, Shard: "s0"}, ErrBadRange},
		{Change{Op: OpBeginMove, Range: Range{0, 10}, Shard: "s1"}, ErrSameShard},
		{Change{Op: OpBeginMove, Range: Range{0, 10}, Shard: "nope"}, ErrNoShard},
		{Change{Op: OpRemoveShard, Shard: "s1"}, ErrShardInUse},
		{Change{Op: OpAddShard, Shards: []Shard{shard("s1", 1)}}, ErrShardExists},
		{Change{Op: OpAddShard, Shards: []Shard{shard("s9", 1, 1)}}, ErrBadMembers},
		{Change{Op: OpEndMove, Move: 9}, ErrNoMove},
	} {
		if _, err := m.Apply(tc.c); !errors.Is(err, tc.want) {
			t.Errorf("%+v: %v, want %v", tc.c, err, tc.want)
		}
	}
	if after, _ := json.Marshal(&m); string(after) != string(before) {
		t.Fatalf("refused changes changed the map:\n%s\n%s", before, after)
	}

	id := mustApply(t, &m, Change{Op: OpBeginMove, Range: Range{100, 199}, Shard: "s0"})
	if _, err := m.Apply(Change{Op: OpBeginMove, Range: Range{150, 300}, Shard: "s2"}); !errors.Is(err, ErrMoving) {
		t.Errorf("an overlapping move: %v", err)
	}
	if _, err := m.Apply(Change{Op: OpRemoveShard, Shard: "s0"}); !errors.Is(err, ErrShardInUse) {
		t.Errorf("removing a move's target: %v", err)
	}
	other := mustApply(t, &m, Change{Op: OpBeginMove, Range: Range{9000, 9001}, Shard: "s0"})
	if mv, ok := m.MoveByID(id); !ok || mv.ID != id || mv.From != "s1" || mv.To != "s0" || m.Owner(150) != "s1" {
		t.Errorf("during the move: Moving(150) = %+v %v, owner %q", mv, ok, m.Owner(150))
	}
	if _, ok := m.Moving(150); ok {
		t.Error("a move is served before a sync activates it")
	}
	st0, _ := m.MoveByID(id)
	mustApply(t, &m, Change{Op: OpSyncMove, State: &st0})
	mustApply(t, &m, Change{Op: OpProgress, Move: id, Keys: 42})
	if mv, _ := m.Moving(100); mv.Keys != 42 {
		t.Errorf("progress: %+v", mv)
	}
	mustApply(t, &m, Change{Op: OpEndMove, Move: id})
	if m.Owner(99) != "s1" || m.Owner(100) != "s0" || m.Owner(199) != "s0" || m.Owner(200) != "s1" {
		t.Errorf("after the move: %q %q %q %q", m.Owner(99), m.Owner(100), m.Owner(199), m.Owner(200))
	}
	if _, ok := m.Moving(150); ok {
		t.Error("an ended move is still listed")
	}
	mustApply(t, &m, Change{Op: OpCancelMove, Move: other})
	if mv, _ := m.MoveByID(other); !mv.Cancel || mv.Src() != "s2" {
		t.Errorf("a cancel is asked for, and runs back once synced: %+v", mv)
	}
	st, _ := m.MoveByID(other)
	st.Cancelled = true
	mustApply(t, &m, Change{Op: OpSyncMove, State: &st})
	if mv, _ := m.MoveByID(other); !mv.Cancelled || !mv.Active || mv.Src() != "s0" || mv.Dst() != "s2" {
		t.Errorf("a cancelled move runs back: %+v", mv)
	}
	if _, err := m.Apply(Change{Op: OpCancelMove, Move: other}); !errors.Is(err, ErrCancelled) {
		t.Errorf("a second cancel: %v", err)
	}
	mustApply(t, &m, Change{Op: OpEndMove, Move: other})
	if m.Owner(9000) != "s2" || len(m.Moves()) != 0 {
		t.Errorf("after the cancel: owner %q, moves %v", m.Owner(9000), m.Moves())
	}
	if got := m.Ranges("s0"); !reflect.DeepEqual(got, []Range{{100, 199}}) {
		t.Errorf("Ranges(s0) = %v", got)
	}
	// Give the slots back and remove the shard.
	back := mustApply(t, &m, Change{Op: OpBeginMove, Range: Range{100, 199}, Shard: "s1"})
	mustApply(t, &m, Change{Op: OpEndMove, Move: back})
	mustApply(t, &m, Change{Op: OpRemoveShard, Shard: "s0"})
	if m.Owner(100) != "s1" || m.Owner(16383) != "s2" || len(m.Shards()) != 2 {
		t.Errorf("after removing s0: %q %q %v", m.Owner(100), m.Owner(16383), m.Shards())
	}
}

// TestMovers: each mover claims a move with a higher epoch, and the steps
// of an older one are refused; a shard's log learns of a move and its turn
// by sync-move, which refuses a stale state and a move that ended.
func TestMovers(t *testing.T) {
	var p, shardLog Map
	init := Change{Op: OpInit, Shards: []Shard{shard("a", 1), shard("b", 1)}}
	mustApply(t, &p, init)
	mustApply(t, &shardLog, init)
	id := mustApply(t, &p, Change{Op: OpBeginMove, Range: Range{0, 9}, Shard: "b"})
	e1 := mustApply(t, &p, Change{Op: OpClaim, Move: id})
	e2 := mustApply(t, &p, Change{Op: OpClaim, Move: id})
	if e1 != 1 || e2 != 2 {
		t.Fatalf("epochs %d %d", e1, e2)
	}
	if _, err := p.Apply(Change{Op: OpProgress, Move: id, Epoch: e1, Keys: 5}); !errors.Is(err, ErrStaleMover) {
		t.Errorf("an older mover's progress: %v", err)
	}
	mv, _ := p.MoveByID(id)
	st := mv
	st.Epoch = e1
	mustApply(t, &shardLog, Change{Op: OpSyncMove, State: &st})
	st.Epoch = e2
	mustApply(t, &shardLog, Change{Op: OpSyncMove, State: &st})
	old := st
	old.Epoch = e1
	old.Cancelled = true
	if _, err := shardLog.Apply(Change{Op: OpSyncMove, State: &old}); !errors.Is(err, ErrStaleMover) {
		t.Errorf("an older mover's sync: %v", err)
	}
	if got, _ := shardLog.MoveByID(id); got.Cancelled || got.Epoch != e2 {
		t.Errorf("a refused sync changed the move: %+v", got)
	}
	mustApply(t, &shardLog, Change{Op: OpEndMove, Move: id, Epoch: e2})
	mustApply(t, &shardLog, Change{Op: OpEndMove, Move: id, Epoch: e2}) // a retry
	if _, err := shardLog.Apply(Change{Op: OpSyncMove, State: &st}); !errors.Is(err, ErrEnded) {
		t.Errorf("a sync after the end: %v", err)
	}
	if shardLog.Owner(5) != "b" || len(shardLog.Moves()) != 0 {
		t.Errorf("after the end: %q %v", shardLog.Owner(5), shardLog.Moves())
	}
}

// TestDeterministicAndRoundTrip: two maps given the same changes, refused
// ones included, end equal, and a map survives its encoding: what a
// snapshot of the routing log carries. A random sequence of changes keeps
// every slot owned exactly once.
func TestDeterministicAndRoundTrip(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	var a, b Map
	ids := []string{"s1", "s2", "s3", "s4"}
	mustApply(t, &a, Change{Op: OpInit, Shards: []Shard{shard("s1", 1, 2, 3), shard("s2", 4, 5, 6)}})
	mustApply(t, &b, Change{Op: OpInit, Shards: []Shard{shard("s1", 1, 2, 3), shard("s2", 4, 5, 6)}})
	done := map[Op]int{}
	for i := 0; i < 2000; i++ {
		var c Change
		switch rng.IntN(6) {
		case 0:
			c = Change{Op: OpAddShard, Shards: []Shard{shard(ids[rng.IntN(len(ids))], uint64(1+rng.IntN(9)))}}
		case 1:
			c = Change{Op: OpRemoveShard, Shard: ids[rng.IntN(len(ids))]}
		case 2, 3:
			f := rng.IntN(NumSlots)
			c = Change{Op: OpBeginMove, Range: Range{f, min(NumSlots-1, f+rng.IntN(3000))}, Shard: ids[rng.IntN(len(ids))]}
		case 4:
			c = Change{Op: OpEndMove, Move: uint64(rng.IntN(int(a.nextMove) + 1))}
		case 5:
			c = Change{Op: OpCancelMove, Move: uint64(rng.IntN(int(a.nextMove) + 1))}
		}
		_, errA := a.Apply(c)
		_, errB := b.Apply(c)
		if (errA == nil) != (errB == nil) {
			t.Fatalf("change %d %+v: %v vs %v", i, c, errA, errB)
		}
		if errA == nil {
			done[c.Op]++
			if c.Op == OpRemoveShard {
				// A removed shard's id is never used again.
				ids[slices.Index(ids, c.Shard)] = fmt.Sprintf("n%d", i)
			}
		}
		covered := 0
		for _, as := range a.Assignments() {
			covered += as.Len()
		}
		if covered != NumSlots {
			t.Fatalf("change %d %+v: %d slots owned", i, c, covered)
		}
	}
	for _, op := range []Op{OpAddShard, OpRemoveShard, OpBeginMove, OpEndMove, OpCancelMove} {
		if done[op] < 3 {
			t.Errorf("only %d %s changes were made of 2000: the sequence tests little", done[op], op)
		}
	}
	t.Logf("changes made: %v", done)
	ja, _ := json.Marshal(&a)
	jb, _ := json.Marshal(&b)
	if string(ja) != string(jb) {
		t.Fatalf("same changes, different maps:\n%s\n%s", ja, jb)
	}
	var c Map
	if err := json.Unmarshal(ja, &c); err != nil {
		t.Fatal(err)
	}
	if jc, _ := json.Marshal(&c); string(jc) != string(ja) || c.owner != a.owner {
		t.Fatalf("round trip changed the map:\n%s\n%s", ja, jc)
	}
	for _, bad := range []string{
		`{"shards":[{"id":"a","members":[1]}],"slots":[{"first":0,"last":5,"shard":"b"}]}`,
		`{"shards":[{"id":"a","members":[1]}],"slots":[{"first":0,"last":5,"shard":"a"},{"first":5,"last":6,"shard":"a"}]}`,
		`{"shards":[{"id":"a","members":[1]}],"slots":[],"moves":[{"id":1,"range":{"first":0,"last":1},"from":"a","to":"z"}],"next_move":1}`,
		`{"shards":[{"id":"a","members":[1]},{"id":"b","members":[1]}],"slots":[{"first":0,"last":9,"shard":"a"}],"moves":[{"id":1,"range":{"first":5,"last":12},"from":"a","to":"b"}],"next_move":1}`,
		`{"shards":[{"id":"a","members":[1]},{"id":"b","members":[1]}],"slots":[{"first":0,"last":9,"shard":"a"}],"moves":[{"id":1,"range":{"first":0,"last":5},"from":"a","to":"b"},{"id":2,"range":{"first":5,"last":6},"from":"a","to":"b"}],"next_move":2}`,
	} {
		if err := json.Unmarshal([]byte(bad), &c); err == nil {
			t.Errorf("decoded a broken map: %s", bad)
		}
	}
}

// TestPlacedShard: a placed shard is held by its members only, an
// unplaced one by every node; both survive the map's encoding and a clone.
func TestPlacedShard(t *testing.T) {
	var m Map
	mustApply(t, &m, Change{Op: OpInit, Shards: []Shard{shard("a", 1)}})
	mustApply(t, &m, Change{Op: OpAddShard, Shards: []Shard{{ID: "p", Index: 1, Members: []uint64{4, 5, 6}, Placed: true}}})
	b, err := json.Marshal(&m)
	if err != nil {
		t.Fatal(err)
	}
	var back Map
	if err := json.Unmarshal(b, &back); err != nil {
		t.Fatal(err)
	}
	for _, mm := range []*Map{&m, &back, m.Clone()} {
		a, _ := mm.Shard("a")
		p, _ := mm.Shard("p")
		if !a.Holds(1) || !a.Holds(9) || !p.Placed || p.Holds(1) || !p.Holds(5) {
			t.Errorf("holders: a %+v, p %+v", a, p)
		}
	}
}

// TestNewShardCopies: a shard made while a move runs elsewhere gets the
// routing data without that move (ForNewShard); a log that got it anyway
// (made by an older build) refuses an overlapping sync-move until its
// entries carry DropCopies, which drops the stale copy but never a move the
// shard takes part in.
func TestNewShardCopies(t *testing.T) {
	var p Map
	mustApply(t, &p, Change{Op: OpInit, Shards: []Shard{shard("a", 1), shard("b", 1)}})
	id := mustApply(t, &p, Change{Op: OpBeginMove, Range: Range{0, 99}, Shard: "b"})
	if got := p.ForNewShard().Moves(); len(got) != 0 {
		t.Errorf("a new shard's copy holds moves %v", got)
	}
	var c Map // shard c's log, made with the move in its copy
	mustApply(t, &c, Change{Op: OpLoad, Map: p.Clone()})
	mustApply(t, &c, Change{Op: OpAddShard, Shards: []Shard{shard("c", 1)}})
	mustApply(t, &p, Change{Op: OpAddShard, Shards: []Shard{shard("c", 1)}})
	mustApply(t, &p, Change{Op: OpEndMove, Move: id}) // in the shards taking part, and the routing data
	next := mustApply(t, &p, Change{Op: OpBeginMove, Range: Range{0, 49}, Shard: "c"})
	mv, _ := p.MoveByID(next)
	if _, err := c.Apply(Change{Op: OpSyncMove, State: &mv}); !errors.Is(err, ErrMoving) {
		t.Fatalf("sync over a stale copy, without DropCopies: %v", err)
	}
	mustApply(t, &c, Change{Op: OpSyncMove, State: &mv, DropCopies: true})
	if _, ok := c.MoveByID(id); ok {
		t.Errorf("the stale copy of move %d is still there", id)
	}
	if got, ok := c.Moving(10); !ok || got.ID != next || c.Owner(10) != "b" {
		t.Errorf("slot 10 in c's log: moving %v %v, owner %q", got, ok, c.Owner(10))
	}
	// A move c takes part in is never dropped.
	other := Move{ID: next + 1, Range: Range{40, 60}, From: "a", To: "c", Epoch: 1}
	if _, err := c.Apply(Change{Op: OpSyncMove, State: &other, DropCopies: true}); !errors.Is(err, ErrMoving) {
		t.Errorf("a sync over an active move: %v", err)
	}
}
