package apply

import (
	"encoding/json"
	"testing"
)

func keys(ks ...string) [][]byte {
	out := make([][]byte, len(ks))
	for i, k := range ks {
		out[i] = []byte(k)
	}
	return out
}

// execWatch is what an EXEC decides from the writes alone: whether the
// watch is clean; the watch ends either way.
func execWatch(ws *watches, id uint64) bool {
	w := ws.byID[id]
	ok := w != nil && !w.dirty
	ws.remove(id)
	return ok
}

func TestWatches(t *testing.T) {
	type step func(ws *watches)
	add := func(id uint64, db int, ks ...string) step {
		return func(ws *watches) { ws.add(id, db, keys(ks...), nil, 0) }
	}
	write := func(db int, ks ...string) step {
		return func(ws *watches) { ws.written(db, keys(ks...), false) }
	}
	writeAll := func(ws *watches) { ws.written(0, nil, true) }
	remove := func(id uint64) step { return func(ws *watches) { ws.remove(id) } }
	tests := []struct {
		name  string
		steps []step
		exec  uint64
		want  bool
	}{
		{"untouched", []step{add(1, 0, "a", "b")}, 1, true},
		{"written", []step{add(1, 0, "a", "b"), write(0, "b")}, 1, false},
		{"other key", []step{add(1, 0, "a"), write(0, "c")}, 1, true},
		{"other database", []step{add(1, 1, "a"), write(0, "a")}, 1, true},
		{"written before the watch", []step{write(0, "a"), add(1, 0, "a")}, 1, true},
		{"added key written", []step{add(1, 0, "a"), add(1, 0, "b"), write(0, "b")}, 1, false},
		{"every key", []step{add(1, 0, "a"), writeAll}, 1, false},
		{"another watch's key", []step{add(1, 0, "a"), add(2, 0, "b"), write(0, "b")}, 1, true},
		{"unknown watch", nil, 7, false},
		{"removed", []step{add(1, 0, "a"), remove(1)}, 1, false},
		{"removed, then watched again", []step{add(1, 0, "a"), write(0, "a"), remove(1), add(1, 0, "a")}, 1, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ws := newWatches()
			for _, s := range tt.steps {
				s(ws)
			}
			// The same decision after a round trip through a snapshot.
			raw, err := json.Marshal(ws.state())
			if err != nil {
				t.Fatal(err)
			}
			var sts []watchState
			if err := json.Unmarshal(raw, &sts); err != nil {
				t.Fatal(err)
			}
			restored := restoreWatches(sts)
			if got := execWatch(ws, tt.exec); got != tt.want {
				t.Errorf("exec = %v, want %v", got, tt.want)
			}
			if got := execWatch(restored, tt.exec); got != tt.want {
				t.Errorf("after a snapshot: exec = %v, want %v", got, tt.want)
			}
			if execWatch(ws, tt.exec) {
				t.Errorf("a second exec of the same watch ran")
			}
		})
	}
}

func TestWatchesDropOldest(t *testing.T) {
	ws := newWatches()
	for id := uint64(1); id <= maxWatches+2; id++ {
		ws.add(id, 0, keys("k"), nil, 0)
		if id == 2 {
			ws.remove(2)
		}
	}
	if len(ws.byID) != maxWatches {
		t.Fatalf("%d watches kept, want %d", len(ws.byID), maxWatches)
	}
	// 1 was dropped (the oldest), 2 was removed, so 3 is the oldest left.
	if ws.byID[1] != nil || ws.byID[3] == nil || ws.byID[maxWatches+2] == nil {
		t.Errorf("dropped the wrong watches")
	}
	if n := len(ws.byKey[watchKey{0, "k"}]); n != maxWatches {
		t.Errorf("key index holds %d ids, want %d", n, maxWatches)
	}
	// Binary keys survive a snapshot.
	ws = newWatches()
	ws.add(9, 3, [][]byte{{0xff, 0, 'x'}}, nil, 0)
	raw, _ := json.Marshal(ws.state())
	var sts []watchState
	json.Unmarshal(raw, &sts)
	r := restoreWatches(sts)
	r.written(3, [][]byte{{0xff, 0, 'x'}}, false)
	if execWatch(r, 9) {
		t.Errorf("a write to a binary key restored from a snapshot did not count")
	}
}
