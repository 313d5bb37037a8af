package apply

import "sort"

// maxWatches bounds the watches the applier keeps. A client that WATCHes
// and goes away without EXEC, DISCARD or UNWATCH reaching the log leaves its
// watch behind; past this many the oldest is dropped, and an EXEC that
// names a dropped watch aborts, as if its keys had been written.
const maxWatches = 100_000

// watches is WATCH's bookkeeping: the keys each open watch covers and
// whether one of them was written since it was watched. It changes only
// with the log (watch and unwatch requests, writes, transactions that name
// a watch), in log order, on every node alike, so every node's applier
// decides the same for every EXEC, also after a leader change, and it
// travels in snapshots.
type watches struct {
	byID  map[uint64]*watch
	byKey map[watchKey][]uint64
	// fifo holds ids in the order they were first watched, for dropping
	// the oldest; ids of watches already gone are skipped lazily.
	fifo []uint64
	next uint64 // order of the next new watch
}

type watchKey struct {
	db  int
	key string
}

type watch struct {
	keys  []watched
	dirty bool
	order uint64
}

// watched is one key of a watch, with its deadline when it was watched
// (unix ms; -1 none, -2 missing) and whether it had expired by then (by the
// WATCH's log time): one that expires later aborts the EXEC.
type watched struct {
	watchKey
	deadline int64
	expired  bool
}

func newWatches() *watches {
	return &watches{byID: map[uint64]*watch{}, byKey: map[watchKey][]uint64{}}
}

func (ws *watches) active() bool { return len(ws.byID) > 0 }

// add adds keys of db to watch id, creating it; deadlines are the keys'
// when watched at timeMs (nil: none known).
func (ws *watches) add(id uint64, db int, keys [][]byte, deadlines []int64, timeMs int64) {
	w := ws.byID[id]
	if w == nil {
		for len(ws.byID) >= maxWatches {
			ws.dropOldest()
		}
		w = &watch{order: ws.next}
		ws.next++
		ws.byID[id] = w
		ws.fifo = append(ws.fifo, id)
	}
next:
	for i, k := range keys {
		wk := watchKey{db, string(k)}
		for _, have := range w.keys {
			if have.watchKey == wk {
				continue next
			}
		}
		d := int64(-1)
		if i < len(deadlines) {
			d = deadlines[i]
		}
		w.keys = append(w.keys, watched{watchKey: wk, deadline: d, expired: d >= 0 && d < timeMs})
		ws.byKey[wk] = append(ws.byKey[wk], id)
	}
}

func (ws *watches) dropOldest() {
	for len(ws.fifo) > 0 {
		id := ws.fifo[0]
		ws.fifo = ws.fifo[1:]
		if ws.byID[id] != nil {
			ws.remove(id)
			return
		}
	}
}

// remove forgets watch id.
func (ws *watches) remove(id uint64) {
	w := ws.byID[id]
	if w == nil {
		return
	}
	delete(ws.byID, id)
	for _, wk := range w.keys {
		k := wk.watchKey
		ids := ws.byKey[k]
		for i, x := range ids {
			if x == id {
				ids = append(ids[:i], ids[i+1:]...)
				break
			}
		}
		if len(ids) == 0 {
			delete(ws.byKey, k)
		} else {
			ws.byKey[k] = ids
		}
	}
	if len(ws.fifo) > 2*len(ws.byID)+1024 {
		live := ws.fifo[:0]
		for _, x := range ws.fifo {
			if ws.byID[x] != nil {
				live = append(live, x)
			}
		}
		ws.fifo = live
	}
}

// written marks the watches of keys in db as written; all marks every
// watch (FLUSHALL, SWAPDB, a command whose keys cannot be told).
func (ws *watches) written(db int, keys [][]byte, all bool) {
	if all {
		for _, w := range ws.byID {
			w.dirty = true
		}
		return
	}
	for _, k := range keys {
		for _, id := range ws.byKey[watchKey{db, string(k)}] {
			ws.byID[id].dirty = true
		}
	}
}

// watchState is one watch as a snapshot carries it. Keys are bytes (base64
// in JSON): a key need not be valid UTF-8.
type watchState struct {
	ID    uint64   `json:"id"`
	DBs   []int    `json:"dbs"`
	Keys  [][]byte `json:"keys"`
	Dirty bool     `json:"dirty,omitempty"`
	// Deadlines and Expired are each key's when watched (watched).
	Deadlines []int64 `json:"deadlines,omitempty"`
	Expired   []bool  `json:"expired,omitempty"`
}

// state returns the open watches, oldest first.
func (ws *watches) state() []watchState {
	ids := make([]uint64, 0, len(ws.byID))
	for id := range ws.byID {
		ids = append(ids, id)
	}
	sort.Slice(ids, func(i, j int) bool { return ws.byID[ids[i]].order < ws.byID[ids[j]].order })
	out := make([]watchState, 0, len(ids))
	for _, id := range ids {
		w := ws.byID[id]
		st := watchState{ID: id, Dirty: w.dirty, DBs: make([]int, len(w.keys)), Keys: make([][]byte, len(w.keys)),
			Deadlines: make([]int64, len(w.keys)), Expired: make([]bool, len(w.keys))}
		for i, k := range w.keys {
			st.DBs[i], st.Keys[i], st.Deadlines[i], st.Expired[i] = k.db, []byte(k.key), k.deadline, k.expired
		}
		out = append(out, st)
	}
	return out
}

// restoreWatches rebuilds the bookkeeping a snapshot carried.
func restoreWatches(sts []watchState) *watches {
	ws := newWatches()
	for _, st := range sts {
		if len(st.DBs) != len(st.Keys) {
			continue
		}
		for i, k := range st.Keys {
			ws.add(st.ID, st.DBs[i], [][]byte{k}, nil, 0)
			if len(st.Deadlines) == len(st.Keys) && len(st.Expired) == len(st.Keys) {
				w := ws.byID[st.ID]
				w.keys[len(w.keys)-1].deadline = st.Deadlines[i]
				w.keys[len(w.keys)-1].expired = st.Expired[i]
			}
		}
		if w := ws.byID[st.ID]; w != nil {
			w.dirty = st.Dirty
		} else {
			// A watch with no keys (WATCH always names one; kept for safety).
			ws.add(st.ID, 0, nil, nil, 0)
			ws.byID[st.ID].dirty = st.Dirty
		}
	}
	return ws
}
