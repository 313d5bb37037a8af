package raftnode

import (
	"sync"
	"sync/atomic"

	"go.etcd.io/raft/v3/raftpb"

	"github.com/raftproxy/raftproxy/entry"
)

// A killable request (entry.Request.Killable: a script) may run without
// bound, so a client may kill it (SCRIPT KILL) on any node, and every node
// must then end as if it never ran. Whether it was killed is decided by the
// log alone, by control entries (entry.Control) in log order:
//
//   - Settle up to index i: the proposer ran every killable request of the
//     entries up to i to its end. Such a request can no longer be killed.
//   - Abort of request r of the entry at index i: it is killed, unless a
//     Settle covering i came first.
//
// A node shows nothing of a killable request's effects (its reply, the
// replies after it, reads of redis, a snapshot) until its verdict is in the
// committed log. So an acknowledged write is never undone by a later kill: a
// node that had run the request to its end when the Abort won rebuilds its
// redis without it (apply_kill.go).

type verdict uint8

const (
	undecided verdict = iota
	settled
	aborted
)

// target names one request: the index of its entry and its position there.
type target struct {
	index uint64
	req   uint64
}

// verdicts is what the control entries committed so far decided. It is fed
// in log order by the Ready loop (and, at start, from the log on disk), and
// read by the applier and by Kill.
type verdicts struct {
	mu sync.Mutex
	// last is the index of the last control entry taken in: raft hands a
	// restarted node again the committed entries after its applied index,
	// some of which were already read from disk.
	last uint64
	// settledTo: every killable request at or below it is settled, unless
	// in aborted.
	settledTo uint64
	aborted   map[target]struct{}
	change    chan struct{} // closed and replaced on every decision
	// seen is the index of the last committed entry taken in (or of the
	// snapshot installed): every verdict decided at or below it is known.
	seen atomic.Uint64
}

func newVerdicts() *verdicts {
	return &verdicts{aborted: map[target]struct{}{}, change: make(chan struct{})}
}

// takeEntries takes in the control entries among committed entries, in
// log order.
func (v *verdicts) takeEntries(ents []*raftpb.Entry) {
	if len(ents) == 0 {
		return
	}
	defer v.seenTo(ents[len(ents)-1].GetIndex())
	for _, e := range ents {
		if e.GetType() != raftpb.EntryNormal || !entry.IsControl(e.GetData()) {
			continue
		}
		c, err := entry.UnmarshalControl(e.GetData())
		if err != nil {
			continue // every node holds the same bytes and skips them alike
		}
		v.take(e.GetIndex(), c)
	}
}

func (v *verdicts) take(index uint64, c entry.Control) {
	v.mu.Lock()
	defer v.mu.Unlock()
	if index <= v.last {
		return
	}
	v.last = index
	switch c.Op {
	case entry.ControlSettle:
		// A settle never covers its own or later entries: only what its
		// proposer had run.
		v.settledTo = max(v.settledTo, min(c.Index, index-1))
	case entry.ControlAbort:
		if c.Index <= v.settledTo || c.Index >= index {
			return
		}
		v.aborted[target{c.Index, c.Req}] = struct{}{}
	}
	close(v.change)
	v.change = make(chan struct{})
}

// seenTo notes that the committed log up to index was taken in.
func (v *verdicts) seenTo(index uint64) {
	for {
		old := v.seen.Load()
		if index <= old || v.seen.CompareAndSwap(old, index) {
			return
		}
	}
}

func (v *verdicts) of(t target) verdict {
	v.mu.Lock()
	defer v.mu.Unlock()
	if _, ok := v.aborted[t]; ok {
		return aborted
	}
	if t.index <= v.settledTo {
		return settled
	}
	return undecided
}

// changed is closed at the next decision.
func (v *verdicts) changed() <-chan struct{} {
	v.mu.Lock()
	defer v.mu.Unlock()
	return v.change
}

// prune forgets the requests at or below index (a snapshot covers them).
func (v *verdicts) prune(index uint64) {
	v.mu.Lock()
	defer v.mu.Unlock()
	for t := range v.aborted {
		if t.index <= index {
			delete(v.aborted, t)
		}
	}
}
